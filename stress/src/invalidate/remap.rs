//! `warpq-invalidate-check unmap-semantics`: a registration is the mapping
//! it was registered on. With FILLs in flight, a registered buffer is
//! replaced at the same address (munmap then an immediate mmap, munmap then
//! 5 ms then mmap, `MAP_FIXED` over it, `MREMAP_DONTUNMAP`), anonymous and
//! memfd-backed, 60 rounds each: the replacement is never written by the
//! device, and every command queued after the unmap completes
//! `FAULT_UNMAPPED`. Then a shrinking mremap: the part still mapped keeps
//! completing OK, the part cut off faults.

use std::time::Duration;

use warpq::sys::*;
use warpq::{Device, Queue};

use super::PAGE;
use crate::stream::{push_all, reap, sqe};

const ROUNDS: usize = 60;
/// One chunk at the default chunk size (a region this small has one).
const LEN: usize = 64 * PAGE;
/// What the replacement mapping holds; the device writes other bytes.
const MARK: u8 = 0xee;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Backing {
    Anonymous,
    Memfd,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Replace {
    MmapAtOnce,
    MmapAfter5ms,
    MapFixedOver,
    MremapDontUnmap,
}

/// `mmap` of `len` bytes: anonymous private, or a fresh memfd shared; at
/// `at` exactly (`MAP_FIXED_NOREPLACE`, or `MAP_FIXED` if `replace`) or
/// anywhere.
fn map(backing: Backing, len: usize, at: Option<*mut u8>, replace: bool) -> Result<*mut u8, String> {
    let (fd, mut flags) = match backing {
        Backing::Anonymous => (-1, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS),
        Backing::Memfd => {
            // SAFETY: a plain system call.
            let fd = unsafe { libc::memfd_create(c"warpq-remap".as_ptr(), libc::MFD_CLOEXEC) };
            if fd < 0 {
                return Err(format!("memfd_create: {}", std::io::Error::last_os_error()));
            }
            // SAFETY: our fd.
            if unsafe { libc::ftruncate(fd, len as libc::off_t) } != 0 {
                return Err(format!("ftruncate: {}", std::io::Error::last_os_error()));
            }
            (fd, libc::MAP_SHARED)
        }
    };
    if at.is_some() {
        flags |= if replace { libc::MAP_FIXED } else { libc::MAP_FIXED_NOREPLACE };
    }
    let hint = at.unwrap_or(std::ptr::null_mut());
    // SAFETY: a new mapping; MAP_FIXED only over our own buffer, which no
    // reference points into.
    let p = unsafe { libc::mmap(hint.cast(), len, libc::PROT_READ | libc::PROT_WRITE, flags, fd, 0) };
    if fd >= 0 {
        // SAFETY: our fd; the mapping keeps the memfd alive.
        unsafe { libc::close(fd) };
    }
    if p == libc::MAP_FAILED {
        return Err(format!("mmap {backing:?} at {hint:?}: {}", std::io::Error::last_os_error()));
    }
    if at.is_some_and(|a| a != p.cast()) {
        return Err(format!("mmap at {hint:?} landed at {p:?}"));
    }
    Ok(p.cast())
}

fn unmap(p: *mut u8, len: usize) {
    // SAFETY: our mapping; no reference points into it.
    unsafe { libc::munmap(p.cast(), len) };
}

fn fill(p: *mut u8, len: usize, byte: u8) {
    // SAFETY: `len` writable bytes of our mapping.
    unsafe { std::ptr::write_bytes(p, byte, len) };
}

fn all_are(p: *const u8, len: usize, byte: u8) -> bool {
    // SAFETY: `len` readable bytes of our mapping; the device does not
    // write it (that is what is checked).
    unsafe { std::slice::from_raw_parts(p, len) }.iter().all(|&b| b == byte)
}

/// One round; the number of in-flight commands that had run before the
/// unmap (OK) and the number that faulted.
fn round(dev: &Device, q: &mut Queue<'_>, backing: Backing, how: Replace, n: u64) -> Result<(u32, u32), String> {
    let buf = map(backing, LEN, None, false)?;
    let rw = WARPQ_ACCESS_READ | WARPQ_ACCESS_WRITE;
    // SAFETY: only raw pointers refer to the buffer, which is replaced under
    // the device on purpose.
    let h = unsafe { dev.register_raw(buf, LEN, rw) }.map_err(|e| format!("register: {e}"))?;
    let fills = |base: u64, first: u64| -> Vec<warpq_sqe> {
        (0..16u64)
            .map(|i| sqe(WARPQ_OP_FILL, first + i, 0, base + (i % 16) * 4 * PAGE as u64, 4 * PAGE as u64, 0x11))
            .collect()
    };
    push_all(q, &fills(buf as u64, n))?;
    q.submit().map_err(|e| format!("submit: {e}"))?;
    // The replacement, at the same address.
    let replacement = match how {
        Replace::MmapAtOnce | Replace::MmapAfter5ms => {
            unmap(buf, LEN);
            if how == Replace::MmapAfter5ms {
                std::thread::sleep(Duration::from_millis(5));
            }
            map(backing, LEN, Some(buf), false)?
        }
        Replace::MapFixedOver => map(backing, LEN, Some(buf), true)?,
        Replace::MremapDontUnmap => {
            // SAFETY: moves our own mapping; the old range stays mapped,
            // empty (anonymous: zero pages on the next touch; memfd: the
            // file's pages again).
            let moved = unsafe {
                libc::mremap(
                    buf.cast(),
                    LEN,
                    LEN,
                    libc::MREMAP_MAYMOVE | libc::MREMAP_DONTUNMAP,
                    std::ptr::null_mut::<u8>(),
                )
            };
            if moved == libc::MAP_FAILED {
                return Err(format!("mremap(MREMAP_DONTUNMAP): {}", std::io::Error::last_os_error()));
            }
            unmap(moved.cast(), LEN);
            buf
        }
    };
    fill(replacement, LEN, MARK);
    // Commands queued after the unmap: all must fault.
    push_all(q, &fills(buf as u64, n + 16))?;
    let (mut ok, mut faulted) = (0, 0);
    for i in 0..32 {
        let c = reap(q)?;
        ensure_in_order(c.user_data, n + i)?;
        match c.status {
            WARPQ_STATUS_OK if i < 16 => ok += 1,
            WARPQ_STATUS_FAULT_UNMAPPED => faulted += 1,
            s => return Err(format!("{backing:?} {how:?}: command {i} of the round: status {s}")),
        }
    }
    let intact = all_are(replacement, LEN, MARK);
    dev.unregister(h).map_err(|e| format!("unregister: {e}"))?;
    unmap(replacement, LEN);
    if !intact {
        return Err(format!("{backing:?} {how:?}: the device wrote the replacement mapping"));
    }
    Ok((ok, faulted))
}

fn ensure_in_order(got: u64, want: u64) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("completion {got} where {want} was expected"))
    }
}

/// A shrinking mremap of a 4-chunk region to its first 2 chunks: FILLs
/// into the kept half complete OK, into the cut half `FAULT_UNMAPPED`.
fn shrink(dev: &Device, q: &mut Queue<'_>) -> Result<String, String> {
    // The chunk size queues are made with.
    let chunk = crate::param::chunk_bytes()?;
    let len = 4 * chunk;
    let buf = map(Backing::Anonymous, len, None, false)?;
    let rw = WARPQ_ACCESS_READ | WARPQ_ACCESS_WRITE;
    // SAFETY: as in `round`.
    let h = unsafe { dev.register_raw(buf, len, rw) }.map_err(|e| format!("register: {e}"))?;
    // SAFETY: shrinks our own mapping in place.
    let kept = unsafe { libc::mremap(buf.cast(), len, len / 2, 0) };
    if kept != buf.cast() {
        return Err(format!("mremap shrink: {}", std::io::Error::last_os_error()));
    }
    let cmds: Vec<_> =
        (0..4u64).map(|i| sqe(WARPQ_OP_FILL, 9000 + i, 0, buf as u64 + i * chunk as u64 + 64, 4096, 0x3c)).collect();
    push_all(q, &cmds)?;
    let mut statuses = Vec::new();
    for i in 0..4 {
        let c = reap(q)?;
        ensure_in_order(c.user_data, 9000 + i)?;
        statuses.push(c.status);
    }
    let kept_ok = all_are(buf.wrapping_add(64), 4096, 0x3c) && all_are(buf.wrapping_add(chunk + 64), 4096, 0x3c);
    dev.unregister(h).map_err(|e| format!("unregister: {e}"))?;
    unmap(buf, len / 2);
    let want = [WARPQ_STATUS_OK, WARPQ_STATUS_OK, WARPQ_STATUS_FAULT_UNMAPPED, WARPQ_STATUS_FAULT_UNMAPPED];
    if statuses != want || !kept_ok {
        return Err(format!(
            "after a shrinking mremap to 2 of 4 chunks: statuses {statuses:?}, kept half written: {kept_ok}"
        ));
    }
    Ok(format!("shrinking mremap (4 chunks of {} KiB to 2): kept chunks OK, cut chunks FAULT_UNMAPPED", chunk >> 10))
}

/// The check.
pub fn unmap_semantics(dev: &Device) -> Result<String, String> {
    let mut q = dev.queue().map_err(|e| format!("map queue: {e}"))?;
    let mut summary = Vec::new();
    let mut n = 0u64;
    for backing in [Backing::Anonymous, Backing::Memfd] {
        for how in [Replace::MmapAtOnce, Replace::MmapAfter5ms, Replace::MapFixedOver, Replace::MremapDontUnmap] {
            let (mut ok, mut faulted) = (0, 0);
            for _ in 0..ROUNDS {
                let (o, f) = round(dev, &mut q, backing, how, n)?;
                ok += o;
                faulted += f;
                n += 32;
            }
            summary.push(format!("{backing:?}/{how:?}: {ok} ran before, {faulted} faulted"));
        }
    }
    let shrunk = shrink(dev, &mut q)?;
    Ok(format!(
        "{ROUNDS} rounds x 8 (FILLs in flight, 16 more after the unmap): the replacement never written, every later \
         command FAULT_UNMAPPED [{}]; {shrunk}",
        summary.join(", ")
    ))
}
