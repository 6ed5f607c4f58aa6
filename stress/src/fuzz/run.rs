//! Running cases: the seeded runs, `--replay` and `--shrink`; the
//! watchdog and the fatal-signal report; saving a failing run's operations.

use std::ffi::CString;
use std::io::Write as _;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use warpq::sys::*;

use super::gen::{generate, splitmix};
use super::model::{Cfg, Counters, World};
use super::op::{Case, Op};
use super::shrink::{shrink_case, Budget};
use super::sys::{ename, errno, sys_ioctl, InfoBuf, StatsBuf};
use super::text::{parse_case, parse_num, print_case};
use super::{INFO_V1, STATS_V1};
use crate::check::Check;
use crate::harness;
use crate::report::Report;

// ---- state shared with the signal handler and the watchdog ----------------

static START: OnceLock<Instant> = OnceLock::new();
pub(crate) static CUR_SEED: AtomicU64 = AtomicU64::new(0);
pub(crate) static CUR_STEP: AtomicU64 = AtomicU64::new(0);
pub(crate) static CUR_ACT: AtomicU32 = AtomicU32::new(0);
/// Milliseconds since START when the current step began (0: between steps).
static STEP_T0: AtomicU64 = AtomicU64::new(0);
static HANG_MS: AtomicU64 = AtomicU64::new(30_000);
pub(crate) static IN_CHILD: AtomicBool = AtomicBool::new(false);
/// Children print nothing (shrinking runs hundreds of candidates).
pub(crate) static QUIET: AtomicBool = AtomicBool::new(false);
/// The case running now and where to save it, for the watchdog.
static RUNNING: Mutex<Option<(Case, String)>> = Mutex::new(None);

fn now_ms() -> u64 {
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// The command line.
pub struct Opts {
    /// First seed (run `i` uses `seed + i`).
    pub seed: u64,
    /// Runs.
    pub runs: u64,
    /// Random operations per run (after the four of the setup).
    pub steps: u64,
    /// Seconds for all runs (default 100), or for shrinking (default 600).
    pub seconds: Option<f64>,
    /// The device (default: the first warpq device).
    pub device: Option<String>,
    /// Apply this operations file once.
    pub replay: Option<String>,
    /// Shrink this operations file.
    pub shrink: Option<String>,
    /// Where failing runs' operations files go.
    pub save_dir: String,
}

/// How to call the program.
pub const USAGE: &str = "usage: warpq-fuzz [--seed S] [--runs N] [--steps K] [--seconds T] [--device PATH] [--save-dir DIR]\n       warpq-fuzz --replay FILE [--device PATH]\n       warpq-fuzz --shrink FILE [--seconds T] [--device PATH]";

impl Opts {
    /// Parses the arguments (without the program name).
    pub fn parse(args: impl Iterator<Item = String>) -> Result<Opts, String> {
        let clock = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        let mut o = Opts {
            seed: splitmix(clock) & 0xffff_ffff,
            runs: 20,
            steps: 300,
            seconds: None,
            device: None,
            replay: None,
            shrink: None,
            save_dir: "/tmp".into(),
        };
        let args: Vec<String> = args.collect();
        for pair in args.chunks(2) {
            let val = pair.get(1).cloned().ok_or_else(|| format!("{} needs a value", pair[0]))?;
            match pair[0].as_str() {
                "--seed" => o.seed = parse_num(&val).ok_or("bad --seed")?,
                "--runs" => o.runs = parse_num(&val).ok_or("bad --runs")?,
                "--steps" => o.steps = parse_num(&val).ok_or("bad --steps")?,
                "--seconds" => o.seconds = Some(val.parse().map_err(|_| "bad --seconds")?),
                "--device" => o.device = Some(val),
                "--replay" => o.replay = Some(val),
                "--shrink" => o.shrink = Some(val),
                "--save-dir" => o.save_dir = val,
                other => return Err(format!("unknown argument {other}")),
            }
        }
        if o.runs == 0 || o.seconds.is_some_and(|s| s <= 0.0) {
            return Err("--runs and --seconds must be positive".into());
        }
        Ok(o)
    }
}

/// A failed run: where, and what.
pub(crate) struct Failure {
    step: u64,
    op: &'static str,
    msg: String,
}

impl Failure {
    /// What "failing the same way" compares when shrinking: where it failed
    /// and the first line of the message, numbers blanked out.
    fn signature(&self) -> String {
        let first = self.msg.lines().next().unwrap_or("");
        let mut out = String::new();
        let mut in_num = false;
        for c in first.chars() {
            let digit = c.is_ascii_digit() || (in_num && (c.is_ascii_hexdigit() || c == 'x'));
            if digit && !in_num {
                out.push('#');
            } else if !digit {
                out.push(c);
            }
            in_num = digit;
        }
        format!("{}: {out}", self.op)
    }
}

/// What one run did.
pub(crate) struct Outcome {
    result: Result<Counters, Failure>,
    /// Operations applied (the failing one included).
    applied: usize,
}

/// Applies `case` in this process: its steps (stopping when `budget` is
/// used up), the finish, then the post-case check.
fn run_ops(cfg: &Cfg, case: &Case, budget: Duration, check: &mut Check, quiet: bool) -> Outcome {
    let start = Instant::now();
    let fail = |step, op, msg| Outcome { result: Err(Failure { step, op, msg }), applied: 0 };
    let mut w = match World::new(cfg, case.tag) {
        Ok(w) => w,
        Err(e) => return fail(0, "setup", e),
    };
    let mut applied = 0;
    let mut failed = None;
    for (i, op) in case.ops.iter().enumerate() {
        if matches!(op, Op::Finish { .. }) {
            break;
        }
        if start.elapsed() > budget {
            if !quiet {
                println!("fuzz: seed {:#018x}: time budget reached at step {i}", CUR_SEED.load(Ordering::Relaxed));
            }
            break;
        }
        w.step = i as u64;
        w.n.steps = i as u64 + 1;
        CUR_STEP.store(i as u64, Ordering::Relaxed);
        CUR_ACT.store(op.kind() as u32, Ordering::Relaxed);
        STEP_T0.store(now_ms(), Ordering::SeqCst);
        let r = w.apply(op).and_then(|()| w.after_step());
        STEP_T0.store(0, Ordering::SeqCst);
        applied = i + 1;
        if let Err(e) = r {
            failed = Some(Failure {
                step: i as u64,
                op: op.name(),
                msg: format!("{e}\n  the last steps:{}", w.history_text()),
            });
            break;
        }
    }
    let (abrupt, drain, unregister) = case
        .ops
        .iter()
        .rev()
        .find_map(|o| {
            if let Op::Finish { abrupt, drain, unregister } = o {
                Some((*abrupt, *drain, *unregister))
            } else {
                None
            }
        })
        .unwrap_or((true, 0, 0));
    CUR_ACT.store(Op::NAMES.iter().position(|n| *n == "finish").unwrap_or(0) as u32, Ordering::Relaxed);
    STEP_T0.store(now_ms(), Ordering::SeqCst);
    let cleanup = w.finish(abrupt || failed.is_some(), drain, unregister);
    STEP_T0.store(0, Ordering::SeqCst);
    let elapsed = start.elapsed().saturating_sub(w.child_wait);
    let after = check.after_case();
    let step = failed.as_ref().map_or(w.n.steps.saturating_sub(1), |f| f.step);
    let mut errs: Vec<Failure> = failed.into_iter().collect();
    if let Err(e) = cleanup {
        errs.push(Failure { step, op: "finish", msg: e });
    }
    let hang = Duration::from_millis(HANG_MS.load(Ordering::Relaxed));
    if elapsed > budget + hang {
        let msg = format!(
            "the run took {elapsed:?} (not counting {:?} waiting for children), over its budget of {budget:?} by more \
             than the hang limit {hang:?}",
            w.child_wait
        );
        errs.push(Failure { step, op: "run", msg });
    }
    if let Err(e) = after {
        errs.push(Failure { step, op: "post-case check", msg: e });
    }
    let result = match errs.len() {
        0 => Ok(w.n),
        _ => {
            let mut first = errs.remove(0);
            for e in errs {
                first.msg += &format!("\n  also ({}): {}", e.op, e.msg);
            }
            Err(first)
        }
    };
    Outcome { result, applied }
}

/// The operations a failing run applied, with its finish: what a replay
/// needs.
fn applied_case(case: &Case, applied: usize) -> Case {
    let mut ops: Vec<Op> = case.ops.iter().take(applied).filter(|o| !matches!(o, Op::Finish { .. })).cloned().collect();
    ops.extend(case.ops.iter().filter(|o| matches!(o, Op::Finish { .. })).cloned());
    Case { tag: case.tag, ops }
}

/// Writes `case` to `path` and prints it between markers (so that a file
/// made in the VM survives it).
fn save(case: &Case, path: &str, comments: &[String]) -> String {
    let text = print_case(case, comments);
    let saved = match std::fs::write(path, &text) {
        Ok(()) => format!("saved to {path}"),
        Err(e) => format!("not saved ({path}: {e})"),
    };
    println!("==WARPQ-FUZZ-OPS-BEGIN {path}==\n{text}==WARPQ-FUZZ-OPS-END==");
    format!("{} operations {saved}", Op::count(&case.ops))
}

fn ops_path(dir: &str, seed: u64) -> String {
    format!("{dir}/warpq-fuzz-{seed:#x}.ops")
}

// ---- the watchdog and fatal signals ----------------------------------------

fn watchdog() {
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let t0 = STEP_T0.load(Ordering::SeqCst);
        if t0 == 0 || now_ms().saturating_sub(t0) < HANG_MS.load(Ordering::Relaxed) {
            continue;
        }
        let pid = std::process::id();
        let stack = std::fs::read_to_string(format!("/proc/{pid}/stack")).unwrap_or_else(|e| format!("({e})"));
        let wchan = std::fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
        let seed = CUR_SEED.load(Ordering::SeqCst);
        let step = CUR_STEP.load(Ordering::SeqCst);
        let act = Op::NAMES[CUR_ACT.load(Ordering::SeqCst) as usize % Op::NAMES.len()];
        println!(
            "fuzz: seed {seed:#018x} FAILED at step {step} ({act}): hang: the step has not returned after {} ms; wchan {wchan}; kernel stack:\n{stack}",
            now_ms() - t0
        );
        if let Ok(Some((case, dir))) = RUNNING.try_lock().as_deref() {
            let path = ops_path(dir, seed);
            let what = save(
                &applied_case(case, step as usize + 1),
                &path,
                &[format!("seed {seed:#x}: hang at step {step} ({act})")],
            );
            println!("fuzz: {what}; replay with: warpq-fuzz --replay {path}");
        }
        let _ = std::io::stdout().flush();
        // SAFETY: give up the whole process: the fuzzer is stuck.
        unsafe { libc::_exit(2) };
    }
}

/// SIGSEGV/SIGBUS: say where, then exit (async-signal-safe: no allocation).
extern "C" fn on_fatal(sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    let mut buf = [0u8; 256];
    let mut n = 0;
    let mut put = |s: &[u8]| {
        for &b in s {
            if n < buf.len() {
                buf[n] = b;
                n += 1;
            }
        }
    };
    let hex = |v: u64, put: &mut dyn FnMut(&[u8])| {
        let mut d = [0u8; 18];
        d[0] = b'0';
        d[1] = b'x';
        for i in 0..16 {
            let nib = ((v >> (60 - 4 * i)) & 0xf) as u8;
            d[2 + i] = if nib < 10 { b'0' + nib } else { b'a' + nib - 10 };
        }
        put(&d);
    };
    put(b"fuzz: seed ");
    hex(CUR_SEED.load(Ordering::Relaxed), &mut put);
    put(if IN_CHILD.load(Ordering::Relaxed) { b" child" } else { b"" });
    put(b" FAILED at step ");
    let mut step = CUR_STEP.load(Ordering::Relaxed);
    let mut digits = [0u8; 20];
    let mut k = digits.len();
    loop {
        k -= 1;
        digits[k] = b'0' + (step % 10) as u8;
        step /= 10;
        if step == 0 {
            break;
        }
    }
    put(&digits[k..]);
    put(b" (");
    put(Op::NAMES[CUR_ACT.load(Ordering::Relaxed) as usize % Op::NAMES.len()].as_bytes());
    put(if sig == libc::SIGBUS { b"): SIGBUS at " } else { b"): SIGSEGV at " });
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let addr = unsafe { (*info).si_addr() } as u64;
    hex(addr, &mut put);
    put(b"\n");
    // SAFETY: write(2) and _exit(2) are async-signal-safe.
    unsafe {
        libc::write(1, buf.as_ptr().cast(), n);
        libc::_exit(3);
    }
}

fn install_handlers() {
    // SAFETY: installs a handler that only uses async-signal-safe calls.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_fatal as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESETHAND;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGSEGV, &sa, std::ptr::null_mut());
        libc::sigaction(libc::SIGBUS, &sa, std::ptr::null_mut());
    }
}

// ---- the device ------------------------------------------------------------

fn probe(o: &Opts) -> Result<Cfg, String> {
    let devs = warpq::devices().unwrap_or_default();
    let named = devs.iter().find(|d| d.name.is_some());
    let path = match (&o.device, named) {
        (Some(p), _) => p.clone(),
        (None, Some(d)) => d.dev_path().map(|p| p.display().to_string()).unwrap_or_else(|| "/dev/warpq0".into()),
        (None, None) => "/dev/warpq0".into(),
    };
    let cpath = CString::new(path.clone()).map_err(|_| "bad device path")?;
    // SAFETY: a NUL-terminated path.
    let fd = unsafe { libc::open(cpath.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(format!("open {path}: {}", ename(errno())));
    }
    // The sizes of the kernel's structures: it writes them back.
    let mut ib = InfoBuf::default();
    ib.i.size = std::mem::size_of::<InfoBuf>() as u32;
    let r = sys_ioctl(fd, WARPQ_IOC_INFO, &mut ib as *mut InfoBuf as u64);
    let mut sb = StatsBuf::default();
    sb.s.size = std::mem::size_of::<StatsBuf>() as u32;
    let r2 = sys_ioctl(fd, WARPQ_IOC_STATS, &mut sb as *mut StatsBuf as u64);
    // SAFETY: our descriptor.
    unsafe { libc::close(fd) };
    r.map_err(|e| format!("INFO: {}", ename(e)))?;
    r2.map_err(|e| format!("STATS: {}", ename(e)))?;
    let info = ib.i;
    if (info.size as usize) < INFO_V1 || (sb.s.size as usize) < STATS_V1 {
        return Err(format!("INFO says {} bytes, STATS {}: not version 1", info.size, sb.s.size));
    }
    let engine = std::fs::read_to_string("/sys/module/warpq/parameters/engine").unwrap_or_default();
    Ok(Cfg {
        path: cpath,
        max_regions: info.max_regions as usize,
        max_region_bytes: info.max_region_bytes,
        edu_engine: engine.trim() == "edu",
        info_size: info.size as usize,
        stats_size: sb.s.size as usize,
        policy: info.policy,
        dma_translation: info.dma_translation,
    })
}

// ---- the modes -------------------------------------------------------------

/// The program: seeded runs, a replay or a shrink, as `o` says.
pub fn main(o: Opts) -> ExitCode {
    START.get_or_init(Instant::now);
    install_handlers();
    let cfg = match probe(&o) {
        Ok(c) => c,
        Err(e) => {
            println!("fuzz: FAILED before the first run: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "fuzz: {} policy {} dma_translation {} engine {} max_regions {} (INFO {} bytes, STATS {})",
        cfg.path.to_string_lossy(),
        if cfg.policy == WARPQ_POLICY_STRICT { "strict" } else { "filtered" },
        cfg.dma_translation,
        if cfg.edu_engine { "edu" } else { "cpu" },
        cfg.max_regions,
        cfg.info_size,
        cfg.stats_size,
    );
    let r = match (&o.replay, &o.shrink) {
        (Some(f), None) => replay(&cfg, &o, f),
        (None, Some(f)) => shrink(&cfg, &o, f),
        (None, None) => runs(&cfg, &o),
        (Some(_), Some(_)) => Err("--replay and --shrink exclude each other".into()),
    };
    r.unwrap_or_else(|e| {
        println!("fuzz: FAILED: {e}");
        ExitCode::FAILURE
    })
}

fn read_case(path: &str) -> Result<Case, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    parse_case(&text).map_err(|e| format!("{path}: {e}"))
}

fn start_watchdog(budget: Duration) {
    HANG_MS.store((2 * budget.as_millis() as u64).max(45_000), Ordering::Relaxed);
    std::thread::spawn(watchdog);
}

fn runs(cfg: &Cfg, o: &Opts) -> Result<ExitCode, String> {
    let seconds = o.seconds.unwrap_or(100.0);
    let budget = Duration::from_secs_f64(seconds / o.runs as f64).max(Duration::from_secs(2));
    println!("fuzz: {} runs of up to {} steps, {budget:?} each, {seconds} s in all", o.runs, o.steps);
    start_watchdog(budget);
    let mut check = Check::zero()?;
    let mut report = Report::new();
    let mut total = Counters::default();
    let t0 = Instant::now();
    for i in 0..o.runs {
        if t0.elapsed().as_secs_f64() >= seconds {
            println!("fuzz: time budget of {seconds} s reached");
            break;
        }
        let seed = o.seed.wrapping_add(i);
        CUR_SEED.store(seed, Ordering::SeqCst);
        println!("fuzz: seed {seed:#018x}");
        let case = generate(seed, o.steps);
        *RUNNING.lock().unwrap_or_else(|e| e.into_inner()) = Some((case.clone(), o.save_dir.clone()));
        let out = run_ops(cfg, &case, budget, &mut check, false);
        let name = format!("seed {seed:#018x}");
        match out.result {
            Ok(n) => {
                total.add(&n);
                let d = format!(
                    "steps {} ioctls {} commands {} completions {} forks {} faults {}",
                    n.steps, n.ioctls, n.commands, n.completions, n.forks, n.faults
                );
                report.ok(&name, &d);
            }
            Err(f) => {
                println!("fuzz: seed {seed:#018x} FAILED at step {} ({}): {}", f.step, f.op, f.msg);
                let path = ops_path(&o.save_dir, seed);
                let first = f.msg.lines().next().unwrap_or("").to_string();
                let comments = [
                    format!("seed {seed:#x}: failed at step {} ({}): {first}", f.step, f.op),
                    format!("replay: warpq-fuzz --replay {path}; shrink: warpq-fuzz --shrink {path}"),
                ];
                let what = save(&applied_case(&case, out.applied), &path, &comments);
                println!(
                    "fuzz: {what}; replay with: warpq-fuzz --replay {path} (or --seed {seed:#x} --runs 1 --steps {})",
                    o.steps
                );
                report.fail(&name, &format!("step {} ({}): {first}", f.step, f.op));
            }
        }
        let _ = std::io::stdout().flush();
    }
    println!(
        "fuzz: checked in the runs that passed: {} completions with a predicted status, {} CRC32C results, {} buffer bytes against the model; {} garbage rings, {} resynchronised; {} aborted",
        total.predicted, total.crcs, total.verified, total.garbage, total.resyncs, total.aborted
    );
    // For the stress suite's totals: completions checked, processes forked.
    println!("figures: commands={} forks={}", total.completions, total.forks);
    Ok(report.finish())
}

fn replay(cfg: &Cfg, o: &Opts, path: &str) -> Result<ExitCode, String> {
    let case = read_case(path)?;
    let budget = Duration::from_secs_f64(o.seconds.unwrap_or(100.0));
    println!("fuzz: replaying {path}: {} operations", Op::count(&case.ops));
    start_watchdog(budget);
    *RUNNING.lock().unwrap_or_else(|e| e.into_inner()) = Some((case.clone(), o.save_dir.clone()));
    let mut check = Check::zero()?;
    let mut report = Report::new();
    let out = run_ops(cfg, &case, budget, &mut check, false);
    let name = format!("replay {path}");
    match out.result {
        Ok(n) => {
            report.ok(&name, &format!("{} steps, {} commands, {} completions", n.steps, n.commands, n.completions))
        }
        Err(f) => {
            println!("fuzz: {path} FAILED at step {} ({}): {}", f.step, f.op, f.msg);
            report.fail(&name, &format!("step {} ({}): {}", f.step, f.op, f.msg.lines().next().unwrap_or("")));
        }
    }
    Ok(report.finish())
}

/// Runs `case` in a child (the harness) and returns its failure signature,
/// or `None` if it passed.
fn attempt(cfg: &Cfg, case: &Case, limit: Duration) -> Option<String> {
    let out = harness::run_case(limit, || {
        QUIET.store(true, Ordering::Relaxed);
        let mut check = Check::zero()?;
        match run_ops(cfg, case, Duration::from_secs(3600), &mut check, true).result {
            Ok(_) => Ok("passed".into()),
            Err(f) => Err(f.signature()),
        }
    });
    out.result.err()
}

fn shrink(cfg: &Cfg, o: &Opts, path: &str) -> Result<ExitCode, String> {
    let case = read_case(path)?;
    let before = Op::count(&case.ops);
    let t0 = Instant::now();
    let Some(sig) = attempt(cfg, &case, Duration::from_secs(600)) else {
        println!("fuzz: {path} ({before} operations) does not fail: nothing to shrink");
        return Ok(ExitCode::FAILURE);
    };
    let limit = (t0.elapsed() * 4).max(Duration::from_secs(60));
    println!("fuzz: shrinking {path}: {before} operations failing with \"{sig}\"");
    let mut budget = Budget::until(Instant::now() + Duration::from_secs_f64(o.seconds.unwrap_or(600.0)));
    let mut best = before;
    let min = shrink_case(&case, &mut budget, &mut |c| {
        let n = Op::count(&c.ops);
        let got = attempt(cfg, c, limit);
        let same = got.as_deref() == Some(sig.as_str());
        if same && n < best {
            best = n;
            println!("fuzz: shrink: {n} operations still fail the same way");
            let _ = std::io::stdout().flush();
        }
        same
    });
    let out = format!("{path}.min");
    let after = Op::count(&min.ops);
    let comments = [
        format!("shrunk from {path}: {before} operations to {after}, failing with \"{sig}\""),
        format!("replay: warpq-fuzz --replay {out}"),
    ];
    let what = save(&min, &out, &comments);
    println!("fuzz: shrunk {before} operations to {after} in {} tries ({:.0?}); {what}", budget.tries, t0.elapsed());
    let mut report = Report::new();
    report.ok(&format!("shrink {path}"), &format!("{before} -> {after} operations"));
    Ok(report.finish())
}
