// SPDX-License-Identifier: GPL-2.0

//! The fault-side rebuild with the collision-retry rule: [`rebuild`].
//!
//! Runs in the queue's `->fault` handler (under `mmap_read_lock` of the
//! faulting mm, after the context was looked up by `vmf->vma->vm_mm`) or in
//! an ioctl of the owning mm. For each chunk a command waits for (its
//! *wanted* flag; REGISTER wants every chunk), and only those:
//!
//! 1. `seq = read_begin()` without `L` (may sleep);
//! 2. pin (or mirror) and DMA-map the chunk without `L` (may sleep and
//!    allocate);
//! 3. take `L`; if `read_retry(seq)`: drop `L`, undo, retry (bounded);
//! 4. else pause and drain the gate, publish the chunk `Mapped { seq }`
//!    (clearing its wanted flag), and clear the stale state if no command
//!    waits any more; drop `L`.
//!
//! Chunks nobody asked for stay unmapped: after fork or a `MADV_DONTNEED`
//! the rebuild costs the chunks the next commands touch, not the region.
//!
//! Before step 1, if the context holds its whole share of the device's
//! address window ([`Config::device_share`]), chunks are evicted until the
//! next one fits: with `L` held and the gate paused and drained, as a
//! teardown, least recently used first (`RegionTable::evict_one`). If
//! nothing can be evicted (every mapped chunk is waited for) the chunk is
//! mapped anyway: a command's own chunks always fit, so it cannot wait for
//! ever; the next rebuild shrinks the context back to its share.
//!
//! A chunk that cannot be pinned or mapped for want of memory (the `pin`
//! charge against `RLIMIT_MEMLOCK`, an allocation, the device's addresses:
//! [`PinError::Transient`]) is tried again, up to `max_retries` times per
//! rebuild, each time after evicting one chunk if one can go (a momentary
//! allocation failure passes on its own); then it is refused as short
//! (`Refusal::NoMemory`): the commands that waited for it fail with their
//! own status and the rebuild goes on with the other chunks, so the rest
//! of the queue keeps running. A chunk larger than the whole budget
//! ([`PinError::NeverFits`]) is refused at once, evicting nothing.

use super::context::{Config, ContextLock, MmContext};
use super::platform::{PinError, Platform};
use super::region::{Refusal, RegionDesc, RegionHandle};

/// A set of region slots: the first [`SlotSet::CAPACITY`] exactly (the
/// driver's table has no more), later ones folded onto them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotSet([u64; SlotSet::CAPACITY / 64]);

impl SlotSet {
    /// Slots told apart.
    pub const CAPACITY: usize = 1024;

    /// Adds slot `slot`.
    pub fn insert(&mut self, slot: usize) {
        let slot = slot % Self::CAPACITY;
        self.0[slot / 64] |= 1 << (slot % 64);
    }

    /// Whether slot `slot` was added.
    pub fn contains(&self, slot: usize) -> bool {
        let slot = slot % Self::CAPACITY;
        self.0[slot / 64] & (1 << (slot % 64)) != 0
    }
}

/// Counters of one [`rebuild`] call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RebuildReport {
    /// Chunks mapped and published.
    pub mapped: u32,
    /// Wanted chunks that could not be faulted in: refused, so the
    /// commands that waited for them fail (the chunks stay unmapped).
    pub refused: u32,
    /// The region slots with a fault-in that failed (`Gone`), refused by
    /// us or not (another rebuild or the engine may have settled the chunk
    /// first): REGISTER fails if its own is here.
    pub gone_slots: SlotSet,
    /// As `gone_slots`, for chunks refused for want of memory (REGISTER
    /// says `ENOMEM`).
    pub short_slots: SlotSet,
    /// Chunks that could not be mapped for want of memory on a try (each
    /// evicts a chunk and retries, or refuses it).
    pub short_tries: u32,
    /// Collisions: an invalidation ran between `read_begin` and the check.
    pub retries: u32,
    /// Chunks another rebuild published (or that changed) first; our
    /// mapping was undone.
    pub lost_races: u32,
    /// Pages pinned by the published mappings.
    pub pages_pinned: u64,
    /// Chunks evicted to stay within the device-address share.
    pub evicted: u32,
    /// The queue is running at the end (wake the engine).
    pub running: bool,
}

/// Why [`rebuild`] stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RebuildError {
    /// The lock does not guard this context's key (driver bug).
    WrongLock,
    /// The context was released.
    Released,
    /// More than `max_retries` collisions.
    RetriesExhausted {
        /// Collisions seen.
        retries: u32,
    },
    /// The gate did not drain in time: a command on a mapped chunk ran
    /// longer than the drain timeout (the engine enters a stale gate).
    Busy,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Step {
    Resolved,
    Collision,
    /// Out of memory (`PinError::Transient`); nothing changed.
    Short,
    /// Larger than the whole memory budget (`PinError::NeverFits`).
    NeverFits,
}

/// Rebuilds every chunk a command waits for; resumes the queue when none is
/// left. Takes and drops `L` itself; call without `L`.
///
/// On error the queue may stay stale: a zap is then queued, so that the next
/// touch of the queue faults and tries again (the caller may be an ioctl,
/// with the queue still mapped).
pub fn rebuild<P, L, const N: usize>(
    ctx: &MmContext<P::Mapping, N>,
    lock: &L,
    platform: &P,
    config: &Config,
) -> Result<RebuildReport, RebuildError>
where
    P: Platform,
    L: ContextLock,
{
    rebuild_with(ctx, lock, platform, config, Claimed::LeaveToClaimant)
}

/// As [`rebuild`], for a caller that must see every wanted chunk settled
/// before it returns (REGISTER: its region is mapped, or it learns why
/// not): it does not leave a chunk another rebuild has claimed to that
/// rebuild, it maps it too (one of the two mappings is then discarded, as
/// any lost race).
pub fn rebuild_every_wanted<P, L, const N: usize>(
    ctx: &MmContext<P::Mapping, N>,
    lock: &L,
    platform: &P,
    config: &Config,
) -> Result<RebuildReport, RebuildError>
where
    P: Platform,
    L: ContextLock,
{
    rebuild_with(ctx, lock, platform, config, Claimed::MapToo)
}

/// What a rebuild does with a chunk another rebuild has claimed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Claimed {
    /// Leave it: the claimant maps it (or fails and leaves it wanted).
    LeaveToClaimant,
    /// Map it too.
    MapToo,
}

fn rebuild_with<P, L, const N: usize>(
    ctx: &MmContext<P::Mapping, N>,
    lock: &L,
    platform: &P,
    config: &Config,
    claimed: Claimed,
) -> Result<RebuildReport, RebuildError>
where
    P: Platform,
    L: ContextLock,
{
    let result = rebuild_all(ctx, lock, platform, config, claimed);
    if result.is_err() && ctx.zap_needed() && !ctx.is_released() {
        platform.schedule_zap();
    }
    result
}

/// Claims (see [`RegionTable::claim`](super::region::RegionTable::claim)):
/// each round claims the chunk it maps, under `L`, so that concurrent
/// rebuilds (the worker, WAITs of several threads, a fault) each map a
/// different chunk instead of all mapping the first and discarding all but
/// one (under `pin`, the duplicate charges could even fail one of them
/// short). The claim is given back under `L` at the next round or at the
/// end, whatever happened. A rebuild that finds only claimed chunks leaves
/// them to their claimants and returns with the queue still stale; the
/// claimant's publish reopens it (or its failure queues the zap, so the
/// owner's next touch of the ring rebuilds). [`rebuild_every_wanted`] maps
/// claimed chunks too.
fn rebuild_all<P, L, const N: usize>(
    ctx: &MmContext<P::Mapping, N>,
    lock: &L,
    platform: &P,
    config: &Config,
    claimed: Claimed,
) -> Result<RebuildReport, RebuildError>
where
    P: Platform,
    L: ContextLock,
{
    let mut claim = None;
    let result = rebuild_rounds(ctx, lock, platform, config, claimed, &mut claim);
    if let Some((handle, chunk)) = claim {
        let key = lock.lock();
        if ctx.owns_key(&key) {
            // SAFETY: `key` proves `L` is held.
            unsafe { ctx.table().unclaim(handle, chunk) };
        }
    }
    result
}

fn rebuild_rounds<P, L, const N: usize>(
    ctx: &MmContext<P::Mapping, N>,
    lock: &L,
    platform: &P,
    config: &Config,
    claimed: Claimed,
    claim: &mut Option<(RegionHandle, usize)>,
) -> Result<RebuildReport, RebuildError>
where
    P: Platform,
    L: ContextLock,
{
    let mut report = RebuildReport::default();
    // Each round resolves one chunk or spends one retry, but chunks can be
    // invalidated (and wanted) again between rounds: bound the rounds too,
    // by twice the chunks registered when the first round looks (every
    // chunk wanted, then each invalidated and wanted once more).
    let mut rounds: Option<usize> = None;
    let mut round = 0usize;
    loop {
        let next = {
            let key = lock.lock();
            if !ctx.owns_key(&key) {
                return Err(RebuildError::WrongLock);
            }
            if let Some((handle, chunk)) = claim.take() {
                // SAFETY: `key` proves `L` is held.
                unsafe { ctx.table().unclaim(handle, chunk) };
            }
            if ctx.is_released() {
                return Err(RebuildError::Released);
            }
            let limit = *rounds.get_or_insert_with(|| {
                // SAFETY: `key` proves `L` is held.
                let chunks = unsafe { ctx.table().chunk_total() };
                chunks.saturating_mul(2).saturating_add(2 * config.max_retries as usize).saturating_add(1)
            });
            round += 1;
            if round > limit {
                return Err(RebuildError::RetriesExhausted { retries: report.retries });
            }
            // SAFETY: `key` proves `L` is held.
            let next = unsafe {
                match claimed {
                    Claimed::LeaveToClaimant => ctx.table().first_unclaimed_wanted(),
                    Claimed::MapToo => ctx.table().first_wanted(),
                }
            };
            // SAFETY: `key` proves `L` is held.
            let pending = unsafe { ctx.table().any_needing_rebuild() };
            if next.is_none() && !pending && ctx.gate().is_stale() {
                // Stale with nothing to rebuild: a chunk died or its region
                // went away without a refresh. Reopen.
                let paused = ctx.gate().pause();
                let drained = MmContext::<P::Mapping, N>::drain_bounded(&paused, platform, config)
                    .map_err(|_| RebuildError::Busy)?;
                // SAFETY: `L` is held; `drained` is about this gate.
                unsafe { ctx.refresh_stale(&paused, &drained) };
            }
            if let Some((desc, chunk)) = next {
                // SAFETY: `key` proves `L` is held.
                unsafe { ctx.table().claim(desc.handle, chunk) };
                *claim = Some((desc.handle, chunk));
                let evicted = make_room(ctx, platform, config, desc.chunk_range(chunk).1)?;
                report.evicted = report.evicted.saturating_add(evicted);
            }
            next
        };
        let Some((desc, chunk)) = next else {
            report.running = ctx.gate().is_running();
            return Ok(report);
        };
        // After a collision the outer loop looks again at what is wanted:
        // the command may have been served by another rebuild meanwhile, and
        // a chunk nobody waits for is not faulted in (its range may even be
        // read-only now: a refusal would fail a later command for nothing).
        match rebuild_one(ctx, lock, platform, config, &desc, chunk, &mut report)? {
            Step::Resolved => {}
            Step::Collision => {
                report.retries = report.retries.saturating_add(1);
                if report.retries > config.max_retries {
                    return Err(RebuildError::RetriesExhausted { retries: report.retries });
                }
            }
            step @ (Step::Short | Step::NeverFits) => {
                report.short_tries = report.short_tries.saturating_add(1);
                let retry = step == Step::Short && report.short_tries <= config.max_retries;
                settle_short(ctx, lock, platform, config, &desc, chunk, retry, &mut report)?;
            }
        }
    }
}

/// With `L` held: evicts chunks until `need` more bytes fit in the
/// context's device-address share (if it has one); returns how many were
/// evicted. Pauses and drains the gate only if something must go.
fn make_room<P, const N: usize>(
    ctx: &MmContext<P::Mapping, N>,
    platform: &P,
    config: &Config,
    need: u64,
) -> Result<u32, RebuildError>
where
    P: Platform,
{
    let share = config.device_share;
    if share == 0 {
        return Ok(0);
    }
    evict_until(ctx, platform, config, |held, _| held.saturating_add(need) <= share)
}

/// With `L` held: evicts chunks by the clock until `enough(bytes held,
/// chunks evicted)` or nothing more can go; returns how many went. Pauses
/// and drains the gate only if something must go.
fn evict_until<P, const N: usize>(
    ctx: &MmContext<P::Mapping, N>,
    platform: &P,
    config: &Config,
    enough: impl Fn(u64, u32) -> bool,
) -> Result<u32, RebuildError>
where
    P: Platform,
{
    // SAFETY: the caller holds `L`.
    let mut held = unsafe { ctx.table().mapped_bytes() };
    if enough(held, 0) {
        return Ok(0);
    }
    let paused = ctx.gate().pause();
    let drained =
        MmContext::<P::Mapping, N>::drain_bounded(&paused, platform, config).map_err(|_| RebuildError::Busy)?;
    let mut evicted = 0u32;
    while !enough(held, evicted) {
        // SAFETY: `L` is held (the caller) and `drained` proves the gate is
        // paused and drained: no command touches the chunk evicted.
        let freed =
            unsafe { ctx.table().evict_one(|desc, mapping| platform.evict(mapping, desc.access.device_writes())) };
        let Some(freed) = freed else { break };
        held = held.saturating_sub(freed);
        evicted = evicted.saturating_add(1);
    }
    // SAFETY: `L` is held; `drained` is about this context's gate.
    unsafe { ctx.refresh_stale(&paused, &drained) };
    drop(paused);
    // The engine may have gone to sleep on the paused gate.
    platform.resumed();
    Ok(evicted)
}

/// After a chunk could not be mapped for want of memory: if the chunk is
/// still wanted and unmapped, with `retry` evicts one of the context's
/// chunks (if any: a transient failure may pass anyway) for the next try;
/// without, gives up on it: the commands waiting for it fail
/// (`XlateFault::NoMemory`), the others go on.
#[allow(clippy::too_many_arguments)]
fn settle_short<P, L, const N: usize>(
    ctx: &MmContext<P::Mapping, N>,
    lock: &L,
    platform: &P,
    config: &Config,
    desc: &RegionDesc,
    chunk: usize,
    retry: bool,
    report: &mut RebuildReport,
) -> Result<(), RebuildError>
where
    P: Platform,
    L: ContextLock,
{
    let key = lock.lock();
    if !ctx.owns_key(&key) {
        return Err(RebuildError::WrongLock);
    }
    if ctx.is_released() {
        return Err(RebuildError::Released);
    }
    // SAFETY: `key` proves `L` is held.
    let still_wanted =
        unsafe { ctx.table().chunk_unmapped(desc.handle, chunk) && ctx.table().chunk_wanted(desc.handle, chunk) };
    if !still_wanted {
        // Settled meanwhile (published, refused, unregistered, served).
        report.lost_races = report.lost_races.saturating_add(1);
        return Ok(());
    }
    if retry {
        let evicted = evict_until(ctx, platform, config, |_, evicted| evicted >= 1)?;
        report.evicted = report.evicted.saturating_add(evicted);
        return Ok(());
    }
    let paused = ctx.gate().pause();
    let drained =
        MmContext::<P::Mapping, N>::drain_bounded(&paused, platform, config).map_err(|_| RebuildError::Busy)?;
    // SAFETY: `key` proves `L` is held and `drained` that the gate is paused
    // and drained.
    if unsafe { ctx.table().refuse(desc.handle, chunk, Refusal::NoMemory) } {
        report.refused = report.refused.saturating_add(1);
        report.short_slots.insert(desc.handle.slot());
    } else {
        report.lost_races = report.lost_races.saturating_add(1);
    }
    // SAFETY: `L` is held; `drained` is about this context's gate.
    unsafe { ctx.refresh_stale(&paused, &drained) };
    drop(paused);
    drop(key);
    Ok(())
}

/// One attempt at one chunk.
fn rebuild_one<P, L, const N: usize>(
    ctx: &MmContext<P::Mapping, N>,
    lock: &L,
    platform: &P,
    config: &Config,
    desc: &RegionDesc,
    chunk: usize,
    report: &mut RebuildReport,
) -> Result<Step, RebuildError>
where
    P: Platform,
    L: ContextLock,
{
    let seq = platform.read_begin(desc);
    let pinned = platform.pin_and_map(desc, chunk, seq);
    match pinned {
        Err(PinError::Transient) => return Ok(Step::Short),
        Err(PinError::NeverFits) => return Ok(Step::NeverFits),
        // Invalidated while faulting: the same collision `read_retry` finds.
        Err(PinError::Collision) => return Ok(Step::Collision),
        _ => {}
    }

    let key = lock.lock();
    let undo = |mapping: Result<P::Mapping, PinError>| {
        if let Ok(mapping) = mapping {
            platform.discard_unpublished(mapping);
        }
    };
    if !ctx.owns_key(&key) {
        drop(key);
        undo(pinned);
        return Err(RebuildError::WrongLock);
    }
    if ctx.is_released() {
        drop(key);
        undo(pinned);
        return Err(RebuildError::Released);
    }
    // SAFETY: `key` proves `L` is held.
    let still_wanted =
        unsafe { ctx.table().chunk_unmapped(desc.handle, chunk) && ctx.table().chunk_wanted(desc.handle, chunk) };
    if !still_wanted {
        // Another rebuild published it, or it was unregistered (its notifier
        // may be gone: the sequence is meaningless then), or the command
        // that wanted it was served or failed meanwhile.
        drop(key);
        undo(pinned);
        report.lost_races = report.lost_races.saturating_add(1);
        return Ok(Step::Resolved);
    }
    if platform.read_retry(desc, seq) {
        // An invalidation ran since `read_begin`: the pages (or the failure)
        // may be stale.
        drop(key);
        undo(pinned);
        return Ok(Step::Collision);
    }

    let paused = ctx.gate().pause();
    let drained = match MmContext::<P::Mapping, N>::drain_bounded(&paused, platform, config) {
        Ok(drained) => drained,
        Err(_) => {
            drop(paused);
            drop(key);
            undo(pinned);
            return Err(RebuildError::Busy);
        }
    };
    let leftover = match pinned {
        Ok(mapping) => {
            // SAFETY: `key` proves `L` is held and `drained` that the gate is
            // paused and drained.
            match unsafe { ctx.table().publish(desc.handle, chunk, seq, mapping) } {
                Ok(pages) => {
                    report.mapped = report.mapped.saturating_add(1);
                    report.pages_pinned = report.pages_pinned.saturating_add(pages);
                    None
                }
                Err(mapping) => {
                    report.lost_races = report.lost_races.saturating_add(1);
                    Some(mapping)
                }
            }
        }
        Err(_gone) => {
            report.gone_slots.insert(desc.handle.slot());
            // SAFETY: as above.
            if unsafe { ctx.table().refuse(desc.handle, chunk, Refusal::Gone) } {
                report.refused = report.refused.saturating_add(1);
            } else {
                report.lost_races = report.lost_races.saturating_add(1);
            }
            None
        }
    };
    // SAFETY: `L` is held; `drained` is about this context's gate.
    unsafe { ctx.refresh_stale(&paused, &drained) };
    drop(paused);
    drop(key);
    if let Some(mapping) = leftover {
        platform.discard_unpublished(mapping);
    }
    Ok(Step::Resolved)
}
