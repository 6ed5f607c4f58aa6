//! One test case in a child process: its message back through a pipe, and
//! a clear failure for a case that dies, hangs or ends without a word.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use super::{exit, spawn, Exit};

/// How a case run by [`run_case`] went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseOutcome {
    /// The case's own `Ok`/`Err` message; when it sent none (it died or
    /// hung first) or hung after sending it, an `Err` saying how its
    /// process ended.
    pub result: Result<String, String>,
    /// How the case's process ended.
    pub exit: Exit,
    /// Whether the case sent its message before its process ended.
    pub reported: bool,
}

impl CaseOutcome {
    /// The verdict alone.
    pub fn into_result(self) -> Result<String, String> {
        self.result
    }
}

/// Runs `f` in a child process with the time limit `limit` and returns its
/// message. A panic in `f` is a failure with the panic's text; a child that
/// is killed by a signal, exits without a message, or runs past `limit`
/// (then killed with SIGKILL; its kernel stack, if readable, is in the
/// message) fails with a message that says which.
pub fn run_case(limit: Duration, f: impl FnOnce() -> Result<String, String>) -> CaseOutcome {
    let (read, write) = match pipe() {
        Ok(p) => p,
        Err(e) => return setup_failure(format!("pipe: {e}")),
    };
    let read_fd = read.as_raw_fd();
    let child = spawn(move || {
        // SAFETY: the child's copy of the read end, which it does not use.
        unsafe { libc::close(read_fd) };
        let msg = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
            Ok(Ok(m)) => format!("o{m}"),
            Ok(Err(e)) => format!("f{e}"),
            Err(panic) => format!("fpanicked: {}", panic_text(&*panic)),
        };
        write_all(write.as_raw_fd(), msg.as_bytes());
        exit(0)
    });
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return setup_failure(format!("fork: {e}")),
    };
    // `write` was moved into the closure and dropped with it here, so the
    // pipe ends when the child (and any grandchild that kept it) does.
    let start = Instant::now();
    let mut out = Vec::new();
    let mut eof = false;
    let mut stack = String::new();
    let exit = loop {
        if !eof {
            eof = read_some(&read, &mut out, Duration::from_millis(20));
        } else {
            std::thread::sleep(Duration::from_millis(5));
        }
        if let Some(e) = child.try_wait() {
            break e;
        }
        if start.elapsed() > limit {
            stack = child.kernel_stack();
            break child.wait(Duration::ZERO);
        }
    };
    // What the child wrote before it ended.
    while !eof {
        let before = out.len();
        eof = read_some(&read, &mut out, Duration::ZERO) || out.len() == before;
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let reported = matches!(text.chars().next(), Some('o' | 'f'));
    let message = if reported { text[1..].to_string() } else { String::new() };
    let result = match exit {
        Exit::TimedOut => Err(format!(
            "no result within {limit:?}: the case hung and was killed{}{}",
            if reported { format!(" (it had reported: {message})") } else { String::new() },
            if stack.is_empty() { String::new() } else { format!("; its kernel stack: {}", stack.trim_end()) }
        )),
        _ if text.starts_with('o') => Ok(message),
        _ if text.starts_with('f') => Err(message),
        e => Err(format!("the case's process ended without a result ({e})")),
    };
    CaseOutcome { result, exit, reported }
}

fn setup_failure(why: String) -> CaseOutcome {
    CaseOutcome { result: Err(why), exit: Exit::Code(-1), reported: false }
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut p = [0; 2];
    // SAFETY: pipe writes two descriptors into `p`.
    if unsafe { libc::pipe(p.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: two fresh descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1])) })
}

fn write_all(fd: i32, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: writes from our buffer to our descriptor.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n <= 0 {
            return;
        }
        bytes = &bytes[n as usize..];
    }
}

/// Reads what is there within `wait` into `out`; whether the pipe ended.
fn read_some(fd: &OwnedFd, out: &mut Vec<u8>, wait: Duration) -> bool {
    let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one pollfd of ours.
    if unsafe { libc::poll(&mut pfd, 1, wait.as_millis() as i32) } <= 0 {
        return false;
    }
    let mut chunk = [0u8; 4096];
    // SAFETY: reads into our buffer.
    let n = unsafe { libc::read(fd.as_raw_fd(), chunk.as_mut_ptr().cast(), chunk.len()) };
    if n <= 0 {
        return true;
    }
    out.extend_from_slice(&chunk[..n as usize]);
    false
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_come_back() {
        let o = run_case(Duration::from_secs(10), || Ok("fine".into()));
        assert_eq!((o.result, o.exit, o.reported), (Ok("fine".into()), Exit::Code(0), true));
        let o = run_case(Duration::from_secs(10), || Err("bad\nline".into()));
        assert_eq!(o.result, Err("bad\nline".into()));
        let long = "x".repeat(200_000);
        let o = run_case(Duration::from_secs(10), || Ok(long.clone()));
        assert_eq!(o.result.map(|m| m.len()), Ok(200_000));
    }

    #[test]
    fn deaths_and_hangs_are_failures() {
        let o = run_case(Duration::from_secs(10), || panic!("boom"));
        assert_eq!(o.result, Err("panicked: boom".into()));
        // A real SIGBUS: a read of a shared mapping past the end of its file
        // (std's handler for SIGBUS passes a fault on; a raise() it absorbs).
        let o = run_case(Duration::from_secs(10), || {
            // SAFETY: a fresh memfd of one page, mapped, then truncated to 0;
            // the volatile read past its end faults (the point).
            unsafe {
                let fd = libc::memfd_create(c"sigbus".as_ptr(), 0);
                libc::ftruncate(fd, 4096);
                let p = libc::mmap(std::ptr::null_mut(), 4096, libc::PROT_READ, libc::MAP_SHARED, fd, 0);
                libc::ftruncate(fd, 0);
                std::ptr::read_volatile(p.cast::<u8>());
            }
            Ok(String::new())
        });
        assert_eq!((o.exit, o.reported), (Exit::Signal(libc::SIGBUS), false));
        assert!(o.result.unwrap_err().contains("SIGBUS"));
        let o = run_case(Duration::from_millis(200), || loop {
            std::thread::sleep(Duration::from_secs(1));
        });
        assert_eq!(o.exit, Exit::TimedOut);
        assert!(o.result.unwrap_err().contains("hung"));
    }
}
