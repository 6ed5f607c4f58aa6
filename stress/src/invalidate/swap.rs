//! Swap-out of registered memory under a memory cgroup limit.
//!
//! An idle queue's registered buffer sits in a cgroup whose limit is then
//! exceeded by other memory of the same process, with swap on (zram). How
//! much of the buffer reclaim can take is the backing's rule: `pin` holds
//! pages reclaim skips (`folio_maybe_dma_pinned` in `shrink_folio_list`),
//! so none; `mirror` holds no reference, reclaim's `try_to_unmap` is a CLEAR
//! the callback answers by dropping the chunk, so most of it. What reclaim
//! picks under pressure depends on its LRU; what it can take is then asked
//! directly with `MADV_PAGEOUT` on the buffer, and that is what is judged. After the
//! pressure, a verified stream over the whole buffer swaps it back in
//! through the rebuild, and every byte matches the model. How much is in
//! swap is read per page from `/proc/self/pagemap`.

use std::time::Duration;

use warpq::sys::*;
use warpq::Device;

use super::PAGE;
use crate::cmd::sh;
use crate::harness::run_case;
use crate::stream::Stream;
use crate::Anon;

const GROUP: &str = "/sys/fs/cgroup/warpq-swap";
const ZRAM: &str = "/sys/block/zram0";
const BUFFER: usize = 16 << 20;
/// The group's limit, set once the buffer is filled: this much above what
/// the process then uses (its buffers and the stream's 16 MiB model).
const HEADROOM: usize = 8 << 20;
const PRESSURE: usize = 64 << 20;

fn write(path: &str, value: &str) -> Result<(), String> {
    std::fs::write(path, value).map_err(|e| format!("write {value:?} to {path}: {e}"))
}

/// A 256 MiB zram swap device on, once per boot.
fn swap_on() -> Result<(), String> {
    let swaps = std::fs::read_to_string("/proc/swaps").map_err(|e| format!("/proc/swaps: {e}"))?;
    if swaps.contains("zram0") {
        return Ok(());
    }
    write(&format!("{ZRAM}/disksize"), "256M")?;
    sh(&["mkswap", "/dev/zram0"])?;
    sh(&["swapon", "/dev/zram0"])
}

/// cgroup2 with the memory controller, our group (no limit yet).
fn group() -> Result<(), String> {
    let root = "/sys/fs/cgroup";
    if !std::path::Path::new(&format!("{root}/cgroup.controllers")).exists() {
        std::fs::create_dir_all(root).map_err(|e| format!("mkdir {root}: {e}"))?;
        sh(&["mount", "-t", "cgroup2", "none", root])?;
    }
    write(&format!("{root}/cgroup.subtree_control"), "+memory")?;
    if !std::path::Path::new(GROUP).exists() {
        std::fs::create_dir(GROUP).map_err(|e| format!("mkdir {GROUP}: {e}"))?;
    }
    write(&format!("{GROUP}/memory.max"), "max")
}

/// KiB of `[addr, addr + len)` in swap: the pages whose `/proc/self/pagemap`
/// entry has bit 62 (swapped). Exact for the range (smaps counts a whole
/// VMA, and anonymous neighbours merge into one).
fn swapped_kib(addr: u64, len: usize) -> Result<u64, String> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open("/proc/self/pagemap").map_err(|e| format!("pagemap: {e}"))?;
    let mut raw = vec![0u8; len / PAGE * 8];
    f.read_exact_at(&mut raw, addr / PAGE as u64 * 8).map_err(|e| format!("pagemap: {e}"))?;
    let swapped =
        raw.chunks_exact(8).filter(|e| u64::from_le_bytes((*e).try_into().unwrap_or([0; 8])) & (1 << 62) != 0);
    Ok(swapped.count() as u64 * (PAGE as u64 >> 10))
}

/// In a child in the group: fill the buffer through the device, idle,
/// press, measure, then verify through the device again.
fn idle_queue_under_pressure(path: &str, backing: &str) -> Result<String, String> {
    write(&format!("{GROUP}/cgroup.procs"), "0")?;
    let src = Anon::new(64 * PAGE);
    src.write(&(0..src.len()).map(|i| (i * 13 + 1) as u8).collect::<Vec<_>>());
    let dst = Anon::new(BUFFER);
    dst.write(&vec![0x3c; dst.len()]);
    let dev = Device::open(path).map_err(|e| format!("open {path}: {e}"))?;
    let mut q = dev.queue().map_err(|e| format!("map queue: {e}"))?;
    // SAFETY: both buffers outlive the registrations (they end with `dev`,
    // declared after the buffers, so dropped before them).
    let _hs = unsafe { dev.register_raw(src.ptr(), src.len(), WARPQ_ACCESS_READ) }
        .map_err(|e| format!("register src: {e}"))?;
    // SAFETY: as above.
    let _hd = unsafe { dev.register_raw(dst.ptr(), dst.len(), WARPQ_ACCESS_READ | WARPQ_ACCESS_WRITE) }
        .map_err(|e| format!("register dst: {e}"))?;
    // Every chunk of the buffer mapped for the device: long commands all over it.
    let mut stream = Stream::new(&src, &dst, 0, dst.len(), 0x5377_6170).max_len(32 * PAGE);
    for _ in 0..8 {
        stream.push(&mut q, 64)?;
        stream.reap_all(&mut q)?;
    }
    stream.verify("before the pressure")?;
    let before = dev.stats().map_err(|e| format!("STATS: {e}"))?;
    let swapped_before = swapped_kib(dst.addr(0), dst.len())?;
    let current: usize = std::fs::read_to_string(format!("{GROUP}/memory.current"))
        .map_err(|e| format!("memory.current: {e}"))?
        .trim()
        .parse()
        .map_err(|e| format!("memory.current: {e}"))?;
    let limit = current + HEADROOM;
    write(&format!("{GROUP}/memory.max"), &limit.to_string())?;
    // The queue idles. Its buffer was just read by the CPU (the check
    // above), which would keep it on the active list: MADV_COLD makes it
    // the first choice of reclaim, as a buffer idle for a while would be.
    // Then the same process touches 64 MiB more than the cgroup allows
    // beside it, twice.
    // SAFETY: an advice on our own mapping; it changes no contents.
    if unsafe { libc::madvise(dst.ptr().cast(), dst.len(), libc::MADV_COLD) } != 0 {
        return Err(format!("madvise(MADV_COLD): {}", std::io::Error::last_os_error()));
    }
    let pressure = Anon::new(PRESSURE);
    for pass in 0..2u8 {
        for off in (0..PRESSURE).step_by(PAGE) {
            // SAFETY: inside `pressure`, which is mapped read/write.
            unsafe { pressure.ptr().add(off).write_volatile(pass + 1) };
        }
    }
    let swapped = swapped_kib(dst.addr(0), dst.len())?.saturating_sub(swapped_before);
    let pressure_swapped = swapped_kib(pressure.addr(0), PRESSURE)?;
    drop(pressure);
    // What reclaim chose under pressure depends on its LRU; what it *can*
    // take is asked directly: MADV_PAGEOUT reclaims every page of the range
    // that may go (a pinned page may not).
    // SAFETY: an advice on our own mapping; the contents stay (in swap).
    if unsafe { libc::madvise(dst.ptr().cast(), dst.len(), libc::MADV_PAGEOUT) } != 0 {
        return Err(format!("madvise(MADV_PAGEOUT): {}", std::io::Error::last_os_error()));
    }
    let paged_out = swapped_kib(dst.addr(0), dst.len())?.saturating_sub(swapped_before);
    let mid = dev.stats().map_err(|e| format!("STATS: {e}"))?;
    let teardowns = mid.teardowns - before.teardowns;
    let clears = mid.invalidations_by_event[1] - before.invalidations_by_event[1];
    let total = (BUFFER >> 10) as u64;
    let figures = format!(
        "{swapped} of {total} KiB registered swapped out ({swapped_before} before) by a {} MiB cgroup under {} MiB \
         of pressure (the pressure's own pages in swap: {pressure_swapped} KiB), {paged_out} KiB after MADV_PAGEOUT \
         of the buffer; {clears} CLEAR invalidations, {teardowns} teardowns",
        limit >> 20,
        PRESSURE >> 20
    );
    match backing {
        "pin" if paged_out != 0 => return Err(format!("pin: {figures}: the pin did not hold")),
        "mirror" if paged_out < total / 2 => {
            return Err(format!("mirror: {figures}: less than half of an idle buffer can be reclaimed"))
        }
        _ => {}
    }
    // After the pressure: the whole buffer again, verified.
    let ok_before = stream.tally.ok;
    for _ in 0..8 {
        stream.push(&mut q, 64)?;
        stream.reap_all(&mut q)?;
    }
    stream.verify("after the pressure")?;
    Ok(format!("{backing}: {figures}; {} commands verified before, {} after", ok_before, stream.tally.ok - ok_before))
}

/// The check: swap on, a fresh group, the case in a child of it.
pub fn swap_out_idle(path: &str) -> Result<String, String> {
    let backing = std::fs::read_to_string("/sys/module/warpq/parameters/backing").unwrap_or_default();
    let backing = backing.trim().to_string();
    swap_on()?;
    group()?;
    let path = path.to_string();
    let out = run_case(Duration::from_secs(240), move || idle_queue_under_pressure(&path, &backing)).into_result();
    let _ = std::fs::remove_dir(GROUP);
    out
}
