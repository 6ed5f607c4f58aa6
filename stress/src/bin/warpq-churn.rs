//! warpq-churn: address-space churn while the device works.
//!
//! `warpq-churn [SCENARIO...] [--rounds N] [--interval-ms MS]` (default: all
//! scenarios, 6 rounds of 100 commands each and at least 5 churn intervals
//! per round, a churn operation every 100 ms).
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
//! Scenarios: `dontneed`, `pageout` (PAGEOUT and COLD), `mprotect`, `thp`
//! (MADV_HUGEPAGE, MADV_COLLAPSE, splits), `ksm` (MADV_MERGEABLE over
//! identical pages), `compact`, `fork`, `unrelated` (mmap/mprotect/munmap of
//! other memory, clear_refs), `fault-threads` (threads racing faults on the
//! ring), `mremap` (move away and back, shrink and grow in place),
//! `fork-flags` (DONTFORK and WIPEONFORK across forks), `pressure`
//! (`stress-ng --vm` alongside, and compaction).
//!
//! One line per scenario with its figures; exit status non-zero on failure.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use warpq::sys::*;
use warpq::Device;
use warpq_stress::stream::{push_all, reap, sqe, Stream};
use warpq_stress::Anon;

const MIB: usize = 1 << 20;

/// Pause between churn operations (`--interval-ms`, default 100). A buffer
/// invalidated faster than it can be re-pinned starves its queue (the seed
/// design's known weakness): the tests churn at a rate a rebuild can follow.
static INTERVAL_MS: AtomicU64 = AtomicU64::new(100);

/// Commands completed OK and verified, over all scenarios (the `figures:`
/// line for `warpq-stress-suite`).
static VERIFIED: AtomicU64 = AtomicU64::new(0);

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

fn churn_dontneed(r: &Aligned, stop: &AtomicBool) -> u64 {
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        madvise(r.base, HALF, libc::MADV_DONTNEED);
        n += 1;
        std::thread::sleep(interval());
    }
    n
}

fn churn_pageout(r: &Aligned, stop: &AtomicBool) -> u64 {
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: touch the lower half so there is something to reclaim.
        unsafe { std::ptr::write_bytes(r.base, n as u8, HALF) };
        madvise(r.base, HALF, if n % 2 == 0 { libc::MADV_PAGEOUT } else { libc::MADV_COLD });
        n += 1;
        std::thread::sleep(interval());
    }
    n
}

fn churn_mprotect(r: &Aligned, stop: &AtomicBool) -> u64 {
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let prot = if n % 2 == 0 { libc::PROT_READ } else { libc::PROT_NONE };
        mprotect(r.base, HALF, prot);
        std::thread::sleep(Duration::from_millis(3));
        mprotect(r.base, HALF, libc::PROT_READ | libc::PROT_WRITE);
        n += 1;
        std::thread::sleep(interval());
    }
    n
}

fn churn_thp(r: &Aligned, stop: &AtomicBool) -> u64 {
    let mut n = 0;
    madvise(r.base, 2 * HALF, libc::MADV_HUGEPAGE);
    while !stop.load(Ordering::Relaxed) {
        // Collapse attempts (pinned pages make them fail, which is fine) and
        // splits: dropping one page of a huge page splits it.
        madvise(r.base, HALF, 25 /* MADV_COLLAPSE */);
        madvise(r.base.wrapping_add(4096 * (1 + n as usize % 200)), 4096, libc::MADV_DONTNEED);
        n += 1;
        std::thread::sleep(interval());
    }
    n
}

fn churn_ksm(r: &Aligned, stop: &AtomicBool) -> u64 {
    write_file("/sys/kernel/mm/ksm/pages_to_scan", "10000");
    write_file("/sys/kernel/mm/ksm/sleep_millisecs", "1");
    write_file("/sys/kernel/mm/ksm/run", "1");
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        // Identical pages in the lower half: KSM may merge them (not the
        // pinned upper half's pages: KSM skips pages that may be pinned).
        // SAFETY: our own memory.
        unsafe { std::ptr::write_bytes(r.base, 0x5a, HALF) };
        madvise(r.base, 2 * HALF, libc::MADV_MERGEABLE);
        std::thread::sleep(interval());
        madvise(r.base, 2 * HALF, libc::MADV_UNMERGEABLE);
        n += 1;
    }
    write_file("/sys/kernel/mm/ksm/run", "2");
    n
}

fn churn_compact(_r: &Aligned, stop: &AtomicBool) -> u64 {
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        write_file("/proc/sys/vm/compact_memory", "1");
        n += 1;
        std::thread::sleep(Duration::from_millis(10));
    }
    n
}

fn churn_fork(r: &Aligned, stop: &AtomicBool) -> u64 {
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: the child writes its own copy of the lower half and exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: the child's private copy.
            unsafe { std::ptr::write_bytes(r.base, 0xcc, HALF) };
            // SAFETY: leave the child.
            unsafe { libc::_exit(0) };
        }
        if pid > 0 {
            let mut status = 0;
            // SAFETY: our child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
        }
        n += 1;
    }
    n
}

fn mremap(old: *mut u8, old_len: usize, new_len: usize, flags: i32, new: *mut u8) -> *mut libc::c_void {
    // SAFETY: remapping our own mappings; the region stays referred to by
    // raw pointers only.
    unsafe { libc::mremap(old.cast(), old_len, new_len, flags, new) }
}

fn churn_mremap(r: &Aligned, stop: &AtomicBool) -> u64 {
    // A place to move the lower half to (mremap with MREMAP_FIXED replaces it).
    let scratch = Anon::new(HALF);
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        if n % 2 == 0 {
            // Move the lower half away and back.
            let fixed = libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED;
            mremap(r.base, HALF, HALF, fixed, scratch.ptr());
            mremap(scratch.ptr(), HALF, HALF, fixed, r.base);
        } else {
            // Shrink it by a page, then grow it back in place.
            mremap(r.base, HALF, HALF - 4096, 0, std::ptr::null_mut());
            mremap(r.base, HALF - 4096, HALF, 0, std::ptr::null_mut());
        }
        n += 1;
        std::thread::sleep(interval());
    }
    n
}

fn churn_fork_flags(r: &Aligned, stop: &AtomicBool) -> u64 {
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let (set, unset) = if n % 2 == 0 {
            (libc::MADV_DONTFORK, libc::MADV_DOFORK)
        } else {
            (libc::MADV_WIPEONFORK, libc::MADV_KEEPONFORK)
        };
        madvise(r.base, HALF, set);
        // SAFETY: the child checks its view of the lower half and exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // WIPEONFORK: the child's copy reads as zeroes (DONTFORK: the
            // child has no mapping there, so it does not look).
            // SAFETY: mapped and readable in the child under WIPEONFORK.
            let ok = set == libc::MADV_DONTFORK || unsafe { std::ptr::read_volatile(r.base.add(4096)) } == 0;
            // SAFETY: leave the child.
            unsafe { libc::_exit(i32::from(!ok)) };
        }
        if pid > 0 {
            let mut status = 0;
            // SAFETY: our child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "WIPEONFORK child saw old data");
        }
        madvise(r.base, HALF, unset);
        n += 1;
        std::thread::sleep(interval());
    }
    n
}

fn churn_pressure(_r: &Aligned, stop: &AtomicBool) -> u64 {
    // Memory pressure from stress-ng alongside (reclaim, compaction,
    // migration of movable pages), plus explicit compaction.
    let mut hog = std::process::Command::new("stress-ng")
        .args(["--vm", "1", "--vm-bytes", "40%", "--vm-keep", "--timeout", "3600", "--quiet"])
        .spawn()
        .expect("start stress-ng --vm");
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        write_file("/proc/sys/vm/compact_memory", "1");
        n += 1;
        std::thread::sleep(interval());
    }
    let _ = hog.kill();
    let _ = hog.wait();
    n
}

fn churn_unrelated(_r: &Aligned, stop: &AtomicBool) -> u64 {
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let other = Anon::new(64 * 4096);
        other.write(&[1u8; 4096]);
        mprotect(other.ptr(), other.len(), libc::PROT_READ);
        drop(other);
        // SOFT_DIRTY invalidations across the whole address space.
        write_file("/proc/self/clear_refs", "4");
        n += 1;
        std::thread::sleep(Duration::from_millis(2));
    }
    n
}

/// Runs `rounds` rounds of the stream on the upper half of a fresh buffer
/// while `churn` runs on another thread; returns a report line.
fn run(dev: &Device, name: &str, churn: Churn, rounds: u64, faults_allowed: bool, fault_threads: bool) -> Result<String, String> {
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
    let hs = unsafe { dev.register_raw(src.ptr(), src.len(), WARPQ_ACCESS_READ) }.map_err(|e| format!("register src: {e}"))?;
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
        "{name}: {} commands ({} ok, {} faulted, {} aborted), {churned} churn ops{}; invalidations {}, ignored {}, teardowns {}, rebuilds {} (+{} retries), zaps {}",
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
) -> Result<(warpq_stress::stream::Tally, u64, u64), String> {
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

fn main() -> ExitCode {
    let scenarios: [(&str, Churn, bool, bool); 12] = [
        ("dontneed", churn_dontneed, false, false),
        ("pageout", churn_pageout, false, false),
        ("mprotect", churn_mprotect, true, false),
        ("thp", churn_thp, false, false),
        ("ksm", churn_ksm, false, false),
        ("compact", churn_compact, false, false),
        ("fork", churn_fork, false, false),
        ("unrelated", churn_unrelated, false, false),
        ("fault-threads", churn_dontneed, false, true),
        ("mremap", churn_mremap, true, false),
        ("fork-flags", churn_fork_flags, false, false),
        ("pressure", churn_pressure, false, false),
    ];
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut rounds = 6;
    if let Some(i) = args.iter().position(|a| a == "--interval-ms") {
        if let Some(ms) = args.get(i + 1).and_then(|n| n.parse().ok()) {
            INTERVAL_MS.store(ms, Ordering::Relaxed);
        }
        args.drain(i..(i + 2).min(args.len()));
    }
    if let Some(i) = args.iter().position(|a| a == "--rounds") {
        rounds = args.get(i + 1).and_then(|n| n.parse().ok()).unwrap_or(rounds);
        args.drain(i..(i + 2).min(args.len()));
    }
    let dev = match Device::open("/dev/warpq0") {
        Ok(d) => d,
        Err(e) => {
            println!("FAIL: open /dev/warpq0: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (mut passed, mut failed) = (0, 0);
    for (name, churn, faults_allowed, threads) in scenarios {
        if !args.is_empty() && !args.iter().any(|a| a == name) {
            continue;
        }
        match run(&dev, name, churn, rounds, faults_allowed, threads) {
            Ok(line) => {
                println!("ok: {line}");
                passed += 1;
            }
            Err(e) => {
                println!("FAIL: {name}: {e}");
                failed += 1;
            }
        }
    }
    println!("figures: commands={}", VERIFIED.load(Ordering::Relaxed));
    println!("warpq-churn: {passed} scenarios ok, {failed} failed");
    if failed == 0 && passed > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
