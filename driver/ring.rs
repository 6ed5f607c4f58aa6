// SPDX-License-Identifier: GPL-2.0

//! The shared ring of one queue: `WARPQ_RING_SIZE` bytes of zeroed,
//! vmalloc'ed kernel memory, mapped into user space page by page by the
//! fault handler. Layout: `uapi/warpq.h`.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use kernel::bindings;
use kernel::prelude::*;

use crate::shim::{self, PageRaw};
use crate::uapi;

/// Byte offsets of the ring header's fields, from the generated layout of
/// `struct warpq_ring_header`.
mod hdr {
    use crate::uapi::warpq_ring_header as Header;
    use core::mem::offset_of;

    pub(super) const MAGIC: usize = offset_of!(Header, magic);
    pub(super) const VERSION: usize = offset_of!(Header, version);
    pub(super) const SQ_ENTRIES: usize = offset_of!(Header, sq_entries);
    pub(super) const CQ_ENTRIES: usize = offset_of!(Header, cq_entries);
    pub(super) const SQ_OFFSET: usize = offset_of!(Header, sq_offset);
    pub(super) const CQ_OFFSET: usize = offset_of!(Header, cq_offset);
    pub(super) const OWNER_ID: usize = offset_of!(Header, owner_id);
    pub(super) const SQ_HEAD: usize = offset_of!(Header, sq_head);
    pub(super) const SQ_TAIL: usize = offset_of!(Header, sq_tail);
    pub(super) const CQ_HEAD: usize = offset_of!(Header, cq_head);
    pub(super) const CQ_TAIL: usize = offset_of!(Header, cq_tail);
    pub(super) const FLAGS: usize = offset_of!(Header, flags);
    pub(super) const SQ_INVALID: usize = offset_of!(Header, sq_invalid);
}

/// The ring's memory, and the kernel's own copies of the indices it writes.
///
/// Ownership of the shared page (`uapi/warpq.h`): user space owns `sq_tail`,
/// `cq_head` and the submission entries between `sq_head` and `sq_tail`;
/// the kernel owns `sq_head`, `cq_tail`, `flags`, `sq_invalid` and the
/// completion entries between `cq_head` and `cq_tail`. User space can write
/// the whole page, so the kernel never reads back an index it owns from it:
/// `sq_head` and `cq_tail` live here and are only published to the page.
/// A rewound index in the page then changes nothing the kernel does.
///
/// # Invariants
///
/// `base` points to `uapi::WARPQ_RING_SIZE` bytes from `vmalloc_user()`, owned by
/// this value and freed on drop; the header was initialised.
///
/// Completions are posted one by one and published per batch: [`Ring::post`]
/// writes an entry and takes its submission, [`Ring::publish`] moves the
/// published indices over everything posted with one release store each.
/// Only the engine posts and publishes (one thread per queue at a time).
pub(crate) struct Ring {
    base: NonNull<u8>,
    /// The first submission not yet published as taken (published as
    /// `sq_head`; user space may reuse the slots before it).
    sq_head: AtomicU32,
    /// One past the last completion published (published as `cq_tail`).
    cq_tail: AtomicU32,
    /// The next submission the engine takes: past every submission it
    /// completed, posted or set aside (`take`). Engine only.
    sq_taken: AtomicU32,
    /// One past the last completion posted: `cq_tail` plus the unpublished
    /// ones. Engine only.
    cq_posted: AtomicU32,
    /// Where `publish` keeps `sq_head` while commands are set aside (the
    /// oldest one's index), or `NO_HOLD`. Engine only.
    sq_hold: AtomicU64,
}

/// `Ring::sq_hold` when nothing is set aside.
const NO_HOLD: u64 = u64::MAX;

// SAFETY: the ring is plain memory; all concurrent access goes through
// atomics (header indices) or is validated after a racy read (entries).
unsafe impl Send for Ring {}
// SAFETY: as above.
unsafe impl Sync for Ring {}

impl Ring {
    /// Allocates a zeroed ring with its header filled in.
    pub(crate) fn new(owner_id: u64) -> Result<Self> {
        // SAFETY: no precondition; returns zeroed memory or null.
        let base = NonNull::new(unsafe { shim::warpq_ring_alloc(uapi::WARPQ_RING_SIZE) }).ok_or(ENOMEM)?;
        // INVARIANT: just allocated; initialised below before any use.
        let ring = Self {
            base,
            sq_head: AtomicU32::new(0),
            cq_tail: AtomicU32::new(0),
            sq_taken: AtomicU32::new(0),
            cq_posted: AtomicU32::new(0),
            sq_hold: AtomicU64::new(NO_HOLD),
        };
        ring.word(hdr::MAGIC).store(uapi::WARPQ_RING_MAGIC, Ordering::Relaxed);
        ring.word(hdr::VERSION).store(uapi::WARPQ_UAPI_VERSION, Ordering::Relaxed);
        ring.word(hdr::SQ_ENTRIES).store(uapi::WARPQ_SQ_ENTRIES, Ordering::Relaxed);
        ring.word(hdr::CQ_ENTRIES).store(uapi::WARPQ_CQ_ENTRIES, Ordering::Relaxed);
        ring.word(hdr::SQ_OFFSET).store(uapi::WARPQ_RING_SQ_OFFSET as u32, Ordering::Relaxed);
        ring.word(hdr::CQ_OFFSET).store(uapi::WARPQ_RING_CQ_OFFSET as u32, Ordering::Relaxed);
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
        let slot = (index & (uapi::WARPQ_SQ_ENTRIES - 1)) as usize;
        let p = self.base.as_ptr().wrapping_add(uapi::WARPQ_RING_SQ_OFFSET + slot * 64).cast::<[u64; 8]>();
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
        let head = self.sq_taken.load(Ordering::Relaxed);
        // Acquire: pairs with user space's store-release of the tail after
        // writing the entries.
        let tail = self.word(hdr::SQ_TAIL).load(Ordering::Acquire);
        let pending = tail.wrapping_sub(head);
        if pending == 0 || pending > uapi::WARPQ_SQ_ENTRIES {
            return None;
        }
        Some(self.read_sqe(head))
    }

    /// Submissions published by user space and not yet taken by the engine
    /// (0 if the tail is corrupt). The engine's view: it counts what is
    /// posted but not yet published as taken.
    pub(crate) fn sq_pending(&self) -> u32 {
        let head = self.sq_taken.load(Ordering::Relaxed);
        let tail = self.word(hdr::SQ_TAIL).load(Ordering::Acquire);
        let pending = tail.wrapping_sub(head);
        if pending > uapi::WARPQ_SQ_ENTRIES {
            0
        } else {
            pending
        }
    }

    /// Free submission slots as user space sees them (0 if its tail is
    /// corrupt).
    pub(crate) fn sq_space(&self) -> u32 {
        let head = self.sq_head.load(Ordering::Acquire);
        let tail = self.word(hdr::SQ_TAIL).load(Ordering::Acquire);
        let used = tail.wrapping_sub(head);
        if used > uapi::WARPQ_SQ_ENTRIES {
            0
        } else {
            uapi::WARPQ_SQ_ENTRIES - used
        }
    }

    /// Free completion slots for the engine, posted ones counted as used
    /// (0 if user space's head is corrupt).
    pub(crate) fn cq_space(&self) -> u32 {
        let tail = self.cq_posted.load(Ordering::Relaxed);
        // Acquire: user space released the slots it consumed.
        let head = self.word(hdr::CQ_HEAD).load(Ordering::Acquire);
        let used = tail.wrapping_sub(head);
        if used > uapi::WARPQ_CQ_ENTRIES {
            0
        } else {
            uapi::WARPQ_CQ_ENTRIES - used
        }
    }

    /// Completions published and not yet consumed by user space.
    pub(crate) fn cq_ready(&self) -> u32 {
        // Acquire: pairs with `publish`'s release (WAIT runs on another CPU).
        let tail = self.cq_tail.load(Ordering::Acquire);
        let head = self.word(hdr::CQ_HEAD).load(Ordering::Acquire);
        let ready = tail.wrapping_sub(head);
        if ready <= uapi::WARPQ_CQ_ENTRIES {
            return ready;
        }
        // `publish` stores the page's tail before this copy, so user space
        // may already have consumed (and handed back) completions this copy
        // does not count yet: a head ahead of the copy but not past what the
        // engine posted is nothing ready (the publish's wake-up follows).
        // Past that, or far behind, the head is corrupt: a full ring, so
        // WAIT returns at once (the adversarial `ring-cq-head` row). The
        // engine stores `cq_posted` before the page's tail, which the head
        // came from, so this load sees at least that.
        let posted = self.cq_posted.load(Ordering::Relaxed);
        if head.wrapping_sub(tail) <= posted.wrapping_sub(tail) {
            0
        } else {
            uapi::WARPQ_CQ_ENTRIES
        }
    }

    /// Posts a completion and takes the submission it answers; neither is
    /// visible to user space (or WAIT, or poll) before [`Ring::publish`].
    /// The engine is the only producer of completions and the only consumer
    /// of submissions; the caller checked [`Ring::cq_space`].
    pub(crate) fn post(&self, user_data: u64, status: u32, result: u64) {
        self.post_completion(user_data, status, result);
        self.take();
    }

    /// Takes the next submission without completing it: the engine copied
    /// it out to complete later (set aside, `overtake.rs`). Returns its
    /// index, for [`Ring::hold_head`].
    pub(crate) fn take(&self) -> u32 {
        // Relaxed: engine only; `publish` orders it for everyone else.
        let index = self.sq_taken.load(Ordering::Relaxed);
        self.sq_taken.store(index.wrapping_add(1), Ordering::Relaxed);
        index
    }

    /// Keeps the published `sq_head` at `index` (the oldest set-aside
    /// submission; `None`: no hold). User space counts what is in flight
    /// as `sq_tail - sq_head`, so `sq_head` never passes a submission that
    /// has not completed: the slots of commands that overtook it stay
    /// taken until it completes. Engine only; applied by the next
    /// [`Ring::publish`].
    pub(crate) fn hold_head(&self, index: Option<u32>) {
        self.sq_hold.store(index.map_or(NO_HOLD, u64::from), Ordering::Relaxed);
    }

    /// Posts the completion of a submission already taken; visible after
    /// [`Ring::publish`]. The caller checked [`Ring::cq_space`].
    pub(crate) fn post_completion(&self, user_data: u64, status: u32, result: u64) {
        let tail = self.cq_posted.load(Ordering::Relaxed);
        let slot = (tail & (uapi::WARPQ_CQ_ENTRIES - 1)) as usize;
        let p = self.base.as_ptr().wrapping_add(uapi::WARPQ_RING_CQ_OFFSET + slot * 32).cast::<[u64; 4]>();
        // SAFETY: inside the ring (type invariant, masked index); unread by
        // user space until the published tail passes it (`cq_space` kept it
        // clear of entries user space may still read).
        unsafe { core::ptr::write_volatile(p, [user_data, u64::from(status), result, 0]) };
        if status == uapi::WARPQ_STATUS_INVALID {
            // The header's running count of malformed entries (one writer).
            let invalid = self.dword(hdr::SQ_INVALID);
            invalid.store(invalid.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
        }
        // Relaxed: only the engine reads these two; `publish` orders what
        // they cover for everyone else.
        self.cq_posted.store(tail.wrapping_add(1), Ordering::Relaxed);
    }

    /// Publishes every posted completion and takes every submission they
    /// answer, with one release store of each index; how many it published.
    pub(crate) fn publish(&self) -> u32 {
        let posted = self.cq_posted.load(Ordering::Relaxed);
        let published = self.cq_tail.load(Ordering::Relaxed);
        let n = posted.wrapping_sub(published);
        let head = match self.sq_hold.load(Ordering::Relaxed) {
            NO_HOLD => self.sq_taken.load(Ordering::Relaxed),
            hold => hold as u32,
        };
        if n == 0 && head == self.sq_head.load(Ordering::Relaxed) {
            return 0;
        }
        // Release: the slots are free for user space (and SUBMIT) only after
        // the engine has finished reading them. Stored before the CQ tail,
        // so that whoever sees a completion also sees its submission's slot
        // free (the fuzzer checks sq_head == sq_tail once its last command
        // completed). The page first, as for the tail below: SUBMIT, which
        // reads the kernel's copy, then never sees a slot free that user
        // space does not.
        self.word(hdr::SQ_HEAD).store(head, Ordering::Release);
        self.sq_head.store(head, Ordering::Release);
        // Release: every entry posted (and the head above) is visible before
        // the tail that publishes it, to user space (the page) and to WAIT
        // and poll (the kernel's copy). The page first: whoever sees the
        // kernel's copy (WAIT returning "ready") also sees the page's, so
        // the caller it returns to finds the completion in its ring (in the
        // other order, B8's process found WAIT saying 1 ready and nothing
        // in the ring, about once per million commands).
        self.word(hdr::CQ_TAIL).store(posted, Ordering::Release);
        self.cq_tail.store(posted, Ordering::Release);
        n
    }

    /// SUBMIT: appends entries on the caller's behalf, as the SQ producer
    /// (the caller then does not produce through the mapping at the same
    /// time; concurrent SUBMITs are serialised by the queue). Returns how
    /// many fit.
    pub(crate) fn push_sqes(&self, entries: &[[u64; 8]]) -> usize {
        let tail = self.word(hdr::SQ_TAIL).load(Ordering::Relaxed);
        let head = self.sq_head.load(Ordering::Acquire);
        let used = tail.wrapping_sub(head);
        if used > uapi::WARPQ_SQ_ENTRIES {
            return 0;
        }
        let room = (uapi::WARPQ_SQ_ENTRIES - used) as usize;
        let n = entries.len().min(room);
        for (i, e) in entries.iter().take(n).enumerate() {
            let slot = (tail.wrapping_add(i as u32) & (uapi::WARPQ_SQ_ENTRIES - 1)) as usize;
            let p = self.base.as_ptr().wrapping_add(uapi::WARPQ_RING_SQ_OFFSET + slot * 64).cast::<[u64; 8]>();
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
        if index >= uapi::WARPQ_RING_SIZE.div_ceil(kernel::page::PAGE_SIZE) {
            return None;
        }
        // SAFETY: the address is inside the vmalloc allocation (type
        // invariant and the check above).
        NonNull::new(
            unsafe { bindings::vmalloc_to_page(self.base.as_ptr().add(index * kernel::page::PAGE_SIZE).cast()) }.cast(),
        )
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

/// The completions the engine posted since it last published: when to
/// publish them. One release store and one wake-up per batch instead of
/// per command, so a stream of short commands wakes its waiter once per
/// batch; but a completion is never held back behind much work: the batch
/// is published before a command that would make it long.
#[derive(Default)]
pub(crate) struct CompletionBatch {
    /// Completions posted and not yet published.
    count: u32,
    /// The bytes their commands moved.
    bytes: u64,
    /// Their statuses, counted into the queue's and the device's counters
    /// once they are published (so STATS never counts a completion user
    /// space cannot see yet).
    by_status: [u32; STATUS_KINDS],
}

/// `WARPQ_STATUS_*` values: the rows of `warpq_stats.commands_by_status`
/// (9, ABI version 1) plus `FAULT_NOMEM`, which the counters add to
/// `commands_failed` only.
const STATUS_KINDS: usize = 10;
const _: () = assert!(STATUS_KINDS == uapi::WARPQ_STATUS_FAULT_NOMEM as usize + 1);

impl CompletionBatch {
    /// At most this many completions wait to be published.
    const MAX_COMMANDS: u32 = 32;
    /// At most this much work (bytes moved) runs while completions wait.
    const MAX_BYTES: u64 = 256 << 10;

    /// Whether to publish what is posted before running `next`: the batch is
    /// full, `next` would take it past [`Self::MAX_BYTES`], or it goes
    /// through the edu device (milliseconds under emulation).
    pub(crate) fn full_before(&self, next: &Sqe) -> bool {
        self.count > 0
            && (self.count >= Self::MAX_COMMANDS
                || self.bytes.saturating_add(next.len) > Self::MAX_BYTES
                || next.flags & uapi::WARPQ_SQE_EDU_DMA as u8 != 0)
    }

    /// `sqe`'s completion was posted with `status`.
    pub(crate) fn posted(&mut self, sqe: &Sqe, status: u32) {
        self.count += 1;
        self.bytes = self.bytes.saturating_add(sqe.len);
        if let Some(n) = self.by_status.get_mut(status as usize) {
            *n += 1;
        }
    }

    /// `(status, count)` of every status posted in the batch.
    pub(crate) fn statuses(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.by_status.iter().enumerate().filter(|(_, &n)| n > 0).map(|(s, &n)| (s as u32, u64::from(n)))
    }
}
