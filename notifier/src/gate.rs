// SPDX-License-Identifier: GPL-2.0

//! The queue gate: the engine enters it to run a command; invalidations,
//! registrations and rebuilds pause it and wait until the engine is out.
//!
//! # State word
//!
//! All state lives in one `AtomicU64`:
//!
//! | bits  | field     | meaning                                                |
//! |-------|-----------|--------------------------------------------------------|
//! | 0-15  | in_flight | engine entries of the current generation               |
//! | 16-31 | abandoned | entries of an older generation (after a reset) not yet out |
//! | 32-47 | pauses    | transient pauses (nestable)                             |
//! | 48    | stale     | a command waits for a rebuild (the engine still enters) |
//! | 49    | closed    | the context was released; never reopens                 |
//! | 50-63 | generation| bumped by [`Paused::reset`]                             |
//!
//! # Orderings
//!
//! The classic race is "engine enters" against "pauser pauses then waits for
//! in-flight to reach zero". With two separate atomics this is a store-load
//! (Dekker) pattern that needs `SeqCst` on both sides. Keeping the in-flight
//! count and the pause count in *one* word removes it: every change is a
//! read-modify-write of that word, so all of them sit in one modification
//! order. An enter either comes before the pause in that order (and is
//! counted in `in_flight`, so the pauser waits for it) or after it (and then
//! it reads `pauses > 0` and fails). No fence is needed for exclusion; the
//! orderings only make the *data* visible:
//!
//! - enter: `AcqRel` compare-exchange. Acquire pairs with the `Release` of
//!   the last resume / clear, so the region table the pauser wrote is
//!   visible. Release publishes what the engine wrote before entering (the
//!   command it is about to run) to a [`Paused::reset`] that abandons it.
//! - leave: `Release`, so every read the engine made inside happens before
//!   the drain check that sees it out.
//! - drain check: `Acquire` load. Every modification of the word is an RMW,
//!   so each engine leave heads a release sequence that includes all later
//!   modifications; the Acquire load that sees `in_flight == 0` therefore
//!   synchronizes with every leave before it.
//! - pause: `Relaxed`: it only has to be in the modification order before
//!   the drain check; it publishes no data.
//! - resume, stale, close, reset: `AcqRel` (they follow table writes, which
//!   must be visible to the next enter).

use core::marker::PhantomData;

use super::platform::Waiter;
use super::sync::{AtomicU64, Ordering};

const COUNT_MASK: u64 = 0xffff;
const IN_FLIGHT_SHIFT: u32 = 0;
const ABANDONED_SHIFT: u32 = 16;
const PAUSES_SHIFT: u32 = 32;
const IN_FLIGHT_ONE: u64 = 1 << IN_FLIGHT_SHIFT;
const ABANDONED_ONE: u64 = 1 << ABANDONED_SHIFT;
const PAUSES_ONE: u64 = 1 << PAUSES_SHIFT;
const STALE: u64 = 1 << 48;
const CLOSED: u64 = 1 << 49;
const GENERATION_SHIFT: u32 = 50;
const GENERATION_MASK: u64 = (1 << (64 - GENERATION_SHIFT)) - 1;

/// A decoded copy of the state word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GateState {
    /// Engine entries of the current generation.
    pub in_flight: u32,
    /// Engine entries abandoned by a reset that have not left yet.
    pub abandoned: u32,
    /// Number of transient pauses held.
    pub pauses: u32,
    /// A command waits for a rebuild (set by the engine or a REGISTER);
    /// cleared by the rebuild. The engine still enters.
    pub stale: bool,
    /// Set by the context's release; never cleared.
    pub closed: bool,
    /// Bumped by each reset; engine results of an older generation are void.
    pub generation: u16,
}

impl GateState {
    fn decode(word: u64) -> Self {
        Self {
            in_flight: ((word >> IN_FLIGHT_SHIFT) & COUNT_MASK) as u32,
            abandoned: ((word >> ABANDONED_SHIFT) & COUNT_MASK) as u32,
            pauses: ((word >> PAUSES_SHIFT) & COUNT_MASK) as u32,
            stale: word & STALE != 0,
            closed: word & CLOSED != 0,
            generation: ((word >> GENERATION_SHIFT) & GENERATION_MASK) as u16,
        }
    }

    /// True if the engine may enter and nothing waits for a rebuild.
    pub fn is_open(&self) -> bool {
        self.admits_engine() && !self.stale
    }

    /// True if the engine may enter: not paused, not closed. A stale gate
    /// admits it: every translation checks the chunks it needs, so commands
    /// on mapped chunks run while others wait for their rebuild
    /// (`overtake.rs`).
    pub fn admits_engine(&self) -> bool {
        self.pauses == 0 && !self.closed
    }

    /// True if no engine is inside (of any generation).
    pub fn is_empty(&self) -> bool {
        self.in_flight == 0 && self.abandoned == 0
    }
}

/// The gate between one queue's engine and everything that changes what the
/// engine may touch. Lock-free; see the module documentation for orderings.
pub struct QueueGate {
    state: AtomicU64,
}

impl core::fmt::Debug for QueueGate {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_tuple("QueueGate").field(&self.snapshot()).finish()
    }
}

impl Default for QueueGate {
    fn default() -> Self {
        Self::new()
    }
}

impl QueueGate {
    /// An open gate, generation 0.
    pub fn new() -> Self {
        Self { state: AtomicU64::new(0) }
    }

    /// A decoded snapshot of the state (for tracing, counters and tests).
    pub fn snapshot(&self) -> GateState {
        GateState::decode(self.state.load(Ordering::Acquire))
    }

    /// True if the engine may enter now.
    pub fn is_running(&self) -> bool {
        self.snapshot().is_open()
    }

    /// True if a teardown left the queue waiting for a rebuild.
    pub fn is_stale(&self) -> bool {
        self.snapshot().stale
    }

    /// True once the context was released.
    pub fn is_closed(&self) -> bool {
        self.snapshot().closed
    }

    /// Called by the engine before it executes one command.
    ///
    /// Returns `None` if the gate is paused or closed: the command stays
    /// queued. A stale gate admits the engine ([`GateState::admits_engine`]). Whatever the engine stored before this call (e.g. the id
    /// of the command it is about to run) is visible to a later
    /// [`Paused::reset`] that abandons this entry.
    pub fn enter<'a, W: Waiter + ?Sized>(&'a self, waiter: &'a W) -> Option<GateGuard<'a, W>> {
        let mut current = self.state.load(Ordering::Relaxed);
        loop {
            let state = GateState::decode(current);
            if !state.admits_engine() || u64::from(state.in_flight) == COUNT_MASK {
                return None;
            }
            match self.state.compare_exchange(current, current + IN_FLIGHT_ONE, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return Some(GateGuard { gate: self, waiter, generation: state.generation, left: false }),
                Err(actual) => current = actual,
            }
        }
    }

    /// Pauses the gate (nestable): no engine can enter until every
    /// [`Paused`] is dropped. Does not wait; see [`Paused::wait_drained`].
    ///
    /// The count holds up to 65535 concurrent pauses; every pauser in the
    /// protocol holds the context lock, so there is at most one.
    pub fn pause(&self) -> Paused<'_> {
        self.state.fetch_add(PAUSES_ONE, Ordering::Relaxed);
        Paused { gate: self }
    }

    fn is_empty(&self) -> bool {
        GateState::decode(self.state.load(Ordering::Acquire)).is_empty()
    }

    fn set_flag(&self, flag: u64, on: bool) {
        if on {
            self.state.fetch_or(flag, Ordering::AcqRel);
        } else {
            self.state.fetch_and(!flag, Ordering::AcqRel);
        }
    }
}

/// The outcome of [`Paused::wait_drained`].
#[derive(Debug)]
pub enum DrainOutcome<'p> {
    /// The engine is out and cannot enter while the pause is held.
    Drained(Drained<'p>),
    /// The deadline passed with the engine still inside.
    TimedOut {
        /// Engine entries still inside (current and abandoned generations).
        in_flight: u32,
    },
}

/// What [`Paused::reset`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResetReport {
    /// Engine entries that were inside and are now abandoned: their results
    /// are void and the caller completes their commands with an error.
    pub abandoned: u32,
    /// The new generation.
    pub generation: u16,
}

/// A transient pause of a [`QueueGate`]; dropping it resumes.
#[derive(Debug)]
pub struct Paused<'g> {
    gate: &'g QueueGate,
}

impl<'g> Paused<'g> {
    /// The paused gate.
    pub fn gate(&self) -> &'g QueueGate {
        self.gate
    }

    /// Proof that the engine is out now, without waiting.
    pub fn try_drained(&self) -> Option<Drained<'_>> {
        if self.gate.is_empty() {
            Some(Drained { gate: self.gate, _paused: PhantomData })
        } else {
            None
        }
    }

    /// Waits (at most `timeout_ns`, `u64::MAX` for ever) until no engine is
    /// inside, current or abandoned. Once this returns `Drained` the engine
    /// is out and cannot enter until this pause is dropped.
    pub fn wait_drained<W: Waiter + ?Sized>(&self, waiter: &W, timeout_ns: u64) -> DrainOutcome<'_> {
        if let Some(drained) = self.try_drained() {
            return DrainOutcome::Drained(drained);
        }
        let deadline = if timeout_ns == u64::MAX { u64::MAX } else { waiter.now_ns().saturating_add(timeout_ns) };
        let gate = self.gate;
        if waiter.wait_until(&|| gate.is_empty(), deadline) {
            DrainOutcome::Drained(Drained { gate, _paused: PhantomData })
        } else {
            let state = self.gate.snapshot();
            DrainOutcome::TimedOut { in_flight: state.in_flight.saturating_add(state.abandoned) }
        }
    }

    /// Abandons the engine entries inside (after a drain timeout): bumps the
    /// generation, so [`GateGuard::finish`] of those entries reports
    /// [`EngineExit::Abandoned`] and the engine discards its results; the
    /// caller completes those commands with an error instead, exactly once.
    ///
    /// The abandoned entries still count for [`Paused::wait_drained`]: the
    /// engine may still read the region table until it physically leaves.
    pub fn reset(&self) -> ResetReport {
        let mut current = self.gate.state.load(Ordering::Relaxed);
        loop {
            let state = GateState::decode(current);
            let abandoned = (u64::from(state.abandoned) + u64::from(state.in_flight)).min(COUNT_MASK);
            let generation = (u64::from(state.generation) + 1) & GENERATION_MASK;
            let new = (current
                & !(COUNT_MASK << IN_FLIGHT_SHIFT)
                & !(COUNT_MASK << ABANDONED_SHIFT)
                & !(GENERATION_MASK << GENERATION_SHIFT))
                | (abandoned << ABANDONED_SHIFT)
                | (generation << GENERATION_SHIFT);
            match self.gate.state.compare_exchange(current, new, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return ResetReport { abandoned: state.in_flight, generation: generation as u16 },
                Err(actual) => current = actual,
            }
        }
    }

    /// Marks the queue stale (a rebuild is wanted) until
    /// [`Paused::clear_stale`]; the engine still enters.
    pub fn mark_stale(&self, _drained: &Drained<'_>) {
        self.gate.set_flag(STALE, true);
    }

    /// Clears the stale state (every region was rebuilt or is dead).
    pub fn clear_stale(&self, _drained: &Drained<'_>) {
        self.gate.set_flag(STALE, false);
    }

    /// Closes the gate for good (the context was released).
    pub fn close(&self, _drained: &Drained<'_>) {
        self.gate.set_flag(CLOSED, true);
    }

    /// Resumes (same as dropping the pause).
    pub fn resume(self) {}
}

impl Drop for Paused<'_> {
    fn drop(&mut self) {
        // Release: the table writes made under this pause happen before the
        // next successful enter (AcqRel compare-exchange).
        self.gate.state.fetch_sub(PAUSES_ONE, Ordering::AcqRel);
    }
}

/// Proof that the engine is out of a paused gate and cannot enter while the
/// pause it borrows is held. Required for every region-table change.
#[derive(Debug)]
pub struct Drained<'p> {
    gate: &'p QueueGate,
    _paused: PhantomData<&'p Paused<'p>>,
}

impl Drained<'_> {
    /// True if this proof is about `gate`.
    pub fn is_for(&self, gate: &QueueGate) -> bool {
        core::ptr::eq(self.gate, gate)
    }
}

/// How an engine entry ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineExit {
    /// Normal exit: the engine owns the command's completion.
    Completed,
    /// A reset abandoned this entry: discard the result; whoever reset the
    /// gate completes the command with an error.
    Abandoned,
}

/// The engine is inside the gate while this guard lives.
///
/// Dropping it leaves (discarding the [`EngineExit`]); call
/// [`GateGuard::finish`] to learn whether the result may be published.
pub struct GateGuard<'a, W: Waiter + ?Sized> {
    gate: &'a QueueGate,
    waiter: &'a W,
    generation: u16,
    left: bool,
}

impl<W: Waiter + ?Sized> GateGuard<'_, W> {
    /// The generation this entry belongs to.
    pub fn generation(&self) -> u16 {
        self.generation
    }

    /// True if a reset abandoned this entry: stop touching memory and leave.
    pub fn is_abandoned(&self) -> bool {
        self.gate.snapshot().generation != self.generation
    }

    /// Marks the queue stale from inside (the command needs a rebuild),
    /// until a holder of `L` clears it with the gate drained; the engine
    /// still enters for commands whose chunks are mapped.
    /// `Release`, so what the engine stored before (the wanted flags) is seen
    /// by that holder, whose drain acquires this entry's leave.
    pub fn mark_stale(&self) {
        self.gate.state.fetch_or(STALE, Ordering::Release);
    }

    /// Leaves the gate and tells whether the engine still owns the command's
    /// completion.
    pub fn finish(mut self) -> EngineExit {
        self.leave()
    }

    fn leave(&mut self) -> EngineExit {
        if self.left {
            return EngineExit::Abandoned;
        }
        self.left = true;
        let mut current = self.gate.state.load(Ordering::Relaxed);
        loop {
            let state = GateState::decode(current);
            let (new, exit) = if state.generation == self.generation && state.in_flight > 0 {
                (current - IN_FLIGHT_ONE, EngineExit::Completed)
            } else if state.abandoned > 0 {
                (current - ABANDONED_ONE, EngineExit::Abandoned)
            } else {
                // Unreachable if every entry is counted exactly once; never
                // underflow the neighbouring field.
                return EngineExit::Abandoned;
            };
            match self.gate.state.compare_exchange(current, new, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => {
                    let after = GateState::decode(new);
                    if after.pauses > 0 && after.is_empty() {
                        self.waiter.wake();
                    }
                    return exit;
                }
                Err(actual) => current = actual,
            }
        }
    }
}

impl<W: Waiter + ?Sized> Drop for GateGuard<'_, W> {
    fn drop(&mut self) {
        self.leave();
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use core::cell::Cell;

    struct NoWait {
        wakes: Cell<u32>,
    }

    impl Waiter for NoWait {
        fn now_ns(&self) -> u64 {
            0
        }
        fn wait_until(&self, done: &dyn Fn() -> bool, _deadline_ns: u64) -> bool {
            done()
        }
        fn wake(&self) {
            self.wakes.set(self.wakes.get() + 1);
        }
    }

    fn waiter() -> NoWait {
        NoWait { wakes: Cell::new(0) }
    }

    #[test]
    fn enter_leave_open_gate() {
        let gate = QueueGate::new();
        let w = waiter();
        let guard = gate.enter(&w).expect("open gate");
        assert_eq!(gate.snapshot().in_flight, 1);
        assert_eq!(guard.finish(), EngineExit::Completed);
        assert_eq!(gate.snapshot().in_flight, 0);
        assert_eq!(w.wakes.get(), 0, "no pauser, no wake");
    }

    #[test]
    fn pause_blocks_enter_and_nests() {
        let gate = QueueGate::new();
        let w = waiter();
        let p1 = gate.pause();
        let p2 = gate.pause();
        assert!(gate.enter(&w).is_none());
        drop(p1);
        assert!(gate.enter(&w).is_none());
        p2.resume();
        assert!(gate.enter(&w).is_some());
    }

    #[test]
    fn drain_times_out_while_inside_and_last_leaver_wakes() {
        let gate = QueueGate::new();
        let w = waiter();
        let guard = gate.enter(&w).unwrap();
        let paused = gate.pause();
        assert!(matches!(paused.wait_drained(&w, 10), DrainOutcome::TimedOut { in_flight: 1 }));
        drop(guard);
        assert_eq!(w.wakes.get(), 1);
        assert!(matches!(paused.wait_drained(&w, 10), DrainOutcome::Drained(_)));
    }

    #[test]
    fn stale_outlives_the_pause_admits_the_engine_and_close_is_final() {
        let gate = QueueGate::new();
        let w = waiter();
        {
            let paused = gate.pause();
            let drained = paused.try_drained().unwrap();
            paused.mark_stale(&drained);
        }
        assert!(gate.is_stale());
        assert!(!gate.is_running());
        // Stale admits the engine (its translations check each chunk).
        assert!(gate.enter(&w).is_some());
        {
            let paused = gate.pause();
            let drained = paused.try_drained().unwrap();
            paused.clear_stale(&drained);
        }
        assert!(gate.is_running());
        {
            let paused = gate.pause();
            let drained = paused.try_drained().unwrap();
            paused.close(&drained);
            paused.clear_stale(&drained);
        }
        assert!(gate.enter(&w).is_none());
        assert!(gate.is_closed());
    }

    #[test]
    fn reset_abandons_exactly_the_entries_inside() {
        let gate = QueueGate::new();
        let w = waiter();
        let guard = gate.enter(&w).unwrap();
        let paused = gate.pause();
        let report = paused.reset();
        assert_eq!(report, ResetReport { abandoned: 1, generation: 1 });
        assert!(guard.is_abandoned());
        // Still inside: the drain must keep waiting for it.
        assert!(paused.try_drained().is_none());
        assert_eq!(guard.finish(), EngineExit::Abandoned);
        assert!(paused.try_drained().is_some());
        drop(paused);
        let again = gate.enter(&w).unwrap();
        assert_eq!(again.generation(), 1);
        assert_eq!(again.finish(), EngineExit::Completed);
        assert_eq!(
            gate.snapshot(),
            GateState { in_flight: 0, abandoned: 0, pauses: 0, stale: false, closed: false, generation: 1 }
        );
    }

    #[test]
    fn generation_wraps_without_touching_other_fields() {
        let gate = QueueGate::new();
        let paused = gate.pause();
        let drained_flag = {
            let d = paused.try_drained().unwrap();
            paused.mark_stale(&d);
            true
        };
        assert!(drained_flag);
        let mut last = 0;
        for _ in 0..=GENERATION_MASK {
            last = paused.reset().generation;
        }
        assert_eq!(last, 0);
        let s = gate.snapshot();
        assert!(s.stale);
        assert_eq!(s.pauses, 1);
        assert_eq!(s.in_flight + s.abandoned, 0);
    }
}
