//! `warpq-user-check queue-limit`: `max_queues_per_user` bounds the queues
//! (and so the engine threads) one user can make on a device. With the
//! limit at 3, an unprivileged child (uid 65534) that opened 5 files gets
//! queues on the first 3, EDQUOT on the 4th, and a queue on it once it
//! closed one; root (CAP_SYS_RESOURCE) makes 5 beside it.

use std::time::Duration;

use warpq::sys::*;

use crate::harness::run_case;
use crate::mem::Anon;
use crate::param::ParamGuard;
use crate::raw::{self, Errno};
use crate::report::Report;

const LIMIT: usize = 3;
const FILES: usize = 5;

fn open_all(path: &str) -> Result<Vec<i32>, String> {
    let cpath = std::ffi::CString::new(path).map_err(|e| e.to_string())?;
    (0..FILES)
        .map(|_| {
            // SAFETY: a valid NUL-terminated path.
            let fd = unsafe { libc::open(cpath.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
            if fd < 0 {
                Err(format!("open {path}: {}", Errno::last()))
            } else {
                Ok(fd)
            }
        })
        .collect()
}

/// A REGISTER on `fd`: the file's first ioctl of this process makes its queue.
fn make_queue(fd: i32, buf: &Anon) -> Result<u64, Errno> {
    raw::register(fd, buf.addr(0), buf.len() as u64, WARPQ_ACCESS_READ)
}

fn close(fd: i32) {
    // SAFETY: our descriptor, closed once.
    unsafe { libc::close(fd) };
}

/// In a child: the files opened as root, then uid 65534 makes queues.
fn unprivileged(path: &str) -> Result<String, String> {
    let fds = open_all(path)?;
    // SAFETY: plain system calls on this process's credentials.
    let dropped = unsafe { libc::setresgid(65534, 65534, 65534) == 0 && libc::setresuid(65534, 65534, 65534) == 0 };
    if !dropped {
        return Err(format!("setresuid: {}", Errno::last()));
    }
    let buf = Anon::new(4096);
    buf.write(&[1]);
    for (i, &fd) in fds.iter().enumerate().take(LIMIT) {
        make_queue(fd, &buf).map_err(|e| format!("queue {} of {LIMIT}: {e}", i + 1))?;
    }
    match make_queue(fds[LIMIT], &buf) {
        Err(Errno(libc::EDQUOT)) => {}
        other => {
            return Err(format!("queue {} over the limit of {LIMIT}: {} (want EDQUOT)", LIMIT + 1, raw::show(&other)))
        }
    }
    // Closing a file ends its queue (its last reference, once the engine
    // and the deferred release are done): the count goes down.
    close(fds[0]);
    let mut waited = Duration::ZERO;
    loop {
        match make_queue(fds[LIMIT], &buf) {
            Ok(_) => break,
            Err(Errno(libc::EDQUOT)) if waited < Duration::from_secs(5) => {
                std::thread::sleep(Duration::from_millis(20));
                waited += Duration::from_millis(20);
            }
            other => {
                return Err(format!("after closing a file, queue {}: {} (want success)", LIMIT + 1, raw::show(&other)))
            }
        }
    }
    fds[1..].iter().for_each(|&fd| close(fd));
    Ok(format!(
        "uid 65534 with max_queues_per_user={LIMIT}: {LIMIT} queues, the next EDQUOT, and a queue again {waited:?} \
         after closing one file"
    ))
}

/// The check (an `ok` line of `r`).
pub fn queue_limit(r: &mut Report, path: &str) -> Result<(), String> {
    let _limit = ParamGuard::set("max_queues_per_user", &LIMIT.to_string())?;
    let p = path.to_string();
    let msg = run_case(Duration::from_secs(60), move || unprivileged(&p)).into_result()?;
    // Root is exempt (CAP_SYS_RESOURCE).
    let fds = open_all(path)?;
    let buf = Anon::new(4096);
    buf.write(&[1]);
    let made = fds.iter().map(|&fd| make_queue(fd, &buf)).filter(Result::is_ok).count();
    fds.iter().for_each(|&fd| close(fd));
    if made != FILES {
        return Err(format!("root made {made} of {FILES} queues with max_queues_per_user={LIMIT}"));
    }
    r.ok("max_queues_per_user", &format!("{msg}; root (CAP_SYS_RESOURCE) made {FILES}"));
    Ok(())
}
