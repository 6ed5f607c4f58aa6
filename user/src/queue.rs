//! [`Queue`]: one process's mapped queue, in the io-uring crate's shape.

use std::os::fd::AsRawFd;
use std::time::Duration;

use crate::entry::{Completion, Entry};
use crate::error::{Error, ErrorKind, Op, Result};
use crate::ring::{CompletionQueue, Core, PushError, SubmissionQueue, Submitter};
use crate::sys::{self, warpq_cqe, warpq_ring_header, warpq_sqe};
use crate::{Device, QueueMapping};

/// This process's queue on a device: a shared ring of submissions and
/// completions, driven with no system call per command.
///
/// ```no_run
/// use warpq::{opcode, Access, Device};
/// # fn main() -> warpq::Result<()> {
/// let dev = Device::open("/dev/warpq0")?;
/// let mut q = dev.queue()?;
/// let src = dev.alloc(4096, Access::Read)?;
/// let dst = dev.alloc(4096, Access::Write)?;
/// q.submission()
///     .push(&opcode::Copy::new(src.addr(), dst.addr(), 4096).build().user_data(42))
///     .expect("ring full");
/// q.submit_and_wait(1)?;
/// let c = q.completion().next().expect("one completion");
/// assert_eq!(c.user_data(), 42);
/// assert!(c.status().is_ok(), "{}", c.status());
/// # Ok(()) }
/// ```
///
/// - [`submission`](Self::submission) / [`completion`](Self::completion)
///   give the two sides of the ring; [`split`](Self::split) gives both at
///   once with a [`Submitter`], to reap and push in the same loop.
/// - [`submit`](Self::submit) publishes what was pushed and makes a system
///   call only if the engine sleeps (need-wakeup);
///   [`submit_and_wait`](Self::submit_and_wait) also blocks for completions.
/// - [`submit_batch`](Self::submit_batch) is the system-call path
///   (`WARPQ_IOC_SUBMIT`), usable in between.
///
/// **Fork**: the child's touch of the inherited mapping gives it a fresh
/// queue of its own (the driver's fault-time per-mm queue; it never sees
/// the parent's). This `Queue` notices (the ring's owner id changed) and
/// its [`submit`](Self::submit), [`wait`](Self::wait) and friends fail with
/// [`ErrorKind::Forked`](crate::ErrorKind::Forked), saying to call
/// [`Device::queue`] in the child, instead of driving a ring they do not
/// know. Pushes and the completion iterator only ever see the child's own,
/// empty ring.
///
/// A `Queue` can move between threads (`Send`) but is used by one at a time.
pub struct Queue<'d> {
    dev: &'d Device,
    core: Core<QueueMapping>,
}

impl std::fmt::Debug for Queue<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").field("owner_id", &self.owner_id()).field("in_flight", &self.in_flight()).finish()
    }
}

impl Drop for Queue<'_> {
    fn drop(&mut self) {
        // Lets this process make another (the mapping itself is unmapped by
        // `QueueMapping`'s drop; the kernel keeps the queue). Not for a
        // Queue inherited through fork: the child's own may be live.
        if self.core.pid() == std::process::id() {
            self.dev.release_queue();
        }
    }
}

impl<'d> Queue<'d> {
    pub(crate) fn new(dev: &'d Device, map: QueueMapping) -> Self {
        Self { dev, core: Core::new(map) }
    }

    /// The submission side.
    pub fn submission(&mut self) -> SubmissionQueue<'_> {
        self.core.sq()
    }

    /// The completion side.
    pub fn completion(&mut self) -> CompletionQueue<'_> {
        self.core.cq()
    }

    /// The system-call side.
    pub fn submitter(&self) -> Submitter<'_> {
        self.core.submitter(self.dev)
    }

    /// All three sides at once.
    pub fn split(&mut self) -> (Submitter<'_>, SubmissionQueue<'_>, CompletionQueue<'_>) {
        (self.core.submitter(self.dev), self.core.sq(), self.core.cq())
    }

    /// Publishes the pushed entries; wakes the engine (a system call) only
    /// if it sleeps. Returns how many entries were pushed since the
    /// previous `submit`.
    pub fn submit(&mut self) -> Result<usize> {
        self.submitter().submit()
    }

    /// [`submit`](Self::submit), then blocks until at least `want`
    /// completions are ready (never more than are ready or in flight).
    /// Returns how many are ready.
    pub fn submit_and_wait(&mut self, want: usize) -> Result<usize> {
        self.submitter().submit_and_wait(want)
    }

    /// Blocks until at least `min_ready` completions are ready or the
    /// timeout passes; returns how many are ready.
    pub fn wait(&mut self, min_ready: u32, timeout: Option<Duration>) -> Result<u32> {
        self.submitter().wait(min_ready, timeout)
    }

    /// Blocks in `poll(2)` on the device file until completions are ready
    /// (`EPOLLIN`) or the timeout passes; returns how many are ready (0 on
    /// timeout). Unlike [`wait`](Self::wait) it never makes the kernel
    /// rebuild anything: it only sleeps, as an event loop would. Fails
    /// with [`ErrorKind::QueueGone`](crate::ErrorKind::QueueGone) once the
    /// queue is dead (the device was unbound: `EPOLLERR | EPOLLHUP`).
    pub fn poll_completions(&mut self, timeout: Option<Duration>) -> Result<usize> {
        let deadline = timeout.map(|t| std::time::Instant::now() + t);
        loop {
            let ready = self.completion().len();
            if ready > 0 {
                return Ok(ready);
            }
            self.check_alive()?;
            let ms = match deadline {
                None => -1,
                Some(d) => match d.checked_duration_since(std::time::Instant::now()) {
                    None => return Ok(0),
                    Some(left) => left.as_millis().min(i32::MAX as u128).max(1) as i32,
                },
            };
            let mut pfd = libc::pollfd { fd: self.dev.as_file().as_raw_fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid pollfd for the duration of the call.
            let n = unsafe { libc::poll(&mut pfd, 1, ms) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(Error::from_io(Op::Poll, &e));
                }
            }
        }
    }

    /// `Err(QueueGone)` if the ring says the queue is dead.
    pub(crate) fn check_alive(&self) -> Result<()> {
        if self.header().flags & sys::WARPQ_RING_DEAD != 0 {
            return Err(Error::new(
                Op::Poll,
                ErrorKind::QueueGone,
                None,
                "the queue is dead (the device was unbound or removed): open the device again",
            ));
        }
        Ok(())
    }

    /// Queues `entries` with one `WARPQ_IOC_SUBMIT` (the system-call path),
    /// after whatever was pushed through the ring; returns how many fit.
    pub fn submit_batch(&mut self, entries: &[Entry]) -> Result<usize> {
        self.submitter().submit_batch(entries)
    }

    /// Fails with [`ErrorKind::Forked`](crate::ErrorKind::Forked) if this
    /// process is not the one the queue was made for.
    pub fn check_owner(&self) -> Result<()> {
        self.submitter().check_owner()
    }

    /// Pushes one raw entry (the ABI structure): shorthand for
    /// `self.submission().push(..)`. Not visible to the device before
    /// [`submit`](Self::submit).
    pub fn push(&mut self, sqe: &warpq_sqe) -> Result<(), PushError> {
        self.core.sq_push_raw(sqe)
    }

    /// Takes the next completion, if any, as the raw ABI structure:
    /// shorthand for `self.completion().next()`.
    pub fn pop(&mut self) -> Option<warpq_cqe> {
        self.core.cq().next().map(Completion::into_raw)
    }

    /// Entries pushed and not yet completed by the device.
    pub fn in_flight(&self) -> u32 {
        self.core.in_flight()
    }

    /// How many system calls [`submit`](Self::submit) made to wake the
    /// engine, over this queue's life.
    pub fn wakeups(&self) -> u64 {
        self.core.wakeups()
    }

    /// The kernel's identity of this queue (differs between parent and child).
    pub fn owner_id(&self) -> u64 {
        self.core.owner_id()
    }

    /// The header (a racy snapshot).
    pub fn header(&self) -> warpq_ring_header {
        self.core.ring().header()
    }

    /// The device this queue belongs to.
    pub fn device(&self) -> &'d Device {
        self.dev
    }

    /// The ring's sizes: (`WARPQ_SQ_ENTRIES`, `WARPQ_CQ_ENTRIES`).
    pub fn capacity(&self) -> (usize, usize) {
        (sys::WARPQ_SQ_ENTRIES as usize, sys::WARPQ_CQ_ENTRIES as usize)
    }
}
