// SPDX-License-Identifier: GPL-2.0

//! The interval notifiers of a queue's regions: one [`RegionSlot`] per slot
//! of the protocol core's region table (the same index).
//!
//! A queue may hold [`MAX_REGIONS`] regions, but most hold a few: the slots
//! come in pages of [`SLOTS_PER_PAGE`], allocated by the first REGISTER that
//! needs one (under R) and freed with the queue. A page never moves or goes
//! while its queue lives, so a rebuild may read any slot's notifier (its
//! sequence) while a REGISTER or UNREGISTER of another runs, and the
//! notifier callback finds its queue from the slot alone (each slot knows
//! its queue).
//!
//! Locking: the table of pages is written under R (`Queue::reg_lock`, see
//! the lock order in `queue.rs`) and read without a lock (an acquire load
//! of the page pointer).

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

use kernel::alloc::KBox;
use kernel::bindings;
use kernel::prelude::*;
use kernel::types::Opaque;

use crate::protocol::region::RegionDesc;
use crate::queue::Queue;

/// Registered buffers per queue (capacity; the `max_regions` parameter may
/// lower it). The protocol core's region table has as many slots.
pub(crate) const MAX_REGIONS: usize = 1024;

// A rebuild reports its failures per slot in a `SlotSet`: it must hold
// every slot, or a REGISTER could take another slot's failure for its own.
const _: () = assert!(MAX_REGIONS <= crate::protocol::rebuild::SlotSet::CAPACITY);

/// Slots per allocation (about 2.5 KiB, written in place).
const SLOTS_PER_PAGE: usize = 16;
const PAGES: usize = MAX_REGIONS / SLOTS_PER_PAGE;

/// The interval notifier of one region slot.
pub(crate) struct RegionSlot {
    /// Handed to `mmu_interval_notifier_insert()`; initialised by it.
    pub(crate) sub: Opaque<bindings::mmu_interval_notifier>,
    /// The queue whose region this is, for the callback (the queue frees
    /// the slot, so it outlives it).
    queue: *const Queue,
    /// The region the notifier watches. Written before insertion and read by
    /// the callback; insertion and removal order the accesses.
    pub(crate) desc: UnsafeCell<Option<RegionDesc>>,
    /// The notifier is in the interval tree.
    pub(crate) inserted: AtomicBool,
    /// `sub` was initialised by an insertion at least once (so it may be
    /// read by `mmu_interval_read_begin()` even after removal).
    pub(crate) ever_inserted: AtomicBool,
}

impl RegionSlot {
    fn new(queue: *const Queue) -> Self {
        Self {
            sub: Opaque::uninit(),
            queue,
            desc: UnsafeCell::new(None),
            inserted: AtomicBool::new(false),
            ever_inserted: AtomicBool::new(false),
        }
    }
}

#[repr(C)]
struct SlotPage {
    slots: [RegionSlot; SLOTS_PER_PAGE],
}

/// The notifier slots of one queue.
pub(crate) struct RegionSlots {
    pages: [AtomicPtr<SlotPage>; PAGES],
}

// SAFETY: the pages are owned by this table and only shared as `&RegionSlot`
// (whose mutable parts are atomics, or `desc`, written only under R while
// the slot's notifier is out of the tree); a slot's queue pointer is only
// dereferenced by the notifier callback, while the queue lives.
unsafe impl Send for RegionSlots {}
// SAFETY: as above.
unsafe impl Sync for RegionSlots {}

impl RegionSlots {
    /// No page yet.
    pub(crate) const fn new() -> Self {
        Self { pages: [const { AtomicPtr::new(core::ptr::null_mut()) }; PAGES] }
    }

    /// Slot `slot`, if its page was allocated.
    pub(crate) fn get(&self, slot: usize) -> Option<&RegionSlot> {
        let page = self.pages.get(slot / SLOTS_PER_PAGE)?.load(Ordering::Acquire);
        // SAFETY: a non-null page was published by `get_or_alloc` (release)
        // and is freed only when `self` is dropped.
        let page = unsafe { page.as_ref() }?;
        page.slots.get(slot % SLOTS_PER_PAGE)
    }

    /// Slot `slot`, allocating its page for `queue` (the queue that owns
    /// `self`) if needed. Called under R (may sleep in the allocation).
    pub(crate) fn get_or_alloc(&self, slot: usize, queue: *const Queue) -> Result<&RegionSlot> {
        if let Some(found) = self.get(slot) {
            return Ok(found);
        }
        let cell = self.pages.get(slot / SLOTS_PER_PAGE).ok_or(EINVAL)?;
        let mut page = KBox::<SlotPage>::new_uninit(GFP_KERNEL_ACCOUNT)?;
        let slots = page.as_mut_ptr().cast::<RegionSlot>();
        for i in 0..SLOTS_PER_PAGE {
            // SAFETY: `slots` points to the page's array of `SLOTS_PER_PAGE`
            // slots (its only field, `repr(C)`), valid for writes; each is
            // written once.
            unsafe { slots.add(i).write(RegionSlot::new(queue)) };
        }
        // SAFETY: the page's only field, its array, was written above.
        let page = KBox::into_raw(unsafe { page.assume_init() });
        if let Err(_other) = cell.compare_exchange(core::ptr::null_mut(), page, Ordering::AcqRel, Ordering::Acquire) {
            // Another caller won (not under R: cannot happen, but harmless).
            // SAFETY: `page` came from `KBox::into_raw` above and was not
            // published.
            drop(unsafe { KBox::from_raw(page) });
        }
        self.get(slot).ok_or(EINVAL)
    }

    /// Every allocated slot.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &RegionSlot> {
        self.pages
            .iter()
            .filter_map(|cell| {
                // SAFETY: as in `get`.
                unsafe { cell.load(Ordering::Acquire).as_ref() }
            })
            .flat_map(|page| page.slots.iter())
    }

    /// The slot and queue of the notifier `sub`.
    ///
    /// # Safety
    ///
    /// `sub` is the `sub` field of a slot of a live [`RegionSlots`] (the
    /// queue removes its notifiers before it frees them).
    pub(crate) unsafe fn from_notifier<'a>(sub: *mut bindings::mmu_interval_notifier) -> (&'a RegionSlot, &'a Queue) {
        // SAFETY: `sub` is the `sub` field of a live `RegionSlot` (this
        // function's contract).
        let slot =
            unsafe { &*kernel::container_of!(sub.cast::<Opaque<bindings::mmu_interval_notifier>>(), RegionSlot, sub) };
        // SAFETY: the slot's queue owns it, so it is alive while the slot is.
        (slot, unsafe { &*slot.queue })
    }
}

impl Drop for RegionSlots {
    fn drop(&mut self) {
        for cell in &self.pages {
            let page = cell.swap(core::ptr::null_mut(), Ordering::AcqRel);
            if !page.is_null() {
                // SAFETY: published by `get_or_alloc` from `KBox::into_raw`,
                // and taken out exactly once (the swap). The queue removed
                // every notifier before its fields are dropped.
                drop(unsafe { KBox::from_raw(page) });
            }
        }
    }
}
