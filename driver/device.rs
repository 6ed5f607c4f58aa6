// SPDX-License-Identifier: GPL-2.0

//! One bound device: its PCI function, its character device `/dev/warpqN`,
//! and what every queue of it shares.

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use kernel::bindings;
use kernel::new_mutex;
use kernel::prelude::*;
use kernel::sync::{Arc, Mutex};

use crate::edu::EduDma;
use crate::file::QueueFile;
use crate::glue::misc::MiscRegistration;
use crate::glue::pci::{DmaTranslation, PciDevice};
use crate::hist::Histograms;
use crate::mapping::DmaMapping;
use crate::pool::{EnginePool, EngineThreads};
use crate::protocol::platform::Mapping;
use crate::shim;
use crate::stats::Counters;

/// The edu device's DMA engine addresses 28 bits.
const EDU_DMA_BITS: u32 = 28;

/// The software command engine reaches any bus address.
const ENGINE_DMA_BITS: u32 = 64;

/// Device numbers for `/dev/warpqN`, in probe order.
static NEXT_INDEX: AtomicU32 = AtomicU32::new(0);

/// The DMA mask for a device whose DMA is translated as `translation`.
///
/// Behind an IOMMU the 28-bit IOVA space (256 MiB) is what both the software
/// engine and the edu DMA engine see, so the edu limit applies. Without one
/// (dma-direct), a 28-bit mask would bounce every page above 256 MiB through
/// swiotlb, and the device would work on copies of the user's pages instead
/// of the pages themselves; there the software engine's 64-bit reach is used
/// and edu DMA is refused for addresses it cannot reach.
fn dma_mask_bits(translation: DmaTranslation) -> u32 {
    match translation {
        DmaTranslation::Direct | DmaTranslation::IommuIdentity => ENGINE_DMA_BITS,
        _ => EDU_DMA_BITS,
    }
}

/// What the queues of a device share; outlives the binding while files are
/// open (they hold an `Arc`).
#[pin_data(PinnedDrop)]
pub(crate) struct DeviceCore {
    /// The device's DMA engine (BAR 0); dropped before `pdev`.
    pub(crate) edu: EduDma,
    pub(crate) pdev: PciDevice,
    pub(crate) index: u32,
    pub(crate) translation: DmaTranslation,
    /// The sum over the device's queues, past and present.
    pub(crate) stats: Counters,
    /// Latency histograms of all its queues.
    pub(crate) hist: Histograms,
    /// The device was removed: no new queue, existing ones were revoked.
    pub(crate) gone: AtomicBool,
    /// F: the open files, so that removal can revoke their queues. Entries
    /// are added at open and removed at release, both under F. F in the
    /// lock order: the table at the top of queue.rs.
    #[pin]
    files: Mutex<KVec<*const QueueFile>>,
    /// Q: mappings a stuck edu transfer may still reach, held until the
    /// device is idle again or quiesced (edu.rs, "A device that stops
    /// answering"). A leaf: taken under L by a teardown, and by the engine
    /// (inside its gate) to recover the device; nothing is taken inside it
    /// and nothing inside it may wait for reclaim.
    #[pin]
    held: Mutex<Held>,
    /// U: queues per user (keyed by the `user_struct`, one per uid), for
    /// `max_queues_per_user`. Taken at queue creation (outside D and L) and
    /// when a queue goes; nothing is taken inside it.
    #[pin]
    queues_by_user: Mutex<KVec<(usize, u32)>>,
    /// The engine threads' queue list and sleep (pool.rs; P in the lock
    /// order). The threads themselves belong to the binding
    /// (`WarpqDevice::engines`).
    #[pin]
    pub(crate) pool: EnginePool,
}

/// A queue counted against its creator's `max_queues_per_user`; the count
/// goes when this is dropped (with the queue, or with a queue that failed
/// to build).
pub(crate) struct QueueCharge {
    dev: Arc<DeviceCore>,
    user: usize,
}

impl Drop for QueueCharge {
    fn drop(&mut self) {
        let mut table = self.dev.queues_by_user.lock();
        if let Some(i) = table.iter().position(|e| e.0 == self.user) {
            table[i].1 -= 1;
            if table[i].1 == 0 {
                let last = table.len() - 1;
                table.swap(i, last);
                // SAFETY: shrinks by one; the dropped entry is plain data.
                unsafe { table.set_len(last) };
            }
        }
    }
}

/// What the quarantine holds.
pub(crate) struct Held {
    mappings: KVec<DmaMapping>,
    /// Pages in `mappings`.
    pages: u64,
    /// Pages of mappings that could not be recorded (no memory without
    /// reclaim under L): held for good, and counted.
    leaked_pages: u64,
}

/// Room reserved at probe, so that holding a mapping under L rarely needs
/// an allocation (only a stuck transfer's page is held; a few at most).
const HELD_RESERVE: usize = 8;

/// One bound device (the PCI driver data).
pub(crate) struct WarpqDevice {
    /// Declared (so dropped) first: no open can start once it is gone.
    _misc: MiscRegistration,
    /// `/sys/kernel/debug/warpq/warpqN`, removed before `core` can go.
    debugfs_dir: *mut core::ffi::c_void,
    /// The engine pool's threads, stopped in `drop` once every queue was
    /// revoked (so none runs), before BAR 0 goes.
    engines: Option<EngineThreads>,
    core: Arc<DeviceCore>,
}

// SAFETY: the debugfs handle is only used to remove the directory.
unsafe impl Send for WarpqDevice {}
// SAFETY: as above.
unsafe impl Sync for WarpqDevice {}

impl WarpqDevice {
    pub(crate) fn probe(pdev: PciDevice) -> Result<KBox<Self>> {
        let held_reserve = KVec::with_capacity(HELD_RESERVE, GFP_KERNEL)?;
        pdev.enable()?;
        let (vendor, device, revision) = pdev.ids();
        let (group, translation) = pdev.dma_translation();
        let mask_bits = dma_mask_bits(translation);
        if let Err(e) = pdev.set_dma_mask(mask_bits) {
            pdev.disable();
            return Err(e);
        }
        let bar = match pdev.map_bar0() {
            Ok(bar) => bar,
            Err(e) => {
                pdev.disable();
                return Err(e);
            }
        };
        let index = NEXT_INDEX.fetch_add(1, Ordering::Relaxed);
        let pdev_for_cleanup = pdev.clone_ref();
        let core = match Arc::pin_init(
            pin_init!(DeviceCore {
                edu: EduDma::new(bar),
                pdev,
                index,
                translation,
                stats: Counters::default(),
                hist: Histograms::default(),
                gone: AtomicBool::new(false),
                files <- new_mutex!(KVec::new()),
                held <- new_mutex!(Held {
                    mappings: held_reserve,
                    pages: 0,
                    leaked_pages: 0,
                }),
                queues_by_user <- new_mutex!(KVec::new()),
                pool <- EnginePool::new(),
            }),
            GFP_KERNEL,
        ) {
            Ok(core) => core,
            Err(e) => {
                // The BAR went with the failed initialiser; undo the enable.
                pdev_for_cleanup.disable();
                return Err(e);
            }
        };
        // From here on, dropping `core` (its last reference) disables the device.
        let misc = MiscRegistration::register(index, &core)?;
        let id = core.edu.id();
        match group {
            Some(group) => pr_info!(
                "{}: bound {:04x}:{:04x} rev {} (edu id {:#010x}), dma mask {} bits, iommu group {}, {}, /dev/warpq{}\n",
                core.pdev.name(), vendor, device, revision, id, mask_bits, group, translation.name(), index
            ),
            None => pr_info!(
                "{}: bound {:04x}:{:04x} rev {} (edu id {:#010x}), dma mask {} bits, no iommu: {}, /dev/warpq{}\n",
                core.pdev.name(), vendor, device, revision, id, mask_bits, translation.name(), index
            ),
        }
        let owner: *const DeviceCore = &*core;
        // SAFETY: `owner` stays valid while the directory exists: it is
        // removed in `drop`, before `core` is released.
        let debugfs_dir = unsafe { shim::warpq_debugfs_add_device(index, owner as *mut core::ffi::c_void) };
        // SAFETY: `core` outlives the threads: `drop` stops them before it
        // releases its reference.
        let engines = match unsafe { EngineThreads::start(&core) } {
            Ok(engines) => engines,
            Err(e) => {
                // SAFETY: created just above; nothing else refers to it.
                unsafe { shim::warpq_debugfs_remove_device(debugfs_dir) };
                return Err(e);
            }
        };
        pr_info!("warpq{}: {} engine threads\n", index, engines.count());
        let dev = KBox::new(Self { _misc: misc, debugfs_dir, engines: Some(engines), core }, GFP_KERNEL);
        if dev.is_err() {
            // SAFETY: created just above; nothing else refers to it.
            unsafe { shim::warpq_debugfs_remove_device(debugfs_dir) };
        }
        Ok(dev?)
    }
}

// SAFETY: the raw `QueueFile` pointers are only dereferenced under F while
// the file is open (see `files`); everything else is Send + Sync.
unsafe impl Send for DeviceCore {}
// SAFETY: as above.
unsafe impl Sync for DeviceCore {}

impl DeviceCore {
    /// Called at open: the file becomes revocable.
    pub(crate) fn add_file(&self, file: *const QueueFile) -> Result {
        self.files.lock().push(file, GFP_KERNEL)?;
        Ok(())
    }

    /// Called at release, before the file's queues are dropped.
    pub(crate) fn remove_file(&self, file: *const QueueFile) {
        let mut files = self.files.lock();
        if let Some(i) = files.iter().position(|&f| f == file) {
            let last = files.len() - 1;
            files.swap(i, last);
            // SAFETY: shrinking by one; the dropped entry is a plain pointer.
            unsafe { files.set_len(last) };
        }
    }

    /// The debugfs `queues` list: every live queue of every open file, as
    /// `Queue::describe` writes it. Takes F then each file's D to collect
    /// the queues, and describes them (L) after both are released; the
    /// references taken are dropped last, outside every lock.
    pub(crate) fn describe_queues(&self, out: &mut impl core::fmt::Write) -> core::fmt::Result {
        let mut queues = KVec::new();
        {
            let files = self.files.lock();
            for &file in files.iter() {
                // SAFETY: a file in the list is open (release removes it
                // under F before it frees anything).
                if unsafe { &*file }.live_queues(&mut queues).is_err() {
                    return Err(core::fmt::Error);
                }
            }
        }
        for queue in queues.iter() {
            queue.describe(out)?;
        }
        Ok(())
    }

    /// The device is going away: refuse new queues and revoke every queue
    /// of every open file (drain, DMA unmap, unpin, engine stopped), so no
    /// DMA mapping outlives the binding, whoever still holds a queue. The
    /// files stay open; their ioctls fail with ENODEV, waiters wake with
    /// ENODEV and their rings show WARPQ_RING_DEAD.
    ///
    /// (Revocation's teardowns of mappings a stuck edu transfer may reach
    /// go to the quarantine; unbind releases it after quiescing.)
    fn revoke_all(&self) {
        self.gone.store(true, Ordering::SeqCst);
        let files = self.files.lock();
        for &file in files.iter() {
            // SAFETY: a file in the list is open (release removes it under
            // F before it frees anything), so the pointer is valid here.
            unsafe { &*file }.revoke_all();
        }
    }
}

impl DeviceCore {
    /// A teardown's `mapping` (under L): if the stuck edu transfer may
    /// reach one of its pages, `hold` prepares it (dirties, uncharges,
    /// takes page references) and the quarantine keeps it, IOVAs mapped;
    /// else it is given back for the ordinary release.
    pub(crate) fn hold_if_reached(
        &self,
        mut mapping: DmaMapping,
        hold: impl FnOnce(&mut DmaMapping),
    ) -> core::result::Result<(), DmaMapping> {
        let mut held = self.held.lock();
        // Under Q: `recover_edu` clears `stuck` under Q too, so a mapping is
        // either held before a recovery takes the list, or released here.
        if !self.edu.reaches(mapping.dma_addresses()) {
            return Err(mapping);
        }
        hold(&mut mapping);
        let n = mapping.page_count();
        // GFP_NOWAIT: no reclaim under L (the lock order in queue.rs).
        if held.mappings.reserve(1, GFP_NOWAIT).is_err() {
            // No room and no memory: keep the pages and IOVAs for good.
            core::mem::forget(mapping);
            held.leaked_pages += n;
            return Ok(());
        }
        if held.mappings.push(mapping, GFP_NOWAIT).is_ok() {
            held.pages += n;
        }
        Ok(())
    }

    /// If the edu device is stuck and its pending transfer is now over,
    /// makes it usable again and releases what the quarantine held. Called
    /// by the engine before each edu transfer (inside its gate: takes only
    /// Q, and releases outside it).
    pub(crate) fn recover_edu(&self) {
        if !self.edu.is_stuck() {
            return;
        }
        let mappings = {
            let mut held = self.held.lock();
            // SAFETY: serialised by Q; unbind sets `gone` before it releases
            // the BAR, and recovery stops then.
            if self.gone.load(Ordering::SeqCst) || !unsafe { self.edu.idle_again() } {
                return;
            }
            held.pages = 0;
            core::mem::take(&mut held.mappings)
        };
        pr_info!("{}: the edu device is idle again; released what it could reach\n", self.pdev.name());
        self.release_held(mappings);
    }

    /// Unbind, after revocation: a stuck device is quiesced (bus mastering
    /// off: it can start no more DMA) before the quarantine is released.
    fn quiesce_and_release_held(&self) {
        if self.edu.is_stuck() {
            self.pdev.clear_master();
            pr_warn!("{}: the edu device never finished a transfer; bus mastering off\n", self.pdev.name());
        }
        let mappings = {
            let mut held = self.held.lock();
            held.pages = 0;
            core::mem::take(&mut held.mappings)
        };
        self.release_held(mappings);
    }

    fn release_held(&self, mappings: KVec<DmaMapping>) {
        let dev = self.pdev.as_dev();
        for mapping in mappings {
            let n = mapping.page_count();
            mapping.release_held(dev);
            self.stats.unpinned(n);
        }
    }

    /// Counts a new queue of `user` (the creator's `user_struct`): EDQUOT if
    /// the user already has `max_queues_per_user` on this device.
    pub(crate) fn charge_queue(self: &Arc<Self>, user: usize) -> Result<QueueCharge> {
        // CAP_SYS_RESOURCE is exempt, as from other per-user limits.
        // SAFETY: asks about the calling task's own credentials.
        let limit = if unsafe { bindings::capable(bindings::CAP_SYS_RESOURCE as i32) } {
            u32::MAX
        } else {
            // SAFETY: reads a module parameter; no precondition.
            unsafe { shim::warpq_param_max_queues_per_user() }
        };
        let mut table = self.queues_by_user.lock();
        match table.iter_mut().find(|e| e.0 == user) {
            Some(e) if e.1 >= limit => return Err(Error::from_errno(-(bindings::EDQUOT as i32))),
            Some(e) => e.1 += 1,
            None if limit == 0 => return Err(Error::from_errno(-(bindings::EDQUOT as i32))),
            None => table.push((user, 1), GFP_KERNEL)?,
        }
        Ok(QueueCharge { dev: self.clone(), user })
    }

    /// `(stuck, pages held, pages held for good)`, for debugfs `device`.
    pub(crate) fn held_counts(&self) -> (bool, u64, u64) {
        let held = self.held.lock();
        (self.edu.is_stuck(), held.pages, held.leaked_pages)
    }
}

#[pinned_drop]
impl PinnedDrop for DeviceCore {
    fn drop(self: Pin<&mut Self>) {
        pr_debug!("warpq{}: last reference gone\n", self.index);
    }
}

impl Drop for WarpqDevice {
    fn drop(&mut self) {
        // Open files keep `core` alive, but nothing of theirs may keep using
        // the device once it is unbound.
        self.core.revoke_all();
        // No queue is in the pool any more: stop its threads.
        self.engines = None;
        // Then BAR 0 goes (no engine runs any more), so the device can be
        // bound again while this binding's files are still open.
        self.core.edu.release();
        self.core.quiesce_and_release_held();
        // SAFETY: created in `probe`; removing it waits for readers.
        unsafe { shim::warpq_debugfs_remove_device(self.debugfs_dir) };
        self.core.pdev.disable();
        pr_info!("{}: unbound\n", self.core.pdev.name());
        // `_misc` is dropped after this: no new open.
    }
}
