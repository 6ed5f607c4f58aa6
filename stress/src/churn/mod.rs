//! Address-space churn while the device works (`warpq-churn`).
//!
//! Every scenario registers a 4 MiB buffer (2 MiB aligned, so THP can back
//! it) and streams verified COPY/FILL/CRC32C commands into its upper half,
//! while another thread churns the lower half (or unrelated memory, or the
//! whole process). The invalidations this causes tear the buffer down and
//! rebuild it under the running stream; every command must complete, and
//! the upper half must end up exactly as the CPU's model says. Scenarios
//! that can legitimately kill the buffer (mprotect to read-only or none,
//! mremap moving or shrinking part of it) accept fault statuses and then
//! check that a re-registration works.
//!
//! The churn operations themselves are in [`ops`]; [`SCENARIOS`] names them.

mod ops;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use warpq::sys::*;
use warpq::Device;

use crate::stream::{push_all, reap, sqe, Stream, Tally};
use crate::Anon;

const MIB: usize = 1 << 20;

/// Pause between churn operations (`--interval-ms`, default 100). A buffer
/// invalidated faster than it can be re-pinned starves its queue (the seed
/// design's known weakness): the tests churn at a rate a rebuild can follow.
static INTERVAL_MS: AtomicU64 = AtomicU64::new(100);

/// Commands completed OK and verified, over all scenarios (the `figures:`
/// line for `warpq-stress-suite`).
static VERIFIED: AtomicU64 = AtomicU64::new(0);

/// Sets the pause between churn operations (`--interval-ms`).
pub fn set_interval_ms(ms: u64) {
    INTERVAL_MS.store(ms, Ordering::Relaxed);
}

/// Commands completed OK and verified so far, over all scenarios.
pub fn verified() -> u64 {
    VERIFIED.load(Ordering::Relaxed)
}

fn interval() -> Duration {
    Duration::from_millis(INTERVAL_MS.load(Ordering::Relaxed))
}
const HALF: usize = 2 * MIB;

/// A 4 MiB region aligned to 2 MiB inside a larger anonymous mapping.
struct Aligned {
    _map: Anon,
    base: *mut u8,
}

// SAFETY: a plain memory address, used by the churn thread through system
// calls only (madvise, mprotect) and by the main thread.
unsafe impl Send for Aligned {}
// SAFETY: as above.
unsafe impl Sync for Aligned {}

impl Aligned {
    fn new() -> Aligned {
        let map = Anon::new(3 * HALF);
        let base = ((map.ptr() as usize + HALF - 1) & !(HALF - 1)) as *mut u8;
        Aligned { _map: map, base }
    }
}

type Churn = fn(&Aligned, &AtomicBool) -> u64;

fn madvise(p: *mut u8, len: usize, advice: i32) -> i32 {
    // SAFETY: advice on our own mapping; failures are reported, not fatal.
    unsafe { libc::madvise(p.cast(), len, advice) }
}

fn mprotect(p: *mut u8, len: usize, prot: i32) -> i32 {
    // SAFETY: our own mapping.
    unsafe { libc::mprotect(p.cast(), len, prot) }
}

fn write_file(path: &str, text: &str) {
    let _ = std::fs::write(path, text);
}

/// A churn scenario: what churns, whether the stream may see fault
/// statuses, and whether threads race faults on a second mapping of the
/// ring.
pub struct Scenario {
    /// Its name on the command line and in the report.
    pub name: &'static str,
    churn: Churn,
    faults_allowed: bool,
    fault_threads: bool,
}

const fn sc(name: &'static str, churn: Churn, faults_allowed: bool, fault_threads: bool) -> Scenario {
    Scenario { name, churn, faults_allowed, fault_threads }
}

/// Every scenario, in the order they run: `dontneed`, `pageout` (PAGEOUT
/// and COLD), `mprotect`, `thp` (MADV_HUGEPAGE, MADV_COLLAPSE, splits),
/// `ksm` (MADV_MERGEABLE over identical pages), `compact`, `fork`,
/// `unrelated` (mmap/mprotect/munmap of other memory, clear_refs),
/// `fault-threads` (threads racing faults on the ring), `mremap` (move away
/// and back, shrink and grow in place), `fork-flags` (DONTFORK and
/// WIPEONFORK across forks), `pressure` (`stress-ng --vm` alongside, and
/// compaction).
pub const SCENARIOS: [Scenario; 12] = [
    sc("dontneed", ops::churn_dontneed, false, false),
    sc("pageout", ops::churn_pageout, false, false),
    sc("mprotect", ops::churn_mprotect, true, false),
    sc("thp", ops::churn_thp, false, false),
    sc("ksm", ops::churn_ksm, false, false),
    sc("compact", ops::churn_compact, false, false),
    sc("fork", ops::churn_fork, false, false),
    sc("unrelated", ops::churn_unrelated, false, false),
    sc("fault-threads", ops::churn_dontneed, false, true),
    sc("mremap", ops::churn_mremap, true, false),
    sc("fork-flags", ops::churn_fork_flags, false, false),
    sc("pressure", ops::churn_pressure, false, false),
];

/// Runs `rounds` rounds of the stream on the upper half of a fresh buffer
/// while the scenario's churn runs on another thread; returns the report
/// line's detail.
pub fn run(dev: &Device, sc: &Scenario, rounds: u64) -> Result<String, String> {
    let Scenario { name, churn, faults_allowed, fault_threads } = *sc;
    let mut q = dev.queue().map_err(|e| format!("map queue: {e}"))?;
    let src = Anon::new(64 * 4096);
    src.write(&(0..src.len()).map(|i| (i * 7 + 3) as u8).collect::<Vec<_>>());
    let r = Arc::new(Aligned::new());
    // SAFETY: the region's memory is referred to only by raw pointers here
    // and stays mapped until `r` is dropped after the unregistrations.
    let region = unsafe { std::slice::from_raw_parts_mut(r.base, 2 * HALF) };
    region.fill(0);
    let dst = Anon::borrowed(r.base, 2 * HALF);
    let rw = WARPQ_ACCESS_READ | WARPQ_ACCESS_WRITE;
    // SAFETY: only raw pointers refer to the buffers while registered.
    let hs = unsafe { dev.register_raw(src.ptr(), src.len(), WARPQ_ACCESS_READ) }
        .map_err(|e| format!("register src: {e}"))?;
    // SAFETY: as above.
    let hr = unsafe { dev.register_raw(r.base, 2 * HALF, rw) }.map_err(|e| format!("register: {e}"))?;
    let before = dev.stats().map_err(|e| format!("STATS: {e}"))?;

    let result = stream_under_churn(dev, &mut q, name, churn, rounds, faults_allowed, fault_threads, &src, &r, &dst);
    // Whatever happened, leave no registration behind for the next scenario.
    let _ = dev.unregister(hr);
    let _ = dev.unregister(hs);
    let (tally, churned, touches) = result?;
    let after = dev.stats().map_err(|e| format!("STATS: {e}"))?;
    if faults_allowed {
        // Whatever the churn did, a fresh registration works.
        mprotect(r.base, 2 * HALF, libc::PROT_READ | libc::PROT_WRITE);
        // SAFETY: only raw pointers refer to the memory while registered.
        let h2 = unsafe { dev.register_raw(r.base, 2 * HALF, rw) }.map_err(|e| format!("re-register: {e}"))?;
        push_all(&mut q, &[sqe(WARPQ_OP_FILL, 1 << 40, 0, dst.addr(HALF), 4096, 0x77)])?;
        let c = reap(&mut q);
        let _ = dev.unregister(h2);
        let c = c?;
        if c.status != WARPQ_STATUS_OK || dst.bytes()[HALF] != 0x77 {
            return Err(format!("after re-registering: status {}", c.status));
        }
    }
    let t = tally;
    VERIFIED.fetch_add(t.ok, Ordering::Relaxed);
    Ok(format!(
        "{} commands ({} ok, {} faulted, {} aborted), {churned} churn ops{}; invalidations {}, ignored {}, teardowns {}, rebuilds {} (+{} retries), zaps {}",
        t.ok + t.faulted + t.aborted, t.ok, t.faulted, t.aborted,
        if fault_threads { format!(", {touches} ring touches by 3 threads") } else { String::new() },
        after.invalidations - before.invalidations, after.ignored_by_policy - before.ignored_by_policy,
        after.teardowns - before.teardowns, after.rebuilds - before.rebuilds,
        after.rebuild_retries - before.rebuild_retries, after.zaps - before.zaps
    ))
}

/// The stream and the churn threads; returns the tally, churn operations
/// and ring touches.
#[allow(clippy::too_many_arguments)]
fn stream_under_churn(
    dev: &Device,
    q: &mut warpq::Queue<'_>,
    name: &str,
    churn: Churn,
    rounds: u64,
    faults_allowed: bool,
    fault_threads: bool,
    src: &Anon,
    r: &Arc<Aligned>,
    dst: &Anon,
) -> Result<(Tally, u64, u64), String> {
    let mut stream = Stream::new(src, dst, HALF, 2 * HALF, 0xc0ffee ^ name.len() as u64);
    if faults_allowed {
        stream = stream.allow_faults();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let churner = {
        let (r, stop) = (Arc::clone(r), Arc::clone(&stop));
        std::thread::spawn(move || churn(&r, &stop))
    };
    // Optional: threads racing faults on a second mapping of this process's
    // queue (same mm, same file: the same queue).
    let touches = Arc::new(AtomicU64::new(0));
    let second_map = dev.map_queue().map_err(|e| format!("map the queue again: {e}"))?;
    let toucher_threads: Vec<_> = (0..if fault_threads { 3 } else { 0 })
        .map(|_| {
            let (stop, touches) = (Arc::clone(&stop), Arc::clone(&touches));
            let ring = second_map.as_ptr() as usize;
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    // SAFETY: the ring stays mapped until after these threads
                    // are joined; a volatile read of the header's magic.
                    let m = unsafe { std::ptr::read_volatile(ring as *const u32) };
                    assert_eq!(m, WARPQ_RING_MAGIC);
                    touches.fetch_add(1, Ordering::Relaxed);
                    std::thread::yield_now();
                }
            })
        })
        .collect();
    // At least `rounds` batches, and at least five churn intervals per
    // round: a fast stream must not finish before the churn has done much.
    let min_time = interval() * 5 * rounds as u32;
    let start = std::time::Instant::now();
    let result = (|| {
        let mut round = 0;
        while round < rounds || start.elapsed() < min_time {
            stream.push(q, 100)?;
            stream.reap_all(q)?;
            round += 1;
        }
        Ok::<(), String>(())
    })();
    stop.store(true, Ordering::Relaxed);
    let churned = churner.join().map_err(|_| "churn thread panicked")?;
    for t in toucher_threads {
        t.join().map_err(|_| "a thread touching the ring saw a wrong header")?;
    }
    result?;
    if stream.tally.faulted == 0 {
        stream.verify(name)?;
    }
    Ok((stream.tally, churned, touches.load(Ordering::Relaxed)))
}
