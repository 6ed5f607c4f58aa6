//! The ring logic against an in-memory ring: a heap buffer laid out as the
//! kernel lays out the mapping, and a test double that plays the kernel's
//! side with the same index discipline as `driver/ring.rs` and the engine
//! loop of `driver/queue.rs` (take a submission only with completion space,
//! post the completion, then retire the submission; advertise sleep with
//! NEED_WAKEUP).

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::{opcode, Status};

const SQ: u32 = sys::WARPQ_SQ_ENTRIES;
const CQ: u32 = sys::WARPQ_CQ_ENTRIES;

/// A ring in heap memory, page aligned like the real mapping.
struct HeapRing {
    ptr: NonNull<u8>,
}

fn layout() -> Layout {
    Layout::from_size_align(sys::WARPQ_RING_SIZE, 4096).unwrap()
}

impl HeapRing {
    /// A fresh ring as the driver makes it: header filled in, indices at
    /// `start` (0 for a new queue; near u32::MAX to test index wrap).
    fn new(owner_id: u64, start: u32) -> Self {
        // SAFETY: non-zero size.
        let ptr = NonNull::new(unsafe { alloc_zeroed(layout()) }).expect("alloc");
        let ring = Self { ptr };
        let k = KernelSide::of(&ring);
        k.word(offset_of!(warpq_ring_header, magic)).store(sys::WARPQ_RING_MAGIC, Ordering::Relaxed);
        k.word(offset_of!(warpq_ring_header, sq_entries)).store(SQ, Ordering::Relaxed);
        k.word(offset_of!(warpq_ring_header, cq_entries)).store(CQ, Ordering::Relaxed);
        for f in [
            offset_of!(warpq_ring_header, sq_head),
            offset_of!(warpq_ring_header, sq_tail),
            offset_of!(warpq_ring_header, cq_head),
            offset_of!(warpq_ring_header, cq_tail),
        ] {
            k.word(f).store(start, Ordering::Relaxed);
        }
        k.set_owner(owner_id);
        ring
    }
}

impl Drop for HeapRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.ptr.as_ptr(), layout()) };
    }
}

// SAFETY: a stable, 4096-aligned allocation of WARPQ_RING_SIZE bytes, freed
// only on drop.
unsafe impl RingMemory for HeapRing {
    fn base(&self) -> NonNull<u8> {
        self.ptr
    }
}

/// The kernel's view of a ring: raw access from "another agent".
#[derive(Clone, Copy)]
struct KernelSide {
    base: *mut u8,
}

// SAFETY: the tests keep the ring alive while any thread uses its
// KernelSide, and access it only through atomics and the protocol.
unsafe impl Send for KernelSide {}

impl KernelSide {
    fn of(ring: &HeapRing) -> Self {
        Self { base: ring.ptr.as_ptr() }
    }

    fn word(&self, offset: usize) -> &AtomicU32 {
        // SAFETY: an aligned header word of a live ring.
        unsafe { AtomicU32::from_ptr(self.base.add(offset).cast()) }
    }

    fn set_owner(&self, id: u64) {
        // SAFETY: as above, 8-aligned.
        unsafe { AtomicU64::from_ptr(self.base.add(offset_of!(warpq_ring_header, owner_id)).cast()) }
            .store(id, Ordering::Relaxed);
    }

    fn sq_head(&self) -> &AtomicU32 {
        self.word(offset_of!(warpq_ring_header, sq_head))
    }
    fn sq_tail(&self) -> &AtomicU32 {
        self.word(offset_of!(warpq_ring_header, sq_tail))
    }
    fn cq_head(&self) -> &AtomicU32 {
        self.word(offset_of!(warpq_ring_header, cq_head))
    }
    fn cq_tail(&self) -> &AtomicU32 {
        self.word(offset_of!(warpq_ring_header, cq_tail))
    }
    fn flags(&self) -> &AtomicU32 {
        self.word(offset_of!(warpq_ring_header, flags))
    }

    fn sq_pending(&self) -> u32 {
        let head = self.sq_head().load(Ordering::Relaxed);
        let pending = self.sq_tail().load(Ordering::Acquire).wrapping_sub(head);
        if pending > SQ {
            0
        } else {
            pending
        }
    }

    fn cq_space(&self) -> u32 {
        let tail = self.cq_tail().load(Ordering::Relaxed);
        let used = tail.wrapping_sub(self.cq_head().load(Ordering::Acquire));
        CQ.saturating_sub(used)
    }

    fn cq_ready(&self) -> u32 {
        self.cq_tail().load(Ordering::Acquire).wrapping_sub(self.cq_head().load(Ordering::Acquire)).min(CQ)
    }

    /// Executes one command if there is one and room for its completion.
    fn step(&self) -> bool {
        if self.cq_space() == 0 || self.sq_pending() == 0 {
            return false;
        }
        let head = self.sq_head().load(Ordering::Relaxed);
        let slot = (head & (SQ - 1)) as usize;
        // SAFETY: inside the ring; published by the acquire load of the tail.
        let sqe = unsafe {
            std::ptr::read_volatile(self.base.add(sys::WARPQ_RING_SQ_OFFSET + slot * 64).cast::<warpq_sqe>())
        };
        let (status, result) = execute(&sqe);
        let tail = self.cq_tail().load(Ordering::Relaxed);
        let cslot = (tail & (CQ - 1)) as usize;
        let cqe = warpq_cqe { user_data: sqe.user_data, status, result, ..Default::default() };
        // SAFETY: inside the ring; a free slot (cq_space > 0).
        unsafe {
            std::ptr::write_volatile(self.base.add(sys::WARPQ_RING_CQ_OFFSET + cslot * 32).cast::<warpq_cqe>(), cqe)
        };
        self.cq_tail().store(tail.wrapping_add(1), Ordering::Release);
        self.sq_head().store(head.wrapping_add(1), Ordering::Release);
        true
    }

    /// Runs until out of work or completion space; how many it ran.
    fn run(&self) -> usize {
        let mut n = 0;
        while self.step() {
            n += 1;
        }
        n
    }

    /// `Ring::push_sqes` of the driver (the SUBMIT ioctl).
    fn push_sqes(&self, entries: &[warpq_sqe]) -> usize {
        let tail = self.sq_tail().load(Ordering::Relaxed);
        let used = tail.wrapping_sub(self.sq_head().load(Ordering::Acquire));
        if used > SQ {
            return 0;
        }
        let n = entries.len().min((SQ - used) as usize);
        for (i, e) in entries.iter().take(n).enumerate() {
            let slot = (tail.wrapping_add(i as u32) & (SQ - 1)) as usize;
            // SAFETY: inside the ring, a free slot.
            unsafe {
                std::ptr::write_volatile(self.base.add(sys::WARPQ_RING_SQ_OFFSET + slot * 64).cast::<warpq_sqe>(), *e)
            };
        }
        self.sq_tail().store(tail.wrapping_add(n as u32), Ordering::Release);
        n
    }
}

/// What the fake device does: NOP → 0, FILL/COPY → len, CRC → a function of
/// the entry (so a mixed-up entry shows), anything else → INVALID.
fn execute(sqe: &warpq_sqe) -> (u32, u64) {
    match sqe.opcode {
        sys::WARPQ_OP_NOP => (sys::WARPQ_STATUS_OK, 0),
        sys::WARPQ_OP_COPY | sys::WARPQ_OP_FILL => (sys::WARPQ_STATUS_OK, sqe.len),
        sys::WARPQ_OP_CRC32C => (sys::WARPQ_STATUS_OK, expected_crc(sqe.src, sqe.len, sqe.value)),
        _ => (sys::WARPQ_STATUS_INVALID, 0),
    }
}

fn expected_crc(src: u64, len: u64, seed: u64) -> u64 {
    src.rotate_left(7) ^ len.wrapping_mul(31) ^ seed
}

/// The system calls, single-threaded: WAIT and WAKE run the engine inline.
#[derive(Default)]
struct FakeKernel {
    side: Cell<Option<KernelSide>>,
    wakes: Cell<u32>,
    waits: RefCell<Vec<u32>>,
    submits: Cell<u32>,
    /// Whether WAKE runs the engine (off: a wake that changes nothing).
    run_on_wake: Cell<bool>,
}

impl FakeKernel {
    fn new(ring: &HeapRing) -> Self {
        let k = Self::default();
        k.side.set(Some(KernelSide::of(ring)));
        k.run_on_wake.set(true);
        k
    }
    fn side(&self) -> KernelSide {
        self.side.get().unwrap()
    }
}

impl Kernel for FakeKernel {
    fn wake(&self) -> Result<()> {
        self.wakes.set(self.wakes.get() + 1);
        if self.run_on_wake.get() {
            self.side().run();
        }
        Ok(())
    }

    fn wait(&self, min_ready: u32, _timeout: Option<Duration>) -> Result<u32> {
        self.waits.borrow_mut().push(min_ready);
        self.side().run();
        Ok(self.side().cq_ready())
    }

    fn submit_raw(&self, sqes: &[warpq_sqe]) -> Result<u32> {
        self.submits.set(self.submits.get() + 1);
        Ok(self.side().push_sqes(sqes) as u32)
    }
}

fn nop(id: u64) -> Entry {
    opcode::Nop::new().build().user_data(id)
}

fn drain(core: &Core<HeapRing>) -> Vec<Completion> {
    core.cq().collect()
}

#[test]
fn round_trip_in_order_with_results() {
    let ring = HeapRing::new(7, 0);
    let k = FakeKernel::new(&ring);
    let core = Core::new(ring);
    {
        let mut sq = core.sq();
        sq.push(&nop(1)).unwrap();
        sq.push(&opcode::Fill::new(0x1000, 64, 1).build().user_data(2)).unwrap();
        sq.push(&opcode::Crc32c::new(0x2000, 10).seed(3).build().user_data(3)).unwrap();
        sq.push(&Entry::from_raw(sys::warpq_sqe { opcode: 77, user_data: 4, ..Default::default() })).unwrap();
    }
    assert_eq!(k.side().sq_tail().load(Ordering::Relaxed), 4, "dropping the view publishes");
    assert_eq!(core.in_flight(), 4);
    assert_eq!(k.side().run(), 4);
    let done = drain(&core);
    let got: Vec<_> = done.iter().map(|c| (c.user_data(), c.status(), c.result())).collect();
    assert_eq!(
        got,
        [
            (1, Status::Ok, 0),
            (2, Status::Ok, 64),
            (3, Status::Ok, expected_crc(0x2000, 10, 3)),
            (4, Status::Invalid, 0)
        ]
    );
    assert_eq!(k.side().cq_head().load(Ordering::Relaxed), 4, "consumed slots are handed back");
    assert_eq!(core.in_flight(), 0);
    let _ = k.submits.get();
}

#[test]
fn pushed_entries_stay_private_until_published() {
    let ring = HeapRing::new(1, 0);
    let k = FakeKernel::new(&ring);
    let core = Core::new(ring);
    let mut sq = core.sq();
    for i in 0..10 {
        sq.push(&nop(i)).unwrap();
    }
    assert_eq!(k.side().sq_tail().load(Ordering::Relaxed), 0);
    assert_eq!(k.side().run(), 0, "the engine sees nothing before the tail is published");
    sq.sync();
    assert_eq!(k.side().sq_tail().load(Ordering::Relaxed), 10);
    assert_eq!(k.side().run(), 10);
}

#[test]
fn wraps_around_the_slots_many_times() {
    let ring = HeapRing::new(1, 0);
    let k = FakeKernel::new(&ring);
    let core = Core::new(ring);
    let sub = core.submitter(&k);
    let mut next = 0u64;
    let mut expect = 0u64;
    // Batches of sizes that do not divide the ring, over 20 laps of the SQ
    // and 10 of the CQ.
    while next < 20 * u64::from(SQ) {
        let batch = 1 + (next * 7 % 97);
        {
            let mut sq = core.sq();
            for _ in 0..batch {
                sq.push(&opcode::Fill::new(0, next, 0).build().user_data(next)).unwrap();
                next += 1;
            }
        }
        sub.submit().unwrap();
        k.side().run();
        for c in core.cq() {
            assert_eq!((c.user_data(), c.result()), (expect, expect));
            expect += 1;
        }
    }
    assert_eq!(expect, next);
}

#[test]
fn indices_wrap_past_u32_max() {
    let start = u32::MAX - 100;
    let ring = HeapRing::new(1, start);
    let k = FakeKernel::new(&ring);
    let core = Core::new(ring);
    let sub = core.submitter(&k);
    let mut expect = 0;
    for round in 0..3u64 {
        {
            let mut sq = core.sq();
            for i in 0..200 {
                sq.push(&nop(round * 200 + i)).unwrap();
            }
        }
        sub.submit().unwrap();
        assert_eq!(core.in_flight(), 200);
        k.side().run();
        for c in core.cq() {
            assert_eq!(c.user_data(), expect);
            expect += 1;
        }
        assert_eq!(core.in_flight(), 0);
    }
    assert_eq!(expect, 600);
    assert!(k.side().sq_tail().load(Ordering::Relaxed) < start, "the index wrapped");
}

#[test]
fn full_ring_refuses_then_recovers() {
    let ring = HeapRing::new(1, 0);
    let k = FakeKernel::new(&ring);
    let core = Core::new(ring);
    let sub = core.submitter(&k);
    let mut sq = core.sq();
    for i in 0..u64::from(SQ) {
        sq.push(&nop(i)).unwrap();
    }
    assert!(sq.is_full());
    assert_eq!(sq.push(&nop(999)), Err(PushError::Full), "unpublished entries count too");
    assert_eq!(sq.push_multiple(&[nop(1)]), Err(PushError::Full));
    drop(sq);
    // Published but not executed: still full (slots free only on completion).
    sub.submit().unwrap();
    assert_eq!(core.sq().push(&nop(999)), Err(PushError::Full));
    // The engine completes 10: exactly 10 slots free up.
    for _ in 0..10 {
        assert!(k.side().step());
    }
    let mut sq = core.sq();
    assert_eq!(sq.push_multiple(&[nop(0); 11]), Err(PushError::Full), "all or nothing");
    assert_eq!(sq.len(), SQ as usize - 10, "the failed push_multiple pushed nothing");
    sq.push_multiple(&[nop(0); 10]).unwrap();
    assert_eq!(sq.push(&nop(0)), Err(PushError::Full));
}

#[test]
fn a_full_completion_ring_stalls_the_engine_until_reaped() {
    let ring = HeapRing::new(1, 0);
    let k = FakeKernel::new(&ring);
    let core = Core::new(ring);
    let sub = core.submitter(&k);
    for round in 0..3 {
        core.sq().push_multiple(&vec![nop(0); SQ as usize]).unwrap();
        sub.submit().unwrap();
        let ran = k.side().run();
        // Two SQ loads fill the CQ (512); the third finds no room.
        assert_eq!(ran, if round < 2 { SQ as usize } else { 0 });
    }
    assert_eq!(core.in_flight(), SQ);
    let mut cq = core.cq();
    assert_eq!(cq.len(), CQ as usize);
    for _ in 0..5 {
        cq.next().unwrap();
    }
    // Not handed back yet: the engine still sees a full CQ.
    assert_eq!(k.side().run(), 0);
    cq.sync();
    assert_eq!(k.side().run(), 5);
    drop(cq);
    let mut reaped = 5;
    while core.in_flight() > 0 || !core.cq().is_empty() {
        reaped += drain(&core).len();
        k.side().run();
    }
    assert_eq!(reaped, 3 * SQ as usize, "every command completes exactly once");
}

#[test]
fn need_wakeup_costs_a_system_call_only_when_the_engine_sleeps_with_work() {
    let ring = HeapRing::new(1, 0);
    let k = FakeKernel::new(&ring);
    let core = Core::new(ring);
    let sub = core.submitter(&k);
    // Engine awake: no system call.
    core.sq().push(&nop(1)).unwrap();
    assert_eq!(sub.submit().unwrap(), 1);
    assert_eq!(k.wakes.get(), 0);
    k.side().run();
    // Engine asleep with nothing to do: still none.
    k.side().flags().store(sys::WARPQ_RING_NEED_WAKEUP, Ordering::SeqCst);
    assert_eq!(sub.submit().unwrap(), 0);
    assert_eq!(k.wakes.get(), 0);
    // Asleep with new work: one wake, which runs it.
    core.sq().push(&nop(2)).unwrap();
    assert_eq!(sub.submit().unwrap(), 1);
    assert_eq!(k.wakes.get(), 1);
    assert_eq!(sub.wakeups(), 1);
    assert_eq!(drain(&core).len(), 2);
    // Asleep with work the wake did not finish (e.g. a full CQ): the next
    // submit wakes again even though it publishes nothing new.
    k.run_on_wake.set(false);
    core.sq().push(&nop(3)).unwrap();
    sub.submit().unwrap();
    assert_eq!(sub.submit().unwrap(), 0);
    assert_eq!(k.wakes.get(), 3);
}

#[test]
fn a_forked_child_gets_a_clear_error_and_touches_nothing() {
    let ring = HeapRing::new(0x1111, 0);
    let k = FakeKernel::new(&ring);
    let side = k.side();
    let core = Core::new(ring);
    let sub = core.submitter(&k);
    core.sq().push_multiple(&[nop(0), nop(1), nop(2)]).unwrap();
    sub.submit().unwrap();
    side.run();
    assert_eq!(drain(&core).len(), 3);
    core.sq().push(&nop(3)).unwrap(); // pushed, not submitted, at fork
                                      // What the child sees after fork: its first touch of the mapping
                                      // faulted in a fresh queue of its own (new owner id, indices at 0).
    side.set_owner(0x2222);
    for w in [side.sq_head(), side.sq_tail(), side.cq_head(), side.cq_tail()] {
        w.store(0, Ordering::Relaxed);
    }
    for err in [
        sub.submit().unwrap_err(),
        sub.submit_and_wait(1).unwrap_err(),
        sub.wait(1, None).unwrap_err(),
        sub.submit_batch(&[nop(3)]).unwrap_err(),
        sub.check_owner().unwrap_err(),
    ] {
        assert_eq!(err.kind(), ErrorKind::Forked);
        assert_eq!(err.errno(), None);
        let msg = err.to_string();
        assert!(msg.contains("call Device::queue() in this process"), "{msg}");
        assert!(msg.contains("0x1111") && msg.contains("0x2222"), "{msg}");
    }
    assert_eq!((k.wakes.get(), k.waits.borrow().len(), k.submits.get()), (0, 0, 0), "no system call made");
    // The inherited views neither consume the child's ring nor overwrite
    // its indices, and nothing of the parent's is in flight in it.
    {
        let mut sq = core.sq();
        let _ = sq.push(&nop(4));
        let _ = sq.push_multiple(&[nop(5), nop(6)]);
        sq.sync();
    }
    assert_eq!(core.cq().next().map(|c| c.user_data()), None);
    assert_eq!(core.in_flight(), 0);
    for w in [side.sq_head(), side.sq_tail(), side.cq_head(), side.cq_tail()] {
        assert_eq!(w.load(Ordering::Relaxed), 0, "the child's fresh ring was written");
    }
    // The child's own queue (Device::queue() again) starts clean and works.
    let mine = Core::new(HeapRing { ptr: core.mem().ptr });
    mine.sq().push_multiple(&[nop(10), nop(11)]).unwrap();
    mine.submitter(&k).submit().unwrap();
    side.run();
    let ids: Vec<_> = mine.cq().map(|c| c.user_data()).collect();
    assert_eq!(ids, [10, 11]);
    std::mem::forget(mine); // one owner of the allocation
}

#[test]
fn a_dead_queue_says_so() {
    let ring = HeapRing::new(5, 0);
    let k = FakeKernel::new(&ring);
    let core = Core::new(ring);
    k.side().flags().store(sys::WARPQ_RING_DEAD, Ordering::SeqCst);
    let err = core.submitter(&k).submit().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::QueueGone);
}

#[test]
fn submit_batch_goes_after_pushed_entries_and_the_ring_continues_after_it() {
    let ring = HeapRing::new(1, 0);
    let k = FakeKernel::new(&ring);
    let core = Core::new(ring);
    let sub = core.submitter(&k);
    core.sq().push_multiple(&[nop(0), nop(1), nop(2)]).unwrap();
    // Not even published by a drop: the view is still alive.
    let mut sq = core.sq();
    sq.push(&nop(3)).unwrap();
    assert_eq!(sub.submit_batch(&[nop(4), nop(5)]).unwrap(), 2);
    sq.push(&nop(6)).unwrap();
    drop(sq);
    sub.submit().unwrap();
    k.side().run();
    let ids: Vec<_> = drain(&core).iter().map(|c| c.user_data()).collect();
    assert_eq!(ids, [0, 1, 2, 3, 4, 5, 6]);
    // A batch larger than the room left is cut short, as the ioctl does.
    core.sq().push_multiple(&vec![nop(0); SQ as usize - 3]).unwrap();
    assert_eq!(sub.submit_batch(&[nop(1); 5]).unwrap(), 3);
    assert_eq!(core.sq().push(&nop(0)), Err(PushError::Full));
}

#[test]
fn submit_and_wait_never_waits_for_commands_that_do_not_exist() {
    let ring = HeapRing::new(1, 0);
    let k = FakeKernel::new(&ring);
    k.run_on_wake.set(false);
    let core = Core::new(ring);
    let sub = core.submitter(&k);
    core.sq().push_multiple(&[nop(0), nop(1), nop(2)]).unwrap();
    assert_eq!(sub.submit_and_wait(100).unwrap(), 3);
    assert_eq!(*k.waits.borrow(), [3], "clamped to what is in flight");
    // Already ready: no system call.
    assert_eq!(sub.submit_and_wait(2).unwrap(), 3);
    assert_eq!(k.waits.borrow().len(), 1);
    // Consumed completions are handed back before WAIT counts them.
    let mut cq = core.cq();
    cq.next().unwrap();
    cq.next().unwrap();
    drop(cq);
    assert_eq!(k.side().cq_ready(), 1);
    core.sq().push(&nop(3)).unwrap();
    assert_eq!(sub.submit_and_wait(2).unwrap(), 2);
    assert_eq!(*k.waits.borrow(), [3, 2]);
    assert_eq!(sub.submit_and_wait(0).unwrap(), 2);
}

#[test]
fn a_remapped_queue_continues_from_the_kernels_indices() {
    let ring = HeapRing::new(1, 0);
    let k = FakeKernel::new(&ring);
    let side = k.side();
    let core = Core::new(ring);
    core.sq().push_multiple(&[nop(0), nop(1)]).unwrap();
    core.submitter(&k).submit().unwrap();
    side.run();
    assert_eq!(drain(&core).len(), 2);
    // A second Core over the same memory (the queue mapped again).
    let again = Core::new(HeapRing { ptr: core.mem().ptr });
    again.sq().push(&nop(2)).unwrap();
    again.submitter(&k).submit().unwrap();
    side.run();
    let ids: Vec<_> = again.cq().map(|c| c.user_data()).collect();
    assert_eq!(ids, [2]);
    std::mem::forget(again); // one owner of the allocation
}

/// The engine on another thread, with the driver's sleep protocol; the
/// submitter on this one. Checks ordering, that every command completes
/// exactly once, and that no wakeup is lost (a lost one would hang WAIT:
/// the test's WAIT gives up after 10 s and fails).
#[test]
fn concurrent_engine_thread_with_need_wakeup() {
    struct ThreadKernel {
        side: KernelSide,
        engine: std::thread::Thread,
        wakes: AtomicU32,
    }
    impl Kernel for ThreadKernel {
        fn wake(&self) -> Result<()> {
            self.wakes.fetch_add(1, Ordering::Relaxed);
            self.engine.unpark();
            Ok(())
        }
        fn wait(&self, min_ready: u32, _timeout: Option<Duration>) -> Result<u32> {
            // WAIT wakes the engine too.
            self.engine.unpark();
            let start = Instant::now();
            while self.side.cq_ready() < min_ready {
                assert!(start.elapsed() < Duration::from_secs(10), "lost wakeup: nothing completes");
                std::thread::yield_now();
            }
            Ok(self.side.cq_ready())
        }
        fn submit_raw(&self, _: &[warpq_sqe]) -> Result<u32> {
            unreachable!()
        }
    }

    let ring = HeapRing::new(3, 0);
    let side = KernelSide::of(&ring);
    let stop = Arc::new(AtomicBool::new(false));
    let engine = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let s = side;
            let has_work = || s.sq_pending() > 0 && s.cq_space() > 0;
            let mut sleeps = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if !has_work() {
                    // driver/queue.rs engine_idle: flag (SeqCst RMW), re-check, sleep.
                    s.flags().fetch_or(sys::WARPQ_RING_NEED_WAKEUP, Ordering::SeqCst);
                    if !has_work() && !stop.load(Ordering::Relaxed) {
                        sleeps += 1;
                        std::thread::park_timeout(Duration::from_secs(30));
                    }
                    s.flags().fetch_and(!sys::WARPQ_RING_NEED_WAKEUP, Ordering::SeqCst);
                }
                s.run();
            }
            sleeps
        })
    };
    let k = ThreadKernel { side, engine: engine.thread().clone(), wakes: AtomicU32::new(0) };
    let core = Core::new(ring);
    let sub = core.submitter(&k);
    let total = 200_000u64;
    let (mut next, mut expect) = (0u64, 0u64);
    let mut seed = 0x1234_5678_u64;
    while expect < total {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let batch = 1 + seed % 64;
        {
            let mut sq = core.sq();
            for _ in 0..batch {
                if next == total {
                    break;
                }
                let e =
                    opcode::Crc32c::new(next * 3, next % 4096 + 1).seed((next as u32) ^ 0x55).build().user_data(next);
                if sq.push(&e).is_err() {
                    break;
                }
                next += 1;
            }
        }
        if seed.is_multiple_of(3) {
            sub.submit_and_wait(1).unwrap();
        } else {
            sub.submit().unwrap();
        }
        for c in core.cq() {
            let id = c.user_data();
            assert_eq!(id, expect, "completions in submission order");
            assert_eq!(c.result(), expected_crc(id * 3, id % 4096 + 1, u64::from((id as u32) ^ 0x55)));
            expect += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    engine.thread().unpark();
    let sleeps = engine.join().unwrap();
    assert_eq!(core.in_flight(), 0);
    // Not a correctness requirement, but the test should exercise the path.
    eprintln!("engine slept {sleeps} times, {} wakes", k.wakes.load(Ordering::Relaxed));
}
