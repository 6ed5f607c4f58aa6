// SPDX-License-Identifier: GPL-2.0

//! Out-of-order execution around a rebuild: commands that wait for a
//! rebuild are set aside, and later commands may overtake them.
//!
//! Without this, a command whose chunk was invalidated holds up every
//! command behind it in the queue until its chunk is rebuilt: one page
//! `MADV_DONTNEED`ed every few milliseconds stalls the whole queue (B7). The
//! engine instead takes such a command out of the ring into a small
//! [`SetAside`] list (in submission order) and goes on:
//!
//! - a later command marked `WARPQ_SQE_UNORDERED` runs at once unless it
//!   touches a chunk that a set-aside command touches (then it is set aside
//!   behind it, so that two commands on one chunk never swap);
//! - a later command without the flag waits until nothing is set aside:
//!   the default is submission order, as before;
//! - a set-aside command is retried when a rebuild may have mapped its
//!   chunks, and runs unless a set-aside command before it shares a chunk
//!   with it.
//!
//! Commands reach each other only through memory, and memory through
//! chunks: two commands whose [`Footprints`] are disjoint can run in either
//! order with the same results. Footprints compare chunks, not bytes, so a
//! command is sometimes held back that did not need to be; never the
//! reverse. The footprint is taken when a command is set aside and kept
//! ([`SetAside::footprints`]): if a retry finds other chunks under the
//! command's addresses (its region was unregistered and maybe registered
//! again: another handle), the driver fails it without running it, so it
//! never reaches memory that commands admitted past it may have used.
//!
//! The list is the engine's own (one engine runs a queue at a time: the
//! pool's claim), so nothing here is atomic; the driver keeps it under a
//! mutex only so that shutdown can abort what is in it.

use super::region::Footprint;

/// The chunks a command touches: up to two ranges (a COPY's source and
/// destination); none for a command that touches no memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Footprints([Option<Footprint>; 2]);

impl Footprints {
    /// A command that touches no memory (NOP, or one that fails before it
    /// could).
    pub const NONE: Self = Self([None, None]);

    /// The footprints of a command's two accesses.
    pub const fn of(first: Option<Footprint>, second: Option<Footprint>) -> Self {
        Self([first, second])
    }

    /// Whether the two touch a chunk in common.
    pub fn overlaps(&self, other: &Footprints) -> bool {
        self.0.iter().flatten().any(|a| other.0.iter().flatten().any(|b| a.overlaps(b)))
    }
}

/// What the engine does with the command at the head of the ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Run it now.
    Run,
    /// Take it out of the ring into the set-aside list without running it:
    /// it shares a chunk with a set-aside command.
    SetAside,
    /// Leave it in the ring, and stop taking commands from the ring until
    /// the set-aside list changes: it keeps submission order (no
    /// `WARPQ_SQE_UNORDERED`), or the list is full.
    Wait,
}

/// Commands taken out of the ring that wait for a rebuild (or behind one
/// that does), oldest first. At most `CAP`.
pub struct SetAside<C: Copy, const CAP: usize> {
    entries: [Option<(C, Footprints)>; CAP],
    len: usize,
}

impl<C: Copy, const CAP: usize> Default for SetAside<C, CAP> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C: Copy, const CAP: usize> SetAside<C, CAP> {
    /// An empty list.
    pub const fn new() -> Self {
        Self { entries: [None; CAP], len: 0 }
    }

    /// How many commands are set aside.
    pub const fn len(&self) -> usize {
        self.len
    }

    /// True if none is.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True if no more fit.
    pub const fn is_full(&self) -> bool {
        self.len == CAP
    }

    /// The command at position `index` (0: the oldest).
    pub fn get(&self, index: usize) -> Option<C> {
        self.entries.get(index).copied().flatten().map(|(c, _)| c)
    }

    /// The footprints the command at `index` had when it was set aside.
    pub fn footprints(&self, index: usize) -> Option<Footprints> {
        self.entries.get(index).copied().flatten().map(|(_, f)| f)
    }

    /// Whether a command touching `footprints` must stay behind one of the
    /// first `before` set-aside commands (it shares a chunk with it).
    pub fn blocks(&self, before: usize, footprints: &Footprints) -> bool {
        self.entries.iter().take(before.min(self.len)).flatten().any(|(_, f)| f.overlaps(footprints))
    }

    /// What to do with the next command of the ring, which touches
    /// `footprints` and carries `WARPQ_SQE_UNORDERED` if `unordered`.
    pub fn admit(&self, unordered: bool, footprints: &Footprints) -> Admission {
        if self.is_empty() {
            Admission::Run
        } else if !unordered {
            Admission::Wait
        } else if !self.blocks(self.len, footprints) {
            Admission::Run
        } else if self.is_full() {
            Admission::Wait
        } else {
            Admission::SetAside
        }
    }

    /// Sets `command` aside behind the others; gives it back if the list is
    /// full (it then stays in the ring).
    pub fn push(&mut self, command: C, footprints: Footprints) -> Result<(), C> {
        match self.entries.get_mut(self.len) {
            Some(slot) => {
                *slot = Some((command, footprints));
                self.len += 1;
                Ok(())
            }
            None => Err(command),
        }
    }

    /// Takes out the command at `index` (it ran, failed or was aborted);
    /// the ones after it move up, keeping their order.
    pub fn remove(&mut self, index: usize) -> Option<C> {
        if index >= self.len {
            return None;
        }
        let (command, _) = self.entries[index]?;
        self.entries[index..self.len].rotate_left(1);
        self.len -= 1;
        self.entries[self.len] = None;
        Some(command)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::region::RegionHandle;

    fn fp(slot: u16, first: u32, last: u32) -> Option<Footprint> {
        Some(Footprint { region: RegionHandle::from_raw(1 << 16 | slot as u64).unwrap(), first, last })
    }

    #[test]
    fn footprints_overlap_by_region_and_chunk() {
        let a = Footprints::of(fp(0, 0, 1), None);
        assert!(a.overlaps(&Footprints::of(None, fp(0, 1, 3))));
        assert!(!a.overlaps(&Footprints::of(fp(0, 2, 3), None)));
        assert!(!a.overlaps(&Footprints::of(fp(1, 0, 1), None)), "another region");
        assert!(!a.overlaps(&Footprints::NONE));
        let other_generation = Footprints::of(
            Some(Footprint { region: RegionHandle::from_raw(2 << 16).unwrap(), first: 0, last: 1 }),
            None,
        );
        assert!(!a.overlaps(&other_generation), "a region registered again is another region");
    }

    #[test]
    fn ordered_commands_wait_behind_anything_set_aside() {
        let mut s = SetAside::<u32, 4>::new();
        assert_eq!(s.admit(false, &Footprints::of(fp(0, 0, 0), None)), Admission::Run);
        s.push(1, Footprints::of(fp(0, 0, 0), None)).unwrap();
        assert_eq!(s.admit(false, &Footprints::of(fp(1, 5, 5), None)), Admission::Wait);
        assert_eq!(s.admit(false, &Footprints::NONE), Admission::Wait, "even a NOP keeps order");
    }

    #[test]
    fn unordered_commands_overtake_unless_they_share_a_chunk() {
        let mut s = SetAside::<u32, 2>::new();
        s.push(1, Footprints::of(fp(0, 3, 3), fp(0, 8, 9))).unwrap();
        assert_eq!(s.admit(true, &Footprints::of(fp(0, 4, 7), None)), Admission::Run);
        assert_eq!(s.admit(true, &Footprints::NONE), Admission::Run);
        assert_eq!(s.admit(true, &Footprints::of(fp(1, 0, 0), fp(0, 9, 9))), Admission::SetAside);
        s.push(2, Footprints::of(fp(1, 0, 0), fp(0, 9, 9))).unwrap();
        // Full: a command behind them stays in the ring.
        assert_eq!(s.admit(true, &Footprints::of(fp(1, 0, 0), None)), Admission::Wait);
        assert_eq!(s.push(3, Footprints::NONE), Err(3));
        // A chunk nobody set aside still runs.
        assert_eq!(s.admit(true, &Footprints::of(fp(1, 1, 1), None)), Admission::Run);
    }

    #[test]
    fn a_set_aside_command_stays_behind_an_older_one_on_its_chunk() {
        let mut s = SetAside::<u32, 4>::new();
        s.push(1, Footprints::of(fp(0, 0, 0), None)).unwrap();
        s.push(2, Footprints::of(fp(0, 1, 1), None)).unwrap();
        s.push(3, Footprints::of(fp(0, 0, 0), None)).unwrap();
        assert!(!s.blocks(0, &Footprints::of(fp(0, 0, 0), None)), "the oldest is behind nothing");
        assert!(!s.blocks(1, &Footprints::of(fp(0, 1, 1), None)), "2 does not share 1's chunk");
        assert!(s.blocks(2, &Footprints::of(fp(0, 0, 0), None)), "3 stays behind 1");
        // 1 ran: 3 is free, and the order of the rest is kept.
        assert_eq!(s.remove(0), Some(1));
        assert_eq!((s.len(), s.get(0), s.get(1), s.get(2)), (2, Some(2), Some(3), None));
        assert_eq!(s.footprints(1), Some(Footprints::of(fp(0, 0, 0), None)), "footprints move with their command");
        assert!(!s.blocks(1, &Footprints::of(fp(0, 0, 0), None)));
        assert_eq!(s.remove(5), None);
        assert_eq!(s.remove(1), Some(3));
        assert_eq!(s.remove(0), Some(2));
        assert!(s.is_empty());
    }
}
