//! The ring logic, independent of where the ring's memory comes from.
//!
//! The ring (`driver/uapi/warpq.h`) is shared with the kernel. Its indices
//! are free-running `u32` counters (slot = index & (entries - 1)), and each
//! has exactly one writer:
//!
//! | index     | writer | meaning                                          |
//! |-----------|--------|--------------------------------------------------|
//! | `sq_tail` | us     | one past the last submission we published        |
//! | `sq_head` | kernel | it moves only past submissions whose completion is posted, so a slot below it is free; it stays at a command set aside for a rebuild until that one completes, even while `UNORDERED` commands after it complete |
//! | `cq_tail` | kernel | one past the last completion posted              |
//! | `cq_head` | us     | next completion we consume                       |
//! | `flags`   | kernel | `NEED_WAKEUP` (engine asleep), ...               |
//!
//! The discipline, for each side: write the entries, then publish the index
//! that covers them with a store-release; read the other side's index with a
//! load-acquire before touching the entries it covers. Every access below
//! says which pairing it is part of.
//!
//! [`Core`] holds the memory (anything implementing [`RingMemory`]: the
//! real mapping, or a heap buffer in the tests, which then play the kernel)
//! and this process's local copies of the indices it writes. The views
//! ([`SubmissionQueue`], [`CompletionQueue`], [`Submitter`]) borrow it; the
//! system calls go through the [`Kernel`] trait.

use std::cell::Cell;
use std::marker::PhantomData;
use std::mem::offset_of;
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::entry::{Completion, Entry};
use crate::error::{Error, ErrorKind, Op, Result};
use crate::sys::{self, warpq_cqe, warpq_ring_header, warpq_sqe};

/// Memory laid out as a warpq ring.
///
/// # Safety
///
/// `base()` returns the same pointer for the value's whole life, to
/// `sys::WARPQ_RING_SIZE` bytes that are 8-byte aligned (page aligned in
/// practice), readable and writable, and only accessed by others (the
/// kernel) as the ring's protocol allows.
pub(crate) unsafe trait RingMemory {
    /// The first byte of the ring.
    fn base(&self) -> NonNull<u8>;
}

/// The system calls a queue needs (the real [`Device`](crate::Device), or a
/// test double playing the kernel).
pub(crate) trait Kernel {
    /// `WARPQ_IOC_WAKE`.
    fn wake(&self) -> Result<()>;
    /// `WARPQ_IOC_WAIT`.
    fn wait(&self, min_ready: u32, timeout: Option<Duration>) -> Result<u32>;
    /// `WARPQ_IOC_SUBMIT`.
    fn submit_raw(&self, sqes: &[warpq_sqe]) -> Result<u32>;
}

/// The ring's memory seen through a lifetime: header words as atomics, slots
/// as raw pointers. Not `Send`: the views that hold one stay on one thread.
#[derive(Clone, Copy)]
pub(crate) struct RingRef<'a> {
    base: NonNull<u8>,
    _life: PhantomData<&'a ()>,
}

impl<'a> RingRef<'a> {
    fn u32_at(self, offset: usize) -> &'a AtomicU32 {
        // SAFETY: `offset` is one of the 4-aligned u32 header fields below,
        // inside the ring (RingMemory's contract), live for 'a; the kernel
        // accesses these words atomically too.
        unsafe { AtomicU32::from_ptr(self.base.as_ptr().add(offset).cast()) }
    }

    fn sq_head(self) -> &'a AtomicU32 {
        self.u32_at(offset_of!(warpq_ring_header, sq_head))
    }
    fn sq_tail(self) -> &'a AtomicU32 {
        self.u32_at(offset_of!(warpq_ring_header, sq_tail))
    }
    fn cq_head(self) -> &'a AtomicU32 {
        self.u32_at(offset_of!(warpq_ring_header, cq_head))
    }
    fn cq_tail(self) -> &'a AtomicU32 {
        self.u32_at(offset_of!(warpq_ring_header, cq_tail))
    }
    fn flags(self) -> &'a AtomicU32 {
        self.u32_at(offset_of!(warpq_ring_header, flags))
    }
    fn owner_id(self) -> &'a AtomicU64 {
        // SAFETY: as in `u32_at`; owner_id is an 8-aligned u64 field.
        unsafe { AtomicU64::from_ptr(self.base.as_ptr().add(offset_of!(warpq_ring_header, owner_id)).cast()) }
    }

    /// A racy copy of the whole header (for identification and statistics).
    pub(crate) fn header(self) -> warpq_ring_header {
        // SAFETY: the header is at the start of the ring; a volatile read
        // copes with the kernel writing it meanwhile.
        unsafe { std::ptr::read_volatile(self.base.as_ptr().cast::<warpq_ring_header>()) }
    }

    fn sqe_slot(self, index: u32) -> *mut warpq_sqe {
        let slot = (index & (sys::WARPQ_SQ_ENTRIES - 1)) as usize;
        self.base.as_ptr().wrapping_add(sys::WARPQ_RING_SQ_OFFSET + slot * 64).cast()
    }

    fn cqe_slot(self, index: u32) -> *const warpq_cqe {
        let slot = (index & (sys::WARPQ_CQ_ENTRIES - 1)) as usize;
        self.base.as_ptr().wrapping_add(sys::WARPQ_RING_CQ_OFFSET + slot * 32).cast()
    }
}

/// This process's side of the ring: the indices it writes, kept locally and
/// published on demand, plus what it knows of the kernel's.
#[derive(Debug)]
pub(crate) struct Local {
    /// Our SQ tail (pushed entries), ahead of what is published.
    sq_tail: Cell<u32>,
    /// The SQ tail as last published (stored to the ring).
    sq_published: Cell<u32>,
    /// The SQ tail as of the last `submit` (what it counts from).
    sq_submitted: Cell<u32>,
    /// Last `sq_head` read from the ring (only ever behind the real one).
    sq_head_seen: Cell<u32>,
    /// Our CQ head (consumed entries), ahead of what is published.
    cq_head: Cell<u32>,
    /// The CQ head as last published.
    cq_published: Cell<u32>,
    /// The owner id the ring showed when this queue was made.
    owner_id: u64,
    /// The process that made this queue.
    pid: u32,
    /// `WARPQ_IOC_WAKE` calls made because the engine slept.
    wakeups: Cell<u64>,
}

/// A ring plus this process's side of it.
pub(crate) struct Core<M: RingMemory> {
    mem: M,
    local: Local,
}

impl<M: RingMemory> Core<M> {
    /// Takes the ring as it is: a queue mapped again continues from the
    /// indices the kernel kept.
    pub(crate) fn new(mem: M) -> Self {
        let ring = RingRef { base: mem.base(), _life: PhantomData };
        // Reading the header is this process's first touch of the mapping:
        // after fork it faults in the child's own, fresh queue. A racy
        // (volatile) snapshot is enough: our own indices (sq_tail, cq_head)
        // only change when we write them, and the kernel's (sq_head) is
        // only a lower bound here, reloaded with acquire before use.
        let h = ring.header();
        let local = Local {
            sq_tail: Cell::new(h.sq_tail),
            sq_published: Cell::new(h.sq_tail),
            sq_submitted: Cell::new(h.sq_tail),
            sq_head_seen: Cell::new(h.sq_head),
            cq_head: Cell::new(h.cq_head),
            cq_published: Cell::new(h.cq_head),
            owner_id: h.owner_id,
            pid: std::process::id(),
            wakeups: Cell::new(0),
        };
        Self { mem, local }
    }

    pub(crate) fn ring(&self) -> RingRef<'_> {
        RingRef { base: self.mem.base(), _life: PhantomData }
    }

    #[cfg(test)]
    pub(crate) fn mem(&self) -> &M {
        &self.mem
    }

    pub(crate) fn owner_id(&self) -> u64 {
        self.local.owner_id
    }

    pub(crate) fn wakeups(&self) -> u64 {
        self.local.wakeups.get()
    }

    /// The process that made this view.
    pub(crate) fn pid(&self) -> u32 {
        self.local.pid
    }

    pub(crate) fn sq(&self) -> SubmissionQueue<'_> {
        SubmissionQueue { ring: self.ring(), local: &self.local }
    }

    pub(crate) fn cq(&self) -> CompletionQueue<'_> {
        let tail = cq_tail(self.ring(), &self.local);
        CompletionQueue { ring: self.ring(), local: &self.local, tail }
    }

    /// Pushes without publishing (what `Queue::push` promises).
    pub(crate) fn sq_push_raw(&self, sqe: &warpq_sqe) -> Result<(), PushError> {
        push_entry(self.ring(), &self.local, &Entry::from(sqe))
    }

    pub(crate) fn submitter<'a>(&'a self, kernel: &'a dyn Kernel) -> Submitter<'a> {
        Submitter { kernel, ring: self.ring(), local: &self.local }
    }

    /// Pushed entries not yet completed (0 in a forked child: none of
    /// ours is in the ring it sees).
    pub(crate) fn in_flight(&self) -> u32 {
        if !owned(self.ring(), &self.local) {
            return 0;
        }
        // Acquire: pairs with the engine's store-release of sq_head.
        self.local.sq_tail.get().wrapping_sub(self.ring().sq_head().load(Ordering::Acquire))
    }
}

/// Why an entry was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The submission ring is full (`WARPQ_SQ_ENTRIES` entries pushed and not
    /// yet completed): submit, reap completions, then push again.
    Full,
}

impl std::fmt::Display for PushError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the submission ring is full: submit and reap completions first")
    }
}

impl std::error::Error for PushError {}

/// The submission side: push [`Entry`]s into the ring.
///
/// Pushed entries are invisible to the device until published: by
/// [`SubmissionQueue::sync`], when this view is dropped, or by
/// [`Queue::submit`](crate::Queue::submit), which also wakes the engine if
/// it sleeps. Only `submit` wakes it; publishing alone leaves a sleeping
/// engine asleep until the next `submit` or `wait`.
pub struct SubmissionQueue<'a> {
    ring: RingRef<'a>,
    local: &'a Local,
}

impl SubmissionQueue<'_> {
    /// Queues one entry. Safe: the device touches only memory registered
    /// with this queue, whatever the entry says.
    pub fn push(&mut self, entry: &Entry) -> Result<(), PushError> {
        push_entry(self.ring, self.local, entry)
    }

    /// Queues all of `entries`, or none if they do not all fit.
    pub fn push_multiple(&mut self, entries: &[Entry]) -> Result<(), PushError> {
        if entries.len() > self.capacity().saturating_sub(self.len()) {
            self.refresh_head();
            if entries.len() > self.capacity().saturating_sub(self.len()) {
                return Err(PushError::Full);
            }
        }
        for e in entries {
            self.push(e)?;
        }
        Ok(())
    }

    /// Publishes the pushed entries to the device (without waking it) and
    /// refreshes the view of what the device has finished.
    pub fn sync(&mut self) {
        publish_sq(self.ring, self.local);
        self.refresh_head();
    }

    fn refresh_head(&mut self) {
        // Acquire: as in `push`.
        self.local.sq_head_seen.set(self.ring.sq_head().load(Ordering::Acquire));
    }

    /// Entries pushed and not yet completed, as last seen.
    pub fn len(&self) -> usize {
        self.local.sq_tail.get().wrapping_sub(self.local.sq_head_seen.get()) as usize
    }

    /// Whether no entry is pushed and not completed, as last seen.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether [`SubmissionQueue::push`] would fail now (as last seen).
    pub fn is_full(&self) -> bool {
        self.len() >= self.capacity()
    }

    /// The ring's size in entries (`WARPQ_SQ_ENTRIES`).
    pub fn capacity(&self) -> usize {
        sys::WARPQ_SQ_ENTRIES as usize
    }
}

impl Drop for SubmissionQueue<'_> {
    fn drop(&mut self) {
        publish_sq(self.ring, self.local);
    }
}

/// Writes one entry at our local SQ tail (not published).
fn push_entry(ring: RingRef<'_>, local: &Local, entry: &Entry) -> Result<(), PushError> {
    let tail = local.sq_tail.get();
    if tail.wrapping_sub(local.sq_head_seen.get()) >= sys::WARPQ_SQ_ENTRIES {
        // Acquire: pairs with the engine's store-release of sq_head, which
        // it does after it is done reading the entries below the new head,
        // so we may overwrite their slots.
        local.sq_head_seen.set(ring.sq_head().load(Ordering::Acquire));
        if tail.wrapping_sub(local.sq_head_seen.get()) >= sys::WARPQ_SQ_ENTRIES {
            return Err(PushError::Full);
        }
    }
    // The slot is at or past our published tail, and less than a ring
    // ahead of the head seen above: the command that used it has completed.
    // SAFETY: the slot is inside the ring; the engine does not read it
    // until a published tail covers it.
    unsafe { std::ptr::write_volatile(ring.sqe_slot(tail), entry.0) };
    local.sq_tail.set(tail.wrapping_add(1));
    Ok(())
}

/// Whether the ring still shows the queue this process's view was made
/// for. Not so in a forked child: its touch of the inherited mapping faulted
/// in a fresh queue of its own, whose indices ours must not overwrite (a
/// later `Device::queue()` in the child starts from them).
fn owned(ring: RingRef<'_>, local: &Local) -> bool {
    // Relaxed: owner_id is written once, before the ring page is mapped;
    // we only compare identities.
    ring.owner_id().load(Ordering::Relaxed) == local.owner_id
}

/// Stores our SQ tail to the ring (not in a forked child).
fn publish_sq(ring: RingRef<'_>, local: &Local) {
    let tail = local.sq_tail.get();
    if tail != local.sq_published.get() && owned(ring, local) {
        // Release: the entries written by `push` become visible to the
        // engine no later than this tail (pairs with its load-acquire of
        // sq_tail before it reads the entries).
        ring.sq_tail().store(tail, Ordering::Release);
        local.sq_published.set(tail);
    }
}

/// Stores our CQ head to the ring (not in a forked child).
fn publish_cq(ring: RingRef<'_>, local: &Local) {
    let head = local.cq_head.get();
    // Only on change: a polling loop must not keep dirtying the cache line
    // the engine reads.
    if head != local.cq_published.get() && owned(ring, local) {
        // Release: our reads of the consumed completions are done before
        // the engine may reuse their slots (pairs with its load-acquire of
        // cq_head when it checks for space).
        ring.cq_head().store(head, Ordering::Release);
        local.cq_published.set(head);
    }
}

/// `cq_tail` as far as this view may consume: nothing in a forked child
/// (the ring's completions are not ours).
fn cq_tail(ring: RingRef<'_>, local: &Local) -> u32 {
    // Acquire: pairs with the kernel's store-release of cq_tail after it
    // wrote the completions it covers.
    let tail = ring.cq_tail().load(Ordering::Acquire);
    if owned(ring, local) {
        tail
    } else {
        local.cq_head.get()
    }
}

/// The completion side: an iterator over posted [`Completion`]s, in the
/// order the device completed them (the order of submission: one engine).
///
/// Consumed slots are handed back to the device when the iterator runs dry,
/// on [`CompletionQueue::sync`] and when the view is dropped.
pub struct CompletionQueue<'a> {
    ring: RingRef<'a>,
    local: &'a Local,
    /// `cq_tail` as last read.
    tail: u32,
}

impl CompletionQueue<'_> {
    /// Hands consumed slots back and looks for new completions.
    pub fn sync(&mut self) {
        publish_cq(self.ring, self.local);
        self.tail = cq_tail(self.ring, self.local);
    }

    /// Completions ready, as last seen.
    pub fn len(&self) -> usize {
        // Never more than the ring holds, whatever the kernel's word says.
        (self.tail.wrapping_sub(self.local.cq_head.get()) as usize).min(self.capacity())
    }

    /// Whether no completion is ready, as last seen.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The ring's size in entries (`WARPQ_CQ_ENTRIES`).
    pub fn capacity(&self) -> usize {
        sys::WARPQ_CQ_ENTRIES as usize
    }
}

impl Iterator for CompletionQueue<'_> {
    type Item = Completion;

    fn next(&mut self) -> Option<Completion> {
        let head = self.local.cq_head.get();
        if head == self.tail {
            self.sync();
            if head == self.tail {
                return None;
            }
        }
        // The cq_tail loaded with acquire (in `sync` or at creation) covers
        // the slot; the kernel does not reuse it before our cq_head passes it.
        // SAFETY: the slot is inside the ring and its completion was written
        // before that tail.
        let cqe = unsafe { std::ptr::read_volatile(self.ring.cqe_slot(head)) };
        self.local.cq_head.set(head.wrapping_add(1));
        Some(Completion(cqe))
    }
}

impl Drop for CompletionQueue<'_> {
    fn drop(&mut self) {
        publish_cq(self.ring, self.local);
    }
}

/// The system-call side of a queue: submit (waking the engine only if it
/// sleeps), wait for completions, and the `WARPQ_IOC_SUBMIT` path.
///
/// Every call first checks that the ring is still this process's queue
/// (see [`ErrorKind::Forked`]).
pub struct Submitter<'a> {
    kernel: &'a dyn Kernel,
    ring: RingRef<'a>,
    local: &'a Local,
}

impl Submitter<'_> {
    /// Fails with [`ErrorKind::Forked`] if the mapping now shows another
    /// queue than the one this value was made for (we are a forked child),
    /// or with [`ErrorKind::QueueGone`] if the kernel marked the queue dead.
    pub fn check_owner(&self) -> Result<()> {
        self.check(Op::Submit)
    }

    pub(crate) fn check(&self, op: Op) -> Result<()> {
        // Relaxed: owner_id is written once, before the ring page is mapped;
        // we only compare identities. In a forked child this load may be
        // the first touch of the inherited mapping: the fault gives the
        // child a fresh queue with another owner id, and we stop here.
        let now = self.ring.owner_id().load(Ordering::Relaxed);
        if now != self.local.owner_id {
            return Err(Error::new(
                op,
                ErrorKind::Forked,
                None,
                format!(
                    "this Queue belongs to process {} (queue {:#x}); this is process {} after fork, which has a \
                     queue of its own (queue {:#x}): call Device::queue() in this process and register its \
                     buffers again (registrations do not carry over to a child)",
                    self.local.pid,
                    self.local.owner_id,
                    std::process::id(),
                    now
                ),
            ));
        }
        // Relaxed: advisory; the kernel sets DEAD once and never clears it.
        if self.ring.flags().load(Ordering::Relaxed) & sys::WARPQ_RING_DEAD != 0 {
            return Err(Error::new(
                op,
                ErrorKind::QueueGone,
                None,
                "the kernel marked this queue dead (its process is exiting or its device is gone)",
            ));
        }
        Ok(())
    }

    /// Publishes the pushed entries and wakes the engine if it sleeps (the
    /// only system call on this path). Returns how many entries were pushed
    /// since the previous `submit` (some may have been published already,
    /// by a dropped [`SubmissionQueue`]).
    pub fn submit(&self) -> Result<usize> {
        self.check(Op::Submit)?;
        publish_sq(self.ring, self.local);
        let tail = self.local.sq_published.get();
        let submitted = tail.wrapping_sub(self.local.sq_submitted.get()) as usize;
        self.local.sq_submitted.set(tail);
        // SeqCst fence between our tail store and the flag load. The engine
        // sets NEED_WAKEUP with a fully ordered read-modify-write and then
        // re-reads sq_tail before it sleeps: with a full barrier on both
        // sides, either it sees our tail (and does not sleep) or we see its
        // flag (and wake it). Without the fence the store could sit in our
        // store buffer while we read a stale flag: a lost wakeup.
        fence(Ordering::SeqCst);
        // Relaxed: ordered by the fence above.
        let flags = self.ring.flags().load(Ordering::Relaxed);
        if flags & sys::WARPQ_RING_NEED_WAKEUP != 0 {
            // Only if something is pending: a sleeping engine with nothing
            // to do needs no system call. Acquire: pairs with the engine's
            // store-release of sq_head.
            let head = self.ring.sq_head().load(Ordering::Acquire);
            if self.local.sq_published.get() != head {
                self.kernel.wake()?;
                self.local.wakeups.set(self.local.wakeups.get() + 1);
            }
        }
        Ok(submitted)
    }

    /// [`Submitter::submit`], then blocks until at least `want` completions
    /// are ready (clamped to the submissions whose completions were not
    /// consumed yet, so it cannot wait for commands that do not exist).
    /// Returns how many are ready.
    pub fn submit_and_wait(&self, want: usize) -> Result<usize> {
        self.submit()?;
        let head = self.local.cq_head.get();
        // Acquire: pairs with the kernel's store-release of cq_tail.
        let ready = self.ring.cq_tail().load(Ordering::Acquire).wrapping_sub(head) as usize;
        // Every submission gets exactly one completion, so what can still
        // come is what was submitted minus what was consumed. Not
        // `sq_tail - sq_head` plus what is ready: the kernel publishes a
        // completion and the slot it frees with two stores, and a reader
        // between them counts the command neither in flight nor ready (it
        // returned 0 with the command running).
        let unconsumed = self.local.sq_published.get().wrapping_sub(head) as usize;
        let want = want.min(unconsumed).min(sys::WARPQ_CQ_ENTRIES as usize);
        if ready >= want {
            return Ok(ready);
        }
        self.wait_inner(want as u32, None).map(|n| n as usize)
    }

    /// Blocks until at least `min_ready` completions are ready, or the
    /// timeout passes (`None`: no timeout). Also wakes the engine and lets
    /// the driver rebuild what an invalidation tore down. Returns how many
    /// are ready (fewer than `min_ready` after a timeout).
    pub fn wait(&self, min_ready: u32, timeout: Option<Duration>) -> Result<u32> {
        self.check(Op::Wait)?;
        self.wait_inner(min_ready, timeout)
    }

    fn wait_inner(&self, min_ready: u32, timeout: Option<Duration>) -> Result<u32> {
        // The kernel counts ready completions from the ring's cq_head: hand
        // back what we consumed first.
        publish_cq(self.ring, self.local);
        self.kernel.wait(min_ready, timeout)
    }

    /// The system-call path: queues `entries` with one `WARPQ_IOC_SUBMIT`
    /// (which also wakes the engine), after the entries pushed through the
    /// ring so far. Returns how many were queued: fewer than given when the
    /// ring fills up.
    pub fn submit_batch(&self, entries: &[Entry]) -> Result<usize> {
        self.check(Op::Submit)?;
        // The kernel appends at the ring's sq_tail: publish ours first so
        // it goes after the entries we pushed, never over them.
        publish_sq(self.ring, self.local);
        // `Entry` is `repr(transparent)` over `warpq_sqe`.
        // SAFETY: same layout, same length.
        let raw = unsafe { std::slice::from_raw_parts(entries.as_ptr().cast::<warpq_sqe>(), entries.len()) };
        let n = self.kernel.submit_raw(raw)?;
        // Relaxed: the kernel moved sq_tail inside the system call we just
        // returned from, which orders it before this load; we read no
        // entries through it.
        let tail = self.ring.sq_tail().load(Ordering::Relaxed);
        self.local.sq_tail.set(tail);
        self.local.sq_published.set(tail);
        self.local.sq_submitted.set(tail);
        Ok(n as usize)
    }

    /// How many times [`Submitter::submit`] had to wake the engine (system
    /// calls made on the submit path), over the queue's life.
    pub fn wakeups(&self) -> u64 {
        self.local.wakeups.get()
    }
}

#[cfg(test)]
mod tests;
