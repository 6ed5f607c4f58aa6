//! The submission/completion ring of one process's queue.
//!
//! Ownership of the indices (see `driver/uapi/warpq.h`): user space writes
//! `sq_tail` and `cq_head`, the kernel writes `sq_head`, `cq_tail` and
//! `flags`. Every index is published with a store-release after the entries
//! it covers were written, and read with a load-acquire before the entries
//! it covers are read.

use std::io;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

use crate::sys::{self, warpq_cqe, warpq_ring_header, warpq_sqe};
use crate::{Device, QueueMapping};

/// Why a submission was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The submission ring is full: submit and reap completions first.
    Full,
}

/// A mapped queue: push submissions, publish them, reap completions.
#[derive(Debug)]
pub struct Queue<'d> {
    dev: &'d Device,
    map: QueueMapping,
    owner_id: u64,
    sq_tail: u32,
}

impl<'d> Queue<'d> {
    pub(crate) fn new(dev: &'d Device, map: QueueMapping) -> Self {
        let owner_id = map.header().owner_id;
        // Start from where the ring is (a queue mapped again after an unmap).
        let sq_tail = map.header().sq_tail;
        Self { dev, map, owner_id, sq_tail }
    }

    fn field<T>(&self, offset: usize) -> &T {
        // SAFETY: `offset` is the offset of an aligned header field of type
        // T (an atomic); the mapping lives as long as `self`.
        unsafe { &*self.map.as_ptr().add(offset).cast::<T>() }
    }

    fn sq_head(&self) -> &AtomicU32 {
        self.field(std::mem::offset_of!(warpq_ring_header, sq_head))
    }
    fn sq_tail_word(&self) -> &AtomicU32 {
        self.field(std::mem::offset_of!(warpq_ring_header, sq_tail))
    }
    fn cq_head(&self) -> &AtomicU32 {
        self.field(std::mem::offset_of!(warpq_ring_header, cq_head))
    }
    fn cq_tail(&self) -> &AtomicU32 {
        self.field(std::mem::offset_of!(warpq_ring_header, cq_tail))
    }
    fn flags(&self) -> &AtomicU32 {
        self.field(std::mem::offset_of!(warpq_ring_header, flags))
    }
    fn ring_owner(&self) -> &AtomicU64 {
        self.field(std::mem::offset_of!(warpq_ring_header, owner_id))
    }

    /// The kernel's identity of this queue (differs between parent and child).
    pub fn owner_id(&self) -> u64 {
        self.owner_id
    }

    /// Fails if this mapping now shows another process's queue: after fork
    /// the child's touch of the mapping gives it a fresh queue of its own,
    /// which this value (made for the parent) must not drive.
    fn check_owner(&self) -> io::Result<()> {
        if self.ring_owner().load(Ordering::Relaxed) != self.owner_id {
            return Err(io::Error::new(
                io::ErrorKind::Other,
                "this Queue was created by another process (fork): call Device::queue() again in this process",
            ));
        }
        Ok(())
    }

    /// Queues one submission (not yet visible to the device: see [`Queue::submit`]).
    pub fn push(&mut self, sqe: &warpq_sqe) -> Result<(), PushError> {
        // Acquire: the kernel consumed the entries before it moved the head.
        let head = self.sq_head().load(Ordering::Acquire);
        if self.sq_tail.wrapping_sub(head) >= sys::WARPQ_SQ_ENTRIES {
            return Err(PushError::Full);
        }
        let slot = (self.sq_tail & (sys::WARPQ_SQ_ENTRIES - 1)) as usize;
        // SAFETY: the slot is inside the mapping, and not read by the kernel
        // until the tail published below covers it.
        unsafe {
            let p = self.map.as_ptr().add(sys::WARPQ_RING_SQ_OFFSET + slot * 64).cast::<warpq_sqe>();
            std::ptr::write_volatile(p, *sqe);
        }
        self.sq_tail = self.sq_tail.wrapping_add(1);
        Ok(())
    }

    /// Publishes the pushed submissions. Makes a system call only if the
    /// engine sleeps (need-wakeup); returns whether it did.
    pub fn submit(&mut self) -> io::Result<bool> {
        self.check_owner()?;
        // Release: the entries are visible before the tail that covers them.
        self.sq_tail_word().store(self.sq_tail, Ordering::Release);
        // SeqCst fence before reading need-wakeup: either the engine sees the
        // new tail when it re-checks after setting the flag, or we see the flag.
        fence(Ordering::SeqCst);
        if self.flags().load(Ordering::Relaxed) & sys::WARPQ_RING_NEED_WAKEUP != 0 {
            self.dev.wake()?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Takes the next completion, if any.
    pub fn pop(&mut self) -> Option<warpq_cqe> {
        let head = self.cq_head().load(Ordering::Relaxed);
        // Acquire: the entry is written before the tail that covers it.
        let tail = self.cq_tail().load(Ordering::Acquire);
        if head == tail {
            return None;
        }
        let slot = (head & (sys::WARPQ_CQ_ENTRIES - 1)) as usize;
        // SAFETY: the slot is inside the mapping and was published by the tail.
        let cqe = unsafe {
            std::ptr::read_volatile(self.map.as_ptr().add(sys::WARPQ_RING_CQ_OFFSET + slot * 32).cast::<warpq_cqe>())
        };
        // Release: we are done reading the slot before the kernel may reuse it.
        self.cq_head().store(head.wrapping_add(1), Ordering::Release);
        Some(cqe)
    }

    /// Submissions pushed and not yet completed by the device.
    pub fn in_flight(&self) -> u32 {
        self.sq_tail.wrapping_sub(self.sq_head().load(Ordering::Acquire))
    }

    /// Blocks until at least `min_ready` completions are waiting (or the
    /// timeout passes); wakes the engine and lets the driver rebuild what an
    /// invalidation tore down. Returns how many are ready.
    pub fn wait(&mut self, min_ready: u32, timeout: Option<std::time::Duration>) -> io::Result<u32> {
        self.check_owner()?;
        self.dev.wait(min_ready, timeout)
    }

    /// The header (a racy snapshot).
    pub fn header(&self) -> warpq_ring_header {
        self.map.header()
    }
}
