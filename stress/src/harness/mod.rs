//! The child-process harness: the one place in `stress/` that forks.
//!
//! [`spawn`] runs a closure in a forked child, which leaves with `_exit`
//! and the closure's return value: it never returns into the caller's code
//! and never unwinds past the fork (a panic becomes exit code
//! [`PANIC_EXIT`]). The [`Child`] is waited for with a time limit
//! ([`Child::wait`]: a child still running at the limit is killed with
//! SIGKILL and reaped), polled ([`Child::try_wait`]) or signalled
//! ([`Child::kill`]). [`run_case`] builds a test case on top: the closure's
//! `Ok`/`Err` message comes back through a pipe, and a death by signal, a
//! hang or an exit without a message is a failure that says so.
//!
//! The child is a copy of the whole process, so it may keep using what the
//! caller set up before the fork (open queues, mappings, buffers), fork
//! again (grandchildren), or exec. Only the forking thread exists in the
//! child: state another thread held locked (a `Mutex`, stdout's lock) stays
//! locked there, so fork from programs whose other threads are idle or do
//! not share such state with the child.

mod case;

use std::fmt;
use std::io::{self, Write};
use std::time::{Duration, Instant};

pub use case::{run_case, CaseOutcome};

/// The exit code of a child whose closure panicked.
pub const PANIC_EXIT: i32 = 101;

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this code.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
    /// It was still running at the time limit (and was then killed).
    TimedOut,
}

impl Exit {
    /// From a `waitpid` status.
    pub fn from_wait_status(status: i32) -> Exit {
        if libc::WIFSIGNALED(status) {
            Exit::Signal(libc::WTERMSIG(status))
        } else {
            Exit::Code(libc::WEXITSTATUS(status))
        }
    }

    /// Exit code 0.
    pub fn success(self) -> bool {
        self == Exit::Code(0)
    }
}

/// The name of a signal number (`SIGKILL`), for messages.
pub fn signal_name(sig: i32) -> String {
    // SAFETY: strsignal returns a pointer to a static or thread-local
    // string (or null), which is copied out at once.
    let p = unsafe { libc::strsignal(sig) };
    let desc = if p.is_null() {
        String::new()
    } else {
        // SAFETY: a NUL-terminated string from the C library.
        unsafe { std::ffi::CStr::from_ptr(p) }.to_string_lossy().into_owned()
    };
    let abbrev = match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        _ => return format!("signal {sig} ({desc})"),
    };
    format!("signal {sig} ({abbrev})")
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit code {c}"),
            Exit::Signal(s) => write!(f, "killed by {}", signal_name(*s)),
            Exit::TimedOut => f.write_str("still running at the time limit (killed)"),
        }
    }
}

/// A forked child process, made by [`spawn`].
///
/// Dropping it without waiting leaves it running (and, once it exits, a
/// zombie until this process waits or exits); wait for every child.
#[derive(Debug)]
pub struct Child {
    pid: libc::pid_t,
    /// Set once reaped.
    exit: Option<Exit>,
}

/// Runs `f` in a forked child, which then leaves with `_exit(f())`.
///
/// Buffered stdout is flushed first (so the child does not print the
/// parent's pending output again). In the child, a panic in `f` exits with
/// [`PANIC_EXIT`] (the panic hook has printed the message); the child never
/// runs the caller's code after `spawn` nor its exit handlers. In the
/// parent, `f` is dropped unrun: values moved into it are dropped there
/// too, so capture by reference what the parent keeps using.
///
/// # Errors
///
/// The `fork` error (`EAGAIN`, `ENOMEM`).
pub fn spawn(f: impl FnOnce() -> i32) -> io::Result<Child> {
    let _ = io::stdout().flush();
    // SAFETY: the child runs only `f` and leaves with `_exit` (via `exit`)
    // without unwinding past this frame; the parent carries on as usual.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(PANIC_EXIT);
        exit(code);
    }
    Ok(Child { pid, exit: None })
}

/// Leaves a child made by [`spawn`] at once with `code`, from anywhere in
/// it (stdout flushed; no destructors, no exit handlers). Only for use in
/// a child: in the parent it would end the program without its cleanup.
pub fn exit(code: i32) -> ! {
    let _ = io::stdout().flush();
    // SAFETY: _exit ends this process; nothing runs after it.
    unsafe { libc::_exit(code) }
}

impl Child {
    /// The child's process id.
    pub fn pid(&self) -> libc::pid_t {
        self.pid
    }

    /// Reaps the child if it has ended: `None` while it runs.
    pub fn try_wait(&mut self) -> Option<Exit> {
        if self.exit.is_none() {
            let mut status = 0;
            // SAFETY: polls our own child; `status` is ours.
            if unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) } == self.pid {
                self.exit = Some(Exit::from_wait_status(status));
            }
        }
        self.exit
    }

    /// Sends signal `sig` to the child (nothing if it was already reaped).
    ///
    /// # Errors
    ///
    /// The `kill` error.
    pub fn kill(&self, sig: i32) -> io::Result<()> {
        if self.exit.is_some() {
            return Ok(());
        }
        // SAFETY: signals our own child, which is not reaped yet (so the pid
        // cannot have been reused).
        if unsafe { libc::kill(self.pid, sig) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// The child's kernel stack (`/proc/PID/stack`, root only), to say where
    /// a hung child is stuck; empty if unreadable.
    pub fn kernel_stack(&self) -> String {
        std::fs::read_to_string(format!("/proc/{}/stack", self.pid)).unwrap_or_default()
    }

    /// Waits up to `limit` (`Duration::MAX`: for ever) for the child to end.
    /// At the limit it is killed with SIGKILL and reaped (waiting up to 10 s
    /// more for a child stuck in the kernel), and the answer is
    /// [`Exit::TimedOut`].
    pub fn wait(mut self, limit: Duration) -> Exit {
        if let Some(e) = self.wait_until(limit) {
            return e;
        }
        let _ = self.kill(libc::SIGKILL);
        let _ = self.wait_until(Duration::from_secs(10));
        Exit::TimedOut
    }

    /// Waits up to `limit` for the child to end, without killing it.
    fn wait_until(&mut self, limit: Duration) -> Option<Exit> {
        if limit == Duration::MAX {
            let mut status = 0;
            while self.exit.is_none() {
                // SAFETY: waits for our own child; `status` is ours.
                let r = unsafe { libc::waitpid(self.pid, &mut status, 0) };
                if r == self.pid {
                    self.exit = Some(Exit::from_wait_status(status));
                } else if io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                    return None;
                }
            }
            return self.exit;
        }
        let start = Instant::now();
        let pidfd = PidFd::open(self.pid);
        let mut nap = Duration::from_micros(20);
        loop {
            if let Some(e) = self.try_wait() {
                return Some(e);
            }
            let left = limit.saturating_sub(start.elapsed());
            if left.is_zero() {
                return None;
            }
            match &pidfd {
                // A pidfd becomes readable when the child exits: no polling delay.
                Some(fd) => fd.wait_readable(left),
                None => {
                    std::thread::sleep(nap.min(left));
                    nap = (nap * 2).min(Duration::from_millis(10));
                }
            }
        }
    }
}

/// A pidfd (`pidfd_open`), closed on drop.
struct PidFd(i32);

impl PidFd {
    fn open(pid: libc::pid_t) -> Option<PidFd> {
        // SAFETY: pidfd_open of our own child; returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        (fd >= 0).then_some(PidFd(fd as i32))
    }

    /// Waits at most `limit` for the process to exit.
    fn wait_readable(&self, limit: Duration) {
        let mut pfd = libc::pollfd { fd: self.0, events: libc::POLLIN, revents: 0 };
        let ms = limit.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: one pollfd of ours.
        unsafe { libc::poll(&mut pfd, 1, ms) };
    }
}

impl Drop for PidFd {
    fn drop(&mut self) {
        // SAFETY: our descriptor, closed once.
        unsafe { libc::close(self.0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_signals_and_timeouts() {
        assert_eq!(spawn(|| 0).unwrap().wait(Duration::from_secs(10)), Exit::Code(0));
        assert_eq!(spawn(|| 7).unwrap().wait(Duration::MAX), Exit::Code(7));
        let hung = spawn(|| loop {
            std::thread::sleep(Duration::from_secs(1));
        })
        .unwrap();
        assert_eq!(hung.wait(Duration::from_millis(100)), Exit::TimedOut);
        let c = spawn(|| loop {
            std::thread::sleep(Duration::from_secs(1));
        })
        .unwrap();
        c.kill(libc::SIGUSR1).unwrap();
        assert_eq!(c.wait(Duration::from_secs(10)), Exit::Signal(libc::SIGUSR1));
        assert_eq!(Exit::Signal(libc::SIGBUS).to_string(), "killed by signal 7 (SIGBUS)");
    }

    #[test]
    fn a_panic_does_not_unwind_past_the_fork() {
        let c = spawn(|| panic!("in the child")).unwrap();
        assert_eq!(c.wait(Duration::from_secs(10)), Exit::Code(PANIC_EXIT));
    }

    #[test]
    fn try_wait_then_wait() {
        let mut c = spawn(|| 3).unwrap();
        let start = Instant::now();
        while c.try_wait().is_none() {
            assert!(start.elapsed() < Duration::from_secs(10));
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(c.try_wait(), Some(Exit::Code(3)));
        assert_eq!(c.wait(Duration::from_secs(1)), Exit::Code(3));
    }

    #[test]
    fn grandchildren() {
        let c = spawn(|| match spawn(|| 5) {
            Ok(g) => match g.wait(Duration::from_secs(10)) {
                Exit::Code(5) => 0,
                _ => 1,
            },
            Err(_) => 2,
        })
        .unwrap();
        assert_eq!(c.wait(Duration::from_secs(10)), Exit::Code(0));
    }
}
