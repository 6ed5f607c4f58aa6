//! warpq-fault-inject: allocation failures injected, one by one, into every
//! allocation the driver's paths make, as the kernel's `iommufd_fail_nth`
//! test does.
//!
//! `warpq-fault-inject [PATH...] [--max N]` (default: every path, at most 400
//! injection points each). Paths: `open`, `map-ring` (mmap + first touch,
//! which creates the queue), `register`, `rebuild` (the ioctl-driven rebuild
//! after an invalidation), `child-queue` (a forked child's
//! first registration, which creates its queue), `unregister` (which must
//! not allocate at all: a teardown path that can fail is a leak waiting).
//!
//! How: `failslab` and `fail_page_alloc` are limited (debugfs
//! `require-start`/`require-end`) to call stacks that pass through warpq.ko's
//! text, so only the driver's own allocations (its objects, the pages it
//! pins, the IOMMU tables it fills) count. For n = 1, 2, ... the test writes
//! n to `/proc/thread-self/fail-nth`, runs the path once, and reads the file
//! back: 0 means the n-th allocation failed. The path must then fail with a
//! clean error (an errno from its documented set, or SIGBUS for a touch of
//! the ring) or absorb the failure by retrying; either way the device must
//! work again at once, and no pin may be left behind. The sweep of a path
//! ends at the first n its run does not reach.
//!
//! Prints one line per path; ends with a `figures:` line; exit status
//! non-zero on failure. The harness checks the kernel log (no splat) and
//! kmemleak afterwards.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::Duration;

use warpq::sys::*;
use warpq::Device;
use warpq_stress::stream::{push_all, reap, sqe};
use warpq_stress::{Anon, PinCounts};

const PAGE: usize = 4096;
const DEVICE: &str = "/dev/warpq0";

/// `/proc/thread-self/fail-nth` of the calling thread (the file cannot
/// seek: each read opens it again).
struct FailNth(File);

const FAIL_NTH: &str = "/proc/thread-self/fail-nth";

impl FailNth {
    fn open() -> Result<FailNth, String> {
        OpenOptions::new()
            .write(true)
            .open(FAIL_NTH)
            .map(FailNth)
            .map_err(|e| format!("{FAIL_NTH}: {e} (CONFIG_FAULT_INJECTION?)"))
    }

    /// The n-th injectable allocation of this thread from now on fails.
    fn arm(&mut self, n: u32) {
        self.0
            .write_all(n.to_string().as_bytes())
            .expect("write fail-nth");
    }

    /// Whether the armed failure happened; disarms.
    fn disarm(&mut self) -> bool {
        let mut s = String::new();
        File::open(FAIL_NTH)
            .and_then(|mut f| f.read_to_string(&mut s))
            .expect("read fail-nth");
        self.0.write_all(b"0").expect("write fail-nth");
        s.trim() == "0"
    }
}

/// Limits failslab and fail_page_alloc to stacks through warpq.ko, for
/// sleeping allocations and order-0 pages too (both skip those by default).
fn configure_injection() -> Result<(u64, u64), String> {
    let modules =
        std::fs::read_to_string("/proc/modules").map_err(|e| format!("/proc/modules: {e}"))?;
    let line = modules
        .lines()
        .find(|l| l.starts_with("warpq "))
        .ok_or("warpq.ko is not loaded")?;
    let fields: Vec<&str> = line.split_whitespace().collect();
    let size: u64 = fields
        .get(1)
        .and_then(|s| s.parse().ok())
        .ok_or("no module size in /proc/modules")?;
    let text = std::fs::read_to_string("/sys/module/warpq/sections/.text")
        .map_err(|e| format!("warpq .text: {e}"))?;
    let start = u64::from_str_radix(text.trim().trim_start_matches("0x"), 16)
        .map_err(|e| format!(".text address: {e}"))?;
    if start == 0 {
        return Err("the module's address is hidden (kptr_restrict)".into());
    }
    let end = start + size;
    let set = |attr: &str, file: &str, value: String| -> Result<(), String> {
        std::fs::write(format!("/sys/kernel/debug/{attr}/{file}"), value)
            .map_err(|e| format!("{attr}/{file}: {e}"))
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
enum Outcome {
    /// The call succeeded.
    Ok,
    /// It failed with this errno.
    Errno(i32),
    /// A touch of the ring raised SIGBUS (the fault path's error).
    Sigbus,
}

fn errno_of(e: &warpq::Error) -> Outcome {
    Outcome::Errno(e.errno().unwrap_or(-1))
}

/// A path: `run` is called with fail-nth armed and must not leave anything
/// for the next run; `allowed` lists the errnos it may fail with.
struct Path {
    name: &'static str,
    allowed: &'static [i32],
    /// Whether the path allocates at all (unregistering only frees).
    allocates: bool,
    run: PathRun,
}

/// One armed run of a path with fail-nth at n: how it ended, and whether
/// the n-th allocation was reached (and failed).
type PathRun = fn(&mut FailNth, u32) -> Result<(Outcome, bool), String>;

/// Sets up with `setup` (not armed), runs `op` armed, disarms.
fn armed<T, R>(
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

/// One verified FILL through the ring of `dev`'s queue: the device works.
fn device_works(dev: &Device, buf: &Anon, value: u8) -> Result<(), String> {
    let mut q = dev.queue().map_err(|e| format!("map queue: {e}"))?;
    push_all(
        &mut q,
        &[sqe(
            WARPQ_OP_FILL,
            7,
            0,
            buf.addr(0),
            PAGE as u64,
            u64::from(value),
        )],
    )?;
    let c = reap(&mut q)?;
    if c.status != WARPQ_STATUS_OK || buf.bytes()[..PAGE].iter().any(|&b| b != value) {
        return Err(format!(
            "the device does not work after the injection: status {}",
            c.status
        ));
    }
    Ok(())
}

fn register_rw(dev: &Device, buf: &Anon) -> Result<u64, warpq::Error> {
    // SAFETY: only raw pointers refer to `buf`, which outlives the
    // registration (or the device file).
    unsafe { dev.register_raw(buf.ptr(), buf.len(), WARPQ_ACCESS_READ | WARPQ_ACCESS_WRITE) }
}

fn path_open(fail: &mut FailNth, n: u32) -> Result<(Outcome, bool), String> {
    let (_, r, injected) = armed(fail, n, || Ok(()), |_| Device::open(DEVICE))?;
    let outcome = match &r {
        Ok(_) => Outcome::Ok,
        Err(e) => errno_of(e),
    };
    drop(r);
    let dev = Device::open(DEVICE).map_err(|e| format!("open after: {e}"))?;
    let buf = Anon::new(4 * PAGE);
    register_rw(&dev, &buf).map_err(|e| format!("register after: {e}"))?;
    device_works(&dev, &buf, n as u8)?;
    Ok((outcome, injected))
}

/// mmap and first touch of the ring, in a child: the touch may raise SIGBUS.
fn path_map_ring(_fail: &mut FailNth, n: u32) -> Result<(Outcome, bool), String> {
    let dev = Device::open(DEVICE).map_err(|e| format!("open: {e}"))?;
    let mut pipe = [0; 2];
    // SAFETY: a fresh pipe for the child's report.
    if unsafe { libc::pipe(pipe.as_mut_ptr()) } != 0 {
        return Err("pipe".into());
    }
    // SAFETY: the child uses its own copies and leaves with _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let mut f = FailNth::open().unwrap_or_else(|_| {
            // SAFETY: leave the child.
            unsafe { libc::_exit(20) }
        });
        f.arm(n);
        let code = match dev.map_queue() {
            Ok(m) => {
                // SAFETY: the mapping is WARPQ_RING_SIZE bytes; a volatile
                // read of the header's magic faults the queue in.
                let magic = unsafe { std::ptr::read_volatile(m.as_ptr() as *const u32) };
                if magic == WARPQ_RING_MAGIC {
                    0
                } else {
                    21
                }
            }
            Err(e) => 100 + e.errno().unwrap_or(0).clamp(0, 150),
        };
        let injected = [u8::from(f.disarm())];
        // SAFETY: writing one byte to our pipe.
        unsafe { libc::write(pipe[1], injected.as_ptr().cast(), 1) };
        // SAFETY: leave the child.
        unsafe { libc::_exit(code) };
    }
    // SAFETY: the parent's copy of the write end.
    unsafe { libc::close(pipe[1]) };
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    let mut byte = [0u8; 1];
    // SAFETY: reading the child's report (0 bytes if it died first).
    let got = unsafe { libc::read(pipe[0], byte.as_mut_ptr().cast(), 1) };
    // SAFETY: our read end.
    unsafe { libc::close(pipe[0]) };
    let outcome = if libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGBUS {
        // Killed before it could report: the touch itself hit the failure.
        return Ok((Outcome::Sigbus, true));
    } else if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        Outcome::Ok
    } else if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) >= 100 {
        Outcome::Errno(libc::WEXITSTATUS(status) - 100)
    } else {
        return Err(format!(
            "the child mapping the ring ended with wait status {status:#x}"
        ));
    };
    let buf = Anon::new(4 * PAGE);
    register_rw(&dev, &buf).map_err(|e| format!("register after: {e}"))?;
    device_works(&dev, &buf, n as u8)?;
    Ok((outcome, got == 1 && byte[0] == 1))
}

fn path_register(fail: &mut FailNth, n: u32) -> Result<(Outcome, bool), String> {
    let dev = Device::open(DEVICE).map_err(|e| format!("open: {e}"))?;
    let buf = Anon::new(16 * PAGE);
    let (_, r, injected) = armed(fail, n, || Ok(()), |_| register_rw(&dev, &buf))?;
    let outcome = match r {
        Ok(h) => {
            dev.unregister(h).map_err(|e| format!("unregister: {e}"))?;
            Outcome::Ok
        }
        Err(e) => errno_of(&e),
    };
    register_rw(&dev, &buf).map_err(|e| format!("register after: {e}"))?;
    device_works(&dev, &buf, n as u8)?;
    Ok((outcome, injected))
}

/// An invalidation tears the buffer down; the armed SUBMIT ioctl rebuilds.
fn path_rebuild(fail: &mut FailNth, n: u32) -> Result<(Outcome, bool), String> {
    let dev = Device::open(DEVICE).map_err(|e| format!("open: {e}"))?;
    let buf = Anon::new(16 * PAGE);
    register_rw(&dev, &buf).map_err(|e| format!("register: {e}"))?;
    device_works(&dev, &buf, 1)?;
    let (_, r, injected) = armed(
        fail,
        n,
        || {
            // SAFETY: our own mapping; the registration survives (it is
            // torn down and rebuilt on the next use).
            if unsafe { libc::madvise(buf.ptr().add(8 * PAGE).cast(), PAGE, libc::MADV_DONTNEED) }
                != 0
            {
                return Err("madvise".to_string());
            }
            Ok(())
        },
        |_| dev.submit_batch(&[sqe(WARPQ_OP_FILL, 1, 0, buf.addr(0), PAGE as u64, 0x33)]),
    )?;
    let outcome = match r {
        Ok(_) => Outcome::Ok,
        Err(e) => errno_of(&e),
    };
    // The ioctl path queued through the ring's SQ behind the Queue's back:
    // drain its completion (if any) before using a Queue.
    if outcome == Outcome::Ok {
        dev.wait(1, Some(Duration::from_secs(10)))
            .map_err(|e| format!("wait: {e}"))?;
        let mut q = dev.queue().map_err(|e| format!("map queue: {e}"))?;
        let c = reap(&mut q)?;
        if c.status != WARPQ_STATUS_OK || buf.bytes()[0] != 0x33 {
            return Err(format!("FILL after the armed rebuild: status {}", c.status));
        }
    }
    device_works(&dev, &buf, n as u8)?;
    Ok((outcome, injected))
}

/// A forked child's first registration creates its queue.
fn path_child_queue(_fail: &mut FailNth, n: u32) -> Result<(Outcome, bool), String> {
    let dev = Device::open(DEVICE).map_err(|e| format!("open: {e}"))?;
    let buf = Anon::new(4 * PAGE);
    register_rw(&dev, &buf).map_err(|e| format!("register: {e}"))?;
    device_works(&dev, &buf, 1)?;
    // SAFETY: the child uses its own copies and leaves with _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let code = (|| -> Result<i32, String> {
            let mut f = FailNth::open()?;
            let mine = Anon::new(4 * PAGE);
            f.arm(n);
            let r = register_rw(&dev, &mine);
            let injected = f.disarm();
            let base = if injected { 64 } else { 0 };
            match r {
                Ok(_) => {
                    device_works(&dev, &mine, 9)?;
                    Ok(base)
                }
                Err(e) => {
                    register_rw(&dev, &mine).map_err(|e| format!("child register after: {e}"))?;
                    device_works(&dev, &mine, 9)?;
                    Ok(base + 1 + e.errno().unwrap_or(0).clamp(0, 60))
                }
            }
        })();
        let code = code.unwrap_or_else(|e| {
            eprintln!("child: {e}");
            127
        });
        // SAFETY: leave the child.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) == 127 {
        return Err(format!("child ended with wait status {status:#x}"));
    }
    let code = libc::WEXITSTATUS(status);
    let injected = code >= 64;
    let outcome = match code % 64 {
        0 => Outcome::Ok,
        e => Outcome::Errno(e - 1),
    };
    device_works(&dev, &buf, n as u8)?;
    Ok((outcome, injected))
}

fn path_unregister(fail: &mut FailNth, n: u32) -> Result<(Outcome, bool), String> {
    let dev = Device::open(DEVICE).map_err(|e| format!("open: {e}"))?;
    let buf = Anon::new(16 * PAGE);
    let h = register_rw(&dev, &buf).map_err(|e| format!("register: {e}"))?;
    let (_, r, injected) = armed(fail, n, || Ok(()), |_| dev.unregister(h))?;
    let outcome = match r {
        Ok(()) => Outcome::Ok,
        Err(e) => {
            dev.unregister(h)
                .map_err(|e| format!("unregister after: {e}"))?;
            errno_of(&e)
        }
    };
    register_rw(&dev, &buf).map_err(|e| format!("register after: {e}"))?;
    device_works(&dev, &buf, n as u8)?;
    Ok((outcome, injected))
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut max = 400;
    if let Some(i) = args.iter().position(|a| a == "--max") {
        max = args.get(i + 1).and_then(|s| s.parse().ok()).unwrap_or(max);
        args.drain(i..(i + 2).min(args.len()));
    }
    const ENOMEM: i32 = libc::ENOMEM;
    let paths = [
        Path {
            name: "open",
            allowed: &[ENOMEM],
            allocates: true,
            run: path_open,
        },
        Path {
            name: "map-ring",
            allowed: &[ENOMEM],
            allocates: true,
            run: path_map_ring,
        },
        Path {
            name: "register",
            allowed: &[ENOMEM, libc::EFAULT],
            allocates: true,
            run: path_register,
        },
        Path {
            name: "rebuild",
            allowed: &[ENOMEM, libc::EAGAIN],
            allocates: true,
            run: path_rebuild,
        },
        Path {
            name: "child-queue",
            allowed: &[ENOMEM],
            allocates: true,
            run: path_child_queue,
        },
        Path {
            name: "unregister",
            allowed: &[ENOMEM],
            allocates: false,
            run: path_unregister,
        },
    ];
    let (start, end) = match configure_injection() {
        Ok(r) => r,
        Err(e) => {
            println!("FAIL: set up fault injection: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("fault-inject: failslab and fail_page_alloc limited to stacks through warpq.ko {start:#x}..{end:#x}");
    let mut fail = match FailNth::open() {
        Ok(f) => f,
        Err(e) => {
            println!("FAIL: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (mut failed, mut total_injected) = (0, 0u64);
    for path in &paths {
        if !args.is_empty() && !args.iter().any(|a| a == path.name) {
            continue;
        }
        let (mut injected, mut errors, mut absorbed, mut sigbus) = (0u64, 0u64, 0u64, 0u64);
        let mut errnos = std::collections::BTreeMap::new();
        let mut result = Ok(());
        let mut reached_end = false;
        for n in 1..=max {
            match (path.run)(&mut fail, n) {
                Err(e) => {
                    result = Err(format!("n={n}: {e}"));
                    break;
                }
                Ok((outcome, hit)) => {
                    if !hit {
                        if outcome != Outcome::Ok {
                            result = Err(format!(
                                "n={n}: nothing injected, yet it failed: {outcome:?}"
                            ));
                        }
                        reached_end = true;
                        break;
                    }
                    injected += 1;
                    match outcome {
                        Outcome::Ok => absorbed += 1,
                        Outcome::Sigbus => sigbus += 1,
                        Outcome::Errno(e) if path.allowed.contains(&e) => {
                            errors += 1;
                            *errnos
                                .entry(warpq::errno_name(e).unwrap_or("?"))
                                .or_insert(0u64) += 1;
                        }
                        Outcome::Errno(e) => {
                            result = Err(format!(
                                "n={n}: failed with errno {e} ({}), not one of {:?}",
                                warpq::errno_name(e).unwrap_or("?"),
                                path.allowed
                            ));
                            break;
                        }
                    }
                }
            }
        }
        if result.is_ok() && injected > 0 && !path.allocates {
            result = Err(format!("{injected} allocations where none were expected"));
        }
        if result.is_ok() && !reached_end {
            result = Err(format!("more than {max} injection points: raise --max"));
        }
        if result.is_ok() && injected == 0 && path.allocates {
            result =
                Err("no allocation of the driver was reached: the stack filter is wrong".into());
        }
        if result.is_ok() {
            result = PinCounts::wait_balanced(Duration::from_secs(10)).map(|_| ());
        }
        total_injected += injected;
        match result {
            Ok(()) => println!(
                "ok   {}: {injected} injection points: {errors} clean errors {errnos:?}, {absorbed} absorbed by a retry, {sigbus} SIGBUS; device works after each; pins balanced",
                path.name
            ),
            Err(e) => {
                failed += 1;
                println!("FAIL {}: {e}", path.name);
            }
        }
    }
    println!("figures: injections={total_injected}");
    println!("fault-inject: {failed} paths failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
