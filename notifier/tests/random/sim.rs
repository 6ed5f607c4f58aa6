// SPDX-License-Identifier: GPL-2.0

//! The simulated driver and kernel: applying an operation (no random
//! numbers: picks are reduced modulo what exists) and the invariants
//! checked after every step.

use std::collections::{BTreeMap, VecDeque};

use warpq_notifier::context::{
    Config, ContextId, ContextLock, ContextTable, CreateError, Lookup, MmContext, ReleaseError, ReleaseOutcome,
};
use warpq_notifier::gate::EngineExit;
use warpq_notifier::platform::PinError;
use warpq_notifier::policy::{Event, Policy};
use warpq_notifier::rebuild::{rebuild, RebuildError};
use warpq_notifier::region::{Access, RegionDesc, RegionError, StateKind, XlateFault};
use warpq_notifier::teardown::{invalidate, InvalidateOutcome, Invalidation};

use super::common::{StdLock, TestMapping, TestPlatform};
use super::ops::{Acc, Op, Pick, Range, VA_PAGES};
use super::support::request;

const PAGE: u64 = 4096;
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

pub(crate) struct Sim {
    cfg: Config,
    dir: warpq_notifier::context::ContextTable<CONTEXTS>,
    slots: Vec<Option<Bundle>>,
    /// Processes alive (mm ids).
    mms: Vec<usize>,
    /// mm ids free for reuse (their context was reaped: mmdrop'ed).
    free_mms: Vec<usize>,
    next_mm: usize,
    next_cmd: u64,
    completions: BTreeMap<u64, Option<Status>>,
    releases: BTreeMap<(usize, u32), u32>,
    pub(crate) log: VecDeque<String>,
    pub(crate) stats: BTreeMap<&'static str, u64>,
}

fn pick<T: Copy>(items: &[T], p: Pick) -> Option<T> {
    (!items.is_empty()).then(|| items[p as usize % items.len()])
}

fn access(a: Acc) -> Access {
    match a {
        Acc::R => Access::READ,
        Acc::W => Access::WRITE,
        Acc::RW => Access::READ_WRITE,
    }
}

impl Sim {
    pub(crate) fn new() -> Self {
        Self {
            cfg: Config {
                policy: Policy::Strict,
                drain_timeout_ns: 1_000,
                max_retries: 3,
                chunk_shift: 16,
                // Three chunks: regions of up to a few chunks each, so
                // rebuilds evict all the time (and the invariants hold
                // through it).
                device_share: 3 << 16,
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
        assert!(slot.is_none(), "command {cmd} completed twice ({slot:?} then {status:?})");
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
                let bundle = self.slots[id.slot()].as_ref().expect("live context has storage");
                assert_eq!(bundle.ctx.mm(), mm, "directory returned another mm's context");
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

    /// The context of the live process `p` picks.
    fn live_bundle(&mut self, p: Pick) -> Option<usize> {
        let mm = pick(&self.mms, p)?;
        self.context_of(mm)
    }

    fn bundle(&self, slot: usize) -> &Bundle {
        self.slots[slot].as_ref().unwrap()
    }

    /// Applies one operation (the protocol's own assertions included).
    pub(crate) fn apply(&mut self, op: &Op) {
        match *op {
            Op::Register { mm, page, misalign, pages, short, access: a, arm_now } => {
                let start = page * PAGE + if misalign { 123 } else { 0 };
                let len = pages * PAGE - if short { 7 } else { 0 };
                self.register(mm, start, len, access(a), arm_now);
            }
            Op::Arm { mm } => self.arm(mm),
            Op::Unregister { mm, armed, region } => self.unregister(mm, armed, region),
            Op::Fault { mm, collisions, transient } => self.fault(mm, collisions, transient),
            Op::Invalidate { mm, range, event, blockable, rolls } => {
                let Some(slot) = self.live_bundle(mm) else {
                    return;
                };
                let (start, end) = match range {
                    Range::InRegion { region, off, extra } => match pick(&self.bundle(slot).notifiers, region) {
                        Some(desc) => (desc.start + off % desc.len, desc.end() + extra % (2 * PAGE)),
                        None => return,
                    },
                    Range::Pages { start, pages } => (start * PAGE, (start + pages) * PAGE),
                };
                self.kernel_invalidate(slot, start, end, event, blockable, rolls);
                self.count("invalidations");
            }
            Op::Submit { mm, other, region, off, len, access: a, keep_access } => {
                let Some(slot) = self.live_bundle(mm) else {
                    return;
                };
                let alive: Vec<usize> = self.slots.iter().flatten().map(|b| b.id.slot()).collect();
                let source = other.and_then(|p| pick(&alive, p)).unwrap_or(slot);
                let target = region.and_then(|p| pick(&self.bundle(source).notifiers, p));
                let (va, len, access) = match target {
                    Some(desc) => {
                        let off = off % desc.len;
                        let len = 1 + len % (desc.len - off + 64);
                        (desc.start + off, len, if keep_access { desc.access } else { access(a) })
                    }
                    None => (off % (VA_PAGES * PAGE), 1 + len % (2 * PAGE), access(a)),
                };
                let id = self.next_cmd;
                self.next_cmd += 1;
                self.completions.insert(id, None);
                self.slots[slot].as_mut().unwrap().ring.push_back(Cmd { id, va, len, access });
            }
            Op::Engine { mm } => self.engine(mm),
            Op::Zap { mm } => {
                let Some(slot) = self.live_bundle(mm) else {
                    return;
                };
                let b = self.slots[slot].as_mut().unwrap();
                let pending = std::mem::take(&mut b.platform.state().zap_pending);
                if pending && b.ctx.zap_needed() {
                    b.ring_mapped = false;
                    self.count("zaps");
                }
            }
            Op::Fork { mm } => {
                let Some(parent) = self.live_bundle(mm) else {
                    return;
                };
                // Fork write-protects the parent's COW mappings:
                // PROTECTION_PAGE over everything. The child is a new mm;
                // its context appears on its first fault.
                self.kernel_invalidate(parent, 0, u64::MAX, Event::ProtectionPage, true, [0; 4]);
                let child = self.fresh_mm();
                self.mms.push(child);
                self.note(format!("fork slot {parent} -> mm {child:#x}"));
                self.count("forks");
            }
            Op::Exit { mm, again } => {
                let Some(mm) = pick(&self.mms, mm) else {
                    return;
                };
                self.mms.retain(|&m| m != mm);
                self.exit_mm(mm, again);
            }
            Op::Reap { slot } => self.reap(slot),
            Op::NewProcess { reuse } => {
                let mm = match self.free_mms.pop() {
                    Some(mm) if reuse => mm,
                    Some(mm) => {
                        self.free_mms.push(mm);
                        self.fresh_mm()
                    }
                    None => self.fresh_mm(),
                };
                self.mms.push(mm);
                self.note(format!("new process mm {mm:#x}"));
            }
            Op::SetPolicy { strict } => {
                self.cfg.policy = if strict { Policy::Strict } else { Policy::Filtered };
                self.note(format!("policy {:?}", self.cfg.policy));
            }
        }
    }

    fn fresh_mm(&mut self) -> usize {
        let mm = self.next_mm;
        self.next_mm += 0x1000;
        mm
    }

    fn register(&mut self, mm: Pick, start: u64, len: u64, access: Access, arm_now: bool) {
        let Some(slot) = self.live_bundle(mm) else {
            return;
        };
        let cfg = self.cfg;
        let b = self.slots[slot].as_mut().unwrap();
        let result = b.ctx.register(&mut b.lock.lock(), &b.platform, &cfg, request(start, len, access));
        match result {
            Ok(desc) => {
                if arm_now {
                    // The register ioctl: notifier inserted, arm, pin.
                    b.ctx.arm(&mut b.lock.lock(), &b.platform, &cfg, desc.handle).unwrap();
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
            Err(RegionError::Overlaps(_)) | Err(RegionError::TableFull) => self.count("register refused"),
            Err(RegionError::Released) => assert!(b.released),
            Err(e) => panic!("register failed: {e:?}"),
        }
    }

    fn arm(&mut self, mm: Pick) {
        let Some(slot) = self.live_bundle(mm) else {
            return;
        };
        let cfg = self.cfg;
        let b = self.slots[slot].as_mut().unwrap();
        if let Some(desc) = b.unarmed.pop() {
            // The rest of the register ioctl: notifier inserted, arm, pin.
            b.ctx.arm(&mut b.lock.lock(), &b.platform, &cfg, desc.handle).unwrap();
            b.notifiers.push(desc);
            let result = rebuild(&b.ctx, &b.lock, &b.platform, &cfg);
            self.note(format!("arm slot {slot} {:#x}: {result:?}", desc.handle.to_raw()));
        }
    }

    fn unregister(&mut self, mm: Pick, armed: bool, index: Pick) {
        let Some(slot) = self.live_bundle(mm) else {
            return;
        };
        let cfg = self.cfg;
        let b = self.slots[slot].as_mut().unwrap();
        let list = if armed { &mut b.notifiers } else { &mut b.unarmed };
        if list.is_empty() {
            return;
        }
        let desc = list.remove(index as usize % list.len());
        let report = b.ctx.unregister(&mut b.lock.lock(), &b.platform, &cfg, desc.handle).unwrap();
        assert_eq!(report.desc, desc);
        // Then the driver removes the notifier (already out of `notifiers`).
        self.note(format!("unregister slot {slot} {:#x}", desc.handle.to_raw()));
        self.count("unregistered");
    }

    fn fault(&mut self, mm: Pick, collisions: u32, transient: bool) {
        let Some(slot) = self.live_bundle(mm) else {
            return;
        };
        let cfg = self.cfg;
        let b = self.slots[slot].as_mut().unwrap();
        {
            let mut s = b.platform.state();
            s.inject_collisions = collisions;
            s.inject_pin = if transient { vec![PinError::Transient] } else { Vec::new() };
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
                if report.short_tries > 0 {
                    self.count("rebuild short of memory");
                }
                if report.evicted > 0 {
                    self.count("rebuild evicted");
                }
            }
            Err(RebuildError::RetriesExhausted { .. }) => self.count("rebuild exhausted"),
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
        rolls: [u8; 4],
    ) -> bool {
        let cfg = self.cfg;
        let b = self.slots[slot].as_mut().unwrap();
        let cur_seq = b.platform.invalidate_start();
        let mut proceed = true;
        let mut torn = 0;
        for desc in b.notifiers.iter().filter(|d| d.overlaps(start, end)) {
            let inv = Invalidation {
                region: *desc,
                cur_seq,
                start,
                end,
                event,
                blockable,
                owner_is_us: false,
                write_kept: false,
            };
            let report = invalidate(&b.ctx, &b.lock, &b.platform, &cfg, &inv);
            if blockable {
                assert!(report.callback_result(), "a blockable callback must not fail");
            }
            if let InvalidateOutcome::TornDown { .. } = report.outcome {
                torn += 1;
            }
            proceed &= report.callback_result();
        }
        let affected: Vec<_> =
            b.notifiers.iter().chain(b.unarmed.iter()).filter(|d| d.overlaps(start, end)).map(|d| d.handle).collect();
        if proceed {
            let platform = &b.platform;
            for (i, handle) in affected.into_iter().enumerate() {
                let roll = rolls[i % rolls.len()];
                match event {
                    Event::Unmap => {
                        platform.change_pages(handle);
                        if roll < 40 {
                            platform.make_gone(handle);
                        }
                    }
                    Event::Clear | Event::Release | Event::Migrate | Event::Exclusive => platform.change_pages(handle),
                    Event::ProtectionVma => platform.change_write_right(handle, roll < 30),
                    Event::ProtectionPage | Event::SoftDirty => {}
                }
            }
        }
        b.platform.invalidate_end();
        self.note(format!(
            "invalidate slot {slot} [{start:#x},{end:#x}) {event:?} blockable={blockable} policy={:?}: torn {torn} proceed {proceed}",
            cfg.policy
        ));
        if !proceed {
            self.count("non-blocking refused");
        }
        proceed
    }

    /// Runs the engine on `mm`'s ring until it is empty or the gate is shut.
    fn engine(&mut self, mm: Pick) {
        let Some(slot) = self.live_bundle(mm) else {
            return;
        };
        let mut done = Vec::new();
        let mut self_count_waits = 0;
        {
            let b = self.slots[slot].as_mut().unwrap();
            while let Some(cmd) = b.ring.front().copied() {
                let Some(engine) = b.ctx.enter(&b.platform) else {
                    break;
                };
                let status = match engine.translate(cmd.va, cmd.len, cmd.access) {
                    // The command waits for a rebuild of the chunks it
                    // needs: it stays first in the ring, the queue goes
                    // stale and the zap is queued, as the driver does.
                    Err(XlateFault::NeedsRebuild { touched }) => {
                        engine.request_rebuild(touched);
                        warpq_notifier::platform::Platform::schedule_zap(&b.platform);
                        self_count_waits += 1;
                        break;
                    }
                    Ok(t) => {
                        if let Err(why) = b.platform.check_touch(t.mapping, cmd.access.device_writes()) {
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
                b.ring.pop_front();
                assert_eq!(engine.finish(), EngineExit::Completed, "no reset in the single-threaded run");
                done.push((cmd.id, status));
            }
        }
        if self_count_waits > 0 {
            self.count("commands waiting for a rebuild");
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

    /// exit_mmap: RELEASE over everything, then the context's release (a
    /// racing second one when `again`).
    fn exit_mm(&mut self, mm: usize, again: bool) {
        let slot = match self.dir.lookup(mm) {
            Lookup::Live(id) => id.slot(),
            _ => {
                // No live context: the mm never used the device, or it was
                // released already.
                self.note(format!("exit mm {mm:#x} without live context"));
                return;
            }
        };
        self.kernel_invalidate(slot, 0, u64::MAX, Event::Release, true, [0; 4]);
        let id = match self.dir.release(mm) {
            ReleaseOutcome::Released(id) => id,
            other => panic!("first release of {mm:#x} gave {other:?}"),
        };
        let cfg = self.cfg;
        let b = self.slots[slot].as_mut().unwrap();
        assert_eq!(b.id, id);
        let report = b.ctx.release(&mut b.lock.lock(), &b.platform, &cfg).unwrap();
        assert_eq!(report.pages_unpinned, 0, "RELEASE already unpinned everything");
        b.released = true;
        *self.releases.entry((id.slot(), id.generation())).or_default() += 1;
        // A racing second release (file close) is a no-op at both levels.
        if again {
            assert_eq!(self.dir.release(mm), ReleaseOutcome::AlreadyReleased(id));
            let b = self.slots[slot].as_mut().unwrap();
            assert_eq!(b.ctx.release(&mut b.lock.lock(), &b.platform, &cfg), Err(ReleaseError::AlreadyReleased));
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

    fn reap(&mut self, p: Pick) {
        let released: Vec<usize> = self.slots.iter().flatten().filter(|b| b.released).map(|b| b.id.slot()).collect();
        let Some(slot) = pick(&released, p) else {
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

    /// The invariants that hold after every step.
    pub(crate) fn check(&self) {
        for b in self.slots.iter().flatten() {
            let key = b.lock.lock();
            if let Err(why) = b.ctx.audit(&key) {
                panic!("region table: {why}");
            }
            let gate = b.ctx.gate().snapshot();
            assert_eq!((gate.pauses, gate.in_flight, gate.abandoned), (0, 0, 0), "gate left busy");
            // Pins balanced with what is mapped.
            let mut mapped = std::collections::BTreeSet::new();
            let mut pages = 0;
            for info in b.ctx.regions(&key) {
                for chunk in 0..info.desc.chunk_count() {
                    let Some(mapping) = b.ctx.mapping(&key, info.desc.handle, chunk) else { continue };
                    assert_eq!((mapping.region, mapping.chunk), (info.desc.handle, chunk));
                    // Nothing published holds replaced pages or a write right
                    // that may have been taken away.
                    if let Err(why) = b.platform.check_touch(mapping, info.desc.access.device_writes()) {
                        panic!("mapped region {:#x} chunk {chunk}: {why}", info.desc.handle.to_raw());
                    }
                    mapped.insert(mapping.id);
                }
                pages += info.pages;
                let known = b.notifiers.iter().chain(b.unarmed.iter()).any(|d| *d == info.desc);
                assert!(known || b.released, "table has a region the driver does not know");
                if b.released {
                    assert_eq!(info.state, StateKind::Dead);
                }
            }
            assert_eq!(mapped, b.platform.live_ids(), "pins do not match mapped regions");
            assert_eq!(pages, b.platform.pinned_pages());
            let s = b.platform.state();
            assert_eq!(s.pins - s.unpins, s.live.len() as u64);
            if b.released {
                assert!(gate.closed && s.live.is_empty());
            } else {
                assert_eq!(gate.stale, b.ctx.needs_rebuild(&key), "stale must mean: a region needs a rebuild");
                for desc in b.notifiers.iter().chain(b.unarmed.iter()) {
                    assert!(b.ctx.region(&key, desc.handle).is_ok(), "driver region missing from table");
                }
                // A stale queue must not keep its ring mapped unless a zap
                // is on its way, or a register ioctl (a pending region) will
                // rebuild it.
                let registering = b.ctx.regions(&key).any(|info| info.state == StateKind::Pending);
                let zap_to_come = s.zap_pending || registering;
                assert!(!gate.stale || !b.ring_mapped || zap_to_come, "stale queue, ring mapped, no zap");
            }
            for cmd in &b.ring {
                assert_eq!(self.completions[&cmd.id], None, "queued command already completed");
            }
        }
    }

    /// Every process exits; then every command completed once and every
    /// context was released once.
    pub(crate) fn finish(&mut self) {
        for (i, mm) in std::mem::take(&mut self.mms).into_iter().enumerate() {
            self.exit_mm(mm, i % 2 == 0);
            self.check();
        }
        for (cmd, status) in &self.completions {
            assert!(status.is_some(), "command {cmd} was never completed");
        }
        for ((slot, generation), count) in &self.releases {
            assert_eq!(*count, 1, "context {slot}/{generation} released {count} times");
        }
        for b in self.slots.iter().flatten() {
            assert!(b.released, "context of mm {:#x} never released", b.ctx.mm());
            assert!(b.platform.live_ids().is_empty());
        }
    }
}
