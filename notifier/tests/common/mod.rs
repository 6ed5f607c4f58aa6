// SPDX-License-Identifier: GPL-2.0

//! A recording test double of the kernel side, for the std tests.
//!
//! It models one mm: the interval-notifier sequences of its regions, the
//! "page epochs" (bumped whenever the pages behind a region really change,
//! or the device's write right may have shrunk), GUP pins, the zap worker
//! and time. It records every call, and checks pins are balanced.

#![allow(dead_code, unreachable_pub)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use warpq_notifier::context::{ContextLock, LockKey};
use warpq_notifier::platform::{Mapping, PinError, Platform, Waiter};
use warpq_notifier::region::{Chunk, RegionDesc, RegionHandle};

static NEXT_MAPPING_ID: AtomicU64 = AtomicU64::new(1);

/// The double's mapping: which mm and region it pinned, and what it saw.
#[derive(Debug, PartialEq, Eq)]
pub struct TestMapping {
    pub id: u64,
    pub mm: usize,
    pub region: RegionHandle,
    /// The chunk of the region it maps.
    pub chunk: usize,
    pub pages: u64,
    /// Page epoch of the region when pinned.
    pub page_epoch: u64,
    /// Write-right epoch of the region when pinned.
    pub write_epoch: u64,
}

impl Mapping for TestMapping {
    type Chunks = Box<[Chunk<Self>]>;
    fn page_count(&self) -> u64 {
        self.pages
    }
}

/// Every call the core made, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    ReadBegin {
        slot: usize,
        seq: u64,
    },
    ReadRetry {
        slot: usize,
        retry: bool,
    },
    SetSeq {
        slot: usize,
        seq: u64,
    },
    Pin {
        slot: usize,
        result: Result<u64, PinError>,
    },
    Unpin {
        id: u64,
        dirty: bool,
    },
    ScheduleZap,
    EngineReset,
    /// A teardown resumed the gate (`Platform::resumed`).
    Resumed,
    Wait,
    Wake,
}

#[derive(Default)]
pub struct State {
    /// mm-wide invalidate sequence: odd while an invalidation is running.
    pub mm_seq: u64,
    /// Per-notifier sequence, keyed by raw handle.
    pub notifier_seq: BTreeMap<u64, u64>,
    /// Pages behind the region changed this many times.
    pub page_epoch: BTreeMap<u64, u64>,
    /// The device write right may have shrunk this many times.
    pub write_epoch: BTreeMap<u64, u64>,
    /// Regions whose range is gone (munmap): pins fail with `Gone`.
    pub gone: BTreeSet<u64>,
    /// Regions that lost the write right (mprotect): writable pins fail.
    pub write_lost: BTreeSet<u64>,
    /// Live mappings: id → (raw handle, pages).
    pub live: BTreeMap<u64, (u64, u64)>,
    /// Behave as the `mirror` backing: a lookup that an invalidation
    /// overtook fails with `Collision` (as `hmm_range_fault()` says
    /// `-EBUSY`) instead of returning pages the pin backing would hold.
    pub mirror: bool,
    pub pins: u64,
    pub unpins: u64,
    pub zaps_scheduled: u64,
    pub zap_pending: bool,
    pub engine_resets: u64,
    pub now_ns: u64,
    pub calls: Vec<Call>,
    /// Fail the next pins with these errors (front first).
    pub inject_pin: Vec<PinError>,
    /// Simulate an invalidation of the region while it is being pinned,
    /// for this many of the next pins.
    pub inject_collisions: u32,
    /// Record calls (off in the long random runs).
    pub record: bool,
    /// Waits really sleep and poll (threaded tests) instead of jumping to
    /// the deadline.
    pub real_time: bool,
}

pub struct TestPlatform {
    pub mm: usize,
    state: Mutex<State>,
    started: std::time::Instant,
}

impl TestPlatform {
    pub fn new(mm: usize) -> Self {
        Self { mm, state: Mutex::new(State { record: true, ..State::default() }), started: std::time::Instant::now() }
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state().calls.clone()
    }

    pub fn clear_calls(&self) {
        self.state().calls.clear();
    }

    /// `mn_itree_inv_start_range`: returns the `cur_seq` for the callbacks.
    pub fn invalidate_start(&self) -> u64 {
        let mut s = self.state();
        assert_eq!(s.mm_seq % 2, 0, "nested invalidation in the double");
        s.mm_seq += 1;
        s.mm_seq
    }

    /// `mn_itree_inv_end`.
    pub fn invalidate_end(&self) {
        let mut s = self.state();
        s.mm_seq += 1;
    }

    /// The kernel changed the pages behind `region` (after the callbacks).
    pub fn change_pages(&self, region: RegionHandle) {
        *self.state().page_epoch.entry(region.to_raw()).or_default() += 1;
    }

    /// The write right behind `region` may have shrunk.
    pub fn change_write_right(&self, region: RegionHandle, lost: bool) {
        let mut s = self.state();
        *s.write_epoch.entry(region.to_raw()).or_default() += 1;
        if lost {
            s.write_lost.insert(region.to_raw());
        }
    }

    pub fn make_gone(&self, region: RegionHandle) {
        self.state().gone.insert(region.to_raw());
    }

    pub fn live_ids(&self) -> BTreeSet<u64> {
        self.state().live.keys().copied().collect()
    }

    pub fn pinned_pages(&self) -> u64 {
        self.state().live.values().map(|(_, pages)| pages).sum()
    }

    /// Checks that the engine may touch memory through `mapping` for an
    /// access needing `write`: the mapping is pinned, its pages are still
    /// the region's, and (for writes) the write right did not shrink.
    pub fn check_touch(&self, mapping: &TestMapping, write: bool) -> Result<(), String> {
        let s = self.state();
        let raw = mapping.region.to_raw();
        if !s.live.contains_key(&mapping.id) {
            return Err(format!("engine used unpinned mapping {}", mapping.id));
        }
        if mapping.mm != self.mm {
            return Err(format!("mm {:#x} used a mapping of mm {:#x}", self.mm, mapping.mm));
        }
        let epoch = s.page_epoch.get(&raw).copied().unwrap_or(0);
        if mapping.page_epoch != epoch {
            return Err(format!(
                "engine used stale pages of region {raw:#x}: pinned at epoch {}, now {epoch}",
                mapping.page_epoch
            ));
        }
        let wepoch = s.write_epoch.get(&raw).copied().unwrap_or(0);
        if write && mapping.write_epoch != wepoch {
            return Err(format!("engine wrote region {raw:#x} after its write right changed"));
        }
        Ok(())
    }

    fn log(s: &mut State, call: Call) {
        if s.record {
            s.calls.push(call);
        }
    }
}

impl Waiter for TestPlatform {
    fn now_ns(&self) -> u64 {
        let s = self.state();
        if s.real_time {
            self.started.elapsed().as_nanos() as u64
        } else {
            s.now_ns
        }
    }

    fn wait_until(&self, done: &dyn Fn() -> bool, deadline_ns: u64) -> bool {
        let real_time = {
            let mut s = self.state();
            Self::log(&mut s, Call::Wait);
            s.real_time
        };
        if real_time {
            loop {
                if done() {
                    return true;
                }
                if self.now_ns() >= deadline_ns {
                    return done();
                }
                std::thread::sleep(std::time::Duration::from_micros(100));
            }
        }
        // Single-threaded: nobody else can make progress while we wait, so
        // time jumps to the deadline.
        if done() {
            return true;
        }
        assert_ne!(deadline_ns, u64::MAX, "unbounded wait that can never finish");
        let mut s = self.state();
        s.now_ns = s.now_ns.max(deadline_ns);
        drop(s);
        done()
    }

    fn wake(&self) {
        let mut s = self.state();
        Self::log(&mut s, Call::Wake);
    }
}

impl Platform for TestPlatform {
    type Mapping = TestMapping;

    fn read_begin(&self, region: &RegionDesc) -> u64 {
        let mut s = self.state();
        let seq = s.notifier_seq.get(&region.handle.to_raw()).copied().unwrap_or(0);
        assert!(
            !(s.mm_seq % 2 == 1 && seq == s.mm_seq),
            "read_begin would wait for the running invalidation: single-threaded deadlock"
        );
        Self::log(&mut s, Call::ReadBegin { slot: region.handle.slot(), seq });
        seq
    }

    fn read_retry(&self, region: &RegionDesc, seq: u64) -> bool {
        let mut s = self.state();
        let retry = s.notifier_seq.get(&region.handle.to_raw()).copied().unwrap_or(0) != seq;
        Self::log(&mut s, Call::ReadRetry { slot: region.handle.slot(), retry });
        retry
    }

    fn set_seq(&self, region: &RegionDesc, cur_seq: u64) {
        let mut s = self.state();
        s.notifier_seq.insert(region.handle.to_raw(), cur_seq);
        Self::log(&mut s, Call::SetSeq { slot: region.handle.slot(), seq: cur_seq });
    }

    fn pin_and_map(&self, region: &RegionDesc, chunk: usize, seq: u64) -> Result<TestMapping, PinError> {
        let mut s = self.state();
        let raw = region.handle.to_raw();
        let slot = region.handle.slot();
        let page_epoch = s.page_epoch.get(&raw).copied().unwrap_or(0);
        let write_epoch = s.write_epoch.get(&raw).copied().unwrap_or(0);
        let injected = if s.inject_pin.is_empty() { None } else { Some(s.inject_pin.remove(0)) };
        let result = if let Some(err) = injected {
            Err(err)
        } else if s.gone.contains(&raw) || (region.access.device_writes() && s.write_lost.contains(&raw)) {
            Err(PinError::Gone)
        } else {
            Ok(())
        };
        if s.inject_collisions > 0 {
            // A concurrent invalidation of this region while GUP runs: its
            // callback would find the region unmapped and only set the
            // sequence; then the kernel changes the pages.
            s.inject_collisions -= 1;
            s.mm_seq += 1;
            let cur = s.mm_seq;
            s.notifier_seq.insert(raw, cur);
            *s.page_epoch.entry(raw).or_default() += 1;
            s.mm_seq += 1;
        }
        let overtaken = s.notifier_seq.get(&raw).copied().unwrap_or(0) != seq;
        let result = if s.mirror && overtaken { Err(PinError::Collision) } else { result };
        let result = result.map(|()| {
            let id = NEXT_MAPPING_ID.fetch_add(1, Ordering::Relaxed);
            let pages = region.chunk_range(chunk).1.div_ceil(4096).max(1);
            s.live.insert(id, (raw, pages));
            s.pins += 1;
            TestMapping { id, mm: self.mm, region: region.handle, chunk, pages, page_epoch, write_epoch }
        });
        Self::log(&mut s, Call::Pin { slot, result: result.as_ref().map(|m| m.id).map_err(|e| *e) });
        result
    }

    fn unmap_and_unpin(&self, mapping: TestMapping, dirty: bool) {
        let mut s = self.state();
        assert!(s.live.remove(&mapping.id).is_some(), "double unpin of mapping {}", mapping.id);
        assert_eq!(mapping.mm, self.mm, "unpinned another mm's mapping");
        s.unpins += 1;
        Self::log(&mut s, Call::Unpin { id: mapping.id, dirty });
    }

    fn schedule_zap(&self) {
        let mut s = self.state();
        s.zaps_scheduled += 1;
        s.zap_pending = true;
        Self::log(&mut s, Call::ScheduleZap);
    }

    fn engine_reset(&self) {
        let mut s = self.state();
        s.engine_resets += 1;
        Self::log(&mut s, Call::EngineReset);
    }

    fn resumed(&self) {
        Self::log(&mut self.state(), Call::Resumed);
    }
}

/// The context lock `L` for std tests.
pub struct StdLock(pub Mutex<LockKey>);

impl StdLock {
    pub fn new(key: LockKey) -> Self {
        Self(Mutex::new(key))
    }
}

impl ContextLock for StdLock {
    type Guard<'a> = MutexGuard<'a, LockKey>;

    fn lock(&self) -> MutexGuard<'_, LockKey> {
        self.0.lock().unwrap()
    }

    fn try_lock(&self) -> Option<MutexGuard<'_, LockKey>> {
        self.0.try_lock().ok()
    }
}

/// xorshift64*: tiny, seeded, reproducible.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-ish in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability `percent`%.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        if items.is_empty() {
            None
        } else {
            items.get(self.below(items.len() as u64) as usize)
        }
    }
}
