// SPDX-License-Identifier: GPL-2.0

//! warpq: user-mapped accelerator queues for devices without SVA.
//!
//! The driver binds QEMU's `edu` PCI device (1234:11e8), the stand-in for a
//! non-SVA accelerator behind an IOMMU, and gives each (open file, mm) pair
//! a queue whose ring user space maps. See `docs/` in the warpq tree.
//!
//! Layout: `glue/` wraps the kernel APIs (PCI, misc device, mm, locks);
//! `device.rs`, `file.rs`, `queue.rs`, `ring.rs` are the driver; the
//! protocol core comes from `notifier/` as [`protocol`], unchanged.

// `pin_init!` of `Queue` (many fields) expands deeper than the default 128
// (and than 256).
#![recursion_limit = "512"]

use core::ptr::NonNull;

use kernel::bindings;
use kernel::ffi::{c_int, c_long, c_uint, c_ulong, c_void};
use kernel::prelude::*;
use kernel::sync::{Arc, ArcBorrow};
use kernel::uaccess::UserSlice;

mod device;
mod edu;
mod engine;
mod errors;
mod eventfd;
mod file;
mod hist;
mod mapping;
mod pool;
mod queue;
mod region_slots;
mod ring;
mod shim;
mod stats;
mod trace;
mod uapi;
mod vma_rules;

mod glue {
    pub(crate) mod misc;
    pub(crate) mod mm;
    pub(crate) mod mutex;
    pub(crate) mod pci;
}

/// The invalidation protocol core, compiled from `notifier/src` as is.
#[path = "../notifier/src"]
pub mod protocol {
    pub mod context;
    pub mod gate;
    pub mod overtake;
    pub mod platform;
    pub mod policy;
    pub mod pool;
    pub mod rebuild;
    pub mod region;
    pub mod sync;
    pub mod teardown;
}

use device::{DeviceCore, WarpqDevice};
use file::QueueFile;
use glue::pci::{self, PciDevice};
use shim::{FileRaw, MmRaw, PageRaw, PciDevRaw, VmaRaw};

module! {
    type: Warpq,
    name: "warpq",
    author: "warpq developers",
    description: "User-mapped accelerator queues for devices without SVA",
    license: "GPL",
}

/// Called by the shim's `pci_driver.probe`.
#[no_mangle]
extern "C" fn warpq_rs_probe(raw: *mut PciDevRaw) -> c_int {
    // SAFETY: the PCI core calls probe with a valid device.
    let pdev = match unsafe { PciDevice::from_raw(raw) } {
        Ok(pdev) => pdev,
        Err(e) => return e.to_errno(),
    };
    match WarpqDevice::probe(pdev) {
        Ok(dev) => {
            let dev = KBox::into_raw(dev);
            // SAFETY: `raw` is the device being probed; `warpq_rs_remove`
            // takes the pointer back.
            unsafe { pci::set_drvdata(raw, dev.cast()) };
            0
        }
        Err(e) => e.to_errno(),
    }
}

/// Called by the shim's `pci_driver.remove`.
#[no_mangle]
extern "C" fn warpq_rs_remove(raw: *mut PciDevRaw) {
    // SAFETY: the PCI core calls remove with the device it probed.
    let dev = unsafe { pci::take_drvdata(raw) }.cast::<WarpqDevice>();
    if !dev.is_null() {
        // SAFETY: probe stored a pointer from `KBox::into_raw` and
        // `take_drvdata` cleared it, so this is the only owner.
        drop(unsafe { KBox::from_raw(dev) });
    }
}

/// The `QueueFile` behind a file's `private_data`.
///
/// # Safety
///
/// `private` must be the `private_data` set by `warpq_rs_open` of a file
/// that has not been released.
unsafe fn queue_file<'a>(private: *mut c_void) -> ArcBorrow<'a, QueueFile> {
    // SAFETY: open stored `Arc::into_raw`; release gives it back only after
    // the last user of the file (the caller's contract).
    unsafe { ArcBorrow::from_raw(private.cast::<QueueFile>()) }
}

/// sysfs `stats` of `/dev/warpqN`: the device's counters, as text into
/// the `len`-byte page sysfs hands over. Returns the bytes written.
#[no_mangle]
extern "C" fn warpq_rs_device_stats_show(owner: *mut c_void, buf: *mut u8, len: usize) -> isize {
    /// Text into a fixed buffer; refuses what does not fit.
    struct PageText<'a> {
        buf: &'a mut [u8],
        used: usize,
    }
    impl core::fmt::Write for PageText<'_> {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            let end = self.used.checked_add(s.len()).filter(|&end| end <= self.buf.len()).ok_or(core::fmt::Error)?;
            self.buf[self.used..end].copy_from_slice(s.as_bytes());
            self.used = end;
            Ok(())
        }
    }
    // SAFETY: sysfs attributes exist only while the misc device is
    // registered, which keeps `owner` alive.
    let dev = unsafe { &*owner.cast::<DeviceCore>() };
    // SAFETY: `buf` is sysfs's buffer of `len` bytes, ours for this call.
    let mut text = PageText { buf: unsafe { core::slice::from_raw_parts_mut(buf, len) }, used: 0 };
    match dev.stats.write_text(&mut text) {
        Ok(()) => text.used as isize,
        Err(_) => -(bindings::EFBIG as isize),
    }
}

/// sysfs `dma_translation` of `/dev/warpqN`.
#[no_mangle]
extern "C" fn warpq_rs_device_dma_translation(owner: *mut c_void) -> *const kernel::ffi::c_char {
    // SAFETY: as in `warpq_rs_device_stats_show`.
    let dev = unsafe { &*owner.cast::<DeviceCore>() };
    dev.translation.c_name().as_char_ptr()
}

/// sysfs `reset` of `/dev/warpqN`: zero the device's counters and histograms.
#[no_mangle]
extern "C" fn warpq_rs_device_reset(owner: *mut c_void) {
    // SAFETY: as in `warpq_rs_device_stats_show`.
    let dev = unsafe { &*owner.cast::<DeviceCore>() };
    dev.stats.reset();
    dev.hist.reset();
}

/// debugfs `device`: the edu device's stuck state and what its quarantine
/// holds.
#[no_mangle]
extern "C" fn warpq_rs_held_counts(owner: *mut c_void, stuck: *mut bool, held: *mut u64, leaked: *mut u64) {
    // SAFETY: as in `warpq_rs_hist_get`.
    let dev = unsafe { &*owner.cast::<DeviceCore>() };
    let (s, h, l) = dev.held_counts();
    // SAFETY: the shim's out-parameters, valid for writes.
    unsafe { (*stuck, *held, *leaked) = (s, h, l) };
}

/// debugfs `hist`: how many histograms there are.
#[no_mangle]
extern "C" fn warpq_rs_hist_kinds() -> c_uint {
    hist::KINDS as c_uint
}

/// debugfs `hist`: buckets per histogram.
#[no_mangle]
extern "C" fn warpq_rs_hist_buckets() -> c_uint {
    hist::BUCKETS as c_uint
}

/// debugfs `hist`: the name of histogram `kind`.
#[no_mangle]
extern "C" fn warpq_rs_hist_name(kind: c_uint) -> *const kernel::ffi::c_char {
    hist::NAMES.get(kind as usize).map_or(c"?".as_ptr(), |n| n.as_ptr()).cast()
}

/// debugfs `hist`: one bucket's count.
#[no_mangle]
extern "C" fn warpq_rs_hist_get(owner: *mut c_void, kind: c_uint, bucket: c_uint) -> u64 {
    // SAFETY: the debugfs file exists only while the device is bound (it is
    // removed before the device's core can go), so `owner` is valid.
    let dev = unsafe { &*owner.cast::<DeviceCore>() };
    dev.hist.get(kind as usize, bucket as usize)
}

/// debugfs `hist`: the sum of histogram `kind`'s samples in ns.
#[no_mangle]
extern "C" fn warpq_rs_hist_sum(owner: *mut c_void, kind: c_uint) -> u64 {
    // SAFETY: as in `warpq_rs_hist_get`.
    let dev = unsafe { &*owner.cast::<DeviceCore>() };
    dev.hist.sum(kind as usize)
}

/// debugfs `queues`: every live queue of the device and its regions
/// (format: docs/user.md, `warpqctl queues`).
#[no_mangle]
extern "C" fn warpq_rs_queues_show(owner: *mut c_void, m: *mut shim::SeqFileRaw) -> c_int {
    /// Text collected in a vector: the lines are written in one piece, after
    /// every lock `describe_queues` takes is released.
    struct Text(KVec<u8>);
    impl core::fmt::Write for Text {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            self.0.extend_from_slice(s.as_bytes(), GFP_KERNEL).map_err(|_| core::fmt::Error)
        }
    }
    // SAFETY: as in `warpq_rs_hist_get`.
    let dev = unsafe { &*owner.cast::<DeviceCore>() };
    let mut text = Text(KVec::new());
    if dev.describe_queues(&mut text).is_err() {
        return -(bindings::ENOMEM as c_int);
    }
    // SAFETY: `m` is the seq_file being shown; the bytes are ours.
    unsafe { shim::warpq_seq_write(m, text.0.as_ptr().cast(), text.0.len()) };
    0
}

/// `open` of `/dev/warpqN`.
#[no_mangle]
extern "C" fn warpq_rs_open(owner: *mut c_void, file: *mut FileRaw) -> c_int {
    // SAFETY: `owner` is the `DeviceCore` the misc device was registered
    // with; it stays alive while registered, and misc_open() runs under the
    // misc lock that deregistration takes.
    let dev: Arc<DeviceCore> = unsafe { ArcBorrow::from_raw(owner.cast::<DeviceCore>()) }.into();
    if dev.gone.load(core::sync::atomic::Ordering::SeqCst) {
        return ENODEV.to_errno();
    }
    let qf = match QueueFile::new(dev) {
        Ok(qf) => qf,
        Err(e) => return e.to_errno(),
    };
    if let Err(e) = qf.dev.add_file(&*qf) {
        return e.to_errno();
    }
    // SAFETY: `file` is the file being opened.
    unsafe { shim::warpq_file_set_private(file, Arc::into_raw(qf) as *mut c_void) };
    0
}

/// `release` of `/dev/warpqN`: the last reference to the file is gone.
#[no_mangle]
extern "C" fn warpq_rs_release(private: *mut c_void) {
    // SAFETY: `private` came from `Arc::into_raw` in open; release runs once.
    let qf = unsafe { Arc::from_raw(private.cast::<QueueFile>()) };
    qf.dev.remove_file(&*qf);
    qf.release_all();
}

/// `unlocked_ioctl` of `/dev/warpqN`.
#[no_mangle]
extern "C" fn warpq_rs_ioctl(private: *mut c_void, cmd: c_uint, arg: c_ulong) -> c_long {
    // SAFETY: called on an open file.
    let qf = unsafe { queue_file(private) };
    match ioctl(&qf, cmd, arg as usize) {
        Ok(()) => 0,
        Err(e) => e.to_errno() as c_long,
    }
}

/// Reads an ioctl argument whose first field is its size: accepts any size
/// at least the version-1 size (newer callers), copies what we know.
fn read_arg<T: kernel::types::FromBytes>(arg: usize) -> Result<T> {
    let mut size_reader = UserSlice::new(arg, 4).reader();
    let size: u32 = size_reader.read()?;
    if (size as usize) < core::mem::size_of::<T>() {
        return Err(EINVAL);
    }
    UserSlice::new(arg, core::mem::size_of::<T>()).reader().read()
}

fn write_arg<T: kernel::types::AsBytes>(arg: usize, value: &T) -> Result {
    UserSlice::new(arg, core::mem::size_of::<T>()).writer().write(value)
}

/// The calling process's queue on this file, if it has one (never creates one).
fn caller_queue(qf: &QueueFile) -> Option<Arc<queue::Queue>> {
    let mm = glue::mm::current_mm()?;
    // SAFETY: `current->mm` is valid while the task runs this ioctl.
    unsafe { qf.existing_queue(mm) }
}

/// The calling process's queue on this file (created on first use).
fn own_queue(qf: &QueueFile) -> Result<Arc<queue::Queue>> {
    let mm = glue::mm::current_mm().ok_or(EINVAL)?;
    // SAFETY: `current->mm` is valid while the task runs this ioctl.
    unsafe { qf.queue_for(mm, file::Caller::Ioctl) }
}

fn ioctl(qf: &QueueFile, cmd: u32, arg: usize) -> Result {
    // Dispatch on direction, type and number; the structure's size field,
    // not the size bits of the number, says which version the caller speaks.
    let is = |ioc: u32| cmd & !uapi::IOC_SIZE_BITS == ioc & !uapi::IOC_SIZE_BITS;
    match cmd {
        _ if is(uapi::WARPQ_IOC_INFO) => {
            let (mut reader, mut writer) =
                UserSlice::new(arg, core::mem::size_of::<uapi::warpq_info>()).reader_writer();
            let size: u32 = reader.read()?;
            if (size as usize) < core::mem::size_of::<uapi::warpq_info>() {
                return Err(EINVAL);
            }
            let info = uapi::warpq_info {
                size: core::mem::size_of::<uapi::warpq_info>() as u32,
                version: uapi::WARPQ_UAPI_VERSION,
                capabilities: uapi::WARPQ_CAP_RING
                    | uapi::WARPQ_CAP_SUBMIT_IOCTL
                    | uapi::WARPQ_CAP_EDU_DMA
                    | uapi::WARPQ_CAP_FORK_QUEUE
                    | uapi::WARPQ_CAP_POLL
                    | uapi::WARPQ_CAP_EVENTFD
                    | match caller_queue(qf).map_or_else(mapping::current_backing, |q| q.backing()) {
                        mapping::Backing::Mirror => uapi::WARPQ_CAP_MIRROR,
                        mapping::Backing::Pin => 0,
                    },
                sq_entries: uapi::WARPQ_SQ_ENTRIES,
                cq_entries: uapi::WARPQ_CQ_ENTRIES,
                ring_size: uapi::WARPQ_RING_SIZE as u32,
                max_regions: queue::max_regions() as u32,
                max_region_bytes: queue::max_region_bytes(),
                // The caller's queue keeps the policy it was created with;
                // a caller without one would get the current parameter's.
                policy: caller_queue(qf).map_or_else(queue::current_policy, |q| q.policy()) as u32,
                dma_translation: qf.dev.translation as u32,
            };
            writer.write(&info)
        }
        _ if is(uapi::WARPQ_IOC_REGISTER) => {
            let mut req: uapi::warpq_register = read_arg(arg)?;
            // The handle goes back through `arg`: fail on a read-only `arg`
            // before pinning anything (and undo if it turns read-only
            // meanwhile), so that no registration outlives an EFAULT.
            write_arg(arg, &req)?;
            let queue = own_queue(qf)?;
            req.handle = queue.register(req.addr, req.len, req.access)?;
            write_arg(arg, &req).inspect_err(|_| {
                let _ = queue.unregister(req.handle);
            })
        }
        _ if is(uapi::WARPQ_IOC_UNREGISTER) => {
            let req: uapi::warpq_unregister = read_arg(arg)?;
            own_queue(qf)?.unregister(req.handle)
        }
        _ if is(uapi::WARPQ_IOC_SUBMIT) => {
            let mut req: uapi::warpq_submit = read_arg(arg)?;
            // As for REGISTER: `submitted` must be writable before anything
            // is queued, or the caller would be told of a failure while its
            // entries run.
            write_arg(arg, &req)?;
            req.submitted = own_queue(qf)?.submit(req.sqes as usize, req.count)?;
            write_arg(arg, &req)
        }
        _ if is(uapi::WARPQ_IOC_WAIT) => {
            let mut req: uapi::warpq_wait = read_arg(arg)?;
            req.ready = own_queue(qf)?.wait(req.min_ready, req.timeout_ns)?;
            write_arg(arg, &req)
        }
        _ if is(uapi::WARPQ_IOC_WAKE) => {
            let _req: uapi::warpq_wake = read_arg(arg)?;
            own_queue(qf)?.wake()
        }
        _ if is(uapi::WARPQ_IOC_EVENTFD) => {
            let req: uapi::warpq_eventfd = read_arg(arg)?;
            let eventfd = if req.fd == -1 { None } else { Some(eventfd::EventFd::from_fd(req.fd)?) };
            own_queue(qf)?.set_eventfd(eventfd)
        }
        _ if is(uapi::WARPQ_IOC_STATS) => {
            let size: u32 = UserSlice::new(arg, 4).reader().read()?;
            if (size as usize) < uapi::STATS_V1_SIZE {
                return Err(EINVAL);
            }
            let mm = glue::mm::current_mm().ok_or(EINVAL)?;
            // SAFETY: `current->mm` is valid while the task runs this ioctl.
            // STATS never creates a queue (and its engine thread).
            let queue = unsafe { qf.existing_queue(mm) };
            // Too big for the kernel stack with its histograms (2.8 KiB).
            let stats = KBox::<uapi::warpq_stats>::new_uninit(GFP_KERNEL | __GFP_ZERO)?;
            // SAFETY: the allocation is zeroed, and all zeroes is a valid
            // `warpq_stats` (integers only).
            let mut stats = unsafe { stats.assume_init() };
            if let Some(q) = &queue {
                q.stats_into(&mut stats);
            }
            // The histograms follow the counters for a caller whose `size`
            // covers them; `size` says what was written.
            let written = if size as usize >= core::mem::size_of::<uapi::warpq_stats>() {
                core::mem::size_of::<uapi::warpq_stats>()
            } else {
                uapi::STATS_V1_SIZE
            };
            stats.size = written as u32;
            // SAFETY: `stats` is one initialised `warpq_stats` (integers, no
            // padding) of at least `written` bytes.
            let bytes = unsafe { core::slice::from_raw_parts(core::ptr::from_ref(&*stats).cast::<u8>(), written) };
            UserSlice::new(arg, written).writer().write_slice(bytes)
        }
        _ => Err(ENOTTY),
    }
}

/// `mmap` of `/dev/warpqN`: the queue's ring.
#[no_mangle]
extern "C" fn warpq_rs_mmap(private: *mut c_void, vma: *mut VmaRaw) -> c_int {
    // SAFETY: `vma` is the new mapping, set up under the mmap write lock.
    let ret = unsafe { shim::warpq_vma_setup(vma, uapi::WARPQ_RING_SIZE as c_ulong, private) };
    if ret != 0 {
        return ret;
    }
    0
}

/// `poll` of `/dev/warpqN`: the readiness of the caller's queue on this file
/// (`Queue::poll_mask`). The wait queue is the file's, which every queue of
/// the file wakes. A caller with no queue yet is not ready; on a device
/// that is gone, every poll says `EPOLLERR | EPOLLHUP`.
#[no_mangle]
extern "C" fn warpq_rs_poll(private: *mut c_void, file: *mut FileRaw, pt: *mut bindings::poll_table_struct) -> c_uint {
    // SAFETY: called on an open file.
    let qf = unsafe { queue_file(private) };
    // SAFETY: `file` is open, and the wait queue head lives as long as the
    // file (it is the file's `QueueFile`'s); epoll removes its entries
    // before the file is released.
    unsafe { shim::warpq_poll_wait(file, qf.poll_wq(), pt) };
    match caller_queue(&qf) {
        Some(queue) => queue.poll_mask(),
        None if qf.dev.gone.load(core::sync::atomic::Ordering::SeqCst) => queue::POLL_ERR | queue::POLL_HUP,
        None => 0,
    }
}

/// `vm_operations_struct.fault` of a queue mapping: maps the ring page of
/// the faulting mm's queue, creating that queue on first touch.
#[no_mangle]
extern "C" fn warpq_rs_fault(
    private: *mut c_void,
    mm: *mut MmRaw,
    vm_start: c_ulong,
    pgoff: c_ulong,
    page: *mut *mut PageRaw,
) -> c_uint {
    // SAFETY: the vma holds a reference on the file, so it is not released.
    let qf = unsafe { queue_file(private) };
    let Some(mm) = NonNull::new(mm) else {
        return bindings::vm_fault_reason_VM_FAULT_SIGBUS;
    };
    // SAFETY: the fault path holds the mmap lock of `mm`, which keeps it valid.
    let queue = match unsafe { qf.queue_for(mm, file::Caller::Fault) } {
        Ok(queue) => queue,
        Err(e) if e == ENOMEM => return bindings::vm_fault_reason_VM_FAULT_OOM,
        Err(_) => return bindings::vm_fault_reason_VM_FAULT_SIGBUS,
    };
    let ret = match queue.fault(vm_start as u64, pgoff as usize) {
        Ok(p) => {
            // SAFETY: `page` is the shim's out-parameter.
            unsafe { *page = p.as_ptr() };
            0
        }
        Err(reason) => reason,
    };
    // Never the last reference dropped under the mmap lock (the lock order
    // in queue.rs): if unbind or close let go of the file's queues
    // meanwhile, this one is dropped later, outside the lock.
    if let Some(last) = Arc::into_unique_or_drop(queue) {
        qf.bury_later(last.into());
    }
    ret
}

/// `vm_operations_struct.open`: a queue mapping was duplicated (fork) or
/// split off. Nothing to do yet: the child's first touch builds its queue.
#[no_mangle]
extern "C" fn warpq_rs_vma_open(_private: *mut c_void, _mm: *mut MmRaw) {}

/// `vm_operations_struct.close`.
#[no_mangle]
extern "C" fn warpq_rs_vma_close(_private: *mut c_void, _mm: *mut MmRaw) {}

/// `/sys/kernel/debug/warpq`, while the module is loaded.
struct DebugfsRoot;

impl DebugfsRoot {
    fn new() -> Self {
        // SAFETY: no precondition; failure only means no debugfs files.
        unsafe { shim::warpq_debugfs_init() };
        Self
    }
}

impl Drop for DebugfsRoot {
    fn drop(&mut self) {
        // SAFETY: created in `new`; the devices' directories are gone (the
        // PCI driver, declared before this field, was unregistered first).
        unsafe { shim::warpq_debugfs_exit() };
    }
}

struct Warpq {
    _driver: pci::DriverRegistration,
    _debugfs: DebugfsRoot,
}

impl kernel::Module for Warpq {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        pr_info!("loaded\n");
        let debugfs = DebugfsRoot::new();
        Ok(Self { _driver: pci::DriverRegistration::new()?, _debugfs: debugfs })
    }
}
