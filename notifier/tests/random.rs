// SPDX-License-Identifier: GPL-2.0

//! Seeded random operations over the whole state machine: processes (mms)
//! come and go and fork, contexts are created at fault time, regions are
//! registered, armed and unregistered, the kernel invalidates random ranges
//! with random events under both policies (sometimes non-blocking), faults
//! rebuild with injected collisions and pin failures, the engine runs
//! commands, the zap worker runs, contexts are released and reaped.
//!
//! After every step the invariants are checked: pins match what is mapped,
//! the engine only touched pages that were pinned, current and of its own
//! mm, the stale state equals "a region needs a rebuild", a stale queue
//! never keeps its ring mapped without a zap pending, every command
//! completes exactly once, every context is released exactly once.
//!
//! `WARPQ_SEED=<n>` replays one seed; `WARPQ_STEPS=<n>` sets the steps per
//! seed, `WARPQ_SEEDS=<n>` the number of seeds.

#![cfg(not(loom))]

mod common;

use std::collections::{BTreeMap, VecDeque};

use common::{Rng, StdLock, TestMapping, TestPlatform};
use warpq_notifier::context::{
    Config, ContextId, ContextLock, ContextTable, CreateError, MmContext, ReleaseError,
    ReleaseOutcome,
};
use warpq_notifier::gate::EngineExit;
use warpq_notifier::platform::PinError;
use warpq_notifier::policy::{Event, Policy};
use warpq_notifier::rebuild::{rebuild, RebuildError};
use warpq_notifier::region::{Access, RegionDesc, RegionError, StateKind, XlateFault};
use warpq_notifier::teardown::{invalidate, InvalidateOutcome, Invalidation};

const PAGE: u64 = 4096;
const VA_PAGES: u64 = 48;
const CONTEXTS: usize = 4;
const REGIONS: usize = 6;

type Ctx = MmContext<TestMapping, REGIONS>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Ok,
    Fault(XlateFault),
    Released,
}

#[derive(Clone, Copy, Debug)]
struct Cmd {
    id: u64,
    va: u64,
    len: u64,
    access: Access,
}

struct Bundle {
    id: ContextId,
    ctx: Ctx,
    lock: StdLock,
    platform: TestPlatform,
    /// Regions whose interval notifier is inserted (armed).
    notifiers: Vec<RegionDesc>,
    /// Registered, notifier not inserted yet.
    unarmed: Vec<RegionDesc>,
    /// Submitted, not yet executed (the ring).
    ring: VecDeque<Cmd>,
    ring_mapped: bool,
    released: bool,
}

struct Sim {
    rng: Rng,
    cfg: Config,
    dir: ContextTable<CONTEXTS>,
    slots: Vec<Option<Bundle>>,
    /// Processes alive (mm ids).
    mms: Vec<usize>,
    /// mm ids free for reuse (their context was reaped: mmdrop'ed).
    free_mms: Vec<usize>,
    next_mm: usize,
    next_cmd: u64,
    completions: BTreeMap<u64, Option<Status>>,
    releases: BTreeMap<(usize, u32), u32>,
    log: VecDeque<String>,
    stats: BTreeMap<&'static str, u64>,
}

impl Sim {
    fn new(seed: u64) -> Self {
        Self {
            rng: Rng::new(seed),
            cfg: Config {
                policy: Policy::Strict,
                drain_timeout_ns: 1_000,
                max_retries: 3,
            },
            dir: ContextTable::new(),
            slots: (0..CONTEXTS).map(|_| None).collect(),
            mms: vec![0x1000],
            free_mms: Vec::new(),
            next_mm: 0x2000,
            next_cmd: 1,
            completions: BTreeMap::new(),
            releases: BTreeMap::new(),
            log: VecDeque::new(),
            stats: BTreeMap::new(),
        }
    }

    fn note(&mut self, line: String) {
        if self.log.len() == 40 {
            self.log.pop_front();
        }
        self.log.push_back(line);
    }

    fn count(&mut self, what: &'static str) {
        *self.stats.entry(what).or_default() += 1;
    }

    fn complete(&mut self, cmd: u64, status: Status) {
        let slot = self.completions.get_mut(&cmd).expect("unknown command");
        assert!(
            slot.is_none(),
            "command {cmd} completed twice ({slot:?} then {status:?})"
        );
        *slot = Some(status);
    }

    /// The context of `mm` as the fault handler gets it (by the faulting
    /// mm), created on first use.
    fn context_of(&mut self, mm: usize) -> Option<usize> {
        match self.dir.get_or_create(mm) {
            Ok((id, created)) => {
                if created {
                    assert!(self.slots[id.slot()].is_none(), "slot reused before reap");
                    let (ctx, key) = Ctx::new(mm);
                    let platform = TestPlatform::new(mm);
                    platform.state().record = false;
                    self.slots[id.slot()] = Some(Bundle {
                        id,
                        ctx,
                        lock: StdLock::new(key),
                        platform,
                        notifiers: Vec::new(),
                        unarmed: Vec::new(),
                        ring: VecDeque::new(),
                        ring_mapped: true,
                        released: false,
                    });
                    self.count("context created");
                }
                let bundle = self.slots[id.slot()]
                    .as_ref()
                    .expect("live context has storage");
                assert_eq!(
                    bundle.ctx.mm(),
                    mm,
                    "directory returned another mm's context"
                );
                assert_eq!(bundle.id, id);
                Some(id.slot())
            }
            Err(CreateError::Released(_)) => {
                self.count("fault on released mm");
                None
            }
            Err(CreateError::Full) => None,
            Err(CreateError::InvalidMm) => unreachable!(),
        }
    }

    fn random_mm(&mut self) -> Option<usize> {
        self.rng.pick(&self.mms).copied()
    }

    fn random_live_bundle(&mut self) -> Option<usize> {
        let mm = self.random_mm()?;
        self.context_of(mm)
    }

    fn bundle(&self, slot: usize) -> &Bundle {
        self.slots[slot].as_ref().unwrap()
    }

    fn random_access(&mut self) -> Access {
        *self
            .rng
            .pick(&[Access::READ, Access::WRITE, Access::READ_WRITE])
            .unwrap()
    }

    fn step(&mut self) {
        let roll = self.rng.below(100);
        match roll {
            0..=11 => self.op_register(),
            12..=14 => self.op_arm(),
            15..=19 => self.op_unregister(),
            20..=33 => self.op_fault(),
            34..=49 => self.op_invalidate(),
            50..=69 => self.op_engine(),
            70..=77 => self.op_zap_worker(),
            78..=81 => self.op_fork(),
            82..=84 => self.op_exit(),
            85..=87 => self.op_reap(),
            88..=89 => self.op_new_process(),
            90..=94 => self.op_policy(),
            _ => self.op_engine(),
        }
    }

    fn op_policy(&mut self) {
        self.cfg.policy = if self.rng.chance(50) {
            Policy::Strict
        } else {
            Policy::Filtered
        };
        let policy = self.cfg.policy;
        self.note(format!("policy {policy:?}"));
    }

    fn op_new_process(&mut self) {
        let mm = match self.free_mms.pop() {
            Some(mm) if self.rng.chance(50) => mm,
            Some(mm) => {
                self.free_mms.push(mm);
                self.fresh_mm()
            }
            None => self.fresh_mm(),
        };
        self.mms.push(mm);
        self.note(format!("new process mm {mm:#x}"));
    }

    fn fresh_mm(&mut self) -> usize {
        let mm = self.next_mm;
        self.next_mm += 0x1000;
        mm
    }

    fn op_register(&mut self) {
        let Some(slot) = self.random_live_bundle() else {
            return;
        };
        let start = self.rng.below(VA_PAGES) * PAGE + if self.rng.chance(10) { 123 } else { 0 };
        let len = (1 + self.rng.below(4)) * PAGE - if self.rng.chance(10) { 7 } else { 0 };
        let access = self.random_access();
        let arm_now = self.rng.chance(80);
        let cfg = self.cfg;
        let b = self.slots[slot].as_mut().unwrap();
        let result = b
            .ctx
            .register(&mut b.lock.lock(), &b.platform, &cfg, start, len, access);
        match result {
            Ok(desc) => {
                if arm_now {
                    // The register ioctl: notifier inserted, arm, pin.
                    b.ctx
                        .arm(&mut b.lock.lock(), &b.platform, &cfg, desc.handle)
                        .unwrap();
                    b.notifiers.push(desc);
                    let _ = rebuild(&b.ctx, &b.lock, &b.platform, &cfg);
                } else {
                    b.unarmed.push(desc);
                }
                self.note(format!(
                    "register slot {slot} {start:#x}+{len:#x} {access:?} -> {:#x}",
                    desc.handle.to_raw()
                ));
                self.count("registered");
            }
            Err(RegionError::Overlaps(_)) | Err(RegionError::TableFull) => {
                self.count("register refused")
            }
            Err(RegionError::Released) => assert!(b.released),
            Err(e) => panic!("register failed: {e:?}"),
        }
    }

    fn op_arm(&mut self) {
        let Some(slot) = self.random_live_bundle() else {
            return;
        };
        let cfg = self.cfg;
        let b = self.slots[slot].as_mut().unwrap();
        if let Some(desc) = b.unarmed.pop() {
            // The rest of the register ioctl: notifier inserted, arm, pin.
            b.ctx
                .arm(&mut b.lock.lock(), &b.platform, &cfg, desc.handle)
                .unwrap();
            b.notifiers.push(desc);
            let result = rebuild(&b.ctx, &b.lock, &b.platform, &cfg);
            self.note(format!(
                "arm slot {slot} {:#x}: {result:?}",
                desc.handle.to_raw()
            ));
        }
    }

    fn op_unregister(&mut self) {
        let Some(slot) = self.random_live_bundle() else {
            return;
        };
        let cfg = self.cfg;
        let pick_armed = self.rng.chance(80);
        let index = self.rng.next_u64() as usize;
        let b = self.slots[slot].as_mut().unwrap();
        let list = if pick_armed {
            &mut b.notifiers
        } else {
            &mut b.unarmed
        };
        if list.is_empty() {
            return;
        }
        let desc = list.remove(index % list.len());
        let report = b
            .ctx
            .unregister(&mut b.lock.lock(), &b.platform, &cfg, desc.handle)
            .unwrap();
        assert_eq!(report.desc, desc);
        // Then the driver removes the notifier (already out of `notifiers`).
        self.note(format!(
            "unregister slot {slot} {:#x}",
            desc.handle.to_raw()
        ));
        self.count("unregistered");
    }

    fn op_fault(&mut self) {
        let Some(slot) = self.random_live_bundle() else {
            return;
        };
        let collisions = if self.rng.chance(20) {
            1 + self.rng.below(5) as u32
        } else {
            0
        };
        let transient = self.rng.chance(5);
        let cfg = self.cfg;
        let b = self.slots[slot].as_mut().unwrap();
        {
            let mut s = b.platform.state();
            s.inject_collisions = collisions;
            s.inject_pin = if transient {
                vec![PinError::Transient]
            } else {
                Vec::new()
            };
        }
        let result = rebuild(&b.ctx, &b.lock, &b.platform, &cfg);
        {
            let mut s = b.platform.state();
            s.inject_collisions = 0;
            s.inject_pin.clear();
        }
        match result {
            Ok(report) => {
                // The fault maps the ring page, then re-checks.
                b.ring_mapped = true;
                b.ctx.ring_mapped(&b.platform);
                let key = b.lock.lock();
                assert_eq!(report.running, !b.ctx.needs_rebuild(&key));
                drop(key);
                self.note(format!("fault slot {slot}: {report:?}"));
                self.count("rebuild ok");
                if report.retries > 0 {
                    self.count("rebuild with collisions");
                }
            }
            Err(RebuildError::RetriesExhausted { .. }) => self.count("rebuild exhausted"),
            Err(RebuildError::PinFailed(_)) => self.count("rebuild pin failed"),
            Err(RebuildError::Released) => assert!(b.released),
            Err(e) => panic!("rebuild failed: {e:?}"),
        }
    }

    /// The kernel invalidates `[start, end)` of one mm: every armed notifier
    /// overlapping the range gets the callback; then, unless a callback
    /// refused, the kernel changes the page tables.
    fn kernel_invalidate(
        &mut self,
        slot: usize,
        start: u64,
        end: u64,
        event: Event,
        blockable: bool,
    ) -> bool {
        let cfg = self.cfg;
        let b = self.slots[slot].as_mut().unwrap();
        let cur_seq = b.platform.invalidate_start();
        let mut proceed = true;
        let mut torn = 0;
        for desc in b.notifiers.iter().filter(|d| d.overlaps(start, end)) {
            let report = invalidate(
                &b.ctx,
                &b.lock,
                &b.platform,
                &cfg,
                &Invalidation {
                    region: *desc,
                    cur_seq,
                    start,
                    end,
                    event,
                    blockable,
                    owner_is_us: false,
                },
            );
            if blockable {
                assert!(
                    report.callback_result(),
                    "a blockable callback must not fail"
                );
            }
            if let InvalidateOutcome::TornDown { .. } = report.outcome {
                torn += 1;
            }
            proceed &= report.callback_result();
        }
        let affected: Vec<_> = b
            .notifiers
            .iter()
            .chain(b.unarmed.iter())
            .filter(|d| d.overlaps(start, end))
            .map(|d| d.handle)
            .collect();
        if proceed {
            for handle in affected {
                let roll = self.rng.below(100);
                let platform = &self.slots[slot].as_ref().unwrap().platform;
                match event {
                    Event::Unmap => {
                        platform.change_pages(handle);
                        if roll < 40 {
                            platform.make_gone(handle);
                        }
                    }
                    Event::Clear | Event::Release | Event::Migrate | Event::Exclusive => {
                        platform.change_pages(handle)
                    }
                    Event::ProtectionVma => platform.change_write_right(handle, roll < 30),
                    Event::ProtectionPage | Event::SoftDirty => {}
                }
            }
        }
        self.slots[slot].as_ref().unwrap().platform.invalidate_end();
        self.note(format!(
            "invalidate slot {slot} [{start:#x},{end:#x}) {event:?} blockable={blockable} policy={:?}: torn {torn} proceed {proceed}",
            cfg.policy
        ));
        if !proceed {
            self.count("non-blocking refused");
        }
        proceed
    }

    fn op_invalidate(&mut self) {
        let Some(slot) = self.random_live_bundle() else {
            return;
        };
        let (start, end) = if self.rng.chance(70) {
            let notifiers = self.bundle(slot).notifiers.clone();
            match self.rng.pick(&notifiers).copied() {
                Some(desc) => (
                    desc.start + self.rng.below(desc.len),
                    desc.end() + self.rng.below(2 * PAGE),
                ),
                None => return,
            }
        } else {
            let start = self.rng.below(VA_PAGES) * PAGE;
            (start, start + (1 + self.rng.below(8)) * PAGE)
        };
        let event = *self
            .rng
            .pick(&[
                Event::Unmap,
                Event::Clear,
                Event::ProtectionVma,
                Event::ProtectionPage,
                Event::SoftDirty,
                Event::Migrate,
                Event::Exclusive,
            ])
            .unwrap();
        let blockable = !self.rng.chance(15);
        self.kernel_invalidate(slot, start, end, event, blockable);
        self.count("invalidations");
    }

    fn op_engine(&mut self) {
        let Some(slot) = self.random_live_bundle() else {
            return;
        };
        // Submit a few commands: mostly inside this mm's regions, some at
        // another mm's regions (a fork child using the parent's addresses),
        // some anywhere.
        let submit = self.rng.below(4);
        let alive: Vec<usize> = self.slots.iter().flatten().map(|b| b.id.slot()).collect();
        for _ in 0..submit {
            let other = self.rng.pick(&alive).copied();
            let source = if self.rng.chance(25) {
                other.unwrap_or(slot)
            } else {
                slot
            };
            let notifiers = self.bundle(source).notifiers.clone();
            let target = self.rng.pick(&notifiers).copied();
            let (va, len, access) = match target {
                Some(desc) if self.rng.chance(85) => {
                    let off = self.rng.below(desc.len);
                    let len = 1 + self.rng.below(desc.len - off + 64);
                    let access = if self.rng.chance(70) {
                        desc.access
                    } else {
                        self.random_access()
                    };
                    (desc.start + off, len, access)
                }
                _ => (
                    self.rng.below(VA_PAGES * PAGE),
                    1 + self.rng.below(2 * PAGE),
                    self.random_access(),
                ),
            };
            let id = self.next_cmd;
            self.next_cmd += 1;
            self.completions.insert(id, None);
            self.slots[slot].as_mut().unwrap().ring.push_back(Cmd {
                id,
                va,
                len,
                access,
            });
        }
        // Run the engine until the ring is empty or the gate is shut.
        let mut done = Vec::new();
        {
            let b = self.slots[slot].as_mut().unwrap();
            while let Some(cmd) = b.ring.front().copied() {
                let Some(engine) = b.ctx.enter(&b.platform) else {
                    break;
                };
                b.ring.pop_front();
                let status = match engine.translate(cmd.va, cmd.len, cmd.access) {
                    Ok(t) => {
                        if let Err(why) = b
                            .platform
                            .check_touch(t.mapping, cmd.access.device_writes())
                        {
                            panic!("command {cmd:?}: {why}");
                        }
                        assert_eq!(t.mapping.region, t.region);
                        assert!(
                            b.notifiers.iter().any(|d| d.handle == t.region),
                            "translated through a region without a notifier"
                        );
                        Status::Ok
                    }
                    Err(fault) => Status::Fault(fault),
                };
                assert_eq!(
                    engine.finish(),
                    EngineExit::Completed,
                    "no reset in the single-threaded run"
                );
                done.push((cmd.id, status));
            }
        }
        for (id, status) in done {
            self.complete(id, status);
            self.count(match status {
                Status::Ok => "commands ok",
                Status::Fault(_) => "commands faulted",
                Status::Released => unreachable!(),
            });
        }
        self.note(format!("engine slot {slot}"));
    }

    fn op_zap_worker(&mut self) {
        let Some(slot) = self.random_live_bundle() else {
            return;
        };
        let b = self.slots[slot].as_mut().unwrap();
        let pending = std::mem::take(&mut b.platform.state().zap_pending);
        if pending && b.ctx.zap_needed() {
            b.ring_mapped = false;
            self.count("zaps");
        }
    }

    fn op_fork(&mut self) {
        let Some(parent) = self.random_live_bundle() else {
            return;
        };
        // Fork write-protects the parent's COW mappings: PROTECTION_PAGE over
        // everything. The child is a new mm; its context appears on its
        // first fault.
        self.kernel_invalidate(parent, 0, u64::MAX, Event::ProtectionPage, true);
        let child = self.fresh_mm();
        self.mms.push(child);
        self.note(format!("fork slot {parent} -> mm {child:#x}"));
        self.count("forks");
    }

    fn op_exit(&mut self) {
        let Some(mm) = self.random_mm() else { return };
        self.mms.retain(|&m| m != mm);
        self.exit_mm(mm);
    }

    /// exit_mmap: RELEASE over everything, then the context's release.
    fn exit_mm(&mut self, mm: usize) {
        let slot = match self.dir.lookup(mm) {
            warpq_notifier::context::Lookup::Live(id) => id.slot(),
            _ => {
                // No live context: the mm never used the device, or it was
                // released already.
                self.note(format!("exit mm {mm:#x} without live context"));
                return;
            }
        };
        self.kernel_invalidate(slot, 0, u64::MAX, Event::Release, true);
        let id = match self.dir.release(mm) {
            ReleaseOutcome::Released(id) => id,
            other => panic!("first release of {mm:#x} gave {other:?}"),
        };
        let cfg = self.cfg;
        let b = self.slots[slot].as_mut().unwrap();
        assert_eq!(b.id, id);
        let report = b
            .ctx
            .release(&mut b.lock.lock(), &b.platform, &cfg)
            .unwrap();
        assert_eq!(
            report.pages_unpinned, 0,
            "RELEASE already unpinned everything"
        );
        b.released = true;
        *self
            .releases
            .entry((id.slot(), id.generation()))
            .or_default() += 1;
        // A racing second release (file close) is a no-op at both levels.
        if self.rng.chance(50) {
            assert_eq!(self.dir.release(mm), ReleaseOutcome::AlreadyReleased(id));
            let b = self.slots[slot].as_mut().unwrap();
            assert_eq!(
                b.ctx.release(&mut b.lock.lock(), &b.platform, &cfg),
                Err(ReleaseError::AlreadyReleased)
            );
        }
        // The driver removes the notifiers and completes the queued commands.
        let b = self.slots[slot].as_mut().unwrap();
        b.notifiers.clear();
        b.unarmed.clear();
        let queued: Vec<u64> = b.ring.drain(..).map(|cmd| cmd.id).collect();
        for cmd in queued {
            self.complete(cmd, Status::Released);
        }
        self.note(format!("exit mm {mm:#x} slot {slot}"));
        self.count("releases");
    }

    fn op_reap(&mut self) {
        let released: Vec<usize> = self
            .slots
            .iter()
            .flatten()
            .filter(|b| b.released)
            .map(|b| b.id.slot())
            .collect();
        let Some(&slot) = self.rng.pick(&released) else {
            return;
        };
        let b = self.slots[slot].take().unwrap();
        assert!(b.platform.live_ids().is_empty());
        let mm = self.dir.reap(b.id).expect("reap a released context");
        assert_eq!(mm, b.ctx.mm());
        // mmdrop: the address may now be reused by a new mm.
        self.free_mms.push(mm);
        self.note(format!("reap slot {slot} mm {mm:#x}"));
        self.count("reaps");
    }

    fn check(&self) {
        for b in self.slots.iter().flatten() {
            let key = b.lock.lock();
            let gate = b.ctx.gate().snapshot();
            assert_eq!(
                (gate.pauses, gate.in_flight, gate.abandoned),
                (0, 0, 0),
                "gate left busy"
            );
            // Pins balanced with what is mapped.
            let mut mapped = std::collections::BTreeSet::new();
            let mut pages = 0;
            for info in b.ctx.regions(&key) {
                if let StateKind::Mapped { .. } = info.state {
                    let mapping = b.ctx.mapping(&key, info.desc.handle).unwrap();
                    assert_eq!(mapping.region, info.desc.handle);
                    // Nothing published holds replaced pages or a write right
                    // that may have been taken away.
                    if let Err(why) = b
                        .platform
                        .check_touch(mapping, info.desc.access.device_writes())
                    {
                        panic!("mapped region {:#x}: {why}", info.desc.handle.to_raw());
                    }
                    mapped.insert(mapping.id);
                    pages += info.pages;
                }
                let known = b
                    .notifiers
                    .iter()
                    .chain(b.unarmed.iter())
                    .any(|d| *d == info.desc);
                assert!(
                    known || b.released,
                    "table has a region the driver does not know"
                );
                if b.released {
                    assert_eq!(info.state, StateKind::Dead);
                }
            }
            assert_eq!(
                mapped,
                b.platform.live_ids(),
                "pins do not match mapped regions"
            );
            assert_eq!(pages, b.platform.pinned_pages());
            let s = b.platform.state();
            assert_eq!(s.pins - s.unpins, s.live.len() as u64);
            if b.released {
                assert!(gate.closed && s.live.is_empty());
            } else {
                assert_eq!(
                    gate.stale,
                    b.ctx.needs_rebuild(&key),
                    "stale must mean: a region needs a rebuild"
                );
                for desc in b.notifiers.iter().chain(b.unarmed.iter()) {
                    assert!(
                        b.ctx.region(&key, desc.handle).is_ok(),
                        "driver region missing from table"
                    );
                }
                // A stale queue must not keep its ring mapped unless a zap
                // is on its way, or a register ioctl (a pending region) will
                // rebuild it.
                let registering = b
                    .ctx
                    .regions(&key)
                    .any(|info| info.state == StateKind::Pending);
                let zap_to_come = s.zap_pending || registering;
                assert!(
                    !gate.stale || !b.ring_mapped || zap_to_come,
                    "stale queue, ring mapped, no zap"
                );
            }
            for cmd in &b.ring {
                assert_eq!(
                    self.completions[&cmd.id], None,
                    "queued command already completed"
                );
            }
        }
    }

    fn finish(&mut self) {
        for mm in std::mem::take(&mut self.mms) {
            self.exit_mm(mm);
            self.check();
        }
        for (cmd, status) in &self.completions {
            assert!(status.is_some(), "command {cmd} was never completed");
        }
        for ((slot, generation), count) in &self.releases {
            assert_eq!(
                *count, 1,
                "context {slot}/{generation} released {count} times"
            );
        }
        for b in self.slots.iter().flatten() {
            assert!(b.released, "context of mm {:#x} never released", b.ctx.mm());
            assert!(b.platform.live_ids().is_empty());
        }
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn run_seed(seed: u64, steps: u64) -> BTreeMap<&'static str, u64> {
    let mut sim = Sim::new(seed);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        for _ in 0..steps {
            sim.step();
            sim.check();
        }
        sim.finish();
    }));
    if let Err(panic) = outcome {
        eprintln!("random protocol test FAILED with seed {seed}; replay: WARPQ_SEED={seed} cargo test --test random");
        eprintln!("last steps:");
        for line in &sim.log {
            eprintln!("  {line}");
        }
        std::panic::resume_unwind(panic);
    }
    sim.stats
}

#[test]
fn random_operations_keep_the_invariants() {
    let steps = env_u64("WARPQ_STEPS").unwrap_or(400);
    let seeds: Vec<u64> = match env_u64("WARPQ_SEED") {
        Some(seed) => vec![seed],
        None => (1..=env_u64("WARPQ_SEEDS").unwrap_or(1000)).collect(),
    };
    let mut total: BTreeMap<&'static str, u64> = BTreeMap::new();
    for seed in &seeds {
        for (what, n) in run_seed(*seed, steps) {
            *total.entry(what).or_default() += n;
        }
    }
    println!("{} seeds x {steps} steps: {total:?}", seeds.len());
    // The run must actually exercise the interesting paths.
    for what in [
        "rebuild with collisions",
        "rebuild exhausted",
        "rebuild pin failed",
        "non-blocking refused",
        "commands ok",
        "commands faulted",
        "zaps",
        "forks",
        "releases",
        "reaps",
    ] {
        if seeds.len() > 20 {
            assert!(
                total.get(what).copied().unwrap_or(0) > 0,
                "never exercised: {what}"
            );
        }
    }
}
