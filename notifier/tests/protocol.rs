// SPDX-License-Identifier: GPL-2.0

//! Scenario tests of the whole protocol against the recording double.
//! The random state machine is in `random.rs`.

#![cfg(not(loom))]

mod common;
mod support;

use common::{Call, StdLock, TestMapping, TestPlatform};
use support::{request, whole_region};
use warpq_notifier::context::{Config, ContextLock, DrainReport, MmContext, RegionRequest, ReleaseError};
use warpq_notifier::gate::EngineExit;
use warpq_notifier::platform::{PinError, Platform};
use warpq_notifier::policy::{Decision, Event, IgnoreReason, Policy, TearDownReason};
use warpq_notifier::rebuild::{rebuild, RebuildError, RebuildReport, SlotSet};
use warpq_notifier::region::{Access, Chunk, Footprint, RegionDesc, RegionError, RegionHandle, StateKind, XlateFault};
use warpq_notifier::teardown::{invalidate, InvalidateOutcome, InvalidateReport, Invalidation};

const PAGE: u64 = 4096;

struct World {
    ctx: MmContext<TestMapping, 4>,
    lock: StdLock,
    p: TestPlatform,
    cfg: Config,
}

impl World {
    fn new(mm: usize, policy: Policy) -> Self {
        let (ctx, key) = MmContext::new(mm);
        Self {
            ctx,
            lock: StdLock::new(key),
            p: TestPlatform::new(mm),
            cfg: Config { policy, drain_timeout_ns: 1_000_000, max_retries: 3, chunk_shift: 16, device_share: 0 },
        }
    }

    /// Register + (driver inserts the notifier) + arm.
    fn register(&self, start: u64, len: u64, access: Access) -> RegionDesc {
        let mut key = self.lock.lock();
        let desc = self.ctx.register(&mut key, &self.p, &self.cfg, request(start, len, access)).unwrap();
        self.ctx.arm(&mut key, &self.p, &self.cfg, desc.handle).unwrap();
        desc
    }

    fn rebuild(&self) -> Result<RebuildReport, RebuildError> {
        rebuild(&self.ctx, &self.lock, &self.p, &self.cfg)
    }

    fn state(&self, handle: RegionHandle) -> Result<StateKind, RegionError> {
        self.ctx.region(&self.lock.lock(), handle).map(|info| info.state)
    }

    /// What the kernel does around the callback of one notifier.
    fn kernel_invalidate(&self, desc: &RegionDesc, event: Event, blockable: bool) -> InvalidateReport {
        let cur_seq = self.p.invalidate_start();
        let inv = whole_region(*desc, cur_seq, event, blockable);
        let report = invalidate(&self.ctx, &self.lock, &self.p, &self.cfg, &inv);
        if report.callback_result() && matches!(event, Event::Unmap | Event::Clear) {
            self.p.change_pages(desc.handle);
        }
        self.p.invalidate_end();
        report
    }

    /// What the driver's engine does with a command on `[va, va + len)`:
    /// enter, translate; if a chunk needs a rebuild, record the want, mark
    /// the queue stale, leave and schedule the zap. The translation's
    /// result (or `None` if the gate was shut).
    fn engine_touch(&self, va: u64, len: u64, access: Access) -> Option<Result<(), XlateFault>> {
        let engine = self.ctx.enter(&self.p)?;
        match engine.translate(va, len, access) {
            Ok(t) => {
                self.p.check_touch(t.mapping, access.device_writes()).unwrap();
                engine.finish();
                Some(Ok(()))
            }
            Err(XlateFault::NeedsRebuild { touched }) => {
                engine.request_rebuild(touched);
                Platform::schedule_zap(&self.p);
                Some(Err(XlateFault::NeedsRebuild { touched }))
            }
            Err(e) => {
                engine.finish();
                Some(Err(e))
            }
        }
    }

    /// Pins in the double match the mapped regions.
    fn check_pins(&self) {
        let key = self.lock.lock();
        let mut mapped = std::collections::BTreeSet::new();
        for info in self.ctx.regions(&key) {
            for chunk in 0..info.desc.chunk_count() {
                if let Some(mapping) = self.ctx.mapping(&key, info.desc.handle, chunk) {
                    assert_eq!((mapping.region, mapping.chunk), (info.desc.handle, chunk));
                    mapped.insert(mapping.id);
                }
            }
        }
        assert_eq!(mapped, self.p.live_ids(), "pins do not match mapped regions");
    }
}

#[test]
fn register_rebuild_translate() {
    let w = World::new(0x1000, Policy::Strict);
    let rw = w.register(0x10000, 4 * PAGE, Access::READ_WRITE);
    let _ro = w.register(0x20000, PAGE, Access::READ);
    assert_eq!(w.state(rw.handle), Ok(StateKind::Unmapped));
    assert!(w.ctx.gate().is_stale(), "a new region waits for its first rebuild");
    {
        // The engine enters a stale gate; what is not mapped does not translate.
        let engine = w.ctx.enter(&w.p).expect("a stale gate admits the engine");
        assert_eq!(
            engine.translate(0x10000, 8, Access::READ).err(),
            Some(XlateFault::NeedsRebuild { touched: Footprint { region: rw.handle, first: 0, last: 0 } })
        );
    }

    let report = w.rebuild().unwrap();
    assert_eq!(report.mapped, 2);
    assert_eq!(report.pages_pinned, 5);
    assert!(report.running);
    w.check_pins();

    let engine = w.ctx.enter(&w.p).expect("running");
    let t = engine.translate(0x10000 + 100, 64, Access::WRITE).unwrap();
    assert_eq!((t.region, t.offset), (rw.handle, 100));
    assert_eq!(t.mapping.region, rw.handle);
    assert_eq!(engine.translate(0x20000, 8, Access::WRITE).unwrap_err(), XlateFault::AccessDenied);
    assert_eq!(engine.translate(0x10000 + 4 * PAGE - 8, 16, Access::READ).unwrap_err(), XlateFault::CrossesEnd);
    assert_eq!(engine.translate(0x10000, u64::MAX, Access::READ).unwrap_err(), XlateFault::CrossesEnd);
    assert_eq!(engine.translate(0x30000, 8, Access::READ).unwrap_err(), XlateFault::NotRegistered);
    assert_eq!(engine.finish(), EngineExit::Completed);
}

#[test]
fn register_rejects_bad_ranges() {
    let w = World::new(0x1000, Policy::Strict);
    let a = w.register(0x10000, PAGE, Access::READ);
    let mut key = w.lock.lock();
    let mut reg = |start, len, access| w.ctx.register(&mut key, &w.p, &w.cfg, request(start, len, access));
    assert_eq!(reg(0x20000, 0, Access::READ), Err(RegionError::ZeroLength));
    assert_eq!(reg(u64::MAX - 10, 100, Access::READ), Err(RegionError::Overflow));
    assert_eq!(reg(0x20000, PAGE, Access::NONE), Err(RegionError::InvalidAccess));
    assert_eq!(reg(0x10000 + PAGE - 1, 10, Access::READ), Err(RegionError::Overlaps(a.handle)));
    assert_eq!(reg(0x10000 - 10, 11, Access::READ), Err(RegionError::Overlaps(a.handle)));
    // Adjacent is fine.
    assert!(reg(0x10000 + PAGE, PAGE, Access::READ).is_ok());
    assert!(reg(0x30000, PAGE, Access::READ).is_ok());
    assert!(reg(0x40000, PAGE, Access::READ).is_ok());
    assert_eq!(reg(0x50000, PAGE, Access::READ), Err(RegionError::TableFull));
    drop(key);

    let (other, mut other_key) = MmContext::<TestMapping, 4>::new(0x2000);
    assert_eq!(
        w.ctx.register(&mut other_key, &w.p, &w.cfg, request(0x90000, PAGE, Access::READ)),
        Err(RegionError::WrongLock)
    );
    assert!(other.regions(&w.lock.lock()).next().is_none());
}

/// 1024 regions in one table (the driver's capacity), registered in a
/// scrambled address order: every address translates to its own region
/// (the binary search over the sorted index), a gap to none, a 1025th is
/// refused, and the index stays right through removals and reuse.
#[test]
fn a_thousand_regions_translate_by_address() {
    const N: usize = 1024;
    let (ctx, key) = MmContext::<TestMapping, N>::new(0x1000);
    let (lock, p) = (StdLock::new(key), TestPlatform::new(0x1000));
    let cfg = Config {
        policy: Policy::Filtered,
        drain_timeout_ns: 1_000_000,
        max_retries: 3,
        chunk_shift: 16,
        device_share: 0,
    };
    // Region `i` starts at `(4 * i + 1)` pages and is 1 to 3 pages long:
    // a gap of at least one page before each.
    let start = |i: usize| 0x100_0000 + (4 * i as u64 + 1) * PAGE;
    let len = |i: usize| (1 + i as u64 % 3) * PAGE;
    let mut handles = vec![None; N];
    for k in 0..N {
        // 611 is odd, so `k * 611 % N` visits every `i` once.
        let i = k * 611 % N;
        let desc = ctx.register(&mut lock.lock(), &p, &cfg, request(start(i), len(i), Access::READ_WRITE)).unwrap();
        ctx.arm(&mut lock.lock(), &p, &cfg, desc.handle).unwrap();
        handles[i] = Some(desc.handle);
    }
    ctx.audit(&lock.lock()).unwrap();
    assert_eq!(
        ctx.register(&mut lock.lock(), &p, &cfg, request(start(N), PAGE, Access::READ)).unwrap_err(),
        RegionError::TableFull
    );
    assert!(rebuild(&ctx, &lock, &p, &cfg).unwrap().running);
    let translates = |handles: &[Option<RegionHandle>], i: usize| {
        let engine = ctx.enter(&p).unwrap();
        let at = |va: u64| engine.translate(va, 8, Access::READ).map(|t| (t.region, t.offset));
        assert_eq!(at(start(i) - 8), Err(XlateFault::NotRegistered), "the gap before region {i}");
        assert_eq!(at(start(i)), Ok((handles[i].unwrap(), 0)), "region {i}'s first byte");
        assert_eq!(at(start(i) + len(i) - 8), Ok((handles[i].unwrap(), len(i) - 8)), "region {i}'s last bytes");
        assert_eq!(at(start(i) + len(i)), Err(XlateFault::NotRegistered), "the gap after region {i}");
        engine.finish();
    };
    (0..N).for_each(|i| translates(&handles, i));
    // Every third region goes; its addresses no longer translate, the
    // others still do.
    for i in (0..N).step_by(3) {
        ctx.unregister(&mut lock.lock(), &p, &cfg, handles[i].take().unwrap()).unwrap();
    }
    ctx.audit(&lock.lock()).unwrap();
    for i in 0..N {
        if handles[i].is_some() {
            translates(&handles, i);
        } else {
            let engine = ctx.enter(&p).unwrap();
            assert_eq!(engine.translate(start(i), 8, Access::READ).unwrap_err(), XlateFault::NotRegistered);
            engine.finish();
        }
    }
    // The freed slots take new regions in the holes, and an overlap names
    // the region it hits.
    for i in (0..N).step_by(3) {
        let desc = ctx.register(&mut lock.lock(), &p, &cfg, request(start(i), len(i), Access::READ_WRITE)).unwrap();
        ctx.arm(&mut lock.lock(), &p, &cfg, desc.handle).unwrap();
        handles[i] = Some(desc.handle);
    }
    assert_eq!(
        ctx.register(&mut lock.lock(), &p, &cfg, request(start(500) - PAGE, 2 * PAGE, Access::READ)).unwrap_err(),
        RegionError::Overlaps(handles[500].unwrap())
    );
    assert!(rebuild(&ctx, &lock, &p, &cfg).unwrap().running);
    ctx.audit(&lock.lock()).unwrap();
    (0..N).for_each(|i| translates(&handles, i));
}

/// Chunk states too few for the region, or not all unmapped, are refused.
#[test]
fn register_checks_its_chunk_storage() {
    let w = World::new(0x1000, Policy::Strict);
    let mut key = w.lock.lock();
    let mut short = request::<TestMapping>(0x10000, 4 << 16, Access::READ);
    short.chunks = (0..3).map(|_| Chunk::new()).collect();
    assert_eq!(w.ctx.register(&mut key, &w.p, &w.cfg, short).unwrap_err(), RegionError::BadChunkStorage);
    let exact = request::<TestMapping>(0x10000, 4 << 16, Access::READ);
    let exact = RegionRequest { chunks: (0..4).map(|_| Chunk::new()).collect(), ..exact };
    assert!(w.ctx.register(&mut key, &w.p, &w.cfg, exact).is_ok());
}

#[test]
fn pending_region_is_not_pinned_until_armed() {
    let w = World::new(0x1000, Policy::Strict);
    let desc = {
        let mut key = w.lock.lock();
        w.ctx.register(&mut key, &w.p, &w.cfg, request(0x10000, PAGE, Access::READ)).unwrap()
    };
    let report = w.rebuild().unwrap();
    assert_eq!(report.mapped, 0);
    assert!(!report.running, "pending region keeps the queue stale");
    assert!(w.p.live_ids().is_empty());
    w.ctx.arm(&mut w.lock.lock(), &w.p, &w.cfg, desc.handle).unwrap();
    assert_eq!(w.ctx.arm(&mut w.lock.lock(), &w.p, &w.cfg, desc.handle), Err(RegionError::InvalidState));
    assert!(w.rebuild().unwrap().running);
}

#[test]
fn invalidate_tears_down_in_order() {
    let w = World::new(0x1000, Policy::Strict);
    let desc = w.register(0x10000, 2 * PAGE, Access::READ_WRITE);
    w.rebuild().unwrap();
    w.p.clear_calls();

    let report = w.kernel_invalidate(&desc, Event::Clear, true);
    assert_eq!(report.decision, Decision::TearDown(TearDownReason::Strict));
    assert!(
        matches!(report.outcome, InvalidateOutcome::TornDown { pages_unpinned: 2, drain: DrainReport::Drained, .. }),
        "{:?}",
        report.outcome
    );
    assert!(report.callback_result());
    let calls = w.p.calls();
    let unpin_id = match calls.as_slice() {
        // The engine, turned away by the pause, may have gone to sleep:
        // `resumed` comes after the pause is dropped, so it can be woken.
        [Call::SetSeq { slot: 0, .. }, Call::Unpin { id, dirty: true }, Call::Resumed] => *id,
        other => panic!("unexpected call order {other:?}"),
    };
    assert!(unpin_id > 0);
    assert_eq!(w.state(desc.handle), Ok(StateKind::Unmapped));
    // The queue keeps running; the first command that needs the chunk asks
    // for the rebuild; until it is done, commands on that chunk wait (the
    // engine still enters for others).
    assert!(!w.ctx.gate().is_stale());
    assert!(!w.ctx.zap_needed());
    let wanted = Err(XlateFault::NeedsRebuild { touched: Footprint { region: desc.handle, first: 0, last: 0 } });
    assert_eq!(w.engine_touch(desc.start, 8, Access::WRITE), Some(wanted));
    assert!(w.ctx.gate().is_stale());
    assert!(w.ctx.zap_needed());
    {
        let engine = w.ctx.enter(&w.p).expect("a stale gate admits the engine");
        assert!(engine.translate(desc.start, 8, Access::WRITE).is_err(), "the chunk waits for the rebuild");
    }
    w.check_pins();

    let report = w.rebuild().unwrap();
    assert!(report.running);
    assert!(!w.ctx.zap_needed());
    let engine = w.ctx.enter(&w.p).unwrap();
    let t = engine.translate(0x10000, 8, Access::WRITE).unwrap();
    w.p.check_touch(t.mapping, true).unwrap();
}

#[test]
fn read_only_regions_unpin_clean() {
    let w = World::new(0x1000, Policy::Strict);
    let desc = w.register(0x10000, PAGE, Access::READ);
    w.rebuild().unwrap();
    w.p.clear_calls();
    w.kernel_invalidate(&desc, Event::Unmap, true);
    assert!(w.p.calls().iter().any(|c| matches!(c, Call::Unpin { dirty: false, .. })));
}

#[test]
fn filtered_policy_skips_without_touching_anything() {
    let w = World::new(0x1000, Policy::Filtered);
    let rw = w.register(0x10000, PAGE, Access::READ_WRITE);
    let ro = w.register(0x20000, PAGE, Access::READ);
    w.rebuild().unwrap();
    w.p.clear_calls();

    for (desc, event, reason) in [
        (ro, Event::ProtectionPage, IgnoreReason::WriteProtectOnly),
        (ro, Event::SoftDirty, IgnoreReason::SoftDirtyOnly),
        (ro, Event::ProtectionVma, IgnoreReason::ReadOnlyProtectionChange),
    ] {
        let report = w.kernel_invalidate(&desc, event, true);
        assert_eq!(report.outcome, InvalidateOutcome::Ignored(reason));
        assert!(report.callback_result());
    }
    assert!(w.p.calls().is_empty(), "ignored events must not even set the sequence");
    assert!(w.ctx.gate().is_running());

    let report = w.kernel_invalidate(&rw, Event::ProtectionVma, true);
    assert_eq!(report.decision, Decision::TearDown(TearDownReason::WriteRightMayShrink));
    assert!(matches!(report.outcome, InvalidateOutcome::TornDown { .. }));
}

/// Fork's write-protect (PROTECTION_PAGE) and the soft-dirty reset revoke
/// the device's write right under `filtered` too: the region is torn down
/// (unpinned before fork decides whether to copy pinned pages) and rebuilt
/// on the next use.
#[test]
fn filtered_policy_revokes_device_writes_on_write_protect() {
    for event in [Event::ProtectionPage, Event::SoftDirty] {
        let w = World::new(0x1000, Policy::Filtered);
        let rw = w.register(0x10000, PAGE, Access::READ_WRITE);
        w.rebuild().unwrap();
        w.p.clear_calls();
        let report = w.kernel_invalidate(&rw, event, true);
        assert_eq!(report.decision, Decision::TearDown(TearDownReason::WriteProtected), "{event:?}");
        assert!(matches!(report.outcome, InvalidateOutcome::TornDown { .. }), "{event:?}");
        assert!(w.p.calls().iter().any(|c| matches!(c, Call::Unpin { dirty: true, .. })), "{event:?}");
        assert_eq!(w.state(rw.handle), Ok(StateKind::Unmapped), "{event:?}");
        assert!(w.engine_touch(rw.start, 8, Access::WRITE).unwrap().is_err(), "{event:?}");
        w.rebuild().unwrap();
        assert!(w.ctx.gate().is_running(), "{event:?}");
        assert_eq!(w.engine_touch(rw.start, 8, Access::WRITE), Some(Ok(())), "{event:?}");
    }
}

#[test]
fn range_outside_the_region_is_ignored() {
    let w = World::new(0x1000, Policy::Strict);
    let desc = w.register(0x10000, PAGE, Access::READ);
    w.rebuild().unwrap();
    let inv = Invalidation { start: desc.end(), end: desc.end() + PAGE, ..whole_region(desc, 1, Event::Unmap, true) };
    let report = invalidate(&w.ctx, &w.lock, &w.p, &w.cfg, &inv);
    assert_eq!(report.outcome, InvalidateOutcome::Ignored(IgnoreReason::NoOverlap));
}

#[test]
fn non_blocking_never_waits_and_refuses_only_when_mapped() {
    let w = World::new(0x1000, Policy::Strict);
    let desc = w.register(0x10000, PAGE, Access::READ_WRITE);
    w.p.clear_calls();
    // Unmapped (never pinned): may proceed, but the sequence is still set.
    let report = w.kernel_invalidate(&desc, Event::Unmap, false);
    assert_eq!(report.outcome, InvalidateOutcome::NothingMapped);
    assert!(report.callback_result());
    assert!(matches!(w.p.calls().as_slice(), [Call::SetSeq { .. }]));

    w.rebuild().unwrap();
    // An engine is inside: a blocking call would wait; this one must not.
    let engine = w.ctx.enter(&w.p).unwrap();
    w.p.clear_calls();
    let report = w.kernel_invalidate(&desc, Event::Unmap, false);
    assert_eq!(report.outcome, InvalidateOutcome::CannotProceed);
    assert!(!report.callback_result());
    assert!(matches!(w.p.calls().as_slice(), [Call::SetSeq { .. }]), "no wait, no unpin");
    assert!(matches!(w.state(desc.handle), Ok(StateKind::Mapped { .. })));
    let t = engine.translate(0x10000, 8, Access::READ).unwrap();
    w.p.check_touch(t.mapping, false).unwrap();
    drop(engine);

    // Contended lock: refuse without waiting.
    let held = w.lock.lock();
    let inv = whole_region(desc, 99, Event::Unmap, false);
    let report = invalidate(&w.ctx, &w.lock, &w.p, &w.cfg, &inv);
    drop(held);
    assert_eq!(report.outcome, InvalidateOutcome::CannotProceed);
}

#[test]
fn collision_retries_then_publishes_fresh_pages() {
    let w = World::new(0x1000, Policy::Strict);
    let desc = w.register(0x10000, PAGE, Access::READ_WRITE);
    w.p.state().inject_collisions = 2;
    let report = w.rebuild().unwrap();
    assert_eq!(report.retries, 2);
    assert_eq!(report.mapped, 1);
    w.check_pins();
    let engine = w.ctx.enter(&w.p).unwrap();
    let t = engine.translate(desc.start, 8, Access::WRITE).unwrap();
    w.p.check_touch(t.mapping, true).unwrap();
    let s = w.p.state();
    assert_eq!(s.pins, 3);
    assert_eq!(s.unpins, 2, "the colliding pins were undone");
}

/// The mirror backing's lookup fails with `Collision` when an invalidation
/// overtakes it: the rebuild retries it like a `read_retry` collision, and
/// nothing is left mapped from the failed attempts.
#[test]
fn mirror_collision_is_retried_and_holds_nothing() {
    let w = World::new(0x1000, Policy::Filtered);
    let desc = w.register(0x10000, PAGE, Access::READ_WRITE);
    {
        let mut s = w.p.state();
        s.mirror = true;
        s.inject_collisions = 3;
    }
    let report = w.rebuild().unwrap();
    assert_eq!(report.retries, 3);
    assert_eq!(report.mapped, 1);
    w.check_pins();
    {
        let s = w.p.state();
        assert_eq!(s.pins, 1, "only the lookup that was not overtaken produced a mapping");
        assert_eq!(s.live.len(), 1);
    }
    let engine = w.ctx.enter(&w.p).unwrap();
    let t = engine.translate(desc.start, 8, Access::WRITE).unwrap();
    w.p.check_touch(t.mapping, true).unwrap();
}

#[test]
fn collisions_beyond_the_budget_give_up_cleanly() {
    let w = World::new(0x1000, Policy::Strict);
    let desc = w.register(0x10000, PAGE, Access::READ);
    w.p.state().inject_collisions = 10;
    assert_eq!(w.rebuild(), Err(RebuildError::RetriesExhausted { retries: 4 }));
    assert_eq!(w.state(desc.handle), Ok(StateKind::Unmapped));
    assert!(w.ctx.gate().is_stale());
    w.check_pins();
    w.p.state().inject_collisions = 0;
    assert!(w.rebuild().unwrap().running);
}

#[test]
fn pin_failures_fail_only_the_commands_that_waited() {
    let w = World::new(0x1000, Policy::Strict);
    let a = w.register(0x10000, PAGE, Access::READ);
    let b = w.register(0x20000, PAGE, Access::READ_WRITE);
    // Out of memory with nothing to evict, past the retries (max_retries 3:
    // four tries): the chunk is refused as short, the other region maps,
    // the queue runs.
    w.p.state().inject_pin = vec![PinError::Transient; 4];
    let report = w.rebuild().unwrap();
    assert_eq!((report.refused, report.mapped, report.evicted), (1, 1, 0));
    assert_eq!(report.short_slots, slots(&[a.handle.slot()]));
    assert!(report.running, "a chunk short of memory does not hold the queue");
    assert_eq!(w.state(a.handle), Ok(StateKind::Unmapped));
    assert_eq!(w.engine_touch(0x10000, 8, Access::READ), Some(Err(XlateFault::NoMemory)));
    assert_eq!(w.engine_touch(0x20000, 8, Access::READ), Some(Ok(())));
    // The next command on it asks again, and it maps.
    assert!(matches!(w.engine_touch(0x10000, 8, Access::READ), Some(Err(XlateFault::NeedsRebuild { .. }))));
    assert_eq!(w.rebuild().unwrap().mapped, 1);
    assert_eq!(w.engine_touch(0x10000, 8, Access::READ), Some(Ok(())));
    // Out of memory with something to evict: a chunk goes, the retry maps.
    w.kernel_invalidate(&b, Event::Clear, true);
    assert!(matches!(w.engine_touch(0x20000, 8, Access::WRITE), Some(Err(XlateFault::NeedsRebuild { .. }))));
    w.p.state().inject_pin = vec![PinError::Transient];
    let report = w.rebuild().unwrap();
    assert_eq!((report.refused, report.mapped, report.evicted, report.short_tries), (0, 1, 1, 1));
    assert_eq!(w.engine_touch(0x20000, 8, Access::WRITE), Some(Ok(())));
    assert_eq!(w.state(a.handle), Ok(StateKind::Unmapped), "a was evicted for b");
    w.check_pins();

    assert!(matches!(w.engine_touch(0x10000, 8, Access::READ), Some(Err(XlateFault::NeedsRebuild { .. }))));
    w.p.make_gone(a.handle);
    let report = w.rebuild().unwrap();
    assert_eq!((report.refused, report.mapped), (1, 0));
    assert!(report.running, "a refused chunk does not hold the queue");
    let engine = w.ctx.enter(&w.p).unwrap();
    assert_eq!(engine.translate(0x10000, 8, Access::READ).unwrap_err(), XlateFault::Refused);
    assert!(engine.translate(0x20000, 8, Access::READ).is_ok());
    drop(engine);
    assert_eq!(w.state(b.handle).map(|s| matches!(s, StateKind::Mapped { .. })), Ok(true));
    w.check_pins();
}

#[test]
fn unregister_unpins_and_stale_handles_never_match() {
    let w = World::new(0x1000, Policy::Strict);
    let a = w.register(0x10000, PAGE, Access::READ_WRITE);
    w.rebuild().unwrap();
    w.p.clear_calls();
    let report = w.ctx.unregister(&mut w.lock.lock(), &w.p, &w.cfg, a.handle).unwrap();
    assert_eq!(report.pages_unpinned, 1);
    assert!(matches!(w.p.calls().as_slice(), [Call::Unpin { dirty: true, .. }]));
    assert_eq!(w.ctx.unregister(&mut w.lock.lock(), &w.p, &w.cfg, a.handle), Err(RegionError::NoSuchRegion));
    // The slot is reused with a new generation.
    let b = w.register(0x10000, PAGE, Access::READ);
    assert_eq!(b.handle.slot(), a.handle.slot());
    assert_ne!(b.handle, a.handle);
    w.rebuild().unwrap();
    // A late callback of the old notifier finds nothing (sequence still set).
    let report = w.kernel_invalidate(&a, Event::Clear, true);
    assert_eq!(report.outcome, InvalidateOutcome::NothingMapped);
    assert!(matches!(w.state(b.handle), Ok(StateKind::Mapped { .. })));
    assert_eq!(RegionHandle::from_raw(b.handle.to_raw()), Some(b.handle));
    assert_eq!(RegionHandle::from_raw(0), None);
    w.check_pins();
}

#[test]
fn unregistering_the_last_stale_region_reopens_the_queue() {
    let w = World::new(0x1000, Policy::Strict);
    let a = w.register(0x10000, PAGE, Access::READ);
    let b = w.register(0x20000, PAGE, Access::READ);
    w.rebuild().unwrap();
    w.kernel_invalidate(&a, Event::Clear, true);
    assert!(w.engine_touch(a.start, 8, Access::READ).unwrap().is_err());
    assert!(w.ctx.gate().is_stale());
    w.ctx.unregister(&mut w.lock.lock(), &w.p, &w.cfg, a.handle).unwrap();
    assert!(w.ctx.gate().is_running());
    assert!(matches!(w.state(b.handle), Ok(StateKind::Mapped { .. })));
}

#[test]
fn release_is_final_and_once() {
    let w = World::new(0x1000, Policy::Strict);
    let a = w.register(0x10000, 2 * PAGE, Access::READ_WRITE);
    let _b = w.register(0x20000, PAGE, Access::READ);
    w.rebuild().unwrap();
    let report = w.ctx.release(&mut w.lock.lock(), &w.p, &w.cfg).unwrap();
    assert_eq!((report.regions, report.pages_unpinned), (2, 3));
    assert_eq!(report.drain, DrainReport::Drained);
    assert!(w.p.live_ids().is_empty());
    assert_eq!(w.ctx.release(&mut w.lock.lock(), &w.p, &w.cfg), Err(ReleaseError::AlreadyReleased));
    assert!(w.ctx.enter(&w.p).is_none());
    assert_eq!(w.rebuild(), Err(RebuildError::Released));
    assert_eq!(
        w.ctx.register(&mut w.lock.lock(), &w.p, &w.cfg, request(0x90000, PAGE, Access::READ)),
        Err(RegionError::Released)
    );
    assert_eq!(w.state(a.handle), Ok(StateKind::Dead));
    let report = w.kernel_invalidate(&a, Event::Release, true);
    assert_eq!(report.outcome, InvalidateOutcome::NothingMapped);
    // The driver may still unregister the dead regions.
    assert!(w.ctx.unregister(&mut w.lock.lock(), &w.p, &w.cfg, a.handle).is_ok());
}

#[test]
fn wrong_lock_is_refused_everywhere() {
    let w = World::new(0x1000, Policy::Strict);
    let desc = w.register(0x10000, PAGE, Access::READ);
    let (_other, other_key) = MmContext::<TestMapping, 4>::new(0x2000);
    let other_lock = StdLock::new(other_key);
    assert_eq!(rebuild(&w.ctx, &other_lock, &w.p, &w.cfg), Err(RebuildError::WrongLock));
    let inv = whole_region(desc, 1, Event::Unmap, true);
    let report = invalidate(&w.ctx, &other_lock, &w.p, &w.cfg, &inv);
    assert_eq!(report.outcome, InvalidateOutcome::WrongLock);
    assert_eq!(w.ctx.release(&mut other_lock.lock(), &w.p, &w.cfg), Err(ReleaseError::WrongLock));
}

#[test]
fn ring_mapped_while_stale_requeues_the_zap() {
    let w = World::new(0x1000, Policy::Strict);
    let desc = w.register(0x10000, PAGE, Access::READ);
    w.rebuild().unwrap();
    w.ctx.ring_mapped(&w.p);
    assert_eq!(w.p.state().zaps_scheduled, 0);
    w.kernel_invalidate(&desc, Event::Clear, true);
    assert_eq!(w.p.state().zaps_scheduled, 0, "a teardown alone zaps nothing");
    assert!(w.engine_touch(desc.start, 8, Access::READ).unwrap().is_err());
    assert_eq!(w.p.state().zaps_scheduled, 1);
    w.ctx.ring_mapped(&w.p);
    assert_eq!(w.p.state().zaps_scheduled, 2);
}

/// The drain times out while the engine is inside: the queue is reset, the
/// engine's entry is abandoned (its result discarded), and the teardown
/// still waits for it to leave before unpinning.
#[test]
fn drain_timeout_resets_and_waits_for_the_engine() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Barrier;

    let w = World::new(0x1000, Policy::Strict);
    let w = World { cfg: Config { drain_timeout_ns: 2_000_000, ..w.cfg }, ..w };
    let desc = w.register(0x10000, PAGE, Access::READ_WRITE);
    w.rebuild().unwrap();
    w.p.state().real_time = true;
    let entered = Barrier::new(2);
    let engine_done = AtomicBool::new(false);

    std::thread::scope(|scope| {
        scope.spawn(|| {
            let engine = w.ctx.enter(&w.p).unwrap();
            let t = engine.translate(desc.start, 8, Access::WRITE).unwrap();
            entered.wait();
            // A slow command: longer than the drain timeout.
            while !engine.is_abandoned() {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            w.p.check_touch(t.mapping, true).expect("still pinned while inside");
            engine_done.store(true, Ordering::SeqCst);
            assert_eq!(engine.finish(), EngineExit::Abandoned);
        });
        entered.wait();
        let report = w.kernel_invalidate(&desc, Event::Clear, true);
        assert!(engine_done.load(Ordering::SeqCst), "returned while the engine was inside");
        assert!(
            matches!(
                report.outcome,
                InvalidateOutcome::TornDown {
                    pages_unpinned: 1,
                    drain: DrainReport::Reset { abandoned: 1, generation: 1 },
                    ..
                }
            ),
            "{:?}",
            report.outcome
        );
    });
    assert_eq!(w.p.state().engine_resets, 1);
    w.check_pins();
    w.p.state().real_time = false;
    w.rebuild().unwrap();
    let engine = w.ctx.enter(&w.p).unwrap();
    assert_eq!(engine.generation(), 1);
    assert_eq!(engine.finish(), EngineExit::Completed);
}

#[test]
fn register_times_out_as_busy_without_changes() {
    let w = World::new(0x1000, Policy::Strict);
    let _a = w.register(0x10000, PAGE, Access::READ);
    w.rebuild().unwrap();
    let engine = w.ctx.enter(&w.p).unwrap();
    assert_eq!(
        w.ctx.register(&mut w.lock.lock(), &w.p, &w.cfg, request(0x20000, PAGE, Access::READ)),
        Err(RegionError::Busy)
    );
    drop(engine);
    assert_eq!(w.ctx.regions(&w.lock.lock()).count(), 1);
    assert!(w.ctx.gate().is_running());
}

/// The undo of a failed REGISTER cannot be outwaited: where `unregister`
/// answers Busy while the engine stays inside, `unregister_or_reset` resets
/// the queue past the drain timeout, waits for the engine to leave, and
/// removes the region (unpinned).
#[test]
fn unregister_or_reset_never_answers_busy() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Barrier;

    let w = World::new(0x1000, Policy::Strict);
    let w = World { cfg: Config { drain_timeout_ns: 2_000_000, ..w.cfg }, ..w };
    let desc = w.register(0x10000, PAGE, Access::READ_WRITE);
    w.rebuild().unwrap();
    w.p.state().real_time = true;
    let entered = Barrier::new(2);
    let engine_done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let engine = w.ctx.enter(&w.p).unwrap();
            entered.wait();
            while !engine.is_abandoned() {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            engine_done.store(true, Ordering::SeqCst);
            assert_eq!(engine.finish(), EngineExit::Abandoned);
        });
        entered.wait();
        assert_eq!(w.ctx.unregister(&mut w.lock.lock(), &w.p, &w.cfg, desc.handle).map(|_| ()), Err(RegionError::Busy));
        let report = w.ctx.unregister_or_reset(&mut w.lock.lock(), &w.p, &w.cfg, desc.handle).unwrap();
        assert!(engine_done.load(Ordering::SeqCst), "returned while the engine was inside");
        assert_eq!(report.pages_unpinned, 1);
    });
    assert_eq!(w.p.state().engine_resets, 1);
    assert_eq!(w.ctx.regions(&w.lock.lock()).count(), 0);
    w.check_pins();
}

/// What the kernel does around one callback whose range is `[start, end)`
/// (the double changes no pages: `PROTECTION_VMA` under `strict`).
fn invalidate_range(w: &World, desc: &RegionDesc, start: u64, end: u64) -> InvalidateReport {
    invalidate_range_with(w, desc, start, end, Event::ProtectionVma, true)
}

fn invalidate_range_with(
    w: &World,
    desc: &RegionDesc,
    start: u64,
    end: u64,
    event: Event,
    blockable: bool,
) -> InvalidateReport {
    let cur_seq = w.p.invalidate_start();
    let inv = Invalidation { start, end, ..whole_region(*desc, cur_seq, event, blockable) };
    let report = invalidate(&w.ctx, &w.lock, &w.p, &w.cfg, &inv);
    w.p.invalidate_end();
    report
}

const CHUNK: u64 = 64 << 10;

#[test]
fn chunk_size_grows_for_large_regions() {
    use warpq_notifier::region::{chunk_shift_for, MAX_CHUNKS};
    assert_eq!(chunk_shift_for(PAGE, 21), 21);
    assert_eq!(chunk_shift_for(64 << 20, 21), 21, "64 MiB is 32 chunks of 2 MiB");
    assert_eq!(chunk_shift_for(64 << 20, 16), 16, "64 MiB is 1024 chunks of 64 KiB");
    assert_eq!(chunk_shift_for(4 << 30, 21), 21, "4 GiB is 2048 chunks of 2 MiB");
    assert_eq!(chunk_shift_for(4 << 30, 16), 16, "4 GiB is 65536 chunks of 64 KiB");
    assert_eq!(chunk_shift_for((4 << 30) + PAGE, 16), 17, "past 65536 chunks they grow");
    assert_eq!(chunk_shift_for(128 << 30, 21), 21, "128 GiB is 65536 chunks of 2 MiB");
    assert_eq!(chunk_shift_for(PAGE, 12), 16, "64 KiB at least");
    for len in [PAGE, 3 * CHUNK + 5 * PAGE, 64 << 20, 1 << 40] {
        let shift = chunk_shift_for(len, 16);
        assert!(len.div_ceil(1 << shift) <= MAX_CHUNKS as u64);
    }
}

/// An invalidation of one chunk's range tears down that chunk only;
/// commands on the other chunks run on while it is unmapped; the command
/// that needs it asks for a rebuild, which maps that chunk and no other.
#[test]
fn invalidation_reaches_only_its_chunks() {
    let w = World::new(0x1000, Policy::Strict);
    let desc = w.register(0x100000, 8 * CHUNK, Access::READ_WRITE);
    assert_eq!(desc.chunk_count(), 8);
    let report = w.rebuild().unwrap();
    assert_eq!((report.mapped, report.pages_pinned), (8, 8 * CHUNK / PAGE));
    w.p.clear_calls();

    // A 4 KiB range inside chunk 2.
    let at = desc.start + 2 * CHUNK + 3 * PAGE;
    let report = invalidate_range(&w, &desc, at, at + PAGE);
    assert!(
        matches!(report.outcome, InvalidateOutcome::TornDown { chunks: 1, pages_unpinned: 16, .. }),
        "{:?}",
        report.outcome
    );
    let info = w.ctx.region(&w.lock.lock(), desc.handle).unwrap();
    assert_eq!((info.state, info.mapped_chunks, info.pages), (StateKind::Partial { mapped: 7 }, 7, 7 * 16));
    w.check_pins();

    // Other chunks keep working, the queue is not stale.
    assert!(w.ctx.gate().is_running());
    assert_eq!(w.engine_touch(desc.start + 5 * CHUNK, 100, Access::WRITE), Some(Ok(())));
    // A command across chunks 1 and 2 waits for chunk 2 only.
    let across = desc.start + 2 * CHUNK - 8;
    assert_eq!(
        w.engine_touch(across, 16, Access::READ),
        Some(Err(XlateFault::NeedsRebuild { touched: Footprint { region: desc.handle, first: 1, last: 2 } }))
    );
    assert!(w.ctx.gate().is_stale() && w.ctx.zap_needed());
    let report = w.rebuild().unwrap();
    assert_eq!((report.mapped, report.pages_pinned), (1, 16), "only the wanted chunk is rebuilt");
    assert!(report.running);
    assert_eq!(w.engine_touch(across, 16, Access::READ), Some(Ok(())));
    w.check_pins();
}

/// A region of 1024 chunks (its flags once were one `u64` per region, 64
/// chunks at most): an invalidation, a waiting command and a rebuild reach
/// exactly the chunk they name, on either side of every 64-chunk boundary,
/// and a command across two chunks waits for the one that is unmapped.
#[test]
fn a_region_of_a_thousand_chunks() {
    let w = World::new(0x1000, Policy::Strict);
    let desc = w.register(0x1000_0000, 1024 * CHUNK, Access::READ_WRITE);
    assert_eq!(desc.chunk_count(), 1024);
    let report = w.rebuild().unwrap();
    assert_eq!(report.mapped, 1024);
    for chunk in [0u64, 63, 64, 127, 700, 1023] {
        let at = desc.start + chunk * CHUNK + 5 * PAGE;
        let report = invalidate_range(&w, &desc, at, at + PAGE);
        assert!(matches!(report.outcome, InvalidateOutcome::TornDown { chunks: 1, .. }), "{:?}", report.outcome);
        let info = w.ctx.region(&w.lock.lock(), desc.handle).unwrap();
        assert_eq!(info.mapped_chunks, 1023, "chunk {chunk}");
        // The neighbours run; the chunk itself waits.
        if chunk > 0 {
            assert_eq!(w.engine_touch(at - CHUNK, 8, Access::WRITE), Some(Ok(())));
        }
        let first = chunk.saturating_sub(1) as u32;
        let from = desc.start + u64::from(first) * CHUNK + CHUNK - 8;
        let len = if chunk > 0 { 16 } else { 8 };
        let from = if chunk > 0 { from } else { desc.start };
        assert_eq!(
            w.engine_touch(from, len, Access::READ),
            Some(Err(XlateFault::NeedsRebuild {
                touched: Footprint { region: desc.handle, first, last: chunk as u32 }
            })),
            "chunk {chunk}"
        );
        let report = w.rebuild().unwrap();
        assert_eq!((report.mapped, report.pages_pinned), (1, CHUNK / PAGE), "chunk {chunk}: only it is rebuilt");
        assert!(report.running);
        assert_eq!(w.engine_touch(from, len, Access::READ), Some(Ok(())));
        w.check_pins();
    }
    w.ctx.audit(&w.lock.lock()).unwrap();
}

/// An UNMAP between the notifier's insertion and the arm (the driver
/// inserts it without `L`) kills chunks of the pending region; the arm
/// then wants only the unmapped ones, so every wanted chunk is still
/// unmapped and counted (the review of the per-chunk flags found the arm
/// wanting the dead ones too).
#[test]
fn arm_after_an_unmap_wants_only_live_chunks() {
    let w = World::new(0x1000, Policy::Strict);
    let desc =
        w.ctx.register(&mut w.lock.lock(), &w.p, &w.cfg, request(0x100000, 4 * CHUNK, Access::READ_WRITE)).unwrap();
    let at = desc.start + CHUNK;
    let _ = invalidate_range_with(&w, &desc, at, at + CHUNK, Event::Unmap, true);
    w.ctx.arm(&mut w.lock.lock(), &w.p, &w.cfg, desc.handle).unwrap();
    w.ctx.audit(&w.lock.lock()).unwrap();
    let report = w.rebuild().unwrap();
    assert_eq!(report.mapped, 3, "the three live chunks are mapped");
    let info = w.ctx.region(&w.lock.lock(), desc.handle).unwrap();
    assert_eq!((info.mapped_chunks, info.dead_chunks), (3, 1));
    w.ctx.audit(&w.lock.lock()).unwrap();
    assert_eq!(w.engine_touch(at, 8, Access::READ), Some(Err(XlateFault::Dead)));
}

/// After an invalidation of the whole region (fork's write-protect, say),
/// the rebuild maps only the chunks commands need, not the region.
#[test]
fn rebuild_maps_only_wanted_chunks() {
    let w = World::new(0x1000, Policy::Strict);
    let desc = w.register(0x100000, 8 * CHUNK, Access::READ_WRITE);
    w.rebuild().unwrap();
    let report = invalidate_range(&w, &desc, desc.start, desc.end());
    assert!(matches!(report.outcome, InvalidateOutcome::TornDown { chunks: 8, pages_unpinned: 128, .. }));
    assert_eq!(w.state(desc.handle), Ok(StateKind::Unmapped));
    // Nobody needs anything yet: a rebuild does nothing.
    assert_eq!(w.rebuild().unwrap().mapped, 0);
    assert!(w.engine_touch(desc.start + 6 * CHUNK, 8, Access::WRITE).unwrap().is_err());
    let report = w.rebuild().unwrap();
    assert_eq!((report.mapped, report.pages_pinned), (1, 16));
    assert_eq!(w.ctx.region(&w.lock.lock(), desc.handle).unwrap().mapped_chunks, 1);
    assert_eq!(w.engine_touch(desc.start + 6 * CHUNK, 8, Access::WRITE), Some(Ok(())));
    w.check_pins();
}

/// A chunk that cannot be faulted in when a command waits for it fails
/// that command alone: the rest of the region keeps working, and the chunk
/// is not dead: the next command on it asks for a rebuild again, which
/// maps it once it can be faulted in (an mprotect back, a new page).
#[test]
fn a_refused_chunk_faults_only_the_command_that_waited() {
    let w = World::new(0x1000, Policy::Strict);
    let desc = w.register(0x100000, 4 * CHUNK, Access::READ_WRITE);
    w.rebuild().unwrap();
    invalidate_range(&w, &desc, desc.start + CHUNK, desc.start + CHUNK + PAGE);
    assert!(w.engine_touch(desc.start + CHUNK, 8, Access::WRITE).unwrap().is_err());
    w.p.state().inject_pin = vec![PinError::Gone];
    let report = w.rebuild().unwrap();
    assert_eq!((report.mapped, report.refused), (0, 1));
    assert!(report.running, "nothing left to wait for");
    let info = w.ctx.region(&w.lock.lock(), desc.handle).unwrap();
    assert_eq!((info.mapped_chunks, info.dead_chunks, info.refused_chunks), (3, 0, 1));
    // The waiting command fails, once.
    assert_eq!(w.engine_touch(desc.start + CHUNK + 8, 8, Access::WRITE), Some(Err(XlateFault::Refused)));
    assert_eq!(w.engine_touch(desc.start, 8, Access::WRITE), Some(Ok(())));
    assert_eq!(w.engine_touch(desc.start + 3 * CHUNK, 8, Access::WRITE), Some(Ok(())));
    // The next command on the chunk waits for a rebuild, which now works.
    let next = w.engine_touch(desc.start + CHUNK + 8, 8, Access::WRITE);
    assert!(matches!(next, Some(Err(XlateFault::NeedsRebuild { .. }))), "{next:?}");
    let report = w.rebuild().unwrap();
    assert_eq!((report.mapped, report.refused), (1, 0));
    assert_eq!(w.engine_touch(desc.start + CHUNK + 8, 8, Access::WRITE), Some(Ok(())));
    w.check_pins();
}

/// An UNMAP ends the registration over its chunks, deterministically: they
/// die whether mapped or torn down before, no rebuild maps them again
/// (whatever is mapped at that address later), commands on them fault, and
/// the rest of the region keeps working.
#[test]
fn unmap_kills_its_chunks_for_good() {
    let w = World::new(0x1000, Policy::Filtered);
    let desc = w.register(0x100000, 4 * CHUNK, Access::READ_WRITE);
    w.rebuild().unwrap();
    // Chunk 1 mapped, chunk 2 torn down by a CLEAR (DONTNEED) first.
    invalidate_range_with(&w, &desc, desc.start + 2 * CHUNK, desc.start + 2 * CHUNK + PAGE, Event::Clear, true);
    let report = invalidate_range_with(&w, &desc, desc.start + CHUNK, desc.start + 3 * CHUNK, Event::Unmap, true);
    assert!(matches!(report.outcome, InvalidateOutcome::TornDown { chunks: 2, pages_unpinned: 16, .. }), "{report:?}");
    let info = w.ctx.region(&w.lock.lock(), desc.handle).unwrap();
    assert_eq!((info.mapped_chunks, info.dead_chunks), (2, 2));
    w.p.clear_calls();
    for chunk in [1, 2] {
        let at = desc.start + chunk * CHUNK + 8;
        assert_eq!(w.engine_touch(at, 8, Access::WRITE), Some(Err(XlateFault::Dead)), "chunk {chunk}");
    }
    // Nothing to rebuild: a new mapping at that address is never pinned.
    let report = w.rebuild().unwrap();
    assert_eq!((report.mapped, report.refused), (0, 0));
    assert!(w.p.calls().iter().all(|c| !matches!(c, Call::Pin { .. })), "{:?}", w.p.calls());
    assert!(w.ctx.gate().is_running());
    assert_eq!(w.engine_touch(desc.start + 8, 8, Access::WRITE), Some(Ok(())));
    assert_eq!(w.engine_touch(desc.start + 3 * CHUNK, 8, Access::WRITE), Some(Ok(())));
    // A second UNMAP of dead chunks has nothing to do.
    let again = invalidate_range_with(&w, &desc, desc.start + CHUNK, desc.start + 3 * CHUNK, Event::Unmap, true);
    assert_eq!(again.outcome, InvalidateOutcome::NothingMapped);
    w.check_pins();
}

/// A command waiting for a torn-down chunk that an UNMAP then kills is
/// released: the callback reopens the queue, and the command faults
/// instead of waiting.
#[test]
fn unmap_of_a_wanted_chunk_releases_its_waiter() {
    let w = World::new(0x1000, Policy::Strict);
    let desc = w.register(0x100000, 2 * CHUNK, Access::READ_WRITE);
    w.rebuild().unwrap();
    invalidate_range_with(&w, &desc, desc.start + CHUNK, desc.start + CHUNK + PAGE, Event::Clear, true);
    let at = desc.start + CHUNK + 8;
    assert!(matches!(w.engine_touch(at, 8, Access::READ), Some(Err(XlateFault::NeedsRebuild { .. }))));
    assert!(w.ctx.gate().is_stale());
    invalidate_range_with(&w, &desc, desc.start + CHUNK, desc.end(), Event::Unmap, true);
    // The callback itself reopens the queue (no rebuild may come: the
    // process may only be waiting).
    assert!(w.ctx.gate().is_running(), "nothing left to wait for");
    let report = w.rebuild().unwrap();
    assert_eq!(report.mapped, 0);
    assert!(report.running);
    assert_eq!(w.engine_touch(at, 8, Access::READ), Some(Err(XlateFault::Dead)));
    w.check_pins();
}

/// The OOM reaper's UNMAP (not blockable) of a chunk that is not mapped
/// neither sleeps nor refuses: there is nothing the device can reach, and
/// its dying process gets no rebuild.
#[test]
fn non_blocking_unmap_of_unmapped_chunks_proceeds() {
    let w = World::new(0x1000, Policy::Strict);
    let desc = w.register(0x100000, 2 * CHUNK, Access::READ_WRITE);
    w.rebuild().unwrap();
    invalidate_range_with(&w, &desc, desc.start, desc.start + PAGE, Event::Clear, true);
    let r = invalidate_range_with(&w, &desc, desc.start, desc.start + PAGE, Event::Unmap, false);
    assert_eq!(r.outcome, InvalidateOutcome::NothingMapped);
    let r = invalidate_range_with(&w, &desc, desc.start + CHUNK, desc.end(), Event::Unmap, false);
    assert_eq!(r.outcome, InvalidateOutcome::CannotProceed);
    w.check_pins();
}

/// The device-address share: a context never holds more than its share of
/// mapped chunks after a rebuild; the clock evicts what the engine did not
/// touch, keeps what it touched, and an evicted chunk is rebuilt on demand.
#[test]
fn the_share_evicts_least_recently_used_chunks() {
    let mut w = World::new(0x1000, Policy::Strict);
    let chunk = 1u64 << 16;
    w.cfg.device_share = 2 * chunk;
    // Four chunks; REGISTER wants them all, so it maps each (checking it
    // can be faulted in) and keeps the last two.
    let desc = w.register(0x100000, 4 * chunk, Access::READ_WRITE);
    let report = w.rebuild().unwrap();
    assert_eq!((report.mapped, report.evicted), (4, 2));
    let mapped = |w: &World| {
        let key = w.lock.lock();
        (0..4).filter(|&c| w.ctx.mapping(&key, desc.handle, c).is_some()).collect::<Vec<_>>()
    };
    assert_eq!(mapped(&w), [2, 3]);
    w.check_pins();
    assert!(w.ctx.gate().is_running());

    // The engine uses chunk 3, then needs chunk 0: chunk 2, untouched
    // since its publish, goes; chunk 3 stays.
    let at = |c: u64| desc.start + c * chunk;
    assert_eq!(w.engine_touch(at(3), 8, Access::WRITE), Some(Ok(())));
    assert!(matches!(w.engine_touch(at(0), 8, Access::WRITE), Some(Err(XlateFault::NeedsRebuild { .. }))));
    let report = w.rebuild().unwrap();
    assert_eq!((report.mapped, report.evicted), (1, 1));
    assert_eq!(mapped(&w), [0, 3]);
    assert_eq!(w.engine_touch(at(0), 8, Access::WRITE), Some(Ok(())));

    // A command over two chunks when both others are in use: its own
    // chunks always fit (the share is a target a rebuild restores).
    assert!(matches!(w.engine_touch(at(1) + chunk - 8, 16, Access::WRITE), Some(Err(_))));
    let report = w.rebuild().unwrap();
    assert_eq!(report.mapped, 2);
    assert_eq!(w.engine_touch(at(1) + chunk - 8, 16, Access::WRITE), Some(Ok(())));
    let held = mapped(&w).len() as u64 * chunk;
    assert!(held <= 2 * chunk, "held {held} bytes over a share of {}", 2 * chunk);
    w.check_pins();

    // Without a share nothing is evicted: every chunk a command touches
    // stays mapped.
    w.cfg.device_share = 0;
    for c in 0..4 {
        if w.engine_touch(at(c), 8, Access::WRITE) != Some(Ok(())) {
            assert_eq!(w.rebuild().unwrap().evicted, 0);
            assert_eq!(w.engine_touch(at(c), 8, Access::WRITE), Some(Ok(())));
        }
    }
    assert_eq!(mapped(&w), [0, 1, 2, 3]);
    w.check_pins();
}

/// A momentary allocation failure is absorbed by a retry; a chunk larger
/// than the whole memory budget is refused at once, evicting nothing.
#[test]
fn short_of_memory_retries_or_gives_up_at_once() {
    let w = World::new(0x1000, Policy::Strict);
    let a = w.register(0x10000, PAGE, Access::READ);
    w.p.state().inject_pin = vec![PinError::Transient];
    let report = w.rebuild().unwrap();
    assert_eq!((report.mapped, report.refused, report.evicted, report.short_tries), (1, 0, 0, 1));

    let b = w.register(0x20000, PAGE, Access::READ_WRITE);
    w.p.state().inject_pin = vec![PinError::NeverFits];
    let report = w.rebuild().unwrap();
    assert_eq!((report.mapped, report.refused, report.evicted), (0, 1, 0));
    assert_eq!(report.short_slots, slots(&[b.handle.slot()]));
    assert!(w.ctx.mapping(&w.lock.lock(), a.handle, 0).is_some(), "nothing evicted for a chunk that never fits");
    assert_eq!(w.ctx.region(&w.lock.lock(), b.handle).unwrap().short_chunks, 1);
    w.check_pins();
}

/// The set of `slots`.
fn slots(slots: &[usize]) -> SlotSet {
    let mut set = SlotSet::default();
    for &slot in slots {
        set.insert(slot);
    }
    set
}
