//! [`AsyncQueue`]: a [`Queue`] whose completions a tokio task can await
//! (cargo feature `tokio`).
//!
//! The device file is registered with tokio's reactor through
//! [`AsyncFd`]; the driver's `poll` says `EPOLLIN` when the caller's queue
//! has completions and wakes the file's pollers once per batch it
//! publishes. Each `Device` (each open of `/dev/warpqN`) is one queue, so
//! one task drives several queues by awaiting several `AsyncQueue`s, for
//! example with `tokio::join!` or `tokio::select!`.

use std::os::fd::{AsRawFd, RawFd};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::error::{Error, Op, Result};
use crate::ring::CompletionQueue;
use crate::Queue;

/// The device file's descriptor, as the reactor sees it. It does not own
/// the descriptor: the `Device` the queue borrows does, and outlives it.
struct DeviceFd(RawFd);

impl AsRawFd for DeviceFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// A [`Queue`] registered with the current tokio runtime's reactor.
///
/// Submission is as on the `Queue` ([`get_mut`](Self::get_mut): push,
/// then `submit`, which never blocks); completions are awaited with
/// [`completions`](Self::completions).
pub struct AsyncQueue<'d> {
    queue: Queue<'d>,
    fd: AsyncFd<DeviceFd>,
}

impl<'d> AsyncQueue<'d> {
    /// Registers `queue`'s device file with the reactor of the runtime this
    /// is called in (which needs its I/O driver: `enable_io`).
    pub fn new(queue: Queue<'d>) -> Result<Self> {
        let raw = queue.device().as_file().as_raw_fd();
        // SAFETY: the descriptor is the `Device`'s file, open for 'd, and
        // the AsyncFd lives in `self`, which cannot outlive 'd; `DeviceFd`
        // returns that same descriptor every time.
        let fd = unsafe { AsyncFd::register_with_interest(DeviceFd(raw), Interest::READABLE) }.map_err(|e| {
            let (_, e) = e.into_parts();
            Error::from_io(Op::Poll, &e).with_hint(format!("registering with tokio's reactor: {e}"))
        })?;
        Ok(Self { queue, fd })
    }

    /// The queue, to push and submit.
    pub fn get_mut(&mut self) -> &mut Queue<'d> {
        &mut self.queue
    }

    /// The queue, out of the reactor.
    pub fn into_inner(self) -> Queue<'d> {
        self.queue
    }

    /// Waits until at least one completion is ready, then gives the
    /// completion side. Fails with
    /// [`ErrorKind::QueueGone`](crate::ErrorKind::QueueGone) if the queue
    /// dies meanwhile (the device was unbound).
    pub async fn completions(&mut self) -> Result<CompletionQueue<'_>> {
        loop {
            // Readiness first, then the ring: a batch published after this
            // look at the ring makes the reactor ready again (tokio keeps a
            // readiness event that arrives after `readable` returned, and
            // `clear_ready` clears only what was seen), so none is lost.
            let mut guard = self.fd.readable().await.map_err(|e| Error::from_io(Op::Poll, &e))?;
            if !self.queue.completion().is_empty() {
                break;
            }
            self.queue.check_alive()?;
            guard.clear_ready();
        }
        Ok(self.queue.completion())
    }
}

impl std::fmt::Debug for AsyncQueue<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncQueue").field("queue", &self.queue).finish()
    }
}
