//! The churn operations: each runs on its own thread against the lower half
//! of the scenario's buffer until `stop`, and returns how many operations
//! it did.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::{interval, madvise, mprotect, write_file, Aligned, HALF};
use crate::harness;
use crate::Anon;

pub(super) fn churn_dontneed(r: &Aligned, stop: &AtomicBool) -> u64 {
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        madvise(r.base, HALF, libc::MADV_DONTNEED);
        n += 1;
        std::thread::sleep(interval());
    }
    n
}

pub(super) fn churn_pageout(r: &Aligned, stop: &AtomicBool) -> u64 {
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

pub(super) fn churn_mprotect(r: &Aligned, stop: &AtomicBool) -> u64 {
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

pub(super) fn churn_thp(r: &Aligned, stop: &AtomicBool) -> u64 {
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

pub(super) fn churn_ksm(r: &Aligned, stop: &AtomicBool) -> u64 {
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

pub(super) fn churn_compact(_r: &Aligned, stop: &AtomicBool) -> u64 {
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        write_file("/proc/sys/vm/compact_memory", "1");
        n += 1;
        std::thread::sleep(Duration::from_millis(10));
    }
    n
}

pub(super) fn churn_fork(r: &Aligned, stop: &AtomicBool) -> u64 {
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        // The child writes its own copy of the lower half and exits.
        let child = harness::spawn(|| {
            // SAFETY: the child's private copy.
            unsafe { std::ptr::write_bytes(r.base, 0xcc, HALF) };
            0
        });
        if let Ok(child) = child {
            child.wait(Duration::MAX);
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

pub(super) fn churn_mremap(r: &Aligned, stop: &AtomicBool) -> u64 {
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

pub(super) fn churn_fork_flags(r: &Aligned, stop: &AtomicBool) -> u64 {
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let (set, unset) = if n % 2 == 0 {
            (libc::MADV_DONTFORK, libc::MADV_DOFORK)
        } else {
            (libc::MADV_WIPEONFORK, libc::MADV_KEEPONFORK)
        };
        madvise(r.base, HALF, set);
        // The child checks its view of the lower half and exits.
        let child = harness::spawn(|| {
            // WIPEONFORK: the child's copy reads as zeroes (DONTFORK: the
            // child has no mapping there, so it does not look).
            // SAFETY: mapped and readable in the child under WIPEONFORK.
            let ok = set == libc::MADV_DONTFORK || unsafe { std::ptr::read_volatile(r.base.add(4096)) } == 0;
            i32::from(!ok)
        });
        if let Ok(child) = child {
            assert!(child.wait(Duration::MAX).success(), "WIPEONFORK child saw old data");
        }
        madvise(r.base, HALF, unset);
        n += 1;
        std::thread::sleep(interval());
    }
    n
}

pub(super) fn churn_pressure(_r: &Aligned, stop: &AtomicBool) -> u64 {
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

pub(super) fn churn_unrelated(_r: &Aligned, stop: &AtomicBool) -> u64 {
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
