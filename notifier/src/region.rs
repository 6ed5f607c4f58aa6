// SPDX-License-Identifier: GPL-2.0

//! The region table of one mm context.
//!
//! A region is a user buffer the device may touch: `[start, start + len)`
//! with read and/or write access for the device. Its pages are pinned and
//! DMA-mapped while it is [`RegionState::Mapped`].
//!
//! # Who may touch the table
//!
//! - Changes: only with the context lock `L` held *and* the queue gate
//!   paused and drained (the [`Drained`](super::gate::Drained) proof).
//! - Reads: with `L` held, or by the engine while it is inside the gate.
//!
//! Both rules are checked by [`MmContext`](super::context::MmContext), which
//! is the only caller of the `unsafe` accessors below. Each slot is a
//! [`sync::UnsafeCell`](super::sync::UnsafeCell), so the loom models check
//! every access against those rules.

use super::platform::Mapping;
use super::sync::UnsafeCell;

/// What the device may do with a region.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Access(u8);

impl Access {
    /// No access.
    pub const NONE: Access = Access(0);
    /// The device may read.
    pub const READ: Access = Access(1);
    /// The device may write.
    pub const WRITE: Access = Access(2);
    /// The device may read and write.
    pub const READ_WRITE: Access = Access(3);

    /// Access from raw bits; `None` if unknown bits are set.
    pub const fn from_bits(bits: u8) -> Option<Access> {
        if bits & !Self::READ_WRITE.0 == 0 {
            Some(Access(bits))
        } else {
            None
        }
    }

    /// The raw bits.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// True if every right in `other` is also in `self`.
    pub const fn contains(self, other: Access) -> bool {
        self.0 & other.0 == other.0
    }

    /// True if no right is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// True if the device may write (pages are pinned with `FOLL_WRITE` and
    /// marked dirty when unpinned).
    pub const fn device_writes(self) -> bool {
        self.contains(Self::WRITE)
    }
}

/// Names one registered region; a handle of a removed region never matches
/// the region that reuses its slot (the slot generation differs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RegionHandle {
    slot: u16,
    generation: u32,
}

impl RegionHandle {
    /// The slot index in the table.
    pub const fn slot(self) -> usize {
        self.slot as usize
    }

    /// The slot generation (never 0).
    pub const fn generation(self) -> u32 {
        self.generation
    }

    /// The handle as one integer for the uapi: `generation << 16 | slot`.
    pub const fn to_raw(self) -> u64 {
        ((self.generation as u64) << 16) | self.slot as u64
    }

    /// Parses [`RegionHandle::to_raw`]; `None` for values no handle has.
    pub const fn from_raw(raw: u64) -> Option<RegionHandle> {
        let generation = raw >> 16;
        if generation == 0 || generation > u32::MAX as u64 {
            return None;
        }
        Some(RegionHandle { slot: (raw & 0xffff) as u16, generation: generation as u32 })
    }
}

/// A registered region's fixed description (never changes while it lives).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegionDesc {
    /// The region's handle.
    pub handle: RegionHandle,
    /// First user virtual address.
    pub start: u64,
    /// Length in bytes (never 0; `start + len` does not overflow).
    pub len: u64,
    /// What the device may do.
    pub access: Access,
}

impl RegionDesc {
    /// One past the last address.
    pub const fn end(&self) -> u64 {
        self.start.saturating_add(self.len)
    }

    /// True if `[start, end)` intersects the region.
    pub const fn overlaps(&self, start: u64, end: u64) -> bool {
        start < self.end() && self.start < end
    }
}

/// Where a region is in its life.
#[derive(Debug, PartialEq, Eq)]
pub enum RegionState<M> {
    /// Registered; its interval notifier is not armed yet, so it must not be
    /// pinned ([`MmContext::arm`](super::context::MmContext::arm)).
    Pending,
    /// Needs a rebuild: nothing pinned.
    Unmapped,
    /// Pinned and DMA-mapped, valid as of notifier sequence `seq`.
    Mapped {
        /// `mmu_interval_read_begin()` value the mapping was checked against.
        seq: u64,
        /// Pinned pages and DMA addresses.
        mapping: M,
    },
    /// Cannot be rebuilt (the range is gone or lost its permission, or the
    /// context was released); commands touching it fail with a fault status.
    Dead,
}

/// [`RegionState`] without the mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateKind {
    /// See [`RegionState::Pending`].
    Pending,
    /// See [`RegionState::Unmapped`].
    Unmapped,
    /// See [`RegionState::Mapped`].
    Mapped {
        /// The sequence the mapping was published at.
        seq: u64,
    },
    /// See [`RegionState::Dead`].
    Dead,
}

impl StateKind {
    /// True for states a rebuild still has to resolve (pending or unmapped).
    pub const fn needs_rebuild(self) -> bool {
        matches!(self, StateKind::Pending | StateKind::Unmapped)
    }
}

/// A copy of one region's description and state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegionInfo {
    /// The description.
    pub desc: RegionDesc,
    /// The state.
    pub state: StateKind,
    /// Pages pinned (0 unless mapped).
    pub pages: u64,
}

/// Why a region-table operation was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionError {
    /// The lock key passed in belongs to another context.
    WrongLock,
    /// The context was released.
    Released,
    /// The queue did not drain in time (the engine is stuck); nothing
    /// changed, try again.
    Busy,
    /// No live region has this handle.
    NoSuchRegion,
    /// The region is not in a state that allows the operation.
    InvalidState,
    /// Zero length.
    ZeroLength,
    /// `start + len` overflows.
    Overflow,
    /// No access right, or unknown bits.
    InvalidAccess,
    /// The range intersects this live region.
    Overlaps(RegionHandle),
    /// Every slot is in use.
    TableFull,
}

/// Why the engine cannot use an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XlateFault {
    /// No region contains the address.
    NotRegistered,
    /// The access starts in a region but runs past its end (or overflows).
    CrossesEnd,
    /// The region does not grant the access.
    AccessDenied,
    /// The region is registered but not pinned (pending or unmapped).
    NotMapped,
    /// The region is dead.
    Dead,
}

/// A successful translation: the access lies inside `mapping` at `offset`.
#[derive(Debug)]
pub struct Translation<'a, M> {
    /// The region.
    pub region: RegionHandle,
    /// The region's pinned pages and DMA addresses.
    pub mapping: &'a M,
    /// Byte offset of the access from the region's start.
    pub offset: u64,
    /// The sequence the mapping was published at.
    pub seq: u64,
}

struct Entry<M> {
    desc: RegionDesc,
    state: RegionState<M>,
}

struct Slot<M> {
    /// Generation of the current (or next) occupant; never 0.
    generation: u32,
    entry: Option<Entry<M>>,
}

impl<M: Mapping> Entry<M> {
    fn info(&self) -> RegionInfo {
        let (state, pages) = match &self.state {
            RegionState::Pending => (StateKind::Pending, 0),
            RegionState::Unmapped => (StateKind::Unmapped, 0),
            RegionState::Mapped { seq, mapping } => (StateKind::Mapped { seq: *seq }, mapping.page_count()),
            RegionState::Dead => (StateKind::Dead, 0),
        };
        RegionInfo { desc: self.desc, state, pages }
    }
}

/// Fixed-capacity table of the regions of one mm context.
pub struct RegionTable<M, const N: usize> {
    slots: [UnsafeCell<Slot<M>>; N],
}

// SAFETY: the slots are only accessed under the rules in the module
// documentation (writes exclusive through `L` plus a drained gate, reads under
// `L` or inside the gate), so sharing the table between threads is sound as
// long as the mappings themselves may be sent and shared.
unsafe impl<M: Send + Sync, const N: usize> Sync for RegionTable<M, N> {}

impl<M, const N: usize> Default for RegionTable<M, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<M, const N: usize> RegionTable<M, N> {
    /// An empty table. `N` must fit a `u16` slot index; larger tables only
    /// use the first 65536 slots.
    pub fn new() -> Self {
        Self { slots: core::array::from_fn(|_| UnsafeCell::new(Slot { generation: 1, entry: None })) }
    }

    /// Number of slots usable (capacity).
    pub const fn capacity(&self) -> usize {
        if N > u16::MAX as usize + 1 {
            u16::MAX as usize + 1
        } else {
            N
        }
    }
}

impl<M: Mapping, const N: usize> RegionTable<M, N> {
    /// Runs `f` on every live entry, in slot order, until it returns `Some`.
    ///
    /// # Safety
    ///
    /// No writer may run concurrently: the caller holds `L` or is inside the
    /// gate, and the returned borrow must not outlive that.
    unsafe fn find_entry<'a, R>(&'a self, mut f: impl FnMut(&'a Entry<M>) -> Option<R>) -> Option<R> {
        for cell in self.slots.iter().take(self.capacity()) {
            // SAFETY: no concurrent writer (this function's contract), so a
            // shared borrow of the slot for 'a is sound.
            let slot: &'a Slot<M> = cell.with(|ptr| unsafe { &*ptr });
            if let Some(entry) = &slot.entry {
                if let Some(found) = f(entry) {
                    return Some(found);
                }
            }
        }
        None
    }

    /// Runs `f` on the live entry named by `handle`.
    ///
    /// # Safety
    ///
    /// The caller holds `L`, the gate is paused and drained (no reader inside
    /// the gate, no other writer).
    unsafe fn with_entry_mut<R>(&self, handle: RegionHandle, f: impl FnOnce(&mut Entry<M>) -> R) -> Option<R> {
        let cell = self.slots.get(handle.slot())?;
        cell.with_mut(|ptr| {
            // SAFETY: exclusive access by this function's contract.
            let slot = unsafe { &mut *ptr };
            if slot.generation != handle.generation {
                return None;
            }
            slot.entry.as_mut().map(f)
        })
    }

    /// A copy of the region named by `handle`.
    ///
    /// # Safety
    ///
    /// As for reads: the caller holds `L` or is inside the gate.
    pub(super) unsafe fn info(&self, handle: RegionHandle) -> Option<RegionInfo> {
        let cell = self.slots.get(handle.slot())?;
        cell.with(|ptr| {
            // SAFETY: no concurrent writer by this function's contract.
            let slot = unsafe { &*ptr };
            if slot.generation != handle.generation {
                return None;
            }
            slot.entry.as_ref().map(Entry::info)
        })
    }

    /// A copy of the live region in slot `slot`, if any.
    ///
    /// # Safety
    ///
    /// As for reads: the caller holds `L` or is inside the gate.
    pub(super) unsafe fn info_at_slot(&self, slot: usize) -> Option<RegionInfo> {
        let cell = self.slots.get(slot)?;
        cell.with(|ptr| {
            // SAFETY: no concurrent writer by this function's contract.
            let slot = unsafe { &*ptr };
            slot.entry.as_ref().map(Entry::info)
        })
    }

    /// The mapping of the region named by `handle`, if it is mapped.
    ///
    /// # Safety
    ///
    /// As for reads, and the returned borrow must end before the next write.
    pub(super) unsafe fn mapping(&self, handle: RegionHandle) -> Option<&M> {
        let cell = self.slots.get(handle.slot())?;
        // SAFETY: no concurrent writer by this function's contract, and the
        // caller bounds the borrow.
        let slot: &Slot<M> = cell.with(|ptr| unsafe { &*ptr });
        if slot.generation != handle.generation {
            return None;
        }
        match &slot.entry.as_ref()?.state {
            RegionState::Mapped { mapping, .. } => Some(mapping),
            _ => None,
        }
    }

    /// True if some region still needs a rebuild (pending or unmapped).
    ///
    /// # Safety
    ///
    /// As for reads: the caller holds `L` or is inside the gate.
    pub(super) unsafe fn any_needing_rebuild(&self) -> bool {
        // SAFETY: forwarded contract.
        unsafe { self.find_entry(|entry| entry.info().state.needs_rebuild().then_some(())) }.is_some()
    }

    /// The first armed region that has nothing pinned.
    ///
    /// # Safety
    ///
    /// As for reads: the caller holds `L` or is inside the gate.
    pub(super) unsafe fn first_unmapped(&self) -> Option<RegionDesc> {
        // SAFETY: forwarded contract.
        unsafe {
            self.find_entry(|entry| match entry.state {
                RegionState::Unmapped => Some(entry.desc),
                _ => None,
            })
        }
    }

    /// Finds the region containing `va` and checks the access.
    ///
    /// # Safety
    ///
    /// As for reads, and the returned borrow must end before the next write:
    /// the engine ties it to its gate guard.
    pub(super) unsafe fn translate(&self, va: u64, len: u64, access: Access) -> Result<Translation<'_, M>, XlateFault> {
        // SAFETY: forwarded contract.
        let found = unsafe {
            self.find_entry(|entry| {
                let desc = &entry.desc;
                (desc.start <= va && va < desc.end()).then_some(entry)
            })
        };
        let entry = found.ok_or(XlateFault::NotRegistered)?;
        let desc = &entry.desc;
        match va.checked_add(len) {
            Some(end) if end <= desc.end() => {}
            _ => return Err(XlateFault::CrossesEnd),
        }
        if !desc.access.contains(access) {
            return Err(XlateFault::AccessDenied);
        }
        match &entry.state {
            RegionState::Mapped { seq, mapping } => {
                Ok(Translation { region: desc.handle, mapping, offset: va - desc.start, seq: *seq })
            }
            RegionState::Pending | RegionState::Unmapped => Err(XlateFault::NotMapped),
            RegionState::Dead => Err(XlateFault::Dead),
        }
    }

    /// Adds a region as [`RegionState::Pending`].
    ///
    /// # Safety
    ///
    /// The caller holds `L` and the gate is paused and drained.
    pub(super) unsafe fn insert(&self, start: u64, len: u64, access: Access) -> Result<RegionDesc, RegionError> {
        if len == 0 {
            return Err(RegionError::ZeroLength);
        }
        let end = start.checked_add(len).ok_or(RegionError::Overflow)?;
        if access.is_empty() || Access::from_bits(access.bits()).is_none() {
            return Err(RegionError::InvalidAccess);
        }
        // SAFETY: we are the only writer; reading is covered too.
        let overlap = unsafe { self.find_entry(|entry| entry.desc.overlaps(start, end).then_some(entry.desc.handle)) };
        if let Some(handle) = overlap {
            return Err(RegionError::Overlaps(handle));
        }
        for (index, cell) in self.slots.iter().enumerate().take(self.capacity()) {
            let inserted = cell.with_mut(|ptr| {
                // SAFETY: exclusive access by this function's contract.
                let slot = unsafe { &mut *ptr };
                if slot.entry.is_some() {
                    return None;
                }
                let desc = RegionDesc {
                    handle: RegionHandle {
                        // `index < capacity() <= 65536`.
                        slot: index as u16,
                        generation: slot.generation,
                    },
                    start,
                    len,
                    access,
                };
                slot.entry = Some(Entry { desc, state: RegionState::Pending });
                Some(desc)
            });
            if let Some(desc) = inserted {
                return Ok(desc);
            }
        }
        Err(RegionError::TableFull)
    }

    /// Pending → Unmapped: the region's notifier is armed, it may be pinned.
    ///
    /// # Safety
    ///
    /// The caller holds `L` and the gate is paused and drained.
    pub(super) unsafe fn arm(&self, handle: RegionHandle) -> Result<(), RegionError> {
        // SAFETY: forwarded contract.
        let result = unsafe {
            self.with_entry_mut(handle, |entry| match entry.state {
                RegionState::Pending => {
                    entry.state = RegionState::Unmapped;
                    Ok(())
                }
                _ => Err(RegionError::InvalidState),
            })
        };
        result.unwrap_or(Err(RegionError::NoSuchRegion))
    }

    /// Removes a region; returns its description and last state (with the
    /// mapping, if any, for the caller to unmap). Bumps the slot generation.
    ///
    /// # Safety
    ///
    /// The caller holds `L` and the gate is paused and drained.
    pub(super) unsafe fn remove(&self, handle: RegionHandle) -> Result<(RegionDesc, RegionState<M>), RegionError> {
        let cell = self.slots.get(handle.slot()).ok_or(RegionError::NoSuchRegion)?;
        cell.with_mut(|ptr| {
            // SAFETY: exclusive access by this function's contract.
            let slot = unsafe { &mut *ptr };
            if slot.generation != handle.generation {
                return Err(RegionError::NoSuchRegion);
            }
            let entry = slot.entry.take().ok_or(RegionError::NoSuchRegion)?;
            // Never 0, so a raw handle of 0 is never valid.
            slot.generation = match slot.generation.wrapping_add(1) {
                0 => 1,
                next => next,
            };
            Ok((entry.desc, entry.state))
        })
    }

    /// Unmapped → Mapped. Gives the mapping back if the region is gone or no
    /// longer unmapped (another rebuild won, or it died meanwhile).
    ///
    /// # Safety
    ///
    /// The caller holds `L` and the gate is paused and drained.
    pub(super) unsafe fn publish(&self, handle: RegionHandle, seq: u64, mapping: M) -> Result<u64, M> {
        let mut mapping = Some(mapping);
        // SAFETY: forwarded contract.
        let published = unsafe {
            self.with_entry_mut(handle, |entry| {
                if !matches!(entry.state, RegionState::Unmapped) {
                    return None;
                }
                let mapping = mapping.take()?;
                let pages = mapping.page_count();
                entry.state = RegionState::Mapped { seq, mapping };
                Some(pages)
            })
        };
        match (published.flatten(), mapping) {
            (Some(pages), _) => Ok(pages),
            (None, Some(mapping)) => Err(mapping),
            // `mapping` is only taken on the success path.
            (None, None) => Ok(0),
        }
    }

    /// Mapped → Unmapped; returns the mapping for the caller to unmap.
    ///
    /// # Safety
    ///
    /// The caller holds `L` and the gate is paused and drained.
    pub(super) unsafe fn take_mapping(&self, handle: RegionHandle) -> Option<(RegionDesc, M)> {
        // SAFETY: forwarded contract.
        let taken = unsafe {
            self.with_entry_mut(handle, |entry| {
                if !matches!(entry.state, RegionState::Mapped { .. }) {
                    return None;
                }
                match core::mem::replace(&mut entry.state, RegionState::Unmapped) {
                    RegionState::Mapped { mapping, .. } => Some((entry.desc, mapping)),
                    _ => None,
                }
            })
        };
        taken.flatten()
    }

    /// Unmapped → Dead (the range can no longer be pinned). False if the
    /// region is gone or not unmapped.
    ///
    /// # Safety
    ///
    /// The caller holds `L` and the gate is paused and drained.
    pub(super) unsafe fn mark_dead(&self, handle: RegionHandle) -> bool {
        // SAFETY: forwarded contract.
        let marked = unsafe {
            self.with_entry_mut(handle, |entry| {
                if matches!(entry.state, RegionState::Unmapped) {
                    entry.state = RegionState::Dead;
                    true
                } else {
                    false
                }
            })
        };
        marked.unwrap_or(false)
    }

    /// Every live region → Dead; `unmap` gets each mapping that was pinned.
    /// Returns the number of live regions.
    ///
    /// # Safety
    ///
    /// The caller holds `L` and the gate is paused and drained.
    pub(super) unsafe fn kill_all(&self, mut unmap: impl FnMut(RegionDesc, M)) -> u32 {
        let mut live = 0u32;
        for cell in self.slots.iter().take(self.capacity()) {
            let taken = cell.with_mut(|ptr| {
                // SAFETY: exclusive access by this function's contract.
                let slot = unsafe { &mut *ptr };
                let entry = slot.entry.as_mut()?;
                match core::mem::replace(&mut entry.state, RegionState::Dead) {
                    RegionState::Mapped { mapping, .. } => Some(Some((entry.desc, mapping))),
                    _ => Some(None),
                }
            });
            if let Some(mapped) = taken {
                live = live.saturating_add(1);
                if let Some((desc, mapping)) = mapped {
                    unmap(desc, mapping);
                }
            }
        }
        live
    }
}
