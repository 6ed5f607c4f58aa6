// SPDX-License-Identifier: GPL-2.0

//! Which invalidation events tear a region down.
//!
//! `range->event` says why the kernel invalidates a range. Under
//! [`Policy::Strict`] every event that overlaps a region tears it down (the
//! seed's scheme). Under [`Policy::Filtered`] only events that can change the
//! pages behind the region's addresses, shrink the rights the device uses,
//! or write-protect pages the device may write, tear down; the rest are
//! counted and skipped. Each row of [`decide`] carries its reason;
//! `docs/protocol.md` has the table with the kernel call sites (6.12).
//!
//! # One table for both backings
//!
//! The table was derived once per backing (`pin`: pages held by GUP
//! `FOLL_LONGTERM`; `mirror`: pages looked up by `hmm_range_fault`, no
//! reference held) and the two derivations agree; only the reasons differ:
//!
//! - A write-protect (`PROTECTION_PAGE`: fork's COW setup, writeback's
//!   `folio_mkclean`; `SOFT_DIRTY`: the clear_refs reset) exists to catch
//!   the next write. Under `mirror` a device write that bypasses it lands in
//!   a page the child now shares, or one writeback thinks clean. Under `pin`
//!   the pin makes fork copy every pinned anonymous page into the child, and
//!   the same writeback and soft-dirty blindness holds. So a device-writable
//!   region is torn down (its write right revoked); the rebuild faults it
//!   back in with write access, which breaks COW, dirties the page and sets
//!   soft-dirty, as a CPU write would.
//! - A region the device only reads keeps working through a write-protect:
//!   the page does not change until a writer breaks COW, and that is a
//!   `CLEAR`. Under `pin`, fork still copies a pinned read-only page into
//!   the child; tearing it down would only move that copy into the parent,
//!   because re-pinning an anonymous page for reading unshares it.

use super::region::Access;

/// `enum mmu_notifier_event` (include/linux/mmu_notifier.h, 6.12).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Event {
    /// `MMU_NOTIFY_UNMAP`: munmap, mremap's move, exit, the OOM reaper.
    Unmap = 0,
    /// `MMU_NOTIFY_CLEAR`: MADV_DONTNEED, truncation, COW break,
    /// try_to_unmap/migration, khugepaged, KSM merge...
    Clear = 1,
    /// `MMU_NOTIFY_PROTECTION_VMA`: mprotect, NUMA hinting, pagemap
    /// write-protect scans.
    ProtectionVma = 2,
    /// `MMU_NOTIFY_PROTECTION_PAGE`: fork's write-protect of the parent's COW
    /// mappings, folio_mkclean (writeback), mapping_dirty_helpers.
    ProtectionPage = 3,
    /// `MMU_NOTIFY_SOFT_DIRTY`: clear_refs soft-dirty reset.
    SoftDirty = 4,
    /// `MMU_NOTIFY_RELEASE`: exit_mmap; the address space is going away.
    Release = 5,
    /// `MMU_NOTIFY_MIGRATE`: device-private migration (migrate_vma).
    Migrate = 6,
    /// `MMU_NOTIFY_EXCLUSIVE`: make_device_exclusive.
    Exclusive = 7,
}

impl Event {
    /// The event for a raw `range->event`, `None` if unknown.
    pub const fn try_from_raw(raw: u32) -> Option<Event> {
        Some(match raw {
            0 => Event::Unmap,
            1 => Event::Clear,
            2 => Event::ProtectionVma,
            3 => Event::ProtectionPage,
            4 => Event::SoftDirty,
            5 => Event::Release,
            6 => Event::Migrate,
            7 => Event::Exclusive,
            _ => return None,
        })
    }

    /// The event for a raw `range->event`; an unknown value (a newer kernel)
    /// is treated as [`Event::Clear`]: the pages may change.
    pub const fn from_raw(raw: u32) -> Event {
        match Self::try_from_raw(raw) {
            Some(event) => event,
            None => Event::Clear,
        }
    }

    /// The raw kernel value.
    pub const fn as_raw(self) -> u32 {
        self as u32
    }
}

/// The invalidation policy (a module parameter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Every overlapping event tears down.
    Strict,
    /// Only events that can change the pages or shrink the device's rights
    /// tear down.
    Filtered,
}

impl Policy {
    /// 0 = strict, 1 = filtered; anything else is strict.
    pub const fn from_raw(raw: u32) -> Policy {
        match raw {
            1 => Policy::Filtered,
            _ => Policy::Strict,
        }
    }
}

/// Why an event is skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IgnoreReason {
    /// The range does not intersect the region.
    NoOverlap,
    /// SOFT_DIRTY on a region the device only reads: it write-protects PTEs
    /// for dirty tracking, and the device makes no write to track.
    SoftDirtyOnly,
    /// PROTECTION_PAGE on a region the device only reads: it write-protects
    /// PTEs without changing the page (fork's COW setup of the parent,
    /// writeback cleaning); the page the device reads stays the process's
    /// until a writer breaks COW, which is a CLEAR.
    WriteProtectOnly,
    /// PROTECTION_VMA on a region the device only reads: the PFNs do not
    /// change (`change_protection()` only rewrites PTE bits) and no
    /// device-write right can be lost; NUMA hinting scans would otherwise
    /// tear it down every scan period.
    ReadOnlyProtectionChange,
    /// MIGRATE / EXCLUSIVE started by this driver (`range->owner` is ours).
    OwnedByUs,
    /// PROTECTION_VMA on a device-writable region whose VMAs all still grant
    /// write, none registered for uffd-wp: NUMA hinting (it makes PTEs
    /// PROT_NONE to catch the next CPU touch and leaves `vm_flags` alone),
    /// or an mprotect that keeps PROT_WRITE (mprotect sets `vm_flags` before
    /// it changes the PTEs). The pages stay; if hinting later migrates one,
    /// that is a CLEAR or MIGRATE of its own.
    WriteRightKept,
}

/// Why an event tears the region down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TearDownReason {
    /// Strict policy: every overlapping event.
    Strict,
    /// UNMAP, CLEAR: the pages behind the range can change or go away.
    PagesMayChange,
    /// MIGRATE or EXCLUSIVE by someone else: the pages are being replaced
    /// or taken away from ordinary access.
    PagesMoving,
    /// RELEASE: the address space is being torn down.
    AddressSpaceGone,
    /// PROTECTION_VMA on a device-writable region where a VMA lost write, is
    /// uffd-wp registered, or could not be looked at: the write right may
    /// have been removed; the rebuild faults with write access, which fails
    /// (and kills the region) if it was.
    WriteRightMayShrink,
    /// PROTECTION_PAGE or SOFT_DIRTY on a device-writable region: the kernel
    /// write-protects to see the next write (fork's COW, writeback, dirty
    /// tracking), so the device's write right is revoked until a rebuild
    /// faults the pages back in for writing. Under `pin` this also unpins
    /// before fork decides whether to copy pinned pages into the child.
    WriteProtected,
}

/// What to do with one invalidation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nothing the device uses can change: return without touching anything.
    Ignore(IgnoreReason),
    /// Pause, drain, unmap and unpin.
    TearDown(TearDownReason),
}

impl Decision {
    /// True for [`Decision::TearDown`].
    pub const fn tears_down(self) -> bool {
        matches!(self, Decision::TearDown(_))
    }
}

/// Decides for one event on one (overlapping) region.
///
/// `region_access` is what the device may do with the region; `owner_is_us`
/// is true if `range->owner` is this driver (only meaningful for MIGRATE and
/// EXCLUSIVE); `write_kept` is true if every VMA over the range still grants
/// write and none is uffd-wp registered (only meaningful for
/// PROTECTION_VMA; see [`IgnoreReason::WriteRightKept`]).
pub fn decide(policy: Policy, event: Event, region_access: Access, owner_is_us: bool, write_kept: bool) -> Decision {
    use Decision::{Ignore, TearDown};
    if policy == Policy::Strict {
        return TearDown(TearDownReason::Strict);
    }
    match event {
        Event::Unmap | Event::Clear => TearDown(TearDownReason::PagesMayChange),
        Event::Release => TearDown(TearDownReason::AddressSpaceGone),
        Event::Migrate | Event::Exclusive if owner_is_us => Ignore(IgnoreReason::OwnedByUs),
        Event::Migrate | Event::Exclusive => TearDown(TearDownReason::PagesMoving),
        Event::ProtectionVma if region_access.device_writes() && write_kept => Ignore(IgnoreReason::WriteRightKept),
        Event::ProtectionVma if region_access.device_writes() => TearDown(TearDownReason::WriteRightMayShrink),
        Event::ProtectionVma => Ignore(IgnoreReason::ReadOnlyProtectionChange),
        Event::ProtectionPage | Event::SoftDirty if region_access.device_writes() => {
            TearDown(TearDownReason::WriteProtected)
        }
        Event::ProtectionPage => Ignore(IgnoreReason::WriteProtectOnly),
        Event::SoftDirty => Ignore(IgnoreReason::SoftDirtyOnly),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Decision::{Ignore, TearDown};

    #[test]
    fn raw_values_match_the_kernel_enum() {
        for raw in 0..8u32 {
            let event = Event::try_from_raw(raw).expect("known");
            assert_eq!(event.as_raw(), raw);
            assert_eq!(Event::from_raw(raw), event);
        }
        assert_eq!(Event::try_from_raw(8), None);
        assert_eq!(Event::from_raw(8), Event::Clear);
        assert_eq!(Event::from_raw(u32::MAX), Event::Clear);
    }

    /// (policy, event, access, owner_is_us, write_kept, expected) — one row
    /// per rule.
    const TABLE: &[(Policy, Event, Access, bool, bool, Decision)] = {
        use Access as A;
        use Event as E;
        use IgnoreReason as I;
        use Policy::{Filtered as F, Strict as S};
        use TearDownReason as T;
        &[
            // Strict tears down on everything, whatever the access or owner.
            (S, E::Unmap, A::READ, false, false, TearDown(T::Strict)),
            (S, E::Clear, A::READ_WRITE, false, false, TearDown(T::Strict)),
            (S, E::Release, A::READ, false, false, TearDown(T::Strict)),
            (S, E::Exclusive, A::WRITE, false, false, TearDown(T::Strict)),
            (S, E::SoftDirty, A::READ, false, false, TearDown(T::Strict)),
            (S, E::ProtectionPage, A::READ_WRITE, false, false, TearDown(T::Strict)),
            (S, E::ProtectionVma, A::READ, false, false, TearDown(T::Strict)),
            (S, E::Migrate, A::READ, true, false, TearDown(T::Strict)),
            // Pages may change or vanish.
            (F, E::Unmap, A::READ, false, false, TearDown(T::PagesMayChange)),
            (F, E::Unmap, A::WRITE, false, false, TearDown(T::PagesMayChange)),
            (F, E::Clear, A::READ, false, false, TearDown(T::PagesMayChange)),
            (F, E::Clear, A::READ_WRITE, true, false, TearDown(T::PagesMayChange)),
            (F, E::Release, A::READ, false, false, TearDown(T::AddressSpaceGone)),
            // Someone else migrates or takes exclusive access.
            (F, E::Migrate, A::READ, false, false, TearDown(T::PagesMoving)),
            (F, E::Exclusive, A::WRITE, false, false, TearDown(T::PagesMoving)),
            // Our own migration / exclusive access.
            (F, E::Migrate, A::READ, true, false, Ignore(I::OwnedByUs)),
            (F, E::Exclusive, A::READ_WRITE, true, false, Ignore(I::OwnedByUs)),
            // mprotect: the write right may shrink; reads keep the same pages.
            (F, E::ProtectionVma, A::WRITE, false, false, TearDown(T::WriteRightMayShrink)),
            (F, E::ProtectionVma, A::READ_WRITE, false, false, TearDown(T::WriteRightMayShrink)),
            (F, E::ProtectionVma, A::READ, false, false, Ignore(I::ReadOnlyProtectionChange)),
            // ... unless every VMA still grants write (NUMA hinting, an
            // mprotect that keeps PROT_WRITE).
            (F, E::ProtectionVma, A::READ_WRITE, false, true, Ignore(I::WriteRightKept)),
            (F, E::ProtectionVma, A::WRITE, false, true, Ignore(I::WriteRightKept)),
            (S, E::ProtectionVma, A::READ_WRITE, false, true, TearDown(T::Strict)),
            // A kept VMA write right changes nothing for other events.
            (F, E::ProtectionPage, A::READ_WRITE, false, true, TearDown(T::WriteProtected)),
            (F, E::SoftDirty, A::READ_WRITE, false, true, TearDown(T::WriteProtected)),
            (F, E::Clear, A::READ_WRITE, false, true, TearDown(T::PagesMayChange)),
            // Fork's COW write-protect / page cleaning / soft-dirty reset:
            // the device's write right is revoked; reads keep the same page.
            (F, E::ProtectionPage, A::READ_WRITE, false, false, TearDown(T::WriteProtected)),
            (F, E::ProtectionPage, A::WRITE, false, false, TearDown(T::WriteProtected)),
            (F, E::ProtectionPage, A::READ, false, false, Ignore(I::WriteProtectOnly)),
            (F, E::SoftDirty, A::READ_WRITE, false, false, TearDown(T::WriteProtected)),
            (F, E::SoftDirty, A::READ, false, false, Ignore(I::SoftDirtyOnly)),
        ]
    };

    #[test]
    fn decision_table() {
        for (row, &(policy, event, access, owner, kept, expected)) in TABLE.iter().enumerate() {
            assert_eq!(
                decide(policy, event, access, owner, kept),
                expected,
                "row {row}: {policy:?} {event:?} {access:?} owner_is_us={owner} write_kept={kept}"
            );
        }
    }

    #[test]
    fn unknown_events_tear_down_under_both_policies() {
        for policy in [Policy::Strict, Policy::Filtered] {
            assert!(decide(policy, Event::from_raw(42), Access::READ, false, true).tears_down());
        }
    }

    #[test]
    fn every_event_is_in_the_table_for_both_policies() {
        for raw in 0..8 {
            let event = Event::from_raw(raw);
            for policy in [Policy::Strict, Policy::Filtered] {
                assert!(TABLE.iter().any(|row| row.0 == policy && row.1 == event), "{policy:?} {event:?} has no row");
            }
        }
    }
}
