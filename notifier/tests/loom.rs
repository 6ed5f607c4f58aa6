// SPDX-License-Identifier: GPL-2.0

//! loom models of the races the protocol must survive.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test --manifest-path notifier/Cargo.toml --release --test loom`
//!
//! The double models the kernel's side faithfully where it matters for the
//! races: `mmu_interval_read_begin()` waits while an invalidation of its
//! notifier runs (subscriptions lock + wait queue), `set_seq`/`read_retry`
//! are plain `WRITE_ONCE`/`READ_ONCE` (relaxed atomics: only `L` orders
//! them), the kernel changes the pages after the callbacks returned, drain
//! waits are a condition variable. Bookkeeping (pins, page epochs) is in a
//! std mutex that is never held across a loom operation, so it adds no
//! interleavings; its assertions see the schedule's order.
//!
//! Each model asserts the real invariant: the engine never touches a
//! mapping that is unpinned or whose pages changed; no mapping is published
//! with stale pages; pins balance at the end; the child never translates
//! through the parent's regions; a stale queue never keeps its ring mapped
//! without a zap to come; every command completes exactly once.

#![cfg(loom)]

mod support;

use std::cell::Cell;
use std::sync::{Arc, Mutex as StdMutex, MutexGuard as StdGuard};
use std::time::Instant;

use loom::sync::{Condvar, Mutex, MutexGuard};
use loom::thread;

use warpq_notifier::context::{
    Config, ContextLock, ContextTable, CreateError, DrainReport, LockKey, MmContext, ReleaseError, ReleaseOutcome,
};
use warpq_notifier::gate::EngineExit;
use warpq_notifier::platform::{Mapping, PinError, Platform, Waiter};
use warpq_notifier::policy::{Event, Policy};
use warpq_notifier::pool::{EngineClaim, PoolState, Sleep};
use warpq_notifier::rebuild::{rebuild, rebuild_every_wanted};
use warpq_notifier::region::{Access, Chunk, RegionDesc, RegionHandle, StateKind, XlateFault};
use warpq_notifier::sync::{AtomicBool, AtomicU64, Ordering};
use warpq_notifier::teardown::{invalidate, InvalidateOutcome, InvalidateReport};

use support::{request, whole_region};

const SLOTS: usize = 2;
const PAGE: u64 = 4096;
const PARENT_MM: usize = 0x1000;
const CHILD_MM: usize = 0x2000;

loom::thread_local! {
    /// Set while this (loom) thread runs a non-blocking invalidation.
    static NON_BLOCKING: Cell<bool> = Cell::new(false);
}

#[derive(Debug)]
struct LMapping {
    id: u64,
    mm: usize,
    region: RegionHandle,
    /// The range that was pinned.
    start: u64,
    slot: usize,
    page_epoch: u64,
    /// Write-protect epoch of the region when mapped (see `Book`).
    wp_epoch: u64,
}

impl Mapping for LMapping {
    type Chunks = Box<[Chunk<Self>]>;
    fn page_count(&self) -> u64 {
        1
    }
}

#[derive(Default)]
struct Book {
    next_id: u64,
    live: Vec<u64>,
    pins: u64,
    unpins: u64,
    page_epoch: [u64; SLOTS],
    /// Bumped when the kernel write-protects the region's pages (after a
    /// PROTECTION_PAGE / SOFT_DIRTY callback returned): a device write
    /// through a mapping of an older epoch would bypass the write-protect.
    wp_epoch: [u64; SLOTS],
    completions: Vec<(u64, &'static str)>,
}

struct LoomPlatform {
    mm: usize,
    /// `subscriptions->invalidate_seq` and `active_invalidate_ranges`, under
    /// `subscriptions->lock`.
    mm_seq: Mutex<(u64, u32)>,
    /// `subscriptions->wq`.
    mm_seq_changed: Condvar,
    /// `interval_sub->invalidate_seq` of each region's notifier.
    notifier_seq: [AtomicU64; SLOTS],
    /// The drain's wait queue.
    wait_lock: Mutex<()>,
    wait_queue: Condvar,
    /// Bounded waits give up at once (the deadline is modeled as "now").
    timeouts: bool,
    /// The zap work item is queued.
    zap_pending: AtomicBool,
    book: StdMutex<Book>,
}

impl LoomPlatform {
    fn new(mm: usize, timeouts: bool) -> Self {
        Self {
            mm,
            // As after `mmu_interval_notifier_insert()` while idle: the mm
            // sequence is even and each notifier's is one less (odd).
            mm_seq: Mutex::new((2, 0)),
            mm_seq_changed: Condvar::new(),
            notifier_seq: [AtomicU64::new(1), AtomicU64::new(1)],
            wait_lock: Mutex::new(()),
            wait_queue: Condvar::new(),
            timeouts,
            zap_pending: AtomicBool::new(false),
            book: StdMutex::new(Book::default()),
        }
    }

    fn book(&self) -> StdGuard<'_, Book> {
        self.book.lock().unwrap()
    }

    /// `mn_itree_inv_start_range()`: returns `cur_seq` (odd; shared by
    /// overlapping invalidations).
    fn invalidate_start(&self) -> u64 {
        let mut guard = self.mm_seq.lock().unwrap();
        let (seq, active) = &mut *guard;
        *active += 1;
        *seq |= 1;
        *seq
    }

    /// `mn_itree_inv_end()`: the last one makes the sequence even and wakes
    /// `read_begin()` waiters.
    fn invalidate_end(&self) {
        let mut guard = self.mm_seq.lock().unwrap();
        let (seq, active) = &mut *guard;
        *active -= 1;
        if *active == 0 && *seq % 2 == 1 {
            *seq += 1;
            drop(guard);
            self.mm_seq_changed.notify_all();
        }
    }

    /// The kernel changes the page tables (after the callbacks).
    fn change_pages(&self, slot: usize) {
        self.book().page_epoch[slot] += 1;
    }

    /// The kernel write-protects the pages (after the callbacks).
    fn write_protect(&self, slot: usize) {
        self.book().wp_epoch[slot] += 1;
    }

    /// The engine writes through `mapping`: it must not be of pages
    /// write-protected since it was mapped.
    fn write(&self, mapping: &LMapping) {
        self.touch(mapping);
        let book = self.book();
        assert_eq!(mapping.wp_epoch, book.wp_epoch[mapping.slot], "engine wrote past a write-protect");
    }

    /// The engine touches memory through `mapping`.
    fn touch(&self, mapping: &LMapping) {
        let book = self.book();
        assert_eq!(mapping.mm, self.mm, "engine of mm {:#x} used mm {:#x}'s pages", self.mm, mapping.mm);
        assert!(book.live.contains(&mapping.id), "engine touched unpinned mapping {}", mapping.id);
        assert_eq!(mapping.page_epoch, book.page_epoch[mapping.slot], "engine touched pages that were replaced");
    }

    fn complete(&self, cmd: u64, status: &'static str) {
        self.book().completions.push((cmd, status));
    }

    /// The zap worker, if queued: zaps the ring PTE when the queue is stale.
    fn run_zap_worker(&self, ctx: &MmContext<LMapping, SLOTS>, ring_pte: &Mutex<bool>) {
        if self.zap_pending.swap(false, Ordering::AcqRel) && ctx.zap_needed() {
            *ring_pte.lock().unwrap() = false;
        }
    }
}

impl Waiter for LoomPlatform {
    fn now_ns(&self) -> u64 {
        0
    }

    fn wait_until(&self, done: &dyn Fn() -> bool, deadline_ns: u64) -> bool {
        assert!(!NON_BLOCKING.with(Cell::get), "a non-blocking invalidation waited");
        if done() {
            return true;
        }
        if self.timeouts && deadline_ns != u64::MAX {
            return false;
        }
        let mut guard = self.wait_lock.lock().unwrap();
        loop {
            if done() {
                return true;
            }
            guard = self.wait_queue.wait(guard).unwrap();
        }
    }

    fn wake(&self) {
        let _guard = self.wait_lock.lock().unwrap();
        self.wait_queue.notify_all();
    }
}

impl Platform for LoomPlatform {
    type Mapping = LMapping;

    fn read_begin(&self, region: &RegionDesc) -> u64 {
        let slot = region.handle.slot();
        let mut mm_seq = self.mm_seq.lock().unwrap();
        let seq = self.notifier_seq[slot].load(Ordering::Relaxed);
        // This notifier is being invalidated: wait for the end.
        while mm_seq.0 == seq {
            mm_seq = self.mm_seq_changed.wait(mm_seq).unwrap();
        }
        seq
    }

    fn read_retry(&self, region: &RegionDesc, seq: u64) -> bool {
        self.notifier_seq[region.handle.slot()].load(Ordering::Relaxed) != seq
    }

    fn set_seq(&self, region: &RegionDesc, cur_seq: u64) {
        self.notifier_seq[region.handle.slot()].store(cur_seq, Ordering::Relaxed);
    }

    fn pin_and_map(&self, region: &RegionDesc, _chunk: usize, _seq: u64) -> Result<LMapping, PinError> {
        let slot = region.handle.slot();
        let mut book = self.book();
        book.next_id += 1;
        let id = book.next_id;
        book.live.push(id);
        book.pins += 1;
        Ok(LMapping {
            id,
            mm: self.mm,
            region: region.handle,
            start: region.start,
            slot,
            page_epoch: book.page_epoch[slot],
            wp_epoch: book.wp_epoch[slot],
        })
    }

    fn unmap_and_unpin(&self, mapping: LMapping, _dirty: bool) {
        let mut book = self.book();
        let index = book.live.iter().position(|&id| id == mapping.id).expect("double unpin");
        book.live.swap_remove(index);
        book.unpins += 1;
    }

    fn schedule_zap(&self) {
        self.zap_pending.store(true, Ordering::Release);
    }
}

struct LoomLock(Mutex<LockKey>);

impl ContextLock for LoomLock {
    type Guard<'a> = MutexGuard<'a, LockKey>;

    fn lock(&self) -> MutexGuard<'_, LockKey> {
        self.0.lock().unwrap()
    }

    fn try_lock(&self) -> Option<MutexGuard<'_, LockKey>> {
        self.0.try_lock().ok()
    }
}

/// How a model's world starts (see [`World::new`]).
#[derive(Clone, Copy)]
struct Setup {
    /// Read-write regions, registered and armed.
    regions: usize,
    /// Pinned (the queue runs), else unmapped (the queue is stale).
    mapped: bool,
    /// Bounded waits give up at once.
    timeouts: bool,
}

/// One region, nothing pinned yet: the queue waits for a fault.
const STALE: Setup = Setup { regions: 1, mapped: false, timeouts: false };

/// One region, pinned: the queue runs.
const RUNNING: Setup = Setup { mapped: true, ..STALE };

struct World {
    ctx: MmContext<LMapping, SLOTS>,
    lock: LoomLock,
    p: LoomPlatform,
    cfg: Config,
    regions: Vec<RegionDesc>,
}

impl World {
    /// A context of `mm` started as `setup` says.
    fn new(mm: usize, setup: Setup) -> Arc<World> {
        let (ctx, key) = MmContext::new(mm);
        let mut world = World {
            ctx,
            lock: LoomLock(Mutex::new(key)),
            p: LoomPlatform::new(mm, setup.timeouts),
            cfg: Config {
                policy: Policy::Strict,
                drain_timeout_ns: 1_000_000,
                max_retries: 2,
                chunk_shift: 16,
                device_share: 0,
            },
            regions: Vec::new(),
        };
        for i in 0..setup.regions as u64 {
            world.regions.push(world.register(0x10000 * (i + 1), PAGE));
        }
        if setup.mapped {
            assert!(world.rebuild().unwrap().running);
        }
        Arc::new(world)
    }

    fn register(&self, start: u64, len: u64) -> RegionDesc {
        let mut key = self.lock.lock();
        let desc = self.ctx.register(&mut key, &self.p, &self.cfg, request(start, len, Access::READ_WRITE)).unwrap();
        self.ctx.arm(&mut key, &self.p, &self.cfg, desc.handle).unwrap();
        desc
    }

    fn rebuild(&self) -> Result<warpq_notifier::rebuild::RebuildReport, warpq_notifier::rebuild::RebuildError> {
        rebuild(&self.ctx, &self.lock, &self.p, &self.cfg)
    }

    /// What the kernel does for one notifier: start, callback, change the
    /// pages if the event does and the callback did not refuse, end.
    fn kernel_invalidate(&self, index: usize, event: Event, blockable: bool) -> InvalidateReport {
        let region = self.regions[index];
        let cur_seq = self.p.invalidate_start();
        NON_BLOCKING.with(|flag| flag.set(!blockable));
        let inv = whole_region(region, cur_seq, event, blockable);
        let report = invalidate(&self.ctx, &self.lock, &self.p, &self.cfg, &inv);
        NON_BLOCKING.with(|flag| flag.set(false));
        if report.callback_result() && matches!(event, Event::Unmap | Event::Clear) {
            self.p.change_pages(region.handle.slot());
        }
        if report.callback_result() && matches!(event, Event::ProtectionPage | Event::SoftDirty) {
            self.p.write_protect(region.handle.slot());
        }
        self.p.invalidate_end();
        report
    }

    /// One engine command on region `index`: two touches with a scheduling
    /// point between them (a command takes time). `None` if the gate is shut.
    fn engine_command(&self, index: usize) -> Option<EngineExit> {
        let region = self.regions[index];
        let engine = self.ctx.enter(&self.p)?;
        match engine.translate(region.start, 8, Access::WRITE) {
            Ok(t) => {
                self.p.touch(t.mapping);
                let _ = engine.is_abandoned();
                self.p.touch(t.mapping);
            }
            // The chunk was torn down: the command waits for a rebuild (the
            // queue goes stale, the zap is queued), as the driver does.
            Err(XlateFault::NeedsRebuild { touched }) => {
                let exit = engine.request_rebuild(touched);
                self.p.schedule_zap();
                return Some(exit);
            }
            Err(_) => {}
        }
        Some(engine.finish())
    }

    fn state(&self, index: usize) -> StateKind {
        self.ctx.region(&self.lock.lock(), self.regions[index].handle).unwrap().state
    }

    /// Pins balance with what is mapped; nothing mapped holds replaced pages;
    /// the gate is idle; stale means "a region needs a rebuild".
    fn check_end(&self) {
        let key = self.lock.lock();
        let book = self.p.book();
        let mut mapped = 0;
        for info in self.ctx.regions(&key) {
            if let StateKind::Mapped { .. } = info.state {
                mapped += 1;
                let mapping = self.ctx.mapping(&key, info.desc.handle, 0).unwrap();
                assert_eq!(mapping.region, info.desc.handle, "a pin published into another region");
                assert_eq!(mapping.start, info.desc.start, "pages of another range published");
                assert!(book.live.contains(&mapping.id), "mapped region without pin");
                assert_eq!(
                    mapping.page_epoch, book.page_epoch[mapping.slot],
                    "a mapping of replaced pages was published"
                );
            }
        }
        assert_eq!(book.live.len(), mapped, "pins not balanced with mapped regions");
        assert_eq!(book.pins - book.unpins, mapped as u64);
        let gate = self.ctx.gate().snapshot();
        assert_eq!((gate.pauses, gate.in_flight, gate.abandoned), (0, 0, 0));
        if !gate.closed {
            assert_eq!(gate.stale, self.ctx.needs_rebuild(&key));
        }
    }
}

fn model(name: &str, preemptions: usize, f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    // Set here, not only from LOOM_MAX_PREEMPTIONS; the env may raise it.
    let from_env = std::env::var("LOOM_MAX_PREEMPTIONS").ok().and_then(|v| v.parse().ok());
    builder.preemption_bound = Some(from_env.unwrap_or(preemptions).max(preemptions));
    let started = Instant::now();
    let iterations = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = iterations.clone();
    builder.check(move || {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        f()
    });
    eprintln!(
        "loom model {name}: ok, {} interleavings in {:.1?} (preemption bound {:?})",
        iterations.load(std::sync::atomic::Ordering::Relaxed),
        started.elapsed(),
        builder.preemption_bound
    );
}

/// [`model`] of one world of `PARENT_MM` started as `setup`. Its end state
/// is checked after `f`, which must have joined every thread it spawned.
fn model_world(name: &str, preemptions: usize, setup: Setup, f: impl Fn(&Arc<World>) + Sync + Send + 'static) {
    model(name, preemptions, move || {
        let w = World::new(PARENT_MM, setup);
        f(&w);
        w.check_end();
    });
}

/// Spawns a loom thread that runs `f` on its own handle of `w`.
fn spawn_with(w: &Arc<World>, f: impl FnOnce(&World) + Send + 'static) -> thread::JoinHandle<()> {
    let w = w.clone();
    thread::spawn(move || f(&w))
}

/// Spawns a fault whose rebuild must succeed (`budget` says why it can)
/// after at most `max_retries` collisions.
fn spawn_fault(w: &Arc<World>, max_retries: u32, budget: &'static str) -> thread::JoinHandle<()> {
    spawn_with(w, move |w| {
        let report = w.rebuild().expect(budget);
        assert!(report.retries <= max_retries);
    })
}

/// (1) A fault rebuilds while the region is invalidated twice (two
/// overlapping invalidations, as the kernel allows): the rebuild's
/// `read_begin`/pin may straddle them; it must retry rather than publish the
/// replaced pages.
#[test]
fn m1_invalidate_vs_fault_rebuild() {
    model_world("1 invalidate vs fault rebuild", 3, STALE, |w| {
        let fault = spawn_fault(w, 2, "two invalidations are within the retry budget");
        let second = spawn_with(w, |w| {
            assert!(w.kernel_invalidate(0, Event::Unmap, true).callback_result());
        });
        let report = w.kernel_invalidate(0, Event::Clear, true);
        assert!(report.callback_result());
        fault.join().unwrap();
        second.join().unwrap();
    });
}

/// (1b) One invalidation against a fault, with a higher preemption bound.
#[test]
fn m1b_invalidate_vs_fault_rebuild_deep() {
    model_world("1b invalidate vs fault rebuild (deep)", 3, STALE, |w| {
        let fault = spawn_fault(w, 1, "one invalidation is within the retry budget");
        let report = w.kernel_invalidate(0, Event::Clear, true);
        assert!(report.callback_result());
        fault.join().unwrap();
    });
}

/// (2) The engine runs a command while the region is invalidated: once the
/// callback drained the gate nothing may be touched until the rebuild.
#[test]
fn m2_invalidate_vs_engine_in_flight() {
    model_world("2 invalidate vs engine in flight", 3, RUNNING, |w| {
        let engine = spawn_with(w, |w| {
            if let Some(exit) = w.engine_command(0) {
                assert_eq!(exit, EngineExit::Completed, "no reset without timeouts");
            }
        });
        let report = w.kernel_invalidate(0, Event::Clear, true);
        assert!(matches!(report.outcome, InvalidateOutcome::TornDown { drain: DrainReport::Drained, .. }));
        // Teardown returned: the engine is out, and whatever enters finds
        // the chunk unmapped (it asks for a rebuild; it never touches).
        if let Some(engine) = w.ctx.enter(&w.p) {
            let region = w.regions[0];
            assert!(matches!(engine.translate(region.start, 8, Access::WRITE), Err(XlateFault::NeedsRebuild { .. })));
        }
        engine.join().unwrap();
        assert_eq!(w.state(0), StateKind::Unmapped);
    });
}

/// (2c) The engine runs two commands while the region is invalidated and a
/// fault rebuilds and resumes the queue: every touch is of pinned, current
/// pages.
#[test]
fn m2c_engine_vs_invalidate_vs_rebuild() {
    model_world("2c engine vs invalidate vs rebuild", 3, RUNNING, |w| {
        let engine = spawn_with(w, |w| {
            for _ in 0..2 {
                if let Some(exit) = w.engine_command(0) {
                    assert_eq!(exit, EngineExit::Completed);
                }
            }
        });
        let fault = spawn_with(w, |w| {
            w.rebuild().unwrap();
        });
        w.kernel_invalidate(0, Event::Clear, true);
        engine.join().unwrap();
        fault.join().unwrap();
    });
}

/// (2b) Same with drain timeouts: the queue may be reset; the command then
/// completes exactly once (error by the resetter, or success by the engine),
/// and nothing is unpinned while the engine is still inside.
#[test]
fn m2b_drain_timeout_reset_completes_exactly_once() {
    let setup = Setup { timeouts: true, ..RUNNING };
    let name = "2b drain timeout reset, exactly-once completion";
    model_world(name, 3, setup, |w| {
        let current_cmd = Arc::new(AtomicU64::new(0));
        let engine = {
            let current_cmd = current_cmd.clone();
            spawn_with(w, move |w| {
                // Publish the command before entering (the reset reads it).
                current_cmd.store(7, Ordering::Relaxed);
                match w.engine_command(0) {
                    Some(EngineExit::Completed) => w.p.complete(7, "ok"),
                    Some(EngineExit::Abandoned) => {}
                    None => w.p.complete(7, "still queued"),
                }
            })
        };
        let report = w.kernel_invalidate(0, Event::Clear, true);
        if let InvalidateOutcome::TornDown { drain: DrainReport::Reset { abandoned, .. }, .. } = report.outcome {
            // The driver completes the abandoned commands with an error.
            if abandoned == 1 {
                w.p.complete(current_cmd.load(Ordering::Relaxed), "error");
            }
        }
        engine.join().unwrap();
        let book = w.p.book();
        assert_eq!(book.completions.len(), 1, "completions {:?}", book.completions);
        assert_eq!(book.completions[0].0, 7);
    });
}

/// (3) Two faults rebuild the same context at once: each claims the chunk
/// it maps, so no chunk is pinned twice (exactly two pins for two chunks,
/// none discarded), and a rebuild that finds only a claimed chunk leaves
/// it to its claimant; at the end both are mapped and the queue runs.
#[test]
fn m3_two_racing_faults() {
    let setup = Setup { regions: 2, ..STALE };
    model_world("3 two racing faults", 3, setup, |w| {
        let other = spawn_with(w, |w| {
            w.rebuild().unwrap();
        });
        let mine = w.rebuild().unwrap();
        other.join().unwrap();
        assert!(matches!(w.state(0), StateKind::Mapped { .. }));
        assert!(matches!(w.state(1), StateKind::Mapped { .. }));
        assert!(w.ctx.gate().is_running());
        let book = w.p.book();
        assert_eq!(book.live.len(), 2);
        assert_eq!((book.pins, book.unpins), (2, 0), "a chunk was pinned by both rebuilds");
        assert_eq!(mine.lost_races, 0);
    });
}

/// (3b) REGISTER's rebuild (`rebuild_every_wanted`) races another rebuild
/// (the worker): when it returns, every wanted chunk is mapped, even one
/// the other rebuild had claimed (REGISTER reports what it registered).
#[test]
fn m3b_register_rebuild_vs_a_claimant() {
    let setup = Setup { regions: 2, ..STALE };
    model_world("3b register rebuild vs a claimant", 3, setup, |w| {
        let other = spawn_with(w, |w| {
            w.rebuild().unwrap();
        });
        rebuild_every_wanted(&w.ctx, &w.lock, &w.p, &w.cfg).unwrap();
        assert!(matches!(w.state(0), StateKind::Mapped { .. }), "REGISTER returned before chunk 0 was mapped");
        assert!(matches!(w.state(1), StateKind::Mapped { .. }), "REGISTER returned before chunk 1 was mapped");
        other.join().unwrap();
        assert!(w.ctx.gate().is_running());
        let book = w.p.book();
        assert_eq!(book.pins - book.unpins, 2);
    });
}

/// (4) The mm exits (RELEASE → context release) while a fault rebuilds and
/// then the file is closed (a second, racing release): exactly one release
/// does the work; nothing stays pinned; the mm never gets a context again.
#[test]
fn m4_release_vs_fault() {
    // Not `model_world`: the directory entry exists before the world.
    model("4 release vs fault", 3, || {
        let dir = Arc::new(Mutex::new(ContextTable::<2>::new()));
        let (id, created) = dir.lock().unwrap().get_or_create(PARENT_MM).unwrap();
        assert!(created);
        let w = World::new(PARENT_MM, STALE);
        let releases = Arc::new(AtomicU64::new(0));

        let release = move |dir: &Mutex<ContextTable<2>>, w: &World, releases: &AtomicU64| {
            let outcome = dir.lock().unwrap().release(PARENT_MM);
            match outcome {
                ReleaseOutcome::Released(released) => {
                    assert_eq!(released, id);
                    w.ctx.release(&mut w.lock.lock(), &w.p, &w.cfg).unwrap();
                    releases.fetch_add(1, Ordering::Relaxed);
                }
                ReleaseOutcome::AlreadyReleased(_) => {}
                ReleaseOutcome::NotFound => panic!("context vanished"),
            }
        };

        let fault = {
            let (dir, releases) = (dir.clone(), releases.clone());
            spawn_with(&w, move |w| {
                let found = dir.lock().unwrap().get_or_create(PARENT_MM);
                match found {
                    Ok((found, false)) => {
                        assert_eq!(found, id);
                        let _ = w.rebuild();
                    }
                    Err(CreateError::Released(_)) => {}
                    other => panic!("fault got {other:?}"),
                }
                // File close.
                release(&dir, w, &releases);
            })
        };
        release(&dir, &w, &releases);
        fault.join().unwrap();

        assert_eq!(releases.load(Ordering::Relaxed), 1);
        assert_eq!(dir.lock().unwrap().release(PARENT_MM), ReleaseOutcome::AlreadyReleased(id));
        assert_eq!(w.ctx.release(&mut w.lock.lock(), &w.p, &w.cfg), Err(ReleaseError::AlreadyReleased));
        assert!(matches!(dir.lock().unwrap().get_or_create(PARENT_MM), Err(CreateError::Released(_))));
        assert!(w.p.book().live.is_empty(), "pins leaked past release");
        assert_eq!(w.state(0), StateKind::Dead);
        w.check_end();
    });
}

/// (5) The OOM reaper's non-blocking invalidation while the engine runs: it
/// must refuse (the region is mapped) without ever waiting.
#[test]
fn m5_non_blocking_invalidate_vs_engine() {
    model_world("5 non-blocking invalidate vs engine", 3, RUNNING, |w| {
        let engine = spawn_with(w, |w| {
            w.engine_command(0);
        });
        let report = w.kernel_invalidate(0, Event::Unmap, false);
        assert_eq!(report.outcome, InvalidateOutcome::CannotProceed);
        engine.join().unwrap();
        assert!(matches!(w.state(0), StateKind::Mapped { .. }));
    });
}

/// (5c) The OOM reaper (non-blocking) races a blocking invalidation (munmap)
/// while the engine runs: the reaper refuses while the region is mapped or
/// `L` is busy, never waits, and when it proceeds the engine is already
/// drained by the blocking teardown.
#[test]
fn m5c_non_blocking_vs_blocking_invalidate_vs_engine() {
    let name = "5c non-blocking vs blocking invalidate vs engine";
    model_world(name, 3, RUNNING, |w| {
        let engine = spawn_with(w, |w| {
            w.engine_command(0);
        });
        let munmap = spawn_with(w, |w| {
            assert!(w.kernel_invalidate(0, Event::Clear, true).callback_result());
        });
        let report = w.kernel_invalidate(0, Event::Unmap, false);
        assert!(matches!(report.outcome, InvalidateOutcome::CannotProceed | InvalidateOutcome::NothingMapped));
        engine.join().unwrap();
        munmap.join().unwrap();
        assert_eq!(w.state(0), StateKind::Unmapped);
    });
}

/// (5b) The OOM reaper's non-blocking invalidation while a fault rebuilds:
/// if it proceeds (nothing mapped yet), the reaper zaps the pages, and the
/// rebuild must not publish the old ones (`set_seq` even when non-blocking).
#[test]
fn m5b_non_blocking_invalidate_vs_rebuild() {
    model_world("5b non-blocking invalidate vs rebuild", 3, STALE, |w| {
        let fault = spawn_with(w, |w| {
            w.rebuild().unwrap();
        });
        let report = w.kernel_invalidate(0, Event::Unmap, false);
        assert!(matches!(report.outcome, InvalidateOutcome::CannotProceed | InvalidateOutcome::NothingMapped));
        fault.join().unwrap();
    });
}

/// (6) After fork the child's first fault creates its own context while the
/// parent's region is invalidated (fork's COW write-protect, strict policy)
/// and the parent's engine runs: the child never translates through the
/// parent's regions; its own region at the same address maps its own pages.
#[test]
fn m6_fork_child_vs_parent_invalidation() {
    // Not `model_world`: two worlds and a directory.
    model("6 fork child vs parent invalidation", 3, || {
        let dir = Arc::new(Mutex::new(ContextTable::<2>::new()));
        let (parent_id, _) = dir.lock().unwrap().get_or_create(PARENT_MM).unwrap();
        let parent = World::new(PARENT_MM, RUNNING);
        let child = World::new(CHILD_MM, Setup { regions: 0, ..STALE });
        let parent_va = parent.regions[0].start;

        let child_thread = {
            let dir = dir.clone();
            spawn_with(&child, move |child| {
                let (id, created) = dir.lock().unwrap().get_or_create(CHILD_MM).unwrap();
                assert!(created && id != parent_id, "the child must get its own context");
                let engine = child.ctx.enter(&child.p).expect("empty child queue runs");
                assert_eq!(engine.translate(parent_va, 8, Access::READ).unwrap_err(), XlateFault::NotRegistered);
                drop(engine);
                // The child registers its own buffer at the same address.
                let desc = child.register(parent_va, PAGE);
                child.rebuild().unwrap();
                let engine = child.ctx.enter(&child.p).unwrap();
                let t = engine.translate(parent_va, 8, Access::WRITE).unwrap();
                assert_eq!(t.region, desc.handle);
                child.p.touch(t.mapping);
            })
        };
        let report = parent.kernel_invalidate(0, Event::ProtectionPage, true);
        assert!(report.callback_result());
        // The parent's next fault looks its context up by its own mm.
        assert_eq!(dir.lock().unwrap().get_or_create(PARENT_MM), Ok((parent_id, false)));
        parent.rebuild().unwrap();
        if let Some(exit) = parent.engine_command(0) {
            assert_eq!(exit, EngineExit::Completed);
        }
        child_thread.join().unwrap();
        assert!(matches!(dir.lock().unwrap().lookup(CHILD_MM), warpq_notifier::context::Lookup::Live(_)));
        parent.check_end();
        child.check_end();
    });
}

/// (8) An unregister ioctl removes the region a fault is rebuilding, and a
/// new region reuses the slot: the fault's pin never lands in the new
/// region (slot generation), and no pin leaks.
#[test]
fn m8_unregister_vs_fault_rebuild() {
    model_world("8 unregister vs fault rebuild", 3, STALE, |w| {
        let fault = spawn_with(w, |w| {
            w.rebuild().unwrap();
        });
        let old = w.regions[0];
        w.ctx.unregister(&mut w.lock.lock(), &w.p, &w.cfg, old.handle).unwrap();
        let new = w.register(0x80000, PAGE);
        assert_eq!(new.handle.slot(), old.handle.slot());
        fault.join().unwrap();
    });
}

/// (7) The zap worker races a fault that rebuilds and maps the ring page:
/// a stale queue must never be left with its ring mapped and no zap to come.
#[test]
fn m7_zap_worker_vs_rebuild() {
    model_world("7 zap worker vs rebuild", 3, RUNNING, |w| {
        // The ring PTE, under its page-table lock.
        let ring_pte = Arc::new(Mutex::new(true));
        let fault = {
            let ring_pte = ring_pte.clone();
            spawn_with(w, move |w| {
                if w.rebuild().is_ok() {
                    *ring_pte.lock().unwrap() = true;
                    w.ctx.ring_mapped(&w.p);
                }
            })
        };
        w.kernel_invalidate(0, Event::Clear, true);
        // The zap work item runs after it was queued.
        w.p.run_zap_worker(&w.ctx, &ring_pte);
        fault.join().unwrap();
        // Work queued meanwhile runs eventually.
        w.p.run_zap_worker(&w.ctx, &ring_pte);
        let mapped = *ring_pte.lock().unwrap();
        assert!(!(w.ctx.gate().is_stale() && mapped), "stale queue with its ring mapped and no zap to come");
    });
}

/// (9) The engine finds its chunk torn down and asks for a rebuild while a
/// fault rebuilds the context: either the rebuild saw the want and mapped
/// the chunk (the queue runs), or it ran first and the queue is left stale
/// with a zap queued, so the owner's next touch of the ring rebuilds. Never
/// stale without a zap to come, never a touch of an unmapped chunk.
#[test]
fn m9_engine_wants_vs_fault_rebuild() {
    model_world("9 engine wants vs fault rebuild", 3, RUNNING, |w| {
        // Torn down before the race (the queue keeps running).
        let report = w.kernel_invalidate(0, Event::Clear, true);
        assert!(matches!(report.outcome, InvalidateOutcome::TornDown { .. }));
        assert!(w.ctx.gate().is_running());
        let engine = spawn_with(w, |w| {
            let _ = w.engine_command(0);
        });
        let fault = spawn_with(w, |w| {
            w.rebuild().unwrap();
        });
        engine.join().unwrap();
        fault.join().unwrap();
        let stale = w.ctx.gate().is_stale();
        assert!(!stale || w.p.zap_pending.load(Ordering::Acquire), "stale queue without a zap to come");
        if stale {
            // The owner's next touch: the fault rebuilds what was asked.
            w.rebuild().unwrap();
            assert!(w.ctx.gate().is_running());
            assert!(matches!(w.state(0), StateKind::Mapped { .. }));
        }
    });
}

/// A world with one read-write region of two 64 KiB chunks, both mapped.
fn two_chunk_region() -> (Arc<World>, RegionDesc) {
    let w = World::new(PARENT_MM, Setup { regions: 0, ..STALE });
    let mut key = w.lock.lock();
    let desc = w.ctx.register(&mut key, &w.p, &w.cfg, request(0x100000, 2 << 16, Access::READ_WRITE)).unwrap();
    w.ctx.arm(&mut key, &w.p, &w.cfg, desc.handle).unwrap();
    drop(key);
    assert_eq!(w.rebuild().unwrap().mapped, 2);
    (w, desc)
}

/// (10) Two chunks of one region: an invalidation of the first while the
/// engine runs a command on the second. The engine's touch of the second
/// is always of current, mapped pages; the first is never touched after
/// the teardown returned; the second stays mapped.
#[test]
fn m10_invalidate_one_chunk_vs_engine_in_another() {
    model("10 invalidate one chunk vs engine in another", 3, || {
        let (w, desc) = two_chunk_region();
        let second = desc.start + (1 << 16);
        let engine = {
            let w = w.clone();
            thread::spawn(move || {
                if let Some(engine) = w.ctx.enter(&w.p) {
                    let t = engine.translate(second, 8, Access::WRITE).expect("the second chunk stays mapped");
                    w.p.touch(t.mapping);
                    w.p.touch(t.mapping);
                    assert_eq!(engine.finish(), EngineExit::Completed);
                }
            })
        };
        let cur_seq = w.p.invalidate_start();
        let inv = warpq_notifier::teardown::Invalidation {
            start: desc.start,
            end: desc.start + PAGE,
            ..whole_region(desc, cur_seq, Event::Clear, true)
        };
        let report = invalidate(&w.ctx, &w.lock, &w.p, &w.cfg, &inv);
        w.p.invalidate_end();
        assert!(matches!(report.outcome, InvalidateOutcome::TornDown { chunks: 1, .. }));
        engine.join().unwrap();
        let info = w.ctx.region(&w.lock.lock(), desc.handle).unwrap();
        assert_eq!(info.mapped_chunks, 1);
        assert!(w.ctx.mapping(&w.lock.lock(), desc.handle, 1).is_some());
        let book = w.p.book();
        assert_eq!(book.live.len(), 1);
    });
}

/// (16) Overtaking: the engine finds chunk 0 torn down, asks for its
/// rebuild (the queue goes stale) and, inside the stale gate, runs a
/// command on chunk 1 while the rebuild worker maps chunk 0 and an
/// invalidation tears chunk 1 down. Every touch is of mapped, current
/// pages; the rebuild maps chunk 0 (or the queue stays stale with a zap to
/// come); the set-aside command then runs on a mapping made after the
/// teardown.
#[test]
fn m16_overtake_while_a_rebuild_and_a_teardown_run() {
    model("16 overtake vs rebuild vs teardown", 3, || {
        let (w, desc) = two_chunk_region();
        let (first, second) = (desc.start, desc.start + (1 << 16));
        let chunk = |start: u64, seq: u64| warpq_notifier::teardown::Invalidation {
            start,
            end: start + PAGE,
            ..whole_region(desc, seq, Event::Clear, true)
        };
        // Chunk 0 torn down before the race; the queue keeps running.
        let seq = w.p.invalidate_start();
        let _ = invalidate(&w.ctx, &w.lock, &w.p, &w.cfg, &chunk(first, seq));
        w.p.invalidate_end();
        let engine = {
            let w = w.clone();
            thread::spawn(move || {
                // A paused gate (the teardown, the worker publishing) keeps
                // the engine out: it comes back, as the pool does.
                let enter = || loop {
                    match w.ctx.enter(&w.p) {
                        Some(engine) => return engine,
                        None => thread::yield_now(),
                    }
                };
                let engine = enter();
                match engine.translate(first, 8, Access::WRITE) {
                    Err(XlateFault::NeedsRebuild { touched }) => {
                        let _ = engine.request_rebuild(touched);
                        w.p.schedule_zap();
                    }
                    // The worker cannot have run: nobody asked for it.
                    other => panic!("chunk 0 must wait for its rebuild: {other:?}"),
                }
                // The command behind it, on chunk 1: the stale gate lets
                // the engine in; it runs, or finds its chunk torn down.
                let engine = enter();
                if let Ok(t) = engine.translate(second, 8, Access::WRITE) {
                    w.p.touch(t.mapping);
                    w.p.touch(t.mapping);
                }
                let _ = engine.finish();
            })
        };
        let worker = {
            let w = w.clone();
            thread::spawn(move || {
                let _ = w.rebuild();
            })
        };
        let seq = w.p.invalidate_start();
        let _ = invalidate(&w.ctx, &w.lock, &w.p, &w.cfg, &chunk(second, seq));
        w.p.invalidate_end();
        engine.join().unwrap();
        worker.join().unwrap();
        let stale = w.ctx.gate().is_stale();
        assert!(!stale || w.p.zap_pending.load(Ordering::Acquire), "stale queue without a zap to come");
        if stale {
            w.rebuild().unwrap();
        }
        // The set-aside command's retry.
        let engine = w.ctx.enter(&w.p).expect("the gate admits the engine");
        let t = engine.translate(first, 8, Access::WRITE).expect("chunk 0 mapped for the waiting command");
        w.p.touch(t.mapping);
        assert_eq!(engine.finish(), EngineExit::Completed);
        let book = w.p.book();
        let info = w.ctx.region(&w.lock.lock(), desc.handle).unwrap();
        assert_eq!(book.live.len() as u32, info.mapped_chunks, "pins balance with mapped chunks");
    });
}

/// (17) Device-address eviction vs use: the context's share holds one
/// chunk; the engine runs a command on chunk 0 while the rebuild worker
/// maps chunk 1, which a set-aside command waits for, and so must evict
/// chunk 0. The engine never touches an evicted mapping (the eviction
/// drains it first); chunk 1, reserved by its waiting command, is mapped
/// at the end even if chunk 0 was asked for again meanwhile (then both
/// are: over the share rather than evicting a waiter's chunk); otherwise
/// the share holds; pins balance.
#[test]
fn m17_eviction_vs_engine_use() {
    model("17 eviction vs engine use", 3, || {
        let (w, desc) = two_chunk_region();
        let (first, second) = (desc.start, desc.start + (1 << 16));
        let share = Config { device_share: 1 << 16, ..w.cfg };
        // Chunk 1 torn down before the race, and waited for.
        let seq = w.p.invalidate_start();
        let inv = warpq_notifier::teardown::Invalidation {
            start: second,
            end: second + PAGE,
            ..whole_region(desc, seq, Event::Clear, true)
        };
        let _ = invalidate(&w.ctx, &w.lock, &w.p, &w.cfg, &inv);
        w.p.invalidate_end();
        {
            let engine = w.ctx.enter(&w.p).expect("a running gate admits the engine");
            match engine.translate(second, 8, Access::WRITE) {
                Err(XlateFault::NeedsRebuild { touched }) => {
                    let _ = engine.request_rebuild(touched);
                }
                other => panic!("chunk 1 was torn down: {other:?}"),
            }
        }
        let engine = {
            let w = w.clone();
            thread::spawn(move || {
                // A paused gate (the eviction, the publish) keeps the
                // engine out: it comes back, as the pool does.
                let engine = loop {
                    match w.ctx.enter(&w.p) {
                        Some(engine) => break engine,
                        None => thread::yield_now(),
                    }
                };
                match engine.translate(first, 8, Access::WRITE) {
                    Ok(t) => {
                        w.p.touch(t.mapping);
                        w.p.touch(t.mapping);
                        let _ = engine.finish();
                        false
                    }
                    Err(XlateFault::NeedsRebuild { touched }) => {
                        let _ = engine.request_rebuild(touched);
                        true
                    }
                    Err(other) => panic!("chunk 0 is mapped or evicted: {other:?}"),
                }
            })
        };
        let worker = {
            let w = w.clone();
            thread::spawn(move || {
                let report = rebuild(&w.ctx, &w.lock, &w.p, &share).expect("the rebuild maps chunk 1");
                assert!(report.evicted >= 1, "one chunk of share: chunk 0 must go first");
            })
        };
        let waits_again = engine.join().unwrap();
        worker.join().unwrap();
        let key = w.lock.lock();
        // Reserved by the command that waits for it: never evicted for the
        // chunk the other command then asks for.
        assert!(w.ctx.mapping(&key, desc.handle, 1).is_some(), "chunk 1 mapped for its command");
        let info = w.ctx.region(&key, desc.handle).unwrap();
        if !waits_again {
            assert_eq!(info.mapped_chunks, 1, "the share holds one chunk");
        }
        assert_eq!(w.p.book().live.len() as u32, info.mapped_chunks, "pins balance with mapped chunks");
    });
}

/// (11) Fork's write-protect (PROTECTION_PAGE, under `filtered`) while the
/// engine writes into the region: once the callback returned, no device
/// write may go through a mapping made before it (the write right was
/// revoked: the chunk was torn down), and the next write goes through a
/// rebuilt mapping.
#[test]
fn m11_write_protect_vs_engine_write() {
    model("11 write-protect vs engine write", 3, || {
        let w = {
            let mut w = World::new(PARENT_MM, Setup { regions: 0, ..STALE });
            Arc::get_mut(&mut w).expect("not shared yet").cfg.policy = Policy::Filtered;
            w
        };
        let mut key = w.lock.lock();
        let desc = w.ctx.register(&mut key, &w.p, &w.cfg, request(0x10000, PAGE, Access::READ_WRITE)).unwrap();
        w.ctx.arm(&mut key, &w.p, &w.cfg, desc.handle).unwrap();
        drop(key);
        w.rebuild().unwrap();
        let engine = {
            let w = w.clone();
            thread::spawn(move || {
                for _ in 0..2 {
                    let Some(engine) = w.ctx.enter(&w.p) else { continue };
                    match engine.translate(desc.start, 8, Access::WRITE) {
                        Ok(t) => {
                            w.p.write(t.mapping);
                            w.p.write(t.mapping);
                            engine.finish();
                        }
                        Err(XlateFault::NeedsRebuild { touched }) => {
                            engine.request_rebuild(touched);
                        }
                        Err(e) => panic!("{e:?}"),
                    }
                }
            })
        };
        let cur_seq = w.p.invalidate_start();
        let inv = whole_region(desc, cur_seq, Event::ProtectionPage, true);
        let report = invalidate(&w.ctx, &w.lock, &w.p, &w.cfg, &inv);
        assert!(report.callback_result());
        w.p.write_protect(desc.handle.slot());
        w.p.invalidate_end();
        engine.join().unwrap();
        // The owner's next fault or ioctl: the chunk is rebuilt if the
        // engine asked for it, and writes go through the new mapping.
        w.rebuild().unwrap();
        let engine = w.ctx.enter(&w.p);
        if let Some(engine) = engine {
            if let Ok(t) = engine.translate(desc.start, 8, Access::WRITE) {
                w.p.write(t.mapping);
            }
            engine.finish();
        }
    });
}

/// (12) An munmap (UNMAP) of a chunk a command waits for, racing the
/// rebuild that would map it: whatever the order the chunk ends dead (an
/// UNMAP is final: no rebuild maps the range again, so the device never
/// reaches a later mapping at that address), the queue does not stay stale
/// for it, and the command then faults instead of waiting.
#[test]
fn m12_unmap_vs_rebuild_of_a_wanted_chunk() {
    model_world("12 unmap vs the rebuild of a wanted chunk", 3, RUNNING, |w| {
        let report = w.kernel_invalidate(0, Event::Clear, true);
        assert!(matches!(report.outcome, InvalidateOutcome::TornDown { .. }));
        assert_eq!(w.engine_command(0), Some(EngineExit::Completed));
        assert!(w.ctx.gate().is_stale(), "the command waits for the chunk");
        let fault = spawn_with(w, |w| {
            let _ = w.rebuild();
        });
        assert!(w.kernel_invalidate(0, Event::Unmap, true).callback_result());
        fault.join().unwrap();
        assert_eq!(w.state(0), StateKind::Dead);
        assert!(w.ctx.gate().is_running(), "a dead chunk leaves nothing to wait for");
        let engine = w.ctx.enter(&w.p).expect("the queue runs");
        let region = w.regions[0];
        assert!(matches!(engine.translate(region.start, 8, Access::WRITE), Err(XlateFault::Dead)));
        assert_eq!(engine.finish(), EngineExit::Completed);
    });
}

/// One submitter's side of the need-wakeup handshake: publish the tail,
/// SeqCst fence, read the ring's flag; set, make the WAKE call (a kick).
fn submit_one(pool: &PoolState, tail: &loom::sync::atomic::AtomicU32, flag: &loom::sync::atomic::AtomicBool) {
    use loom::sync::atomic::{fence, Ordering::SeqCst};
    tail.store(1, SeqCst);
    fence(SeqCst);
    if flag.load(SeqCst) {
        pool.kick();
    }
}

/// A pool worker that found nothing in its pass going to sleep, as the
/// driver's `EnginePool::sleep` does: the kick count, the last sleeper
/// sets the flag, everyone looks for work once more. Returns the sleep and
/// whether it saw work (then it stays awake).
fn worker_sleeps(
    pool: &PoolState,
    tail: &loom::sync::atomic::AtomicU32,
    flag: &loom::sync::atomic::AtomicBool,
) -> (Sleep, bool) {
    use loom::sync::atomic::{fence, Ordering::SeqCst};
    let sleep = pool.begin_sleep();
    if sleep.last {
        flag.store(true, SeqCst);
    }
    // The driver's full barrier between the flags and the second look
    // (loom, like the kernel's smp_mb(), needs the fence for Dekker's
    // pattern: SeqCst accesses alone are AcqRel to it).
    fence(SeqCst);
    let work = tail.load(SeqCst) != 0;
    (sleep, work)
}

/// (13) The engine pool falls asleep while a process submits through its
/// ring: whatever the order, either the worker sees the submission before
/// it sleeps, or the submitter sees the need-wakeup flag and kicks the pool
/// after the worker read the kick count (so the worker wakes). Mutation
/// checks: without the worker's second look for work, or without the fence
/// before it, this model fails.
#[test]
fn m13_pool_sleep_vs_submitter() {
    model("13 pool sleep vs submitter", 3, || {
        let pool = Arc::new(PoolState::new());
        let tail = Arc::new(loom::sync::atomic::AtomicU32::new(0));
        let flag = Arc::new(loom::sync::atomic::AtomicBool::new(false));
        pool.worker_started();
        let submitter = {
            let (pool, tail, flag) = (pool.clone(), tail.clone(), flag.clone());
            thread::spawn(move || submit_one(&pool, &tail, &flag))
        };
        let (sleep, saw_work) = worker_sleeps(&pool, &tail, &flag);
        submitter.join().unwrap();
        assert!(saw_work || pool.kicked_since(&sleep), "the pool sleeps with a submission nobody kicks it for");
    });
}

/// (14) Two workers fall asleep one after the other while a process
/// submits: only the last one sets the flag; still, the submission is seen
/// by a worker or kicks one that sleeps. And a worker that wakes first
/// clears the flag only when it is the first awake.
#[test]
fn m14_two_workers_sleep_vs_submitter() {
    model("14 two workers sleep vs submitter", 3, || {
        let pool = Arc::new(PoolState::new());
        let tail = Arc::new(loom::sync::atomic::AtomicU32::new(0));
        let flag = Arc::new(loom::sync::atomic::AtomicBool::new(false));
        pool.worker_started();
        pool.worker_started();
        let other = {
            let (pool, tail, flag) = (pool.clone(), tail.clone(), flag.clone());
            thread::spawn(move || worker_sleeps(&pool, &tail, &flag))
        };
        let submitter = {
            let (pool, tail, flag) = (pool.clone(), tail.clone(), flag.clone());
            thread::spawn(move || submit_one(&pool, &tail, &flag))
        };
        let mine = worker_sleeps(&pool, &tail, &flag);
        let theirs = other.join().unwrap();
        submitter.join().unwrap();
        assert!(pool.all_asleep(), "both workers are past begin_sleep");
        let served = [mine, theirs].iter().any(|(sleep, saw)| *saw || pool.kicked_since(sleep));
        assert!(served, "both workers sleep with a submission nobody kicks them for");
        assert!(pool.end_sleep(), "the first worker to wake clears the flags");
        assert!(!pool.end_sleep());
    });
}

/// (15) A queue's engine claim: two workers race for one queue; exactly
/// one runs it, and the next claim sees what the holder wrote.
#[test]
fn m15_engine_claim() {
    model("15 engine claim", 3, || {
        let claim = Arc::new(EngineClaim::new());
        let ran = Arc::new(loom::cell::UnsafeCell::new(0u32));
        let worker = |claim: Arc<EngineClaim>, ran: Arc<loom::cell::UnsafeCell<u32>>| {
            move || {
                if claim.try_claim() {
                    // SAFETY: the claim makes this the only access.
                    ran.with_mut(|p| unsafe { *p += 1 });
                    claim.release();
                }
            }
        };
        let a = thread::spawn(worker(claim.clone(), ran.clone()));
        let b = thread::spawn(worker(claim.clone(), ran.clone()));
        a.join().unwrap();
        b.join().unwrap();
        assert!(!claim.is_claimed());
        assert!(claim.try_claim());
        // SAFETY: claimed, and both workers joined.
        let runs = ran.with(|p| unsafe { *p });
        assert!((1..=2).contains(&runs), "{runs} runs");
    });
}
