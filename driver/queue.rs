// SPDX-License-Identifier: GPL-2.0

//! One queue: the state of one (device file, mm) pair — its shared ring, its
//! registered regions with their interval notifiers, its engine (run by the
//! device's engine pool, pool.rs), and the protocol core's context that
//! keeps all of that consistent.
//!
//! Created by the first fault or ioctl of that mm, so that after fork the
//! child gets a queue of its own and never the parent's.
//!
//! # Lock order
//!
//! The driver's one statement of its lock order; the other files and
//! `docs/` refer here. Outermost first: a lock is taken only while holding
//! locks above it, never one below it.
//!
//! | lock | what | taken by | takes inside it |
//! |------|------|----------|-----------------|
//! | F | `DeviceCore::files` (device.rs): the device's open files | open (under the misc device lock), release, unbind (`revoke_all`, under the PCI device lock), the debugfs `queues` list (F then D to collect the queues; L only after both are released) | unbind: D (to take the file's queues out), then each queue's `revoke`: R, L, notifier removal, engine stop; then dropping the queues (below) |
//! | R | `Queue::reg_lock`: REGISTER, UNREGISTER, revocation | `register`, `unregister`, `revoke` (under F) | L; mmap_lock (notifier insertion: write, for the mm's first notifier; GUP: read); notifier removal |
//! | S | `Queue::submit_lock`: SUBMIT ioctls | `submit` | a page fault while copying the entries: mmap_lock, then D and L if they lie in a queue mapping |
//! | mmap_lock | the queue's mm's | the fault path (read), GUP from an ioctl (read), notifier insertion and the zap worker (write); the kernel around most invalidations (any mode) | fault path: D, then queue creation and L; invalidation callback: L only |
//! | D | `QueueFile::dir` (file.rs): the file's queues by mm | queue lookup and creation, reaping, release | nothing: a queue is built before D is taken and dropped after it is released |
//! | L | `Queue::lock` (lockdep class `warpq_queue_lock`): the protocol core's context lock | the invalidation callback (trylock when non-blocking), rebuild, register/arm/unregister, release | the gate's drain; the kernel's spinlocks inside DMA unmap, unpin and wake-ups |
//! | rebuild worker | `Queue::rebuild_work` (a work item, not a lock): maps the chunks a command waits for | the engine queues it | mmap_lock (read, inside GUP or `hmm_range_fault`), then L, as an ioctl's rebuild; cancelled (waited for) by revocation under R and by the queue's drop |
//! | gate | `notifier/src/gate.rs`, not a lock | the engine, per command; L's holders pause it and wait for the engine to leave | Q only, to recover a stuck edu device (otherwise the engine takes no lock: it polls the edu device's busy flag together with the reset check) |
//! | U | `DeviceCore::queues_by_user` (device.rs): queues per user, for `max_queues_per_user` | queue creation (before the queue is built, outside D and L) and a queue's drop | nothing (a `GFP_KERNEL` push at creation: no L or D is held there) |
//! | P | `EnginePool::queues` (pool.rs): the device's queues, for its engine threads | a worker, to pick and claim a queue (released before it runs it); queue creation (outside D and L); `stop_engine` (in revocation under F, or the queue's drop) | nothing (a `GFP_KERNEL` push at creation) |
//! | K | `Queue::set_aside`: the commands the engine set aside for a rebuild (`overtake.rs`) | the engine, around its batch (uncontended: one worker runs a queue at a time); `stop_engine`, to abort them | Q (inside the gate, as any command); the wait queues' and pollers' spinlocks and the workqueue's (waking a WAIT, queuing the worker or the zap); released before the batch is published (E) |
//! | E | `Queue::eventfd`: the queue's eventfd (a spinlock) | the engine, to signal a batch of completions; WARPQ_IOC_EVENTFD, to replace it | nothing but the eventfd's own wait-queue spinlock (`eventfd_signal`); a replaced eventfd is released after E is dropped |
//! | Q | `DeviceCore::held` (device.rs): the quarantine of mappings a stuck edu transfer may reach | a teardown's `unmap_and_unpin` (under L), the engine's `recover_edu` (inside its gate), unbind | nothing; allocates only with GFP_NOWAIT; pages are released after it is dropped |
//!
//! - R and S are never held together, nor are D and L.
//! - Under L nothing may wait for what the kernel may hold when it calls
//!   the invalidation callback (mmap_lock in any mode, `i_mmap_rwsem`, a
//!   folio lock, reclaim): no allocation, GUP, `mmu_interval_read_begin`,
//!   mmap_lock, notifier insertion or removal, folio lock (`set_page_dirty`,
//!   not its `_lock` variant) or zap (the zap worker does it). Under L the
//!   protocol core calls only `set_seq`, `read_retry`, the drain wait,
//!   `unmap_and_unpin`, `engine_reset`, wake-ups and the tracepoint hooks.
//!   (The one allocation under L is the quarantine's GFP_NOWAIT reserve,
//!   which never enters reclaim; if it fails the mapping is held for good.)
//! - Notifier removal waits for running callbacks, which take L: remove
//!   notifiers without L.
//! - Dropping a queue (`PinnedDrop`) takes L, removes the notifiers, stops
//!   the engine and waits for the zap work, which takes mmap_lock for write:
//!   the last `Arc<Queue>` must not be dropped under mmap_lock or D (the
//!   fault path leaves the queues it reaps, and its own reference when it
//!   turns out to be the last, in the file's graveyard, dropped by a later
//!   ioctl, at release or at unbind).

use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use kernel::alloc::{KVBox, KVVec};
use kernel::bindings;
use kernel::ffi::{c_ulong, c_void};
use kernel::prelude::*;
use kernel::sync::{Arc, Mutex, SpinLock};
use kernel::types::Opaque;
use kernel::{new_mutex, new_spinlock};

use crate::device::{DeviceCore, QueueCharge};
use crate::eventfd::EventFd;
use crate::file::QueueFile;
use crate::glue::mm::{MmGrab, UserRef};
use crate::glue::mutex::{KMutex, KMutexGuard};
use crate::hist::Histograms;
use crate::mapping::{current_backing, Backing, DmaMapping};
use crate::protocol::context::{Config, ContextLock, LockKey, MmContext, RegionRequest};
use crate::protocol::overtake::SetAside;
use crate::protocol::platform::Waiter;
use crate::protocol::policy::Policy;
use crate::protocol::pool::EngineClaim;
use crate::protocol::rebuild::RebuildError;
use crate::protocol::region::{chunk_count_for, Access, Chunk, RegionHandle};
use crate::region_slots::{RegionSlots, MAX_REGIONS};
use crate::ring::Ring;
use crate::shim::{self, MmRaw, PageRaw};
use crate::stats::Counters;
use crate::trace;
use crate::uapi;

mod describe;
mod invalidation;
mod platform;
mod rebuild;
mod run;

use invalidation::zap_work_fn;
use rebuild::{rebuild_work_fn, OwnerWaiting};
use run::Aside;

/// Commands the engine sets aside at most (`overtake.rs`): past that, the
/// command that would be set aside stays in the ring and the queue waits.
const SET_ASIDE_MAX: usize = 32;
/// Largest registered buffer (cap; the `max_region_mb` parameter may lower it).
const MAX_REGION_BYTES: u64 = 4 << 30;

/// The `max_regions` module parameter, within the table's capacity.
pub(crate) fn max_regions() -> usize {
    // SAFETY: reads a module parameter; no precondition.
    (unsafe { shim::warpq_param_max_regions() } as usize).clamp(1, MAX_REGIONS)
}

/// The `max_region_mb` module parameter, in bytes, within the cap.
pub(crate) fn max_region_bytes() -> u64 {
    // SAFETY: reads a module parameter; no precondition.
    (u64::from(unsafe { shim::warpq_param_max_region_mb() }) << 20).clamp(PAGE_SIZE, MAX_REGION_BYTES)
}
/// Queue mappings per mm whose PTEs the zap worker knows about. A process
/// mapping its queue more often than this still gets a correct queue (the
/// gate keeps the engine out); only the extra mappings do not fault on the
/// next touch and rebuild lazily — an ioctl does.
const MAX_RING_MAPPINGS: usize = 4;

const PAGE_SIZE: u64 = kernel::page::PAGE_SIZE as u64;

/// Queue identities as seen by user space (`owner_id` in the ring header):
/// never reused while the module is loaded.
static NEXT_OWNER_ID: AtomicU64 = AtomicU64::new(1);

type Context = MmContext<DmaMapping, MAX_REGIONS>;

#[pin_data(PinnedDrop)]
pub(crate) struct Queue {
    dev: Arc<DeviceCore>,
    /// Keeps the `mm_struct` (not the address space) alive: its address is
    /// this queue's key, and the notifiers' and the zap worker's mm.
    mm: MmGrab,
    /// `file->private_data` of the file this queue belongs to (the queue
    /// vma's `vm_private_data`), to recognise its mappings.
    file_private: *mut c_void,
    /// This queue in its creator's `max_queues_per_user` count. Declared
    /// before `user`, so dropped first: its key is `user`'s pointer, which
    /// must not be freed and reused while it is counted.
    _charge: QueueCharge,
    /// The user who created the queue: the `pin` backing charges its pins
    /// to this user's `locked_vm`, so a user's processes share one
    /// RLIMIT_MEMLOCK budget.
    user: UserRef,
    /// The registering task's RLIMIT_MEMLOCK in pages (`u64::MAX`: it had
    /// CAP_IPC_LOCK), recorded by each REGISTER: every later pin of the
    /// queue, in a fault, an ioctl or the rebuild worker, is held to it.
    memlock_limit: AtomicU64,
    /// The process that created the queue (thread-group id in the initial
    /// PID namespace, and its `comm` then), for the debugfs `queues` list.
    owner_pid: i32,
    owner_comm: [u8; 16],
    owner_id: u64,
    ring: Ring,
    config: Config,
    backing: Backing,
    ctx: KVBox<Context>,
    /// L: the protocol core's context lock, taken by the interval-notifier
    /// callback (lock order: the table at the top of this file).
    #[pin]
    lock: KMutex<LockKey>,
    /// R: serialises REGISTER and UNREGISTER, so that a region slot and its
    /// notifier are reused only after the previous notifier is removed.
    #[pin]
    reg_lock: Mutex<()>,
    /// S: serialises SUBMIT ioctls (they produce into the SQ).
    #[pin]
    submit_lock: Mutex<()>,
    /// E: the eventfd signalled per batch of completions, if one is set.
    #[pin]
    eventfd: SpinLock<Option<EventFd>>,
    /// K: commands taken out of the ring that wait for a rebuild, or
    /// behind one on the same chunk (`overtake.rs`).
    #[pin]
    set_aside: Mutex<SetAside<Aside, SET_ASIDE_MAX>>,
    /// How many commands are set aside (written under K; read without it
    /// by `engine_has_work`).
    set_aside_len: AtomicU32,
    /// The engine stopped taking commands from the ring behind the set-aside
    /// ones (the next keeps submission order, or the list is full).
    ring_held: AtomicBool,
    /// `MmContext::chunks_resolved` when the engine last retried every
    /// set-aside command: a chunk published, refused or killed since is a
    /// reason to retry them even while the queue is still stale for others.
    retried_at: AtomicU64,
    /// WAIT calls of the owner in progress: each rebuilds what commands
    /// wait for itself, so the worker leaves it to them (the rebuild's CPU
    /// time is then the owner's, which the scheduler weighs against other
    /// processes; a kworker's is nobody's).
    owner_waiting: AtomicU32,
    /// Rebuilds in progress (`Queue::rebuild_as`): revocation waits for
    /// them, so none maps or unmaps a chunk after the device is gone.
    rebuilds_running: AtomicU32,
    /// Bumped by the engine or the worker each time it leaves a rebuild to
    /// a WAIT: the
    /// WAIT's sleep ends on it (a WAIT asleep on an already stale queue
    /// would otherwise wait out its retry slice).
    rebuild_kicks: AtomicU32,
    /// Waiters: drains, the idle engine, WAIT.
    #[pin]
    wq: Opaque<bindings::wait_queue_head>,
    #[pin]
    zap_work: Opaque<bindings::work_struct>,
    /// Rebuilds the chunks a command waits for, without waiting for the
    /// owner's next ring touch or ioctl (module parameter `rebuild_worker`).
    #[pin]
    rebuild_work: Opaque<bindings::work_struct>,
    /// The regions' interval notifiers, by region-table slot. Declared
    /// after everything that may still reach a notifier: dropped once the
    /// drop below has removed them all.
    slots: RegionSlots,
    ring_mappings: [AtomicU64; MAX_RING_MAPPINGS],
    /// A worker of the device's engine pool runs this queue's commands now
    /// (pool.rs): one at a time.
    engine_claim: EngineClaim,
    /// Out of the engine pool for good (`stop_engine`).
    engine_stopped: AtomicBool,
    /// Unbind revoked the queue (`revoke`): every ioctl on it fails with
    /// ENODEV, whoever still holds it.
    revoked: AtomicBool,
    /// When the queue last went stale (0: not stale), for the paused-time
    /// histogram and the queue-state tracepoint.
    stale_since: AtomicU64,
    stats: Counters,
    /// This queue's latency histograms (STATS); the device has the sums.
    hist: Histograms,
}

// SAFETY: the raw pointers are identities (`file_private`) or used through
// the kernel's own synchronisation (`engine`, notifier slots written before
// insertion); everything else is Send + Sync.
unsafe impl Send for Queue {}
// SAFETY: as above.
unsafe impl Sync for Queue {}

impl ContextLock for KMutex<LockKey> {
    type Guard<'a> = KMutexGuard<'a, LockKey>;
    fn lock(&self) -> Self::Guard<'_> {
        KMutex::lock(self)
    }
    fn try_lock(&self) -> Option<Self::Guard<'_>> {
        KMutex::try_lock(self)
    }
}

/// The RLIMIT_MEMLOCK of the calling (registering) task in pages, or
/// `u64::MAX` if it has CAP_IPC_LOCK: what the `pin` backing charges this
/// queue's pins against from now on.
fn memlock_limit_pages() -> u64 {
    // SAFETY: asks about the calling task's own credentials.
    if unsafe { bindings::capable(bindings::CAP_IPC_LOCK as i32) } {
        return u64::MAX;
    }
    // SAFETY: reads the calling task's own limit.
    let bytes = unsafe { shim::warpq_rlimit_memlock() } as u64;
    bytes / PAGE_SIZE
}

/// The module parameter `policy` (`filtered` by default), read when a
/// queue is created.
pub(crate) fn current_policy() -> Policy {
    // SAFETY: reads a module parameter; no precondition.
    match unsafe { shim::warpq_param_policy() } {
        0 => Policy::Strict,
        _ => Policy::Filtered,
    }
}

/// The protocol's tunables for a new queue, from the module parameters.
fn current_config() -> Config {
    // SAFETY: reads a module parameter; no precondition.
    let drain_ms = unsafe { shim::warpq_param_drain_timeout_ms() };
    // SAFETY: reads a module parameter; no precondition.
    let chunk_kb = u64::from(unsafe { shim::warpq_param_chunk_kb() }).max(64);
    // The smallest power of two at least `chunk_kb` KiB.
    let chunk_shift = (64 - (chunk_kb * 1024 - 1).leading_zeros()) as u8;
    // SAFETY: reads a module parameter; no precondition.
    let share_mb = u64::from(unsafe { shim::warpq_param_device_share_mb() });
    Config {
        policy: current_policy(),
        drain_timeout_ns: u64::from(drain_ms.max(1)) * 1_000_000,
        chunk_shift,
        device_share: share_mb << 20,
        ..Config::DEFAULT
    }
}

/// `EPOLL*` bits (include/uapi/asm-generic/poll.h; the kernel's own macros
/// carry a `__force` cast bindgen does not evaluate).
pub(crate) const POLL_IN: u32 = 0x0001;
const POLL_OUT: u32 = 0x0004;
pub(crate) const POLL_ERR: u32 = 0x0008;
pub(crate) const POLL_HUP: u32 = 0x0010;
const POLL_RDNORM: u32 = 0x0040;
const POLL_WRNORM: u32 = 0x0100;

/// How long WAIT sleeps between rebuild attempts while the queue stays
/// stale: 1 ms at first, doubling up to 16 ms while it stays stale.
const STALE_RETRY_MIN_NS: u64 = 1_000_000;
const STALE_RETRY_MAX_NS: u64 = 16_000_000;

impl Queue {
    /// A queue for `mm`, with its engine thread running.
    ///
    /// # Safety
    ///
    /// `mm` must be valid for the duration of the call; `file_private` is the
    /// owning file's `private_data`.
    pub(crate) unsafe fn new(dev: Arc<DeviceCore>, mm: NonNull<MmRaw>, file_private: *mut c_void) -> Result<Arc<Self>> {
        let user = UserRef::current();
        // Counted first: a user over its limit gets EDQUOT before anything
        // is allocated (the count goes with the queue, or with `charge` if
        // a step below fails).
        let charge = dev.charge_queue(user.as_ptr() as usize)?;
        let owner_id = NEXT_OWNER_ID.fetch_add(1, Ordering::Relaxed);
        let ring = Ring::new(owner_id)?;
        // SAFETY: `mm` is valid (this function's contract).
        let mm = unsafe { MmGrab::new(mm) };
        // The context holds every chunk state inline: built in place, in its
        // own allocation (vmalloc when large), never on the stack.
        // Charged to the creating task's memory cgroup, as the ring is.
        let mut slot = KVBox::<Context>::new_uninit(GFP_KERNEL_ACCOUNT)?;
        // SAFETY: a fresh allocation of the right size and alignment.
        let key = unsafe { Context::init_in_place(slot.as_mut_ptr(), mm.id()) };
        // SAFETY: `init_in_place` initialised every field.
        let ctx = unsafe { slot.assume_init() };
        let config = current_config();
        let mut owner_comm = [0u8; 16];
        // SAFETY: `owner_comm` has room for TASK_COMM_LEN bytes.
        let owner_pid = unsafe { shim::warpq_current_identity(owner_comm.as_mut_ptr()) };
        let queue = Arc::pin_init(
            pin_init!(Self {
                dev,
                mm,
                file_private,
                user,
                _charge: charge,
                memlock_limit: AtomicU64::new(0),
                owner_pid,
                owner_comm,
                owner_id,
                ring,
                config,
                backing: current_backing(),
                ctx,
                lock <- KMutex::new(key),
                submit_lock <- new_mutex!(()),
                reg_lock <- new_mutex!(()),
                eventfd <- new_spinlock!(None),
                set_aside <- new_mutex!(SetAside::new()),
                set_aside_len: AtomicU32::new(0),
                ring_held: AtomicBool::new(false),
                retried_at: AtomicU64::new(0),
                owner_waiting: AtomicU32::new(0),
                rebuild_kicks: AtomicU32::new(0),
                rebuilds_running: AtomicU32::new(0),
                // SAFETY: `slot` is pinned memory for a wait queue head.
                wq <- Opaque::ffi_init(|slot| unsafe { shim::warpq_waitqueue_init(slot) }),
                // SAFETY: `slot` is pinned memory for a work item.
                zap_work <- Opaque::ffi_init(|slot| unsafe { shim::warpq_work_init(slot, zap_work_fn) }),
                // SAFETY: `slot` is pinned memory for a work item.
                rebuild_work <- Opaque::ffi_init(|slot| unsafe { shim::warpq_work_init(slot, rebuild_work_fn) }),
                slots: RegionSlots::new(),
                ring_mappings: [const { AtomicU64::new(0) }; MAX_RING_MAPPINGS],
                engine_claim: EngineClaim::new(),
                engine_stopped: AtomicBool::new(false),
                revoked: AtomicBool::new(false),
                stale_since: AtomicU64::new(0),
                stats: Counters::default(),
                hist: Histograms::default(),
            }),
            GFP_KERNEL_ACCOUNT,
        )?;
        queue.dev.pool.add(&queue)?;
        Ok(queue)
    }

    /// Unbind: ends the queue, whoever still holds a reference to it (a
    /// WAIT without a timeout, a SUBMIT, a fault). The context is released
    /// (drained, every region unmapped and unpinned, the gate closed for
    /// good, so no command starts after this begins), the notifiers are
    /// removed, the engine is stopped (what is left in the ring completes
    /// ABORTED and the ring shows DEAD) and waiters wake to ENODEV.
    /// Idempotent; the queue's drop then finds nothing left to do.
    ///
    /// Runs under F (the lock order above): takes R, then L.
    pub(crate) fn revoke(&self) {
        self.revoked.store(true, Ordering::SeqCst);
        // R: no REGISTER between inserting its notifier and arming it.
        let _registration = self.reg_lock.lock();
        {
            let mut key = self.lock.lock();
            let _ = self.ctx.release(&mut key, &self.platform(false), &self.config);
        }
        // A rebuild worker already past its released check finds the
        // context released under L and undoes its mapping: wait for it
        // before the device goes (it takes L and the mmap lock, never R).
        // SAFETY: initialised in `new`.
        unsafe { shim::warpq_work_cancel_sync(self.rebuild_work.get()) };
        // So do rebuilds in ioctls and faults (they take L and the mmap
        // lock, never R or F): none starts now (`revoked`), and the ones
        // running are waited for.
        let platform = self.platform(false);
        platform.wait_until(&|| self.rebuilds_running.load(Ordering::SeqCst) == 0, u64::MAX);
        self.remove_notifiers();
        self.stop_engine();
        self.wake_all();
    }

    /// ENODEV once unbind revoked the queue.
    fn check_live(&self) -> Result {
        if self.revoked.load(Ordering::SeqCst) {
            Err(ENODEV)
        } else {
            Ok(())
        }
    }

    /// The policy this queue was created with (WARPQ_IOC_INFO).
    pub(crate) fn policy(&self) -> Policy {
        self.config.policy
    }

    /// The backing this queue was created with (WARPQ_IOC_INFO).
    pub(crate) fn backing(&self) -> Backing {
        self.backing
    }

    /// Removes every inserted notifier (waits for running callbacks; never
    /// from one, never under L).
    fn remove_notifiers(&self) {
        for slot in self.slots.iter() {
            if slot.inserted.swap(false, Ordering::AcqRel) {
                // SAFETY: inserted by `register`, not removed since (the
                // swap makes exactly one caller remove it).
                unsafe { shim::warpq_interval_remove(slot.sub.get().cast()) };
            }
        }
    }

    /// Takes the queue out of the engine pool, once: no worker runs it
    /// after this returns, and what is left in the ring completes as
    /// aborted (the ring says DEAD).
    fn stop_engine(&self) {
        if self.engine_stopped.swap(true, Ordering::AcqRel) {
            return;
        }
        self.dev.pool.remove(self);
        // A worker that claimed it before the removal runs one batch at
        // most (the context is released by now: the gate lets none in).
        while self.engine_claim.is_claimed() {
            // SAFETY: sleeping is allowed here (no spinlock held).
            unsafe { bindings::msleep(1) };
        }
        // The engine's last act, by this thread now that no worker runs it.
        self.abort_pending();
    }

    /// The pool's claim of this queue's engine (pool.rs); false if another
    /// worker runs it. Acquire: the previous worker's work on the ring
    /// (its private indices) happens before ours.
    pub(crate) fn claim_engine(&self) -> bool {
        self.engine_claim.try_claim()
    }

    /// Ends a claim (release: pairs with the next claim's acquire).
    pub(crate) fn release_engine(&self) {
        self.engine_claim.release();
    }

    /// The pool's need-wakeup flag for this queue's ring.
    pub(crate) fn set_need_wakeup(&self, on: bool) {
        self.ring.set_flag(uapi::WARPQ_RING_NEED_WAKEUP, on);
    }

    /// The queue's mm identity (its directory key).
    pub(crate) fn mm_id(&self) -> usize {
        self.mm.id()
    }

    /// The queue's process exited (or exec'd): nothing can use it any more.
    pub(crate) fn is_orphaned(&self) -> bool {
        !self.mm.has_users()
    }

    fn wq(&self) -> *mut bindings::wait_queue_head {
        self.wq.get()
    }

    /// Wakes everything that may wait on this queue: WAIT, drains,
    /// pollers, and the engine pool (something may have work for it).
    fn wake_all(&self) {
        self.wake_waiters();
        self.dev.pool.kick();
    }

    /// WAIT, drains and pollers, not the engine pool: what the engine
    /// itself calls when it publishes (it needs no kick for its own work).
    fn wake_waiters(&self) {
        // SAFETY: the wait queue head was initialised in `new`.
        unsafe { shim::warpq_wake_up_all(self.wq()) };
        self.file().wake_pollers();
    }

    /// The file this queue belongs to. A file outlives its queues: every
    /// `Arc<Queue>` is held by the file's directory or graveyard (dropped at
    /// the latest by the file's release, before the `QueueFile` is freed) or
    /// by an ioctl, fault or unbind running on the open file.
    fn file(&self) -> &QueueFile {
        // SAFETY: `file_private` is the `QueueFile` that created this queue
        // (`Queue::new`'s contract), which outlives it (above).
        unsafe { &*(self.file_private as *const QueueFile) }
    }

    /// `poll`: `EPOLLIN` when completions are ready, `EPOLLOUT` when the
    /// submission ring has room, `EPOLLERR | EPOLLHUP` once the queue is
    /// dead (its process or its device gone).
    pub(crate) fn poll_mask(&self) -> u32 {
        if self.revoked.load(Ordering::SeqCst) || self.ctx.is_released() {
            return POLL_ERR | POLL_HUP;
        }
        let mut mask = 0;
        if self.ring.cq_ready() > 0 {
            mask |= POLL_IN | POLL_RDNORM;
        }
        if self.ring.sq_space() > 0 {
            mask |= POLL_OUT | POLL_WRNORM;
        }
        mask
    }

    /// The page to map at page `index` of a queue mapping at `vm_start` in
    /// this queue's mm, rebuilding what invalidations tore down first.
    /// Called from `->fault` with the mmap lock held.
    pub(crate) fn fault(&self, vm_start: u64, index: usize) -> core::result::Result<NonNull<PageRaw>, u32> {
        self.count(|c| &c.faults, 1);
        let page = self.ring.page(index).ok_or(bindings::vm_fault_reason_VM_FAULT_SIGBUS)?;
        self.remember_mapping(vm_start);
        let platform = self.platform(true);
        if self.ctx.gate().is_stale() {
            match self.rebuild(&platform) {
                // A chunk short of memory (RLIMIT_MEMLOCK, IOVA space) fails
                // the commands that waited for it, never the ring.
                Ok(_) | Err(RebuildError::Released) => {}
                // Collisions or a busy queue: let the access fault again.
                Err(_) => return Err(bindings::vm_fault_reason_VM_FAULT_NOPAGE),
            }
        }
        // The zap scheduled by a teardown may have run before this page is
        // mapped: re-check and re-queue it (its worker waits for our mmap lock).
        self.ctx.ring_mapped(&platform);
        Ok(page)
    }

    fn remember_mapping(&self, vm_start: u64) {
        if self.ring_mappings.iter().any(|m| m.load(Ordering::Relaxed) == vm_start) {
            return;
        }
        for m in &self.ring_mappings {
            if m.compare_exchange(0, vm_start, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
                return;
            }
        }
    }

    /// REGISTER: `[addr, addr + len)` with `access`, pinned and mapped before
    /// this returns. Called from an ioctl of the queue's mm, without the
    /// mmap lock (inserting the notifier takes it).
    pub(crate) fn register(&self, addr: u64, len: u64, access: u32) -> Result<u64> {
        if addr % PAGE_SIZE != 0 || len % PAGE_SIZE != 0 {
            return Err(EINVAL);
        }
        if len == 0 || addr.checked_add(len).is_none() {
            return Err(EINVAL);
        }
        if len > max_region_bytes() {
            return Err(E2BIG);
        }
        let mut bits = 0u8;
        if access & uapi::WARPQ_ACCESS_READ != 0 {
            bits |= Access::READ.bits();
        }
        if access & uapi::WARPQ_ACCESS_WRITE != 0 {
            bits |= Access::WRITE.bits();
        }
        if access & !(uapi::WARPQ_ACCESS_READ | uapi::WARPQ_ACCESS_WRITE) != 0 || bits == 0 {
            return Err(EINVAL);
        }
        let access = Access::from_bits(bits).ok_or(EINVAL)?;
        let _registration = self.reg_lock.lock();
        let result = self.register_locked(addr, len, access);
        self.wake_all();
        result
    }

    fn register_locked(&self, addr: u64, len: u64, access: Access) -> Result<u64> {
        self.check_live()?;
        self.memlock_limit.store(memlock_limit_pages(), Ordering::Relaxed);
        let platform = self.platform(false);
        // The region's chunks, allocated before L (nothing allocates under
        // it) and handed to the table, which frees them with the region: up
        // to 65536 of them (a 4 GiB region of 64 KiB chunks, about 6 MiB),
        // so vmalloc'd if need be, and charged to the registering cgroup.
        let count = chunk_count_for(len, self.config.chunk_shift);
        let mut chunks = KVVec::with_capacity(count, GFP_KERNEL_ACCOUNT)?;
        for _ in 0..count {
            // Within the capacity: allocates nothing.
            chunks.push(Chunk::new(), GFP_KERNEL_ACCOUNT)?;
        }
        let desc = {
            let mut key = self.lock.lock();
            if self.ctx.region_count(&key) >= max_regions() {
                return Err(ENOSPC);
            }
            let request = RegionRequest { start: addr, len, access, chunks };
            self.ctx.register(&mut key, &platform, &self.config, request)?
        };
        let slot = match self.slots.get_or_alloc(desc.handle.slot(), self) {
            Ok(slot) => slot,
            Err(e) => {
                // Undone whatever the engine does: past the drain timeout
                // the queue is reset rather than the region left behind.
                let _ = self.remove_region(desc.handle, true);
                return Err(e);
            }
        };
        // SAFETY: the slot is free (the region table just handed it out and
        // its previous notifier was removed before that); nothing reads
        // `desc` until the notifier is inserted below.
        unsafe { *slot.desc.get() = Some(desc) };
        // The queue (and so `sub`) outlives the insertion: it is removed in
        // `unregister` or `PinnedDrop`.
        // SAFETY: `sub` is this slot's notifier storage, in no tree; the mm
        // is held by `self.mm` and has users (this is its own ioctl).
        let ret = unsafe {
            shim::warpq_interval_insert(slot.sub.get().cast(), self.mm.as_ptr(), addr as c_ulong, len as c_ulong)
        };
        if ret != 0 {
            // As above; the notifier is not inserted, so none is removed.
            let _ = self.remove_region(desc.handle, true);
            return Err(kernel::error::Error::from_errno(ret));
        }
        slot.ever_inserted.store(true, Ordering::Release);
        slot.inserted.store(true, Ordering::Release);
        // SAFETY: reads a module parameter; no precondition.
        let delay_ms = unsafe { shim::warpq_param_fail_register_arm_delay_ms() };
        if delay_ms != 0 {
            // SAFETY: sleeping is allowed in an ioctl (R held, not L).
            unsafe { bindings::msleep(delay_ms) };
        }
        let armed = {
            let mut key = self.lock.lock();
            self.ctx.arm(&mut key, &platform, &self.config, desc.handle)
        };
        let result = armed.map_err(Error::from).and_then(|()| match self.rebuild_for_register(&platform) {
            // A chunk that could not be faulted in, whoever settled it.
            Ok(report) if report.gone_slots.contains(desc.handle.slot()) => Err(EFAULT),
            // One that could not be pinned or mapped for want of memory
            // (RLIMIT_MEMLOCK, IOVA space), even after evicting others.
            Ok(report) if report.short_slots.contains(desc.handle.slot()) => Err(ENOMEM),
            Ok(_) => Ok(()),
            Err(_) => Err(EAGAIN),
        });
        // A region with a chunk that could not be faulted in (unmapped,
        // read-only for a device-writable registration, VM_IO...): refuse it.
        let info = {
            let key = self.lock.lock();
            self.ctx.region(&key, desc.handle)
        };
        let dead = info.map_or(true, |info| info.dead_chunks > 0 || info.refused_chunks > 0);
        if result.is_err() || dead {
            // Nothing of a failed REGISTER stays registered, however busy the
            // engine is: past the drain timeout the queue is reset, as for
            // an invalidation, rather than the undo giving up.
            let _ = self.remove_region(desc.handle, true);
            // Settled by another rebuild (the worker) for want of memory.
            let short = info.is_ok_and(|info| info.short_chunks > 0 && info.short_chunks == info.refused_chunks);
            return Err(result.err().unwrap_or(if short { ENOMEM } else { EFAULT }));
        }
        Ok(desc.handle.to_raw())
    }

    /// UNREGISTER: drains the engine, unpins, removes the notifier.
    pub(crate) fn unregister(&self, raw: u64) -> Result {
        let _registration = self.reg_lock.lock();
        self.check_live()?;
        let result = self.unregister_locked(raw);
        self.wake_all();
        result
    }

    fn unregister_locked(&self, raw: u64) -> Result {
        // A handle naming no slot of the table is malformed (EINVAL); one
        // naming an empty slot or an old generation is gone (ENOENT).
        let handle = RegionHandle::from_raw(raw).filter(|h| h.slot() < MAX_REGIONS).ok_or(EINVAL)?;
        self.remove_region(handle, false)
    }

    /// Removes a region and its notifier (under the registration lock);
    /// `reset_on_timeout`: never EBUSY, reset the queue past the drain
    /// timeout instead.
    fn remove_region(&self, handle: RegionHandle, reset_on_timeout: bool) -> Result {
        let report = {
            let mut key = self.lock.lock();
            let platform = self.platform(false);
            let removed = if reset_on_timeout {
                self.ctx.unregister_or_reset(&mut key, &platform, &self.config, handle)
            } else {
                self.ctx.unregister(&mut key, &platform, &self.config, handle)
            };
            removed?
        };
        // The callback may still read `desc`; removing the notifier below
        // waits for it. The region is gone from the table, so the callback
        // finds nothing to do. (A region the table had has its slot: the
        // page is allocated before its notifier is inserted.)
        let Some(slot) = self.slots.get(handle.slot()) else { return Ok(()) };
        if slot.inserted.swap(false, Ordering::AcqRel) {
            // SAFETY: inserted by `register`; removal waits for running
            // callbacks and is not done from one.
            unsafe { shim::warpq_interval_remove(slot.sub.get().cast()) };
        }
        let _ = report;
        Ok(())
    }

    /// WAIT: until `min_ready` completions are in the ring, the timeout, or
    /// a signal. An invalidation during the wait makes the queue stale: the
    /// waiter wakes, rebuilds (it is an ioctl of the owning mm) and waits on.
    pub(crate) fn wait(&self, min_ready: u32, timeout_ns: i64) -> Result<u32> {
        let _waiting = OwnerWaiting::enter(self);
        let min_ready = min_ready.min(uapi::WARPQ_CQ_ENTRIES);
        let now = || {
            // SAFETY: no precondition.
            unsafe { shim::warpq_ktime_ns() }
        };
        let deadline = if timeout_ns < 0 { u64::MAX } else { now().saturating_add(timeout_ns as u64) };
        let mut stale_retry = STALE_RETRY_MIN_NS;
        loop {
            // Every round checks for signals and sleeps, whatever state the
            // queue is in: a queue that stays stale (a rebuild colliding
            // with a stream of invalidations, a REGISTER between insertion
            // and arming) must not turn WAIT into a busy loop.
            self.check_live()?;
            if kernel::current!().signal_pending() {
                return Err(ERESTARTSYS);
            }
            if min_ready > 0 && self.ring.cq_ready() >= min_ready {
                // What was asked for is there: return it now rather than
                // after a rebuild another command waits for (leaving, the
                // guard hands a stale queue to the worker).
                self.wake_all();
                break;
            }
            // Read before this round's rebuild: a kick for a command that
            // asks for a rebuild from here on (the engine's or the worker's)
            // ends the sleep below at once, even if the queue looked stale
            // for another chunk, rather than after a retry slice.
            let kicks = self.rebuild_kicks.load(Ordering::SeqCst);
            match self.rebuild_if_stale() {
                // Collisions with a stream of invalidations: retried below,
                // after a short sleep.
                Err(e) if e == EAGAIN => {}
                other => other?,
            }
            self.wake_all();
            let left = if deadline == u64::MAX { u64::MAX } else { deadline.saturating_sub(now()) };
            if left == 0 {
                break;
            }
            // Still stale: sleep one slice, then try the rebuild again. Not
            // stale: sleep until ready, released, a new invalidation (which
            // the next round rebuilds) or the deadline.
            let stale = self.ctx.gate().is_stale();
            let slice = if stale { left.min(stale_retry) } else { left };
            stale_retry = if stale { (stale_retry * 2).min(STALE_RETRY_MAX_NS) } else { STALE_RETRY_MIN_NS };
            let kicked = || self.rebuild_kicks.load(Ordering::SeqCst) != kicks;
            let cond = || {
                self.ring.cq_ready() >= min_ready
                    || self.ctx.is_released()
                    || (!stale && self.ctx.gate().is_stale())
                    || kicked()
            };
            let cond: &dyn Fn() -> bool = &cond;
            // SAFETY: the wait queue was initialised in `new`; `cond`
            // outlives the call.
            let ret = unsafe {
                shim::warpq_wait_interruptible_timeout(
                    self.wq(),
                    call_cond,
                    &cond as *const &dyn Fn() -> bool as *const c_void,
                    slice,
                )
            };
            if ret < 0 {
                return Err(ERESTARTSYS);
            }
            if self.ring.cq_ready() >= min_ready || self.ctx.is_released() || (ret == 0 && !stale) {
                break;
            }
            if kicked() {
                // A new rebuild to do now, not after a grown slice.
                stale_retry = STALE_RETRY_MIN_NS;
            }
        }
        self.check_live()?;
        Ok(self.ring.cq_ready())
    }

    /// SUBMIT: queues `count` entries read from user memory at `sqes` and
    /// wakes the engine. Returns how many were queued (fewer when the ring
    /// fills up).
    pub(crate) fn submit(&self, sqes: usize, count: u32) -> Result<u32> {
        const CHUNK: usize = 32;
        self.check_live()?;
        self.rebuild_for_submitter()?;
        let _serial = self.submit_lock.lock();
        let total = count as usize;
        let mut reader = kernel::uaccess::UserSlice::new(sqes, total.checked_mul(64).ok_or(EINVAL)?).reader();
        let mut done = 0usize;
        let mut fault = None;
        let mut buf = [[0u64; 8]; CHUNK];
        while done < total {
            let n = (total - done).min(CHUNK);
            let mut read = 0;
            for e in buf.iter_mut().take(n) {
                match reader.read::<[u64; 8]>() {
                    Ok(entry) => *e = entry,
                    Err(err) => {
                        fault = Some(err);
                        break;
                    }
                }
                read += 1;
            }
            let pushed = self.ring.push_sqes(&buf[..read]);
            done += pushed;
            if pushed < n {
                break;
            }
        }
        self.wake_all();
        trace::submit_ioctl(self.mm.id(), count, done as u32);
        // Like write(2): entries before an unreadable one are queued and
        // counted; the fault is the result only when none went in.
        match fault {
            Some(err) if done == 0 => Err(err),
            _ => Ok(done as u32),
        }
    }

    /// WAKE: the engine may be asleep (`WARPQ_RING_NEED_WAKEUP`).
    pub(crate) fn wake(&self) -> Result {
        self.check_live()?;
        self.rebuild_for_submitter()?;
        self.wake_all();
        Ok(())
    }
}

#[pinned_drop]
impl PinnedDrop for Queue {
    fn drop(self: Pin<&mut Self>) {
        // 1. Drain, unpin everything, close the gate for good.
        {
            let mut key = self.lock.lock();
            let _ = self.ctx.release(&mut key, &self.platform(false), &self.config);
        }
        // 2. Remove the notifiers (waits for running callbacks; never from one).
        self.remove_notifiers();
        // 3. Stop the engine: it completes what is left in the ring as aborted.
        self.stop_engine();
        // 4. No rebuild, then no zap, may run after this (a failed rebuild
        // queues a zap).
        // SAFETY: initialised in `new`.
        unsafe { shim::warpq_work_cancel_sync(self.rebuild_work.get()) };
        // SAFETY: initialised in `new`.
        unsafe { shim::warpq_work_cancel_sync(self.zap_work.get()) };
    }
}

pub(crate) fn now_ns() -> u64 {
    // SAFETY: no precondition.
    unsafe { shim::warpq_ktime_ns() }
}

/// Trampoline for the shim's wait helpers: `arg` points to a `&dyn Fn() -> bool`.
pub(crate) unsafe extern "C" fn call_cond(arg: *const c_void) -> bool {
    // SAFETY: the callers pass a pointer to a live `&dyn Fn() -> bool`.
    let cond = unsafe { &*(arg as *const &dyn Fn() -> bool) };
    cond()
}
