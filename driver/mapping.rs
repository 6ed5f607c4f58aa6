// SPDX-License-Identifier: GPL-2.0

//! One chunk's pages and their device addresses: how a queue holds the
//! pages of its registered memory (the `pin` and `mirror` backings) and
//! maps them for the device, and how it gives them back.
//!
//! [`ChunkMapper`] does the work for one queue: pin or mirror, DMA map,
//! and the reverse; `queue.rs`'s `QueuePlatform` (the protocol core's
//! platform) times and counts around it. The engine reads a
//! [`DmaMapping`]'s addresses; the device's quarantine (`device.rs`) holds
//! mappings a stuck edu transfer may still reach.
//!
//! Nothing here takes a lock. `map_chunk` allocates and faults pages (never
//! under L); the rest runs under L in a teardown (the lock-order table in
//! `queue.rs` says what may).

use core::ffi::c_long;
use core::ptr::NonNull;
use kernel::alloc::KVVec;
use kernel::bindings;

use kernel::ffi::c_ulong;
use kernel::prelude::*;
use kernel::types::ScopeGuard;

use crate::errors::FaultErrno;
use crate::glue::mm::{MmGrab, MmUsers, MmapLock, UserRef};
use crate::protocol::platform::{Mapping, PinError};
use crate::protocol::region::Chunk;
use crate::shim::{self, DeviceRaw, IntervalRaw, MmRaw, PageRaw, SgTableRaw, UserRaw};
use crate::vma_rules::range_has_queue_mapping;

const PAGE_SIZE: u64 = kernel::page::PAGE_SIZE as u64;

/// How a queue holds the pages of its registered memory (module parameter
/// `backing`, read when the queue is created).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Backing {
    /// GUP `FOLL_LONGTERM` pins, charged to the mm's `pinned_vm` against
    /// RLIMIT_MEMLOCK (the seed's scheme).
    Pin,
    /// `hmm_range_fault()` against the region's notifier sequence: no page
    /// reference, no charge. The invalidate callback is what keeps the
    /// pages from going away under the device: it drains and unmaps before
    /// it returns, and the kernel frees nothing before that.
    Mirror,
}

/// The module parameter `backing` (`pin` by default).
pub(crate) fn current_backing() -> Backing {
    // SAFETY: reads a module parameter; no precondition.
    match unsafe { shim::warpq_param_backing() } {
        1 => Backing::Mirror,
        _ => Backing::Pin,
    }
}

/// The pages of one region, pinned or mirrored, and their DMA addresses.
pub(crate) struct DmaMapping {
    pages: KVVec<*mut PageRaw>,
    dma: KVVec<u64>,
    /// The pages as one DMA-mapped scatter-gather table (one IOVA range
    /// behind an IOMMU); null once unmapped or before it was mapped.
    sgt: *mut SgTableRaw,
    /// Mapped for device writes (bidirectional): the unmap must say the same.
    device_writes: bool,
    /// The pages are pinned: the `pin` backing. A `mirror` mapping holds no
    /// reference, unless the device's quarantine took one ([`Self::hold`]).
    pinned: bool,
    /// A `mirror` mapping in the device's quarantine: a page reference each.
    referenced: bool,
    /// The pins are charged to the queue's user (the pinning task had no
    /// CAP_IPC_LOCK).
    charged: bool,
}

// SAFETY: page pointers and bus addresses are plain values usable from any
// thread; the pages stay allocated for the mapping's lifetime (pinned, or
// mirrored: an invalidation drops the mapping before the kernel frees them).
unsafe impl Send for DmaMapping {}
// SAFETY: as above; shared access only reads them.
unsafe impl Sync for DmaMapping {}

impl DmaMapping {
    /// The bus address of each page, in order.
    pub(crate) fn dma_addresses(&self) -> &[u64] {
        &self.dma
    }

    /// Pages in the mapping.
    pub(crate) fn pages(&self) -> u64 {
        self.pages.len() as u64
    }

    /// Marks every page dirty if the device may have written it
    /// (`set_page_dirty`, not the `_lock` variant: a teardown's caller may
    /// hold the folio lock).
    pub(crate) fn mark_dirty(&self) {
        if self.device_writes {
            for &page in self.pages.iter() {
                // SAFETY: pinned by us, or mirrored and still mapped (an
                // invalidation that would free it waits for our caller's L).
                unsafe { shim::warpq_set_page_dirty(page) };
            }
        }
    }

    /// For the device's quarantine, in a teardown (under L, the pages still
    /// mapped by the process): a `mirror` mapping takes a reference on each
    /// page, so the kernel cannot free a page the stuck device may write.
    fn hold(&mut self) {
        if !self.pinned {
            for &page in self.pages.iter() {
                // SAFETY: mirrored and still mapped (the invalidation that
                // would free it waits for our caller's L).
                unsafe { shim::warpq_get_page(page) };
            }
            self.referenced = true;
        }
    }

    /// Releases a mapping the device's quarantine held, once the device can
    /// no longer reach it: DMA unmap, then the pages dirtied (the device may
    /// have written them after the teardown) and given back.
    pub(crate) fn release_held(mut self, dev: *mut DeviceRaw) {
        if !self.sgt.is_null() {
            // SAFETY: mapped by `map_chunk` with this direction and not
            // unmapped since; the device is idle again or quiesced.
            unsafe { shim::warpq_dma_unmap_chunk(dev, self.sgt, self.device_writes) };
            self.sgt = core::ptr::null_mut();
        }
        if self.pinned {
            // SAFETY: every entry was pinned by pin_user_pages and not
            // unpinned; no lock is held (the `_dirty_lock` variant).
            unsafe {
                bindings::unpin_user_pages_dirty_lock(
                    self.pages.as_mut_ptr().cast(),
                    self.pages.len() as c_ulong,
                    self.device_writes,
                )
            };
        } else if self.referenced {
            for &page in self.pages.iter() {
                if self.device_writes {
                    // SAFETY: we hold a reference on the page; no lock held.
                    unsafe { bindings::set_page_dirty_lock(page.cast()) };
                }
                // SAFETY: the reference `hold` took.
                unsafe { shim::warpq_put_page(page) };
            }
        }
        // SAFETY: plain pointers, now given back.
        unsafe { self.pages.set_len(0) };
    }
}

impl Mapping for DmaMapping {
    /// A region's chunks (state and flags): about 100 bytes each, up to
    /// 65 536 (`MAX_CHUNKS`), so up to about 6 MiB per REGISTER, vmalloc'd
    /// past what `kmalloc` gives.
    type Chunks = KVVec<Chunk<DmaMapping>>;

    fn page_count(&self) -> u64 {
        self.pages.len() as u64
    }
}

/// A chunk just mapped, with the time its two phases took.
pub(crate) struct MappedChunk {
    pub(crate) mapping: DmaMapping,
    /// Pinning or faulting in the pages (ns).
    pub(crate) pin_ns: u64,
    /// DMA-mapping them (ns).
    pub(crate) map_ns: u64,
}

/// Maps and unmaps the chunks of one queue: its device, mm, user and
/// backing.
pub(crate) struct ChunkMapper {
    dev: *mut DeviceRaw,
    mm: *mut MmRaw,
    user: *mut UserRaw,
    /// The RLIMIT_MEMLOCK the last REGISTER recorded, in pages (`pin`).
    memlock_limit: u64,
    backing: Backing,
    /// The caller holds the mm's mmap lock (the fault path).
    mmap_locked: bool,
}

impl ChunkMapper {
    /// The mapper of a queue; `dev` is its bound device, `mm` and `user`
    /// are held by the queue for as long as the mapper is used.
    pub(crate) fn new(
        dev: *mut DeviceRaw,
        mm: &MmGrab,
        user: &UserRef,
        memlock_limit: u64,
        backing: Backing,
        mmap_locked: bool,
    ) -> Self {
        Self { dev, mm: mm.as_ptr(), user: user.as_ptr(), memlock_limit, backing, mmap_locked }
    }

    /// Pins (or mirrors, against `seq` on the region's notifier `sub`) the
    /// `len` bytes at `start` and DMA-maps each page; on failure nothing is
    /// left pinned, charged or mapped.
    pub(crate) fn map_chunk(
        &self,
        sub: Option<*mut IntervalRaw>,
        start: u64,
        len: u64,
        writes: bool,
        seq: u64,
    ) -> core::result::Result<MappedChunk, PinError> {
        let npages = usize::try_from(len / PAGE_SIZE).map_err(|_| PinError::Gone)?;
        let t_pin = now_ns();
        let (pages, charged) = match self.backing {
            Backing::Pin => self.pin_pages(start, npages, writes)?,
            Backing::Mirror => (self.mirror_pages(sub, start, npages, writes, seq)?, false),
        };
        let pinned = self.backing == Backing::Pin;
        // Until it is mapped, a failure gives the pages back.
        let mut mapping = ScopeGuard::new_with_data(
            DmaMapping {
                pages,
                dma: KVVec::new(),
                sgt: core::ptr::null_mut(),
                device_writes: writes,
                pinned,
                referenced: false,
                charged,
            },
            |mut mapping| self.release_pages(&mut mapping),
        );
        let t_map = now_ns();
        let n = u32::try_from(npages).map_err(|_| PinError::Gone)?;
        mapping.dma.reserve(npages, GFP_KERNEL).map_err(|_| PinError::Transient)?;
        // Each page is pinned, or mirrored under a notifier sequence the
        // rebuild checks before publishing (an invalidation in between waits
        // for L, so the page is not freed before it is unmapped again).
        let mut err = 0;
        // SAFETY: `pages` holds `npages` live pages (above), `dma` has room
        // for `npages` addresses; the device is bound.
        let sgt = unsafe {
            shim::warpq_dma_map_chunk(
                self.dev,
                mapping.pages.as_mut_ptr(),
                n,
                writes,
                mapping.dma.as_mut_ptr(),
                &mut err,
            )
        };
        if sgt.is_null() {
            // Memory that would be bounced (swiotlb) would make the device
            // work on copies: it can never be shared. Anything else (no
            // memory, no IOVA space) may pass later.
            let bounced = err == -(bindings::EREMOTEIO as i32);
            return Err(if bounced { PinError::Gone } else { PinError::Transient });
        }
        mapping.sgt = sgt;
        // SAFETY: on success the shim wrote all `npages` addresses.
        unsafe { mapping.dma.set_len(npages) };
        Ok(MappedChunk { mapping: mapping.dismiss(), pin_ns: t_map - t_pin, map_ns: now_ns() - t_map })
    }

    /// For the device's quarantine (a teardown while a stuck edu transfer
    /// may reach the pages): marks them dirty if `dirty`, moves the pins'
    /// charge off the queue's user (the pins stay, counted by the device)
    /// and, under `mirror`, takes a page reference each.
    pub(crate) fn prepare_for_quarantine(&self, mapping: &mut DmaMapping, dirty: bool) {
        if dirty {
            mapping.mark_dirty();
        }
        if mapping.pinned {
            // Charged in `pin_pages` (as `charged` says).
            self.uncharge(mapping.pages.len(), mapping.charged);
            mapping.charged = false;
        }
        mapping.hold();
    }

    /// The `pin` backing for the `npages` pages at `start` (one chunk):
    /// GUP `FOLL_LONGTERM` (`FOLL_WRITE` if the device `writes`),
    /// charged to the queue's user first. Returns the pages and
    /// whether they were charged (not with CAP_IPC_LOCK).
    fn pin_pages(
        &self,
        start: u64,
        npages: usize,
        writes: bool,
    ) -> core::result::Result<(KVVec<*mut PageRaw>, bool), PinError> {
        let limit = self.memlock_limit;
        if npages as u64 > limit {
            // Larger than the whole RLIMIT_MEMLOCK (`u64::MAX` with
            // CAP_IPC_LOCK): evicting other chunks cannot make room.
            return Err(PinError::NeverFits);
        }
        // Over RLIMIT_MEMLOCK: not the range's fault, and it may pass later
        // (other chunks evicted, the limit raised, other buffers
        // unregistered). REGISTER says ENOMEM, as io_uring and VFIO do.
        let charged = self.charge(npages).ok_or(PinError::Transient)?;
        // A failure below uncharges, after it unpins (dropped in reverse).
        let charge = ScopeGuard::new_with_data(charged, |charged| self.uncharge(npages, charged));
        let pages = KVVec::<*mut PageRaw>::with_capacity(npages, GFP_KERNEL).map_err(|_| PinError::Transient)?;
        let mut pages = ScopeGuard::new_with_data(pages, |mut pages| unpin(&mut pages));
        // GUP may pin fewer pages than asked (a later page hit a transient
        // error): ask again for the rest to learn why.
        let mut err: core::ffi::c_long = 0;
        while pages.len() < npages {
            let done = pages.len();
            let (from, to) = (start + done as u64 * PAGE_SIZE, start + npages as u64 * PAGE_SIZE);
            let room = pages.spare_capacity_mut().as_mut_ptr().cast::<*mut bindings::page>();
            let pinned = self.with_mmap_read(|mm| {
                // SAFETY: the mmap lock is held.
                if unsafe { range_has_queue_mapping(mm, from, to) } {
                    return -(bindings::EFAULT as c_long);
                }
                let flags = bindings::FOLL_LONGTERM | if writes { bindings::FOLL_WRITE } else { 0 };
                // SAFETY: `room` has space for `npages - done` page pointers;
                // the mm has a user reference and its mmap lock is held.
                unsafe {
                    bindings::pin_user_pages_remote(
                        mm.as_ptr().cast(),
                        from as c_ulong,
                        (npages - done) as c_ulong,
                        flags,
                        room,
                        core::ptr::null_mut(),
                    ) as c_long
                }
            });
            if pinned <= 0 {
                err = pinned;
                break;
            }
            // SAFETY: the kernel wrote `pinned` more page pointers.
            unsafe { pages.set_len(done + (pinned as usize).min(npages - done)) };
        }
        if pages.len() != npages {
            return Err(PinError::from(FaultErrno(err)));
        }
        Ok((pages.dismiss(), charge.dismiss()))
    }

    /// The `mirror` backing for the `npages` pages at `start` (one chunk):
    /// `hmm_range_fault()` against `seq` on the region's notifier `sub`
    /// (`None`: never inserted, a collision), no reference and no charge.
    fn mirror_pages(
        &self,
        sub: Option<*mut IntervalRaw>,
        start: u64,
        npages: usize,
        writes: bool,
        seq: u64,
    ) -> core::result::Result<KVVec<*mut PageRaw>, PinError> {
        let sub = sub.ok_or(PinError::Collision)?;
        let Ok(mut pfns) = KVVec::<c_ulong>::with_capacity(npages, GFP_KERNEL) else {
            return Err(PinError::Transient);
        };
        let Ok(mut pages) = KVVec::<*mut PageRaw>::with_capacity(npages, GFP_KERNEL) else {
            return Err(PinError::Transient);
        };
        let ret = self.with_mmap_read(|mm| {
            // SAFETY: the mmap lock is held.
            if unsafe { range_has_queue_mapping(mm, start, start + npages as u64 * PAGE_SIZE) } {
                return -(bindings::EFAULT as c_long);
            }
            // SAFETY: both vectors have room for `npages` entries; the
            // notifier was initialised by an insertion; the mm has a user
            // reference and its mmap lock is held.
            unsafe {
                shim::warpq_mirror_pages(
                    sub,
                    mm.as_ptr(),
                    start as c_ulong,
                    npages as c_ulong,
                    writes,
                    seq as c_ulong,
                    pfns.as_mut_ptr(),
                    pages.as_mut_ptr(),
                )
            }
        });
        if ret != 0 {
            return Err(PinError::from(FaultErrno(ret)));
        }
        // SAFETY: on success the shim wrote all `npages` page pointers.
        unsafe { pages.set_len(npages) };
        Ok(pages)
    }

    /// Runs `f` with `mm`'s mmap lock held for reading: taken here, with a
    /// user reference, unless this thread already holds it (the fault
    /// path, in a task of the mm). `-ESRCH` if the process is gone.
    fn with_mmap_read(&self, f: impl FnOnce(NonNull<MmRaw>) -> c_long) -> c_long {
        let Some(mm) = NonNull::new(self.mm) else { return -(bindings::ESRCH as c_long) };
        if self.mmap_locked {
            return f(mm);
        }
        // SAFETY: the queue holds the mm (`MmGrab`) while its mapper is used.
        let Some(users) = (unsafe { MmUsers::get(mm) }) else { return -(bindings::ESRCH as c_long) };
        let _lock = MmapLock::lock(&users, false);
        f(mm)
    }

    /// Charges `npages` long-term pins. To whom, against what: the user who
    /// created the queue (`user->locked_vm`), against the RLIMIT_MEMLOCK
    /// the registering task had (recorded at REGISTER), so a rebuild in a
    /// kernel worker is held to the same limit, as io_uring does, and a
    /// user's forked children share one budget instead of getting one per
    /// mm. A limit of `u64::MAX` (the task had CAP_IPC_LOCK) charges
    /// nothing. `mm->pinned_vm` is kept either way (`VmPin` in
    /// `/proc/PID/status`). Returns whether the user was charged, `None`
    /// over the limit. Lock-free, so the uncharge may run in an
    /// invalidation.
    fn charge(&self, npages: usize) -> Option<bool> {
        let charged = self.memlock_limit != u64::MAX;
        // SAFETY: the queue holds the user (`UserRef`); `locked_vm` is an
        // atomic the kernel's own users update the same way.
        if charged
            && !unsafe {
                shim::warpq_atomic_long_add_within(
                    &raw mut (*self.user.cast::<bindings::user_struct>()).locked_vm,
                    npages as c_ulong,
                    self.memlock_limit as c_ulong,
                )
            }
        {
            return None;
        }
        // SAFETY: the queue holds the mm (`MmGrab`); `pinned_vm` is an atomic.
        unsafe {
            shim::warpq_atomic64_add(
                &raw mut (*self.mm.cast::<bindings::mm_struct>()).__bindgen_anon_1.pinned_vm,
                npages as i64,
            )
        };
        Some(charged)
    }

    /// Undoes [`Self::charge`] of `npages` (`charged`: what it returned).
    fn uncharge(&self, npages: usize, charged: bool) {
        if charged {
            // SAFETY: as in `charge`.
            unsafe {
                shim::warpq_atomic_long_sub(
                    &raw mut (*self.user.cast::<bindings::user_struct>()).locked_vm,
                    npages as c_ulong,
                )
            };
        }
        // SAFETY: as in `charge`.
        unsafe {
            shim::warpq_atomic64_add(
                &raw mut (*self.mm.cast::<bindings::mm_struct>()).__bindgen_anon_1.pinned_vm,
                -(npages as i64),
            )
        };
    }

    /// DMA-unmaps the chunk (one call: one IOVA range behind an IOMMU).
    pub(crate) fn unmap_dma(&self, mapping: &mut DmaMapping) {
        if !mapping.sgt.is_null() {
            // SAFETY: mapped by `map_chunk` with this direction, and not used
            // by the device any more (drained, or never published).
            unsafe { shim::warpq_dma_unmap_chunk(self.dev, mapping.sgt, mapping.device_writes) };
            mapping.sgt = core::ptr::null_mut();
        }
    }

    /// Gives the pages back: unpins and uncharges them (`pin`); a `mirror`
    /// mapping holds nothing.
    pub(crate) fn release_pages(&self, mapping: &mut DmaMapping) {
        let n = mapping.pages.len();
        if mapping.pinned {
            unpin(&mut mapping.pages);
            self.uncharge(n, mapping.charged);
        } else {
            // SAFETY: plain pointers, nothing to drop; no reference is held.
            unsafe { mapping.pages.set_len(0) };
        }
    }
}

/// Unpins and forgets `pages`.
fn unpin(pages: &mut KVVec<*mut PageRaw>) {
    if !pages.is_empty() {
        // SAFETY: every entry was pinned by pin_user_pages and not unpinned.
        unsafe { bindings::unpin_user_pages(pages.as_mut_ptr().cast(), pages.len() as c_ulong) };
    }
    // SAFETY: the entries are plain pointers (nothing to drop), now unpinned.
    unsafe { pages.set_len(0) };
}

fn now_ns() -> u64 {
    // SAFETY: no precondition.
    unsafe { shim::warpq_ktime_ns() }
}
