//! `warpq-queue-check`: the queue mapping's rules, on the real driver.
//!
//! - INFO answers with this ABI version and the ring size;
//! - the ring maps shared, read/write, and carries the header;
//! - MAP_PRIVATE, PROT_EXEC, a wrong size or offset, mremap (move and grow)
//!   and a partial munmap are refused with the documented errno;
//! - after fork the child's first touch gives it a queue of its own (a new
//!   owner_id), while the parent keeps its queue; the same holds for a
//!   grandchild; several processes sharing one file each get their own.

use std::os::fd::AsRawFd;
use std::time::Duration;

use warpq::sys::*;
use warpq::Device;

use super::{Failure, Section};
use crate::harness::{self, Exit};
use crate::report::Report;

/// The check `$what` of section `$name`: an `ok` line of `$r` if the
/// condition holds, else the run's failure.
macro_rules! check {
    ($r:expr, $name:expr, $what:expr, $cond:expr) => {
        if $cond {
            $r.ok($name, $what);
        } else {
            return Err(Failure { section: $name, detail: $what.to_string() });
        }
    };
}

/// mmap with these arguments; the errno if it was refused.
fn try_mmap(dev: &Device, len: usize, prot: i32, flags: i32, offset: i64) -> Result<*mut libc::c_void, i32> {
    // SAFETY: a fresh mapping; unmapped by the caller.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, dev.as_file().as_raw_fd(), offset) };
    if p == libc::MAP_FAILED {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(p)
    }
}

/// The calling thread's errno.
fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// How long a child (or grandchild) may take.
const CHILD_LIMIT: Duration = Duration::from_secs(60);

/// Runs `f` in a child process and returns its exit code: 128 + the signal
/// for a child a signal killed, 255 if it could not be forked or hung.
fn in_child(f: impl FnOnce() -> i32) -> i32 {
    match harness::spawn(f).map(|c| c.wait(CHILD_LIMIT)) {
        Ok(Exit::Code(code)) => code,
        Ok(Exit::Signal(sig)) => 128 + sig,
        Ok(Exit::TimedOut) | Err(_) => 255,
    }
}

/// Runs every check on the device at `path`, each an `ok` line of `r`; the
/// first failure ends the run.
pub fn run(r: &mut Report, path: &str) -> Result<(), Failure> {
    let dev = Device::open(path).map_err(|e| format!("open {path}: {e}")).section("open")?;
    let info = dev.info().map_err(|e| e.to_string()).section("INFO")?;
    check!(
        r,
        "INFO",
        "version and ring size",
        info.version == WARPQ_UAPI_VERSION && info.ring_size as usize == WARPQ_RING_SIZE
    );
    check!(
        r,
        "INFO",
        "capabilities include the ring and per-fork queues",
        info.capabilities & (WARPQ_CAP_RING | WARPQ_CAP_FORK_QUEUE) == (WARPQ_CAP_RING | WARPQ_CAP_FORK_QUEUE)
    );

    // Refusals.
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    check!(
        r,
        "mmap",
        "MAP_PRIVATE refused with EINVAL",
        try_mmap(&dev, WARPQ_RING_SIZE, rw, libc::MAP_PRIVATE, 0) == Err(libc::EINVAL)
    );
    check!(
        r,
        "mmap",
        "PROT_EXEC refused with EPERM",
        try_mmap(&dev, WARPQ_RING_SIZE, rw | libc::PROT_EXEC, libc::MAP_SHARED, 0) == Err(libc::EPERM)
    );
    check!(
        r,
        "mmap",
        "wrong size refused with EINVAL",
        try_mmap(&dev, 4096, rw, libc::MAP_SHARED, 0) == Err(libc::EINVAL)
    );
    check!(
        r,
        "mmap",
        "nonzero offset refused with EINVAL",
        try_mmap(&dev, WARPQ_RING_SIZE, rw, libc::MAP_SHARED, 4096) == Err(libc::EINVAL)
    );

    let ring = dev.map_queue().map_err(|e| format!("map the queue: {e}")).section("mmap")?;
    let hdr = ring.header();
    check!(
        r,
        "ring header",
        "magic, version, geometry",
        hdr.magic == WARPQ_RING_MAGIC
            && hdr.version == WARPQ_UAPI_VERSION
            && hdr.sq_entries == WARPQ_SQ_ENTRIES
            && hdr.cq_entries == WARPQ_CQ_ENTRIES
            && hdr.sq_offset as usize == WARPQ_RING_SQ_OFFSET
            && hdr.cq_offset as usize == WARPQ_RING_CQ_OFFSET
    );
    let parent_owner = hdr.owner_id;
    check!(r, "ring header", "an owner id", parent_owner != 0);
    check!(r, "mprotect", "PROT_EXEC refused", {
        // SAFETY: our mapping; the call is expected to fail and change nothing.
        let r = unsafe { libc::mprotect(ring.as_ptr().cast(), WARPQ_RING_SIZE, rw | libc::PROT_EXEC) };
        r != 0
    });

    // mremap: neither moved nor grown nor shrunk.
    // SAFETY: asks to grow our mapping in place; expected to fail.
    let grown = unsafe { libc::mremap(ring.as_ptr().cast(), WARPQ_RING_SIZE, WARPQ_RING_SIZE + 4096, 0) };
    check!(r, "mremap", "grow refused", grown == libc::MAP_FAILED);
    // SAFETY: asks to move our mapping; expected to fail.
    let moved = unsafe {
        libc::mremap(
            ring.as_ptr().cast(),
            WARPQ_RING_SIZE,
            WARPQ_RING_SIZE,
            libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
            ring.as_ptr().add(1 << 30).cast::<libc::c_void>(),
        )
    };
    check!(r, "mremap", "move refused with EINVAL", moved == libc::MAP_FAILED && errno() == libc::EINVAL);
    // SAFETY: tries to unmap the last page of our mapping; expected to fail.
    let split = unsafe { libc::munmap(ring.as_ptr().add(WARPQ_RING_SIZE - 4096).cast(), 4096) };
    check!(r, "munmap", "a partial munmap refused with EINVAL", split != 0 && errno() == libc::EINVAL);
    check!(r, "ring header", "still intact after the refusals", ring.header().owner_id == parent_owner);

    // fork: the child's first touch builds its own queue.
    let child = in_child(|| {
        let h = ring.header();
        if h.magic != WARPQ_RING_MAGIC {
            println!("child: no ring header");
            return 1;
        }
        if h.owner_id == parent_owner || h.owner_id == 0 {
            println!("child: saw owner id {} (parent's is {parent_owner})", h.owner_id);
            return 2;
        }
        let mine = h.owner_id;
        // A grandchild gets yet another queue.
        let grandchild = in_child(|| {
            let g = ring.header().owner_id;
            if g == mine || g == parent_owner || g == 0 {
                3
            } else {
                0
            }
        });
        if grandchild != 0 {
            println!("grandchild: shared a queue (status {grandchild})");
            return 4;
        }
        // Writes to the child's ring stay in the child's queue.
        // SAFETY: cq_head is user-written; our mapping.
        unsafe {
            std::ptr::write_volatile(
                ring.as_ptr().add(std::mem::offset_of!(warpq_ring_header, cq_head)).cast::<u32>(),
                77,
            )
        };
        if ring.header().owner_id != mine {
            5
        } else {
            0
        }
    });
    check!(r, "fork", "the child (and grandchild) get queues of their own", child == 0);
    check!(r, "fork", "the parent keeps its queue", ring.header().owner_id == parent_owner);
    check!(r, "fork", "the child's writes did not reach the parent's ring", ring.header().cq_head == 0);

    // Another process with the same file but no mapping of its own before
    // fork (maps after): also its own queue.
    drop(ring);
    let status = in_child(|| match dev.map_queue() {
        Ok(r) => {
            let o = r.header().owner_id;
            if o != 0 && o != parent_owner {
                0
            } else {
                6
            }
        }
        Err(_) => 7,
    });
    check!(r, "fork", "a child mapping the inherited file gets its own queue", status == 0);
    let again = dev.map_queue().map_err(|e| format!("map again: {e}")).section("remap")?;
    check!(r, "remap", "the parent's queue survives unmap and re-map", again.header().owner_id == parent_owner);
    Ok(())
}
