//! The one check after every case or scenario: it left nothing behind.
//!
//! - Pins: the pages pinned with `pin_user_pages*()` and not released
//!   (`/proc/vmstat`) are back to the baseline.
//! - The driver's `pages_pinned` (sysfs, summed over the devices) is back
//!   to its baseline.
//! - No new kernel splat since the last check (`/dev/kmsg`, the patterns of
//!   `vm/splat-patterns.txt`, as `vm/run.sh`).
//! - Optionally, a kmemleak scan finds nothing (when debugfs has kmemleak).
//!
//! Exiting processes and the engine release pins asynchronously (queues of
//! exited processes are released by deferred work), so the pin checks wait
//! up to a settle time for the counters to come back.

use std::time::{Duration, Instant};

use crate::kmsg::KernelLog;
use crate::pins::{driver_pages_pinned, PinCounts};

/// The kmemleak control file in debugfs.
pub const KMEMLEAK: &str = "/sys/kernel/debug/kmemleak";

/// Baselines and the kernel log position for [`Check::after_case`].
pub struct Check {
    pins: i128,
    driver: u64,
    log: KernelLog,
    kmemleak: bool,
    settle: Duration,
}

impl Check {
    /// Takes the baselines now (pins outstanding, the driver's
    /// `pages_pinned`) and reads the kernel log from now on; settle time
    /// 10 s, no kmemleak scan.
    ///
    /// # Errors
    ///
    /// `/proc/vmstat`, sysfs or `/dev/kmsg` unreadable.
    pub fn new() -> Result<Check, String> {
        let pins = PinCounts::read().map_err(|e| format!("/proc/vmstat: {e}"))?.outstanding();
        let driver = driver_pages_pinned()?;
        let log = KernelLog::from_now().map_err(|e| format!("/dev/kmsg: {e}"))?;
        Ok(Check { pins, driver, log, kmemleak: false, settle: Duration::from_secs(10) })
    }

    /// As [`Check::new`], but the baselines are zero: nothing pinned at all
    /// (nothing but warpq pins pages in the guest).
    ///
    /// # Errors
    ///
    /// As [`Check::new`].
    pub fn zero() -> Result<Check, String> {
        Ok(Check { pins: 0, driver: 0, ..Check::new()? })
    }

    /// Whether [`Check::after_case`] also runs a kmemleak scan (about 6 s:
    /// kmemleak ignores objects younger than 5 s).
    pub fn with_kmemleak(mut self, on: bool) -> Check {
        self.kmemleak = on;
        self
    }

    /// How long the pin checks wait for the counters to come back.
    pub fn with_settle(mut self, settle: Duration) -> Check {
        self.settle = settle;
        self
    }

    /// Pins outstanding at the baseline.
    pub fn pin_baseline(&self) -> i128 {
        self.pins
    }

    /// Runs every check; `Err` lists each one that failed.
    pub fn after_case(&mut self) -> Result<(), String> {
        let mut problems = Vec::new();
        if let Err(e) = self.pins_back() {
            problems.push(e);
        }
        if self.kmemleak {
            if let Err(e) = kmemleak_scan() {
                problems.push(e);
            }
        }
        let splats = self.log.new_splats();
        if let Some(first) = splats.first() {
            problems.push(format!("{} kernel splat lines, first: {first}", splats.len()));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    /// Waits up to the settle time for both pin counts to be back at their
    /// baselines.
    pub fn pins_back(&self) -> Result<(), String> {
        let start = Instant::now();
        loop {
            let pins = PinCounts::read().map_err(|e| format!("/proc/vmstat: {e}"))?.outstanding();
            let driver = driver_pages_pinned()?;
            if pins == self.pins && driver == self.driver {
                return Ok(());
            }
            if start.elapsed() > self.settle {
                let mut e = Vec::new();
                if pins != self.pins {
                    e.push(format!(
                        "{} pages still pinned (vmstat: {pins} outstanding, {} at the baseline)",
                        pins - self.pins,
                        self.pins
                    ));
                }
                if driver != self.driver {
                    e.push(format!("the driver counts {driver} pages_pinned ({} at the baseline)", self.driver));
                }
                return Err(format!("after {:?}: {}", self.settle, e.join(", ")));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A kmemleak scan (nothing to do where kmemleak is absent); clears what it
/// found so the next scan starts clean. Waits 6 s first: objects younger
/// than 5 s are not reported.
pub fn kmemleak_scan() -> Result<(), String> {
    if !std::path::Path::new(KMEMLEAK).exists() {
        return Ok(());
    }
    std::thread::sleep(Duration::from_secs(6));
    std::fs::write(KMEMLEAK, "scan").map_err(|e| format!("kmemleak scan: {e}"))?;
    let report = std::fs::read_to_string(KMEMLEAK).map_err(|e| format!("kmemleak: {e}"))?;
    let _ = std::fs::write(KMEMLEAK, "clear");
    match report.lines().find(|l| l.contains("unreferenced object")) {
        None => Ok(()),
        Some(first) => {
            Err(format!("kmemleak: {} leaks, first: {first}", report.matches("unreferenced object").count()))
        }
    }
}
