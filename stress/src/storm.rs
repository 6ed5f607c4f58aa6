//! The fork/exec storm of `make stress` (`warpq-storm`).
//!
//! Each worker process owns a queue, a registered source buffer (read-only
//! for the device) and a registered destination buffer, and streams verified
//! COPY/FILL/CRC32C commands (`stream.rs`: every result checked against the
//! CPU's model, the destination compared byte for byte every few rounds).
//! With every batch in flight it forks a child, of one of these kinds in
//! turn:
//!
//! - `quick`: exits at once (the fork's invalidation races the batch);
//! - `cow`: writes other data over its copy-on-write copy of the worker's
//!   destination, gets its own queue on the inherited file, registers its own
//!   copies, verifies its own stream, and every other time forks a grandchild
//!   that does the same one level down;
//! - `exit-in-flight`: gets its own queue, registers, submits a batch and
//!   exits without waiting for it;
//! - `exec`: execs this program with the device fd inherited (CLOEXEC
//!   cleared): the new image adopts the fd, gets its own queue and verifies
//!   its own stream;
//! - `exec-cloexec`: execs with the fd left CLOEXEC: the new image checks
//!   that the fd is gone, opens the device afresh and verifies a stream.
//!
//! The worker's own results must keep landing in its own pages while its
//! children write different data into their copies: a child that saw the
//! worker's queue, or a worker that saw a child's writes, fails the model.
//! Streamers only stream verified commands, in processes of their own,
//! while the workers' children come and go around them.
//!
//! Forks, execs and verified commands are summed over every process through
//! a shared page.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::harness::{self, Child, Exit};
use crate::report::Report;
use crate::stream::{push_all, sqe, Stream};
use crate::Anon;
use warpq::sys::*;
use warpq::Device;

const PAGE: usize = 4096;
/// Commands per worker batch (in flight while the worker forks).
const BATCH: u64 = 48;
/// Commands per streamer batch.
const STREAM_BATCH: u64 = 200;
/// Commands each child stream verifies.
const CHILD_COMMANDS: u64 = 32;
/// Longest command: short commands let a long run verify many of them.
const MAX_LEN: usize = 512;
/// Children a worker lets run before it waits for one.
const MAX_CHILDREN: usize = 6;
/// Extra `quick` children per round, forked with the batch in flight.
const QUICK_PER_ROUND: usize = 1;
/// A streamer's pause between batches, which leaves the CPUs to the forks.
const STREAM_PAUSE: Duration = Duration::from_millis(25);

/// Figures summed over every process of the storm (a `MAP_SHARED` page:
/// forked children add to the same counters).
#[derive(Default)]
struct Counters {
    forks: AtomicU64,
    execs: AtomicU64,
    commands: AtomicU64,
    failures: AtomicU64,
}

fn shared_counters() -> &'static Counters {
    // SAFETY: a `Counters` of zeros is valid (atomics) and fits in a page.
    unsafe { crate::mem::shared_zeroed::<Counters>() }
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Quick,
    Cow,
    ExitInFlight,
    Exec,
    ExecCloexec,
}

impl Kind {
    fn for_round(round: u64) -> Kind {
        match (round % 3, (round / 3) % 2) {
            (0, _) => Kind::Quick,
            (1, 0) => Kind::Cow,
            (1, _) => Kind::ExitInFlight,
            (_, 0) => Kind::Exec,
            (_, _) => Kind::ExecCloexec,
        }
    }
}

/// A source buffer with a pattern and a zeroed destination, both registered
/// on `dev` (for this process's queue).
struct Buffers {
    src: Anon,
    dst: Anon,
}

impl Buffers {
    fn new(dev: &Device, pages: usize, seed: u8) -> Result<Buffers, String> {
        let src = Anon::new(pages * PAGE);
        src.write(&(0..src.len()).map(|i| (i as u8).wrapping_mul(7) ^ seed).collect::<Vec<_>>());
        let dst = Anon::new(pages * PAGE);
        Buffers::register(dev, &src, &dst)?;
        Ok(Buffers { src, dst })
    }

    fn register(dev: &Device, src: &Anon, dst: &Anon) -> Result<(), String> {
        // SAFETY: only raw pointers refer to these buffers while the device
        // may use them; they outlive the registrations (or the process ends).
        unsafe { dev.register_raw(src.ptr(), src.len(), WARPQ_ACCESS_READ) }
            .map_err(|e| format!("register src: {e}"))?;
        // SAFETY: as above.
        unsafe { dev.register_raw(dst.ptr(), dst.len(), WARPQ_ACCESS_READ | WARPQ_ACCESS_WRITE) }
            .map_err(|e| format!("register dst: {e}"))?;
        Ok(())
    }
}

/// Runs a verified stream of `count` commands on `dev`'s queue for this
/// process; returns the commands verified.
fn verified_stream(dev: &Device, src: &Anon, dst: &Anon, count: u64, seed: u64) -> Result<u64, String> {
    let mut q = dev.queue().map_err(|e| format!("map queue: {e}"))?;
    let mut stream = Stream::new(src, dst, 0, dst.len(), seed).max_len(MAX_LEN);
    stream.push(&mut q, count)?;
    stream.reap_all(&mut q)?;
    stream.verify("child")?;
    Ok(stream.tally.ok)
}

/// What a `cow` child (and its grandchild) does; returns on failure only
/// through `Err`, the caller exits.
fn cow_child(dev: &Device, parent: &Buffers, counters: &Counters, seed: u64, depth: u32) -> Result<(), String> {
    // Write other data over this process's copy of the parent's buffers:
    // if the parent's device results reached these pages, or these writes
    // reached the parent's, one of the two models fails.
    parent.dst.write(&vec![0x5a ^ depth as u8; parent.dst.len()]);
    Buffers::register(dev, &parent.src, &parent.dst)?;
    let n = verified_stream(dev, &parent.src, &parent.dst, CHILD_COMMANDS, seed)?;
    counters.commands.fetch_add(n, Ordering::Relaxed);
    if depth == 0 && seed.is_multiple_of(2) {
        let grandchild = harness::spawn(|| match cow_child(dev, parent, counters, seed ^ 0x9e37, depth + 1) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("FAIL grandchild: {e}");
                1
            }
        })
        .map_err(|e| format!("fork a grandchild: {e}"))?;
        counters.forks.fetch_add(1, Ordering::Relaxed);
        let exit = grandchild.wait(Duration::MAX);
        if !exit.success() {
            return Err(format!("grandchild: {exit}"));
        }
    }
    Ok(())
}

fn exec_self(args: &[&str]) -> ! {
    let exe = c"/proc/self/exe";
    let owned: Vec<std::ffi::CString> = args.iter().map(|a| std::ffi::CString::new(*a).unwrap()).collect();
    let mut argv: Vec<*const libc::c_char> = owned.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    // SAFETY: NUL-terminated strings and a null-terminated argv that live
    // across the call; execv returns only on failure.
    unsafe { libc::execv(exe.as_ptr(), argv.as_ptr()) };
    eprintln!("FAIL exec: {}", std::io::Error::last_os_error());
    harness::exit(3)
}

/// Forks a child of `kind` while the worker's batch is in flight.
fn spawn(dev: &Device, kind: Kind, bufs: &Buffers, counters: &Counters, seed: u64) -> Result<Child, String> {
    let child = harness::spawn(|| child(dev, kind, bufs, counters, seed)).map_err(|e| format!("fork: {e}"))?;
    counters.forks.fetch_add(1, Ordering::Relaxed);
    Ok(child)
}

/// What a child of `kind` does; returns its exit code (or execs).
fn child(dev: &Device, kind: Kind, bufs: &Buffers, counters: &Counters, seed: u64) -> i32 {
    let fd = dev.as_file().as_raw_fd();
    let result = match kind {
        Kind::Quick => Ok(()),
        Kind::Cow => cow_child(dev, bufs, counters, seed, 0),
        Kind::ExitInFlight => (|| {
            let mut q = dev.queue().map_err(|e| format!("map queue: {e}"))?;
            let mine = Buffers::new(dev, 16, seed as u8)?;
            let cmds: Vec<_> = (0..64)
                .map(|i| sqe(WARPQ_OP_COPY, i, mine.src.addr(0), mine.dst.addr(0), mine.dst.len() as u64, 0))
                .collect();
            push_all(&mut q, &cmds)?;
            // Exit with the batch in flight: the driver drains or aborts it
            // as the mm goes away.
            Ok(())
        })(),
        Kind::Exec => {
            // SAFETY: fcntl on our own open fd.
            unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
            exec_self(&["warpq-storm", "exec-child", &fd.to_string(), &seed.to_string()])
        }
        Kind::ExecCloexec => exec_self(&["warpq-storm", "exec-cloexec", &fd.to_string(), &seed.to_string()]),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("FAIL {kind:?} child: {e}");
            1
        }
    }
}

/// The new image of an `exec` (`inherited`) or `exec-cloexec` child: `fd`
/// is the number the device had in the exec'ing process.
pub fn exec_child(inherited: bool, fd: i32, seed: u64) -> Result<(), String> {
    let dev = if inherited {
        // SAFETY: the exec'ing parent cleared CLOEXEC on this fd and passed
        // its number; nothing else in this new image owns it.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        Device::from_fd(owned).map_err(|e| format!("adopt the inherited fd {fd}: {e}"))?
    } else {
        // SAFETY: F_GETFD only queries the descriptor table.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1 {
            return Err(format!("fd {fd} survived exec although it was CLOEXEC"));
        }
        Device::open("/dev/warpq0").map_err(|e| format!("open: {e}"))?
    };
    let bufs = Buffers::new(&dev, 8, seed as u8)?;
    verified_stream(&dev, &bufs.src, &bufs.dst, CHILD_COMMANDS, seed)?;
    Ok(())
}

/// Children that have exited are waited for (all of them when `all`, or
/// until at most MAX_CHILDREN run, the oldest first); exec'd children's
/// commands are counted here, as they cannot reach the shared page.
fn reap_children(children: &mut Vec<(Child, Kind)>, counters: &Counters, all: bool) -> Result<(), String> {
    loop {
        let mut i = 0;
        while i < children.len() {
            match children[i].0.try_wait() {
                Some(exit) => {
                    let (child, kind) = children.remove(i);
                    child_ended(child.pid(), exit, kind, counters)?;
                }
                None => i += 1,
            }
        }
        if children.is_empty() || !(all || children.len() > MAX_CHILDREN) {
            return Ok(());
        }
        let (child, kind) = children.remove(0);
        let pid = child.pid();
        child_ended(pid, child.wait(Duration::MAX), kind, counters)?;
    }
}

fn child_ended(pid: libc::pid_t, exit: Exit, kind: Kind, counters: &Counters) -> Result<(), String> {
    if !exit.success() {
        return Err(format!("{kind:?} child {pid} failed ({exit})"));
    }
    if matches!(kind, Kind::Exec | Kind::ExecCloexec) {
        counters.execs.fetch_add(1, Ordering::Relaxed);
        counters.commands.fetch_add(CHILD_COMMANDS, Ordering::Relaxed);
    }
    Ok(())
}

/// A process that only streams verified commands while the others fork:
/// their forks, execs and exits must not disturb its queue.
fn streamer(path: &str, deadline: Instant, counters: &Counters, seed: u64) -> Result<u64, String> {
    let dev = Device::open(path).map_err(|e| format!("open {path}: {e}"))?;
    let mut q = dev.queue().map_err(|e| format!("map queue: {e}"))?;
    let bufs = Buffers::new(&dev, 64, seed as u8)?;
    let mut stream = Stream::new(&bufs.src, &bufs.dst, 0, bufs.dst.len(), seed).max_len(MAX_LEN);
    let mut round = 0u64;
    while Instant::now() < deadline {
        let before = stream.tally.ok;
        stream.push(&mut q, STREAM_BATCH)?;
        stream.reap_all(&mut q)?;
        counters.commands.fetch_add(stream.tally.ok - before, Ordering::Relaxed);
        if round.is_multiple_of(64) {
            stream.verify("streamer")?;
        }
        round += 1;
        std::thread::sleep(STREAM_PAUSE);
    }
    stream.verify("streamer")?;
    Ok(round)
}

fn worker(path: &str, deadline: Instant, counters: &Counters, seed: u64) -> Result<u64, String> {
    let dev = Device::open(path).map_err(|e| format!("open {path}: {e}"))?;
    let mut q = dev.queue().map_err(|e| format!("map queue: {e}"))?;
    let bufs = Buffers::new(&dev, 64, seed as u8)?;
    let mut stream = Stream::new(&bufs.src, &bufs.dst, 0, bufs.dst.len(), seed).max_len(MAX_LEN);
    let mut children = Vec::new();
    let mut round = 0u64;
    while Instant::now() < deadline {
        let before = stream.tally.ok;
        stream.push(&mut q, BATCH)?;
        let kind = Kind::for_round(round);
        let child = spawn(&dev, kind, &bufs, counters, seed.wrapping_mul(31).wrapping_add(round))?;
        children.push((child, kind));
        for _ in 0..QUICK_PER_ROUND {
            children.push((spawn(&dev, Kind::Quick, &bufs, counters, 0)?, Kind::Quick));
        }
        stream.reap_all(&mut q)?;
        counters.commands.fetch_add(stream.tally.ok - before, Ordering::Relaxed);
        if round.is_multiple_of(8) {
            stream.verify("worker")?;
        }
        reap_children(&mut children, counters, false)?;
        round += 1;
    }
    reap_children(&mut children, counters, true)?;
    stream.verify("worker")?;
    Ok(round)
}

/// What `warpq-storm` runs: `--seconds`, `--workers`, `--streamers`,
/// `--device`.
pub struct Options {
    /// How long the storm lasts.
    pub seconds: u64,
    /// Forking worker processes.
    pub workers: u64,
    /// Processes that only stream verified commands.
    pub streamers: u64,
    /// The device node.
    pub path: String,
}

impl Default for Options {
    fn default() -> Self {
        Options { seconds: 60, workers: 2, streamers: 1, path: "/dev/warpq0".into() }
    }
}

/// Runs the storm; prints a `storm:` line per worker, one for the whole
/// storm and a `figures:` line (for `warpq-stress-suite`). Whether every
/// process passed.
pub fn run(opts: &Options) -> bool {
    let Options { seconds, workers, streamers, ref path } = *opts;
    let counters = shared_counters();
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let mut children = Vec::new();
    let mut failed = 0;
    for w in 0..workers + streamers {
        let child = harness::spawn(|| {
            let seed = 0x5eed_0000 + w;
            let run = if w < workers {
                worker(path, deadline, counters, seed)
            } else {
                streamer(path, deadline, counters, seed)
            };
            match run {
                Ok(rounds) => {
                    Report::new().ok(&format!("worker {w}"), &format!("{rounds} rounds"));
                    0
                }
                Err(e) => {
                    Report::new().fail(&format!("worker {w}"), &e);
                    counters.failures.fetch_add(1, Ordering::Relaxed);
                    1
                }
            }
        });
        match child {
            Ok(c) => children.push(c),
            Err(e) => {
                println!("FAIL worker {w}: fork: {e}");
                failed += 1;
            }
        }
    }
    for child in children {
        let pid = child.pid();
        let exit = child.wait(Duration::MAX);
        if !exit.success() {
            println!("FAIL worker {pid}: {exit}");
            failed += 1;
        }
    }
    let (forks, execs, commands) = (
        counters.forks.load(Ordering::Relaxed),
        counters.execs.load(Ordering::Relaxed),
        counters.commands.load(Ordering::Relaxed),
    );
    let secs = start.elapsed().as_secs_f64();
    println!(
        "storm: {workers} forking workers, {streamers} streamers, {secs:.0} s: {forks} forks ({:.1}/s), {execs} execs, {commands} commands verified ({:.0}/s), {failed} failed workers",
        forks as f64 / secs,
        commands as f64 / secs
    );
    println!("figures: commands={commands} forks={forks} execs={execs}");
    failed == 0 && counters.failures.load(Ordering::Relaxed) == 0
}
