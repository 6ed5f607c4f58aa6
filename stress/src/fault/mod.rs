//! Allocation failures injected, one by one, into every allocation a path
//! of the driver makes: the fail-nth sweep of the kernel's
//! `iommufd_fail_nth` selftest (its `TEST_FAIL_NTH`), for any path.
//!
//! How: [`limit_to_module`] limits `failslab` and `fail_page_alloc` (debugfs
//! `require-start`/`require-end`) to call stacks that pass through the
//! module's text, so only the driver's own allocations (its objects, the
//! pages it pins, the IOMMU tables it fills) count. [`fail_nth`] then runs a
//! [`Path`] for n = 1, 2, ...: the path arms `/proc/thread-self/fail-nth`
//! with n around its operation ([`armed`], or [`armed_in_child`] for an
//! operation that needs a process of its own) and reads it back: 0 means
//! the n-th allocation failed. The path must then fail with a clean error
//! (an errno from its set, or SIGBUS for a touch of the ring) or absorb the
//! failure by retrying; either way the device must work again at once (each
//! path checks that itself), and no pin may be left behind (checked after
//! the sweep). The sweep of a path ends at the first n its run does not
//! reach. The kernel log (no splat) and kmemleak are the caller's check.
//!
//! The driver's own paths are in [`paths`]; `warpq-fault-inject` lists them.

pub mod paths;

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::time::Duration;

use crate::harness::{run_case, Exit};
use crate::PinCounts;

const FAIL_NTH: &str = "/proc/thread-self/fail-nth";

/// How long a child of [`armed_in_child`] may take.
const CHILD_LIMIT: Duration = Duration::from_secs(120);

/// `/proc/thread-self/fail-nth` of the calling thread (the file cannot
/// seek: each read opens it again).
pub struct FailNth(File);

impl FailNth {
    /// Opens the calling thread's fail-nth file.
    ///
    /// # Errors
    ///
    /// The kernel has no `CONFIG_FAULT_INJECTION`.
    pub fn open() -> Result<FailNth, String> {
        OpenOptions::new()
            .write(true)
            .open(FAIL_NTH)
            .map(FailNth)
            .map_err(|e| format!("{FAIL_NTH}: {e} (CONFIG_FAULT_INJECTION?)"))
    }

    /// The n-th injectable allocation of this thread from now on fails.
    pub fn arm(&mut self, n: u32) {
        self.0.write_all(n.to_string().as_bytes()).expect("write fail-nth");
    }

    /// Whether the armed failure happened; disarms.
    pub fn disarm(&mut self) -> bool {
        let mut s = String::new();
        File::open(FAIL_NTH).and_then(|mut f| f.read_to_string(&mut s)).expect("read fail-nth");
        self.0.write_all(b"0").expect("write fail-nth");
        s.trim() == "0"
    }
}

/// Limits failslab and fail_page_alloc to stacks through `module`'s text,
/// for sleeping allocations and order-0 pages too (both skip those by
/// default); returns the text's address range.
///
/// # Errors
///
/// The module is not loaded, its address is hidden, or debugfs refuses.
pub fn limit_to_module(module: &str) -> Result<(u64, u64), String> {
    let modules = std::fs::read_to_string("/proc/modules").map_err(|e| format!("/proc/modules: {e}"))?;
    let line = modules
        .lines()
        .find(|l| l.split_whitespace().next() == Some(module))
        .ok_or_else(|| format!("{module}.ko is not loaded"))?;
    let fields: Vec<&str> = line.split_whitespace().collect();
    let size: u64 = fields.get(1).and_then(|s| s.parse().ok()).ok_or("no module size in /proc/modules")?;
    let text = std::fs::read_to_string(format!("/sys/module/{module}/sections/.text"))
        .map_err(|e| format!("{module} .text: {e}"))?;
    let start =
        u64::from_str_radix(text.trim().trim_start_matches("0x"), 16).map_err(|e| format!(".text address: {e}"))?;
    if start == 0 {
        return Err("the module's address is hidden (kptr_restrict)".into());
    }
    let end = start + size;
    let set = |attr: &str, file: &str, value: String| -> Result<(), String> {
        std::fs::write(format!("/sys/kernel/debug/{attr}/{file}"), value).map_err(|e| format!("{attr}/{file}: {e}"))
    };
    for attr in ["failslab", "fail_page_alloc"] {
        set(attr, "require-start", start.to_string())?;
        set(attr, "require-end", end.to_string())?;
        set(attr, "stacktrace-depth", "32".into())?;
        set(attr, "ignore-gfp-wait", "N".into())?;
        set(attr, "verbose", "1".into())?;
    }
    set("fail_page_alloc", "ignore-gfp-highmem", "N".into())?;
    set("fail_page_alloc", "min-order", "0".into())?;
    Ok((start, end))
}

/// How one armed run of a path ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The call succeeded.
    Ok,
    /// It failed with this errno.
    Errno(i32),
    /// A touch of the ring raised SIGBUS (the fault path's error).
    Sigbus,
}

impl Outcome {
    /// `Ok`, or the errno of a failed call of the user crate.
    pub fn of<T>(r: &Result<T, warpq::Error>) -> Outcome {
        match r {
            Ok(_) => Outcome::Ok,
            Err(e) => Outcome::Errno(e.errno().unwrap_or(-1)),
        }
    }
}

/// A path of the driver under the sweep.
pub struct Path {
    /// Its name on the command line and in the report.
    pub name: &'static str,
    /// The errnos it may fail with when an allocation fails.
    pub allowed: &'static [i32],
    /// Whether the path allocates at all (unregistering only frees).
    pub allocates: bool,
    /// One armed run; must leave nothing behind for the next run.
    pub run: PathRun,
}

/// One armed run of a path with fail-nth at n: how it ended, and whether
/// the n-th allocation was reached (and failed).
pub type PathRun = fn(&mut FailNth, u32) -> Result<(Outcome, bool), String>;

/// Sets up with `setup` (not armed), runs `op` armed with n, disarms;
/// returns the set-up state, what `op` returned and whether the n-th
/// allocation failed.
pub fn armed<T, R>(
    fail: &mut FailNth,
    n: u32,
    setup: impl FnOnce() -> Result<T, String>,
    op: impl FnOnce(&T) -> R,
) -> Result<(T, R, bool), String> {
    let state = setup()?;
    fail.arm(n);
    let r = op(&state);
    let injected = fail.disarm();
    Ok((state, r, injected))
}

/// Runs `op` in a child process with its own fail-nth file (for an
/// operation that must happen in a fresh process, or that may be killed by
/// SIGBUS) and returns what it returned. A child killed by SIGBUS counts as
/// [`Outcome::Sigbus`] with the failure injected (it was killed before it
/// could report: the touch itself hit the failure).
pub fn armed_in_child(
    op: impl FnOnce(&mut FailNth) -> Result<(Outcome, bool), String>,
) -> Result<(Outcome, bool), String> {
    let case = run_case(CHILD_LIMIT, || {
        let mut fail = FailNth::open()?;
        let (outcome, injected) = op(&mut fail)?;
        let code = match outcome {
            Outcome::Ok => "ok".to_string(),
            Outcome::Errno(e) => e.to_string(),
            Outcome::Sigbus => "sigbus".to_string(),
        };
        Ok(format!("{code} {injected}"))
    });
    if case.exit == Exit::Signal(libc::SIGBUS) {
        return Ok((Outcome::Sigbus, true));
    }
    let msg = case.result.map_err(|e| format!("child: {e}"))?;
    let parsed = msg.split_once(' ').and_then(|(code, injected)| {
        let outcome = match code {
            "ok" => Outcome::Ok,
            "sigbus" => Outcome::Sigbus,
            e => Outcome::Errno(e.parse().ok()?),
        };
        Some((outcome, injected.parse().ok()?))
    });
    parsed.ok_or_else(|| format!("child: garbled report {msg:?}"))
}

/// What a sweep of one path saw.
#[derive(Debug, Default)]
pub struct Sweep {
    /// Runs in which the n-th allocation was reached and failed.
    pub injected: u64,
    /// Of those, runs that failed with an allowed errno.
    pub errors: u64,
    /// Runs that succeeded anyway (the path retried).
    pub absorbed: u64,
    /// Runs that ended in SIGBUS.
    pub sigbus: u64,
    /// The allowed errnos seen, by name.
    pub errnos: BTreeMap<&'static str, u64>,
}

impl fmt::Display for Sweep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Sweep { injected, errors, absorbed, sigbus, errnos } = self;
        write!(
            f,
            "{injected} injection points: {errors} clean errors {errnos:?}, {absorbed} absorbed by a retry, {sigbus} SIGBUS; device works after each; pins balanced"
        )
    }
}

/// The sweep: runs `path` with fail-nth at n = 1, 2, ... up to `max`, until
/// a run does not reach its n-th allocation; then checks every pin is back.
/// Returns what it saw (up to a failure too) and the verdict.
///
/// The verdict fails if a run failed (its message), failed with an errno
/// outside the path's set or while nothing was injected, a path that must
/// not allocate did, a path that must allocate never reached an allocation
/// (the stack filter is wrong), `max` was too small, or pins stayed behind.
pub fn fail_nth(path: &Path, fail: &mut FailNth, max: u32) -> (Sweep, Result<(), String>) {
    let mut sweep = Sweep::default();
    let verdict = sweep_into(&mut sweep, path, fail, max);
    (sweep, verdict)
}

fn sweep_into(sweep: &mut Sweep, path: &Path, fail: &mut FailNth, max: u32) -> Result<(), String> {
    let mut reached_end = false;
    for n in 1..=max {
        let (outcome, hit) = (path.run)(fail, n).map_err(|e| format!("n={n}: {e}"))?;
        if !hit {
            if outcome != Outcome::Ok {
                return Err(format!("n={n}: nothing injected, yet it failed: {outcome:?}"));
            }
            reached_end = true;
            break;
        }
        sweep.injected += 1;
        match outcome {
            Outcome::Ok => sweep.absorbed += 1,
            Outcome::Sigbus => sweep.sigbus += 1,
            Outcome::Errno(e) if path.allowed.contains(&e) => {
                sweep.errors += 1;
                *sweep.errnos.entry(warpq::errno_name(e).unwrap_or("?")).or_insert(0) += 1;
            }
            Outcome::Errno(e) => {
                return Err(format!(
                    "n={n}: failed with errno {e} ({}), not one of {:?}",
                    warpq::errno_name(e).unwrap_or("?"),
                    path.allowed
                ));
            }
        }
    }
    if sweep.injected > 0 && !path.allocates {
        return Err(format!("{} allocations where none were expected", sweep.injected));
    }
    if !reached_end {
        return Err(format!("more than {max} injection points: raise --max"));
    }
    if sweep.injected == 0 && path.allocates {
        return Err("no allocation of the driver was reached: the stack filter is wrong".into());
    }
    PinCounts::wait_balanced(Duration::from_secs(10)).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in for the fail-nth file (the paths below never arm it).
    fn fake() -> FailNth {
        FailNth(File::open("/dev/null").unwrap())
    }

    fn path(allocates: bool, run: PathRun) -> Path {
        Path { name: "test", allowed: &[libc::ENOMEM], allocates, run }
    }

    #[test]
    fn verdicts_before_the_pin_check() {
        // Fails with an errno outside its set at n = 2.
        let p = path(true, |_, n| Ok((if n == 2 { Outcome::Errno(libc::EINVAL) } else { Outcome::Ok }, true)));
        let (sweep, verdict) = fail_nth(&p, &mut fake(), 10);
        assert!(verdict.unwrap_err().starts_with("n=2: failed with errno 22 (EINVAL)"));
        assert_eq!((sweep.injected, sweep.absorbed), (2, 1));
        // Fails although nothing was injected.
        let p = path(true, |_, _| Ok((Outcome::Errno(libc::ENOMEM), false)));
        assert!(fail_nth(&p, &mut fake(), 10).1.unwrap_err().contains("nothing injected, yet it failed"));
        // Allocates where it must not.
        let p = path(false, |_, n| Ok(if n < 3 { (Outcome::Errno(libc::ENOMEM), true) } else { (Outcome::Ok, false) }));
        let (sweep, verdict) = fail_nth(&p, &mut fake(), 10);
        assert_eq!(verdict, Err("2 allocations where none were expected".into()));
        assert_eq!(sweep.errnos.get("ENOMEM"), Some(&2));
        // More injection points than `max`.
        let p = path(true, |_, _| Ok((Outcome::Sigbus, true)));
        assert!(fail_nth(&p, &mut fake(), 5).1.unwrap_err().contains("raise --max"));
        // Never reaches an allocation.
        let p = path(true, |_, _| Ok((Outcome::Ok, false)));
        assert!(fail_nth(&p, &mut fake(), 5).1.unwrap_err().contains("stack filter is wrong"));
        // A run's own error, with its n.
        let p = path(true, |_, n| if n == 3 { Err("broken".into()) } else { Ok((Outcome::Ok, true)) });
        assert_eq!(fail_nth(&p, &mut fake(), 5).1, Err("n=3: broken".into()));
    }
}
