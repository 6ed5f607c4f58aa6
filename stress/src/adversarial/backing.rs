//! What the backing (module parameter `backing=pin|mirror`, shown by
//! `WARPQ_CAP_MIRROR`) promises, row by row, under whichever one the module
//! was loaded with: whose RLIMIT_MEMLOCK budget a pin is charged to, that
//! `mirror` holds no pin at all, that the kernel may migrate mirrored pages
//! and not pinned ones, and that device writes are seen by soft-dirty
//! tracking.

use std::time::Duration;

use warpq::sys::*;

use super::register::drop_ipc_lock;
use super::*;
use crate::raw::{register, unregister};
use crate::PinCounts;

const P: u64 = PAGE as u64;

/// The rows of this file.
pub fn cases() -> Vec<Case> {
    vec![
        story(
            "backing-memlock-per-user",
            "without CAP_IPC_LOCK and with RLIMIT_MEMLOCK 64 KiB: the parent registers 48 KiB, a forked child \
             registers 32 KiB on its own file (pin: ENOMEM, the user's budget is shared; mirror: accepted, nothing \
             charged), then 32 KiB again after the parent unregistered (accepted)",
            Expect::Ok,
            memlock_per_user,
        ),
        story(
            "backing-unprivileged-64mib",
            "as uid 65534 with RLIMIT_MEMLOCK 64 KiB and no capability: REGISTER 64 MiB read/write (pin: ENOMEM; \
             mirror: accepted, FILL and CRC32C across it verified, nr_foll_pin_acquired unchanged)",
            Expect::Ok,
            unprivileged_64mib,
        ),
        story(
            "backing-compaction",
            "16 MiB registered and used by the device, then /proc/sys/vm/compact_memory: pin: no registered page \
             moves; mirror: registered pages move (their PFNs change); either way the device's CRC32C of the buffer \
             and its FILLs stay right afterwards",
            Expect::Ok,
            compaction,
        ),
        story(
            "backing-soft-dirty",
            "clear_refs 4 (SOFT_DIRTY) on a registered read/write buffer, then a device FILL of a page the process \
             never wrote since: the page is soft-dirty afterwards and holds the FILL's bytes",
            Expect::Ok,
            soft_dirty,
        ),
    ]
}

fn is_mirror(env: &Env) -> bool {
    env.info.capabilities & WARPQ_CAP_MIRROR != 0
}

fn set_memlock(bytes: u64) -> Result<(), String> {
    let limit = libc::rlimit { rlim_cur: bytes, rlim_max: bytes };
    // SAFETY: a valid rlimit for this process.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) } != 0 {
        return Err(format!("setrlimit: {}", Errno::last()));
    }
    Ok(())
}

/// Runs `f` in a forked child and returns its `Err` text, if any (exit code
/// 0 is success; the child prints its reason before leaving with 1).
fn in_child(what: &str, f: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
    let child = harness::spawn(|| match f() {
        Ok(()) => 0,
        Err(e) => {
            println!("    child: {e}");
            1
        }
    })
    .map_err(|e| format!("fork: {e}"))?;
    match child.wait(Duration::from_secs(60)) {
        Exit::Code(0) => Ok(()),
        other => Err(format!("{what}: the child ended with {other:?} (its reason is printed above)")),
    }
}

fn memlock_per_user(env: &Env) -> Result<Got, String> {
    drop_ipc_lock()?;
    set_memlock(16 * P)?;
    let mirror = is_mirror(env);
    let (mine, theirs) = (Anon::new(12 * PAGE), Anon::new(8 * PAGE));
    // The child is forked before the parent registers: a fork after it would
    // unpin the parent's read/write region (fork's PROTECTION_PAGE revokes
    // device writes) and so hand its budget back until the next rebuild.
    let (go_read, go_write) = pipe()?;
    let (done_read, done_write) = pipe()?;
    let child = harness::spawn(|| {
        let step = |want_ok_now: bool| -> Result<(), String> {
            let dev = open(env)?;
            let r = register(fd_of(&dev), theirs.addr(0), theirs.len() as u64, RW);
            match (&r, want_ok_now) {
                (Ok(_), true) | (Err(Errno(libc::ENOMEM)), false) => Ok(()),
                _ => Err(format!(
                    "the child's REGISTER of 32 KiB (wanted {}): {}",
                    ok_or_enomem(want_ok_now),
                    raw::show(&r)
                )),
            }
        };
        let result = wait_byte(go_read)
            .and_then(|()| step(mirror))
            .and_then(|()| send_byte(done_write))
            .and_then(|()| wait_byte(go_read))
            .and_then(|()| step(true));
        match result {
            Ok(()) => 0,
            Err(e) => {
                println!("    child: {e}");
                1
            }
        }
    })
    .map_err(|e| format!("fork: {e}"))?;
    let dev = open(env)?;
    let fd = fd_of(&dev);
    let h = want_ok("48 KiB within the limit", register(fd, mine.addr(0), mine.len() as u64, RW))?;
    // While the parent holds 48 KiB: pin says ENOMEM to the child.
    send_byte(go_write)?;
    let _ = wait_byte(done_read);
    want_ok("UNREGISTER", unregister(fd, h))?;
    // Now the budget is free again.
    let _ = send_byte(go_write);
    match child.wait(Duration::from_secs(60)) {
        Exit::Code(0) => {}
        other => return Err(format!("the child ended with {other:?} (its reason is printed above)")),
    }
    Ok(Got::ok(if mirror {
        "mirror: nothing is charged, both processes registered"
    } else {
        "pin: the child got ENOMEM while the parent held 48 KiB of the user's 64 KiB, and 32 KiB once it let go"
    }))
}

fn ok_or_enomem(ok: bool) -> &'static str {
    if ok {
        "success"
    } else {
        "ENOMEM"
    }
}

fn pipe() -> Result<(i32, i32), String> {
    let mut fds = [0; 2];
    // SAFETY: pipe(2) writes two descriptors into `fds`.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(format!("pipe: {}", Errno::last()));
    }
    Ok((fds[0], fds[1]))
}

fn send_byte(fd: i32) -> Result<(), String> {
    // SAFETY: writes one byte from a local.
    if unsafe { libc::write(fd, [1u8].as_ptr().cast(), 1) } != 1 {
        return Err(format!("pipe write: {}", Errno::last()));
    }
    Ok(())
}

fn wait_byte(fd: i32) -> Result<(), String> {
    let mut b = [0u8];
    // SAFETY: reads one byte into a local.
    if unsafe { libc::read(fd, b.as_mut_ptr().cast(), 1) } != 1 {
        return Err(format!("pipe read: {}", Errno::last()));
    }
    Ok(())
}

fn unprivileged_64mib(env: &Env) -> Result<Got, String> {
    let mirror = is_mirror(env);
    let before = PinCounts::read().map_err(|e| format!("/proc/vmstat: {e}"))?;
    let len = 64usize << 20;
    in_child("64 MiB as uid 65534", || {
        set_memlock(16 * P)?;
        let dev = open(env)?;
        // SAFETY: plain system calls on this process's credentials.
        let dropped = unsafe { libc::setresgid(65534, 65534, 65534) == 0 && libc::setresuid(65534, 65534, 65534) == 0 };
        ensure!(dropped, "setresuid: {}", Errno::last());
        let fd = fd_of(&dev);
        let buf = Anon::new(len);
        let r = register(fd, buf.addr(0), len as u64, RW);
        if !mirror {
            ensure!(matches!(r, Err(Errno(libc::ENOMEM))), "pin: REGISTER of 64 MiB gave {}", raw::show(&r));
            return Ok(());
        }
        let h = want_ok("mirror: REGISTER of 64 MiB", r)?;
        let ring = map_ring(fd)?;
        for (i, off) in [0, len / 3, len / 2 + 12345 * 8, len - 2 * PAGE].into_iter().enumerate() {
            let value = 0x31 + i as u8;
            let c = ring.run(op::Fill::new(buf.addr(off), 2 * P, value))?;
            ensure!(c.status == WARPQ_STATUS_OK, "FILL at {off:#x}: {}", st(c.status));
            // SAFETY: inside our mapping.
            let got = unsafe { std::slice::from_raw_parts(buf.ptr().add(off), 2 * PAGE) };
            ensure!(got.iter().all(|&b| b == value), "FILL at {off:#x}: the bytes differ");
            let c = ring.run(op::Crc32c::new(buf.addr(off), 2 * P))?;
            ensure!(c.status == WARPQ_STATUS_OK, "CRC32C at {off:#x}: {}", st(c.status));
            ensure!(c.result == u64::from(warpq::crc32c(0, got)), "CRC32C at {off:#x}: {:#x}", c.result);
        }
        want_ok("UNREGISTER", unregister(fd, h))?;
        Ok(())
    })?;
    let after = PinCounts::read().map_err(|e| format!("/proc/vmstat: {e}"))?;
    if mirror {
        ensure!(
            after.acquired == before.acquired,
            "nr_foll_pin_acquired moved {} -> {} under mirror",
            before.acquired,
            after.acquired
        );
    }
    Ok(Got::ok(if mirror {
        format!("mirror: 64 MiB registered and used by uid 65534; nr_foll_pin_acquired stayed {}", after.acquired)
    } else {
        "pin: ENOMEM for uid 65534 over RLIMIT_MEMLOCK".into()
    }))
}

/// The PFN of each page of `[addr, addr + pages * PAGE)`, from
/// `/proc/self/pagemap` (root only; 0 for a page not present).
fn pfns(addr: u64, pages: usize) -> Result<Vec<u64>, String> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open("/proc/self/pagemap").map_err(|e| format!("pagemap: {e}"))?;
    let mut raw = vec![0u8; pages * 8];
    f.read_exact_at(&mut raw, addr / P * 8).map_err(|e| format!("pagemap read: {e}"))?;
    Ok(raw
        .chunks_exact(8)
        .map(|w| u64::from_le_bytes(w.try_into().unwrap()))
        .map(|e| if e >> 63 & 1 == 1 { e & ((1 << 55) - 1) } else { 0 })
        .collect())
}

/// Whether the page at `addr` is soft-dirty (`/proc/self/pagemap` bit 55).
fn soft_dirty_bit(addr: u64) -> Result<bool, String> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open("/proc/self/pagemap").map_err(|e| format!("pagemap: {e}"))?;
    let mut raw = [0u8; 8];
    f.read_exact_at(&mut raw, addr / P * 8).map_err(|e| format!("pagemap read: {e}"))?;
    Ok(u64::from_le_bytes(raw) >> 55 & 1 == 1)
}

fn compaction(env: &Env) -> Result<Got, String> {
    let mirror = is_mirror(env);
    let pages = 4096;
    let (dev, ring, buf, h) = setup(env, pages)?;
    let fd = fd_of(&dev);
    buf.write(&pattern(buf.len(), 7));
    let c = ring.run(op::Fill::new(buf.addr(0), P, 0x5c))?;
    ensure!(c.status == WARPQ_STATUS_OK, "FILL before: {}", st(c.status));
    let before = pfns(buf.addr(0), pages)?;
    ensure!(before.iter().all(|&p| p != 0), "not every registered page is present (or pagemap hides PFNs)");
    std::fs::write("/proc/sys/vm/compact_memory", "1").map_err(|e| format!("compact_memory: {e}"))?;
    let after = pfns(buf.addr(0), pages)?;
    let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
    // The device sees the process's bytes wherever they are now: a CRC32C
    // of the whole buffer, 1 MiB per command, chained.
    let mut crc = 0u32;
    for off in (0..buf.len()).step_by(1 << 20) {
        let c = ring.run(op::Crc32c::new(buf.addr(off), 1 << 20).seed(crc))?;
        ensure!(c.status == WARPQ_STATUS_OK, "CRC32C after compaction: {}", st(c.status));
        crc = c.result as u32;
    }
    let want = warpq::crc32c(0, &buf.bytes());
    ensure!(crc == want, "CRC32C after compaction: {crc:#x}, the CPU says {want:#x}");
    for page in [1, pages / 2, pages - 1] {
        let c = ring.run(op::Fill::new(buf.addr(page * PAGE), P, 0xa5))?;
        ensure!(c.status == WARPQ_STATUS_OK, "FILL after compaction: {}", st(c.status));
        // SAFETY: inside our mapping.
        let got = unsafe { std::slice::from_raw_parts(buf.ptr().add(page * PAGE), PAGE) };
        ensure!(got.iter().all(|&b| b == 0xa5), "FILL of page {page} after compaction did not land in the page");
    }
    want_ok("UNREGISTER", unregister(fd, h))?;
    if mirror {
        ensure!(moved > 0, "mirror: compaction moved none of the {pages} registered pages");
    } else {
        ensure!(moved == 0, "pin: compaction moved {moved} pinned pages");
    }
    Ok(Got::ok(format!("{moved} of {pages} registered pages moved; the device's CRC32C and FILLs were right after")))
}

fn soft_dirty(env: &Env) -> Result<Got, String> {
    let (dev, ring, buf, h) = setup(env, 4)?;
    let fd = fd_of(&dev);
    buf.write(&[1u8; 4 * PAGE]);
    let c = ring.run(op::Fill::new(buf.addr(0), P, 0x11))?;
    ensure!(c.status == WARPQ_STATUS_OK, "FILL before: {}", st(c.status));
    std::fs::write("/proc/self/clear_refs", "4").map_err(|e| format!("clear_refs: {e}"))?;
    let target = buf.addr(2 * PAGE);
    ensure!(!soft_dirty_bit(target)?, "the page is soft-dirty right after clear_refs");
    let c = ring.run(op::Fill::new(target, P, 0x77))?;
    ensure!(c.status == WARPQ_STATUS_OK, "FILL after clear_refs: {}", st(c.status));
    let dirty = soft_dirty_bit(target)?;
    // SAFETY: inside our mapping.
    let got = unsafe { std::slice::from_raw_parts(buf.ptr().add(2 * PAGE), PAGE) };
    ensure!(got.iter().all(|&b| b == 0x77), "the FILL after clear_refs did not land in the page");
    ensure!(dirty, "a device write after clear_refs left the page clean: soft-dirty tracking missed it");
    want_ok("UNREGISTER", unregister(fd, h))?;
    Ok(Got::ok("the device's write made the page soft-dirty, and its bytes are in the page"))
}
