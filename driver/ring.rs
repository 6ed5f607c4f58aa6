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
