// SPDX-License-Identifier: GPL-2.0

//! The shared ring of one queue: `WARPQ_RING_SIZE` bytes of zeroed,
//! vmalloc'ed kernel memory, mapped into user space page by page by the
//! fault handler. Layout: `uapi/warpq.h`.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use kernel::bindings;
use kernel::prelude::*;

use crate::shim::{self, PageRaw};
use crate::uapi::{self, hdr};

/// The ring's memory.
///
/// # Invariants
///
/// `base` points to `uapi::RING_SIZE` bytes from `vmalloc_user()`, owned by
/// this value and freed on drop; the header was initialised.
pub(crate) struct Ring {
    base: NonNull<u8>,
}

// SAFETY: the ring is plain memory; all concurrent access goes through
// atomics (header indices) or is validated after a racy read (entries).
unsafe impl Send for Ring {}
// SAFETY: as above.
unsafe impl Sync for Ring {}

impl Ring {
    /// Allocates a zeroed ring with its header filled in.
    pub(crate) fn new(owner_id: u64) -> Result<Self> {
        // SAFETY: no precondition; returns zeroed memory or null.
        let base = NonNull::new(unsafe { shim::warpq_ring_alloc(uapi::RING_SIZE) }).ok_or(ENOMEM)?;
        // INVARIANT: just allocated; initialised below before any use.
        let ring = Self { base };
        ring.word(hdr::MAGIC).store(uapi::RING_MAGIC, Ordering::Relaxed);
        ring.word(hdr::VERSION).store(uapi::VERSION, Ordering::Relaxed);
        ring.word(hdr::SQ_ENTRIES).store(uapi::SQ_ENTRIES, Ordering::Relaxed);
        ring.word(hdr::CQ_ENTRIES).store(uapi::CQ_ENTRIES, Ordering::Relaxed);
        ring.word(hdr::SQ_OFFSET).store(uapi::RING_SQ_OFFSET as u32, Ordering::Relaxed);
        ring.word(hdr::CQ_OFFSET).store(uapi::RING_CQ_OFFSET as u32, Ordering::Relaxed);
        ring.dword(hdr::OWNER_ID).store(owner_id, Ordering::Relaxed);
        Ok(ring)
    }

    /// The u32 header field at byte `offset`.
    fn word(&self, offset: usize) -> &AtomicU32 {
        // SAFETY: `offset` is one of the 4-byte aligned header offsets, inside
        // the allocation (type invariant); the memory lives as long as `self`
        // and is only accessed atomically at this offset.
        unsafe { AtomicU32::from_ptr(self.base.as_ptr().add(offset).cast()) }
    }

    /// The u64 header field at byte `offset`.
    fn dword(&self, offset: usize) -> &AtomicU64 {
        // SAFETY: as for `word`, with an 8-byte aligned offset.
        unsafe { AtomicU64::from_ptr(self.base.as_ptr().add(offset).cast()) }
    }

    /// One submission entry, copied out of the ring. User space may be
    /// writing it concurrently: the copy is validated, never trusted.
    fn read_sqe(&self, index: u32) -> Sqe {
        let slot = (index & (uapi::SQ_ENTRIES - 1)) as usize;
        let p = self.base.as_ptr().wrapping_add(uapi::RING_SQ_OFFSET + slot * 64).cast::<[u64; 8]>();
        // SAFETY: the slot lies inside the ring (type invariant, masked
        // index); a volatile read of plain integers copes with concurrent
        // user writes (a torn entry is just an invalid or odd command).
        let w = unsafe { core::ptr::read_volatile(p) };
        Sqe {
            opcode: (w[0] & 0xff) as u8,
            flags: ((w[0] >> 8) & 0xff) as u8,
            reserved: (w[0] >> 16) != 0 || w[6] != 0 || w[7] != 0,
            user_data: w[1],
            src: w[2],
            dst: w[3],
            len: w[4],
            value: w[5],
        }
    }

    /// The next submission to execute, if any, with its index. A tail that
    /// runs more than a ring ahead of the head is corrupt: nothing is taken.
    pub(crate) fn peek_sqe(&self) -> Option<Sqe> {
        let head = self.word(hdr::SQ_HEAD).load(Ordering::Relaxed);
        // Acquire: pairs with user space's store-release of the tail after
        // writing the entries.
        let tail = self.word(hdr::SQ_TAIL).load(Ordering::Acquire);
        let pending = tail.wrapping_sub(head);
        if pending == 0 || pending > uapi::SQ_ENTRIES {
            return None;
        }
        Some(self.read_sqe(head))
    }

    /// Submissions published and not yet taken (0 if the tail is corrupt).
    pub(crate) fn sq_pending(&self) -> u32 {
        let head = self.word(hdr::SQ_HEAD).load(Ordering::Relaxed);
        let tail = self.word(hdr::SQ_TAIL).load(Ordering::Acquire);
        let pending = tail.wrapping_sub(head);
        if pending > uapi::SQ_ENTRIES { 0 } else { pending }
    }

    /// Free completion slots (0 if user space's head is corrupt).
    pub(crate) fn cq_space(&self) -> u32 {
        let tail = self.word(hdr::CQ_TAIL).load(Ordering::Relaxed);
        // Acquire: user space released the slots it consumed.
        let head = self.word(hdr::CQ_HEAD).load(Ordering::Acquire);
        let used = tail.wrapping_sub(head);
        if used > uapi::CQ_ENTRIES { 0 } else { uapi::CQ_ENTRIES - used }
    }

    /// Completions posted and not yet consumed by user space.
    pub(crate) fn cq_ready(&self) -> u32 {
        let tail = self.word(hdr::CQ_TAIL).load(Ordering::Acquire);
        let head = self.word(hdr::CQ_HEAD).load(Ordering::Acquire);
        tail.wrapping_sub(head).min(uapi::CQ_ENTRIES)
    }

    /// Posts a completion and retires the submission it answers. The engine
    /// is the only producer of completions and the only consumer of
    /// submissions; the caller checked [`Ring::cq_space`].
    pub(crate) fn complete(&self, user_data: u64, status: u32, result: u64) {
        let tail = self.word(hdr::CQ_TAIL).load(Ordering::Relaxed);
        let slot = (tail & (uapi::CQ_ENTRIES - 1)) as usize;
        let p = self.base.as_ptr().wrapping_add(uapi::RING_CQ_OFFSET + slot * 32).cast::<[u64; 4]>();
        // SAFETY: the slot lies inside the ring (type invariant, masked
        // index); user space does not read it until the tail moves past it.
        unsafe { core::ptr::write_volatile(p, [user_data, u64::from(status), result, 0]) };
        if status == uapi::STATUS_INVALID {
            // The header's running count of malformed entries (one writer).
            let invalid = self.dword(hdr::SQ_INVALID);
            invalid.store(invalid.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
        }
        // Release: the entry is visible before the tail that publishes it.
        self.word(hdr::CQ_TAIL).store(tail.wrapping_add(1), Ordering::Release);
        let head = self.word(hdr::SQ_HEAD).load(Ordering::Relaxed);
        self.word(hdr::SQ_HEAD).store(head.wrapping_add(1), Ordering::Release);
    }

    /// SUBMIT: appends entries on the caller's behalf, as the SQ producer
    /// (the caller then does not produce through the mapping at the same
    /// time; concurrent SUBMITs are serialised by the queue). Returns how
    /// many fit.
    pub(crate) fn push_sqes(&self, entries: &[[u64; 8]]) -> usize {
        let tail = self.word(hdr::SQ_TAIL).load(Ordering::Relaxed);
        let head = self.word(hdr::SQ_HEAD).load(Ordering::Acquire);
        let used = tail.wrapping_sub(head);
        if used > uapi::SQ_ENTRIES {
            return 0;
        }
        let room = (uapi::SQ_ENTRIES - used) as usize;
        let n = entries.len().min(room);
        for (i, e) in entries.iter().take(n).enumerate() {
            let slot = (tail.wrapping_add(i as u32) & (uapi::SQ_ENTRIES - 1)) as usize;
            let p = self.base.as_ptr().wrapping_add(uapi::RING_SQ_OFFSET + slot * 64).cast::<[u64; 8]>();
            // SAFETY: the slot lies inside the ring (type invariant, masked
            // index) and is free (between tail and head + entries).
            unsafe { core::ptr::write_volatile(p, *e) };
        }
        // Release: the entries before the tail that publishes them.
        self.word(hdr::SQ_TAIL).store(tail.wrapping_add(n as u32), Ordering::Release);
        n
    }

    /// Sets or clears kernel-owned flags in the header.
    pub(crate) fn set_flag(&self, flag: u32, on: bool) {
        if on {
            self.word(hdr::FLAGS).fetch_or(flag, Ordering::SeqCst);
        } else {
            self.word(hdr::FLAGS).fetch_and(!flag, Ordering::SeqCst);
        }
    }

    /// The page backing page `index` of the mapping, if in range.
    pub(crate) fn page(&self, index: usize) -> Option<NonNull<PageRaw>> {
        if index >= uapi::RING_SIZE.div_ceil(kernel::page::PAGE_SIZE) {
            return None;
        }
        // SAFETY: the address is inside the vmalloc allocation (type
        // invariant and the check above).
        NonNull::new(unsafe { bindings::vmalloc_to_page(self.base.as_ptr().add(index * kernel::page::PAGE_SIZE).cast()) }.cast())
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: allocated by `warpq_ring_alloc` (type invariant). Pages
        // still mapped in user space keep their own references.
        unsafe { shim::warpq_ring_free(self.base.as_ptr()) };
    }
}

/// A submission entry as the engine sees it (`struct warpq_sqe`).
#[derive(Clone, Copy)]
pub(crate) struct Sqe {
    pub(crate) opcode: u8,
    pub(crate) flags: u8,
    /// Some reserved field is not zero.
    pub(crate) reserved: bool,
    pub(crate) user_data: u64,
    pub(crate) src: u64,
    pub(crate) dst: u64,
    pub(crate) len: u64,
    pub(crate) value: u64,
}
