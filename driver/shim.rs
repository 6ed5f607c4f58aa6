// SPDX-License-Identifier: GPL-2.0

//! Declarations of the C shim (`warpq_shim.c`), mirrored by hand: bindgen
//! does not run on out-of-tree modules. Keep in step with the C file.
//!
//! Nothing outside the safe wrappers in `glue/` calls these directly.

use kernel::bindings;
use kernel::ffi::{c_char, c_int, c_uint, c_ulong, c_void};

/// Declares zero-sized stand-ins for C structures that Rust only passes by
/// pointer and never looks inside.
macro_rules! opaque_c_types {
    ($($(#[$doc:meta])* $name:ident;)*) => {
        $(
            $(#[$doc])*
            #[repr(C)]
            pub(crate) struct $name {
                _opaque: [u8; 0],
            }
        )*
    };
}

opaque_c_types! {
    /// Opaque `struct pci_dev`.
    PciDevRaw;
    /// Opaque `struct device`.
    DeviceRaw;
    /// Opaque `struct page`.
    PageRaw;
    /// Opaque `struct sg_table`.
    SgTableRaw;
    /// Opaque `struct mm_struct`.
    MmRaw;
    /// Opaque `struct file`.
    FileRaw;
    /// Opaque `struct vm_area_struct`.
    VmaRaw;
    /// Opaque `struct mmu_notifier_range`.
    RangeRaw;
    /// Opaque `struct mmu_interval_notifier` (storage: `bindings::mmu_interval_notifier`).
    IntervalRaw;
    /// Opaque `struct task_struct`.
    TaskRaw;
    /// Opaque `struct user_struct`.
    UserRaw;
    /// Opaque `struct seq_file`.
    SeqFileRaw;
}

/// `enum warpq_dma_kind` values returned by [`warpq_iommu_describe`].
pub(crate) mod dma_kind {
    pub(crate) const DIRECT: i32 = 0;
    pub(crate) const IOMMU_STRICT: i32 = 1;
    pub(crate) const IOMMU_LAZY: i32 = 2;
    pub(crate) const IOMMU_IDENTITY: i32 = 3;
}

extern "C" {
    // Module parameters.
    pub(crate) fn warpq_param_policy() -> c_int;
    pub(crate) fn warpq_param_backing() -> c_int;
    pub(crate) fn warpq_param_chunk_kb() -> c_uint;
    pub(crate) fn warpq_param_rebuild_worker() -> bool;
    pub(crate) fn warpq_param_drain_timeout_ms() -> c_uint;
    pub(crate) fn warpq_param_engine_edu() -> bool;
    pub(crate) fn warpq_param_engine_idle_us() -> c_uint;
    pub(crate) fn warpq_param_engine_threads() -> c_uint;
    pub(crate) fn warpq_cpu_relax();
    pub(crate) fn warpq_param_max_regions() -> c_uint;
    pub(crate) fn warpq_param_max_region_mb() -> c_uint;
    pub(crate) fn warpq_param_device_share_mb() -> c_uint;
    pub(crate) fn warpq_param_fail_register_arm_delay_ms() -> c_uint;
    pub(crate) fn warpq_param_fail_rebuild_delay_ms() -> c_uint;
    pub(crate) fn warpq_param_fail_edu_stall() -> bool;
    pub(crate) fn warpq_param_max_queues_per_user() -> c_uint;

    // PCI.
    pub(crate) fn warpq_pci_register_driver() -> c_int;
    pub(crate) fn warpq_pci_unregister_driver();
    pub(crate) fn warpq_pci_dev_get(pdev: *mut PciDevRaw) -> *mut PciDevRaw;
    pub(crate) fn warpq_pci_dev_put(pdev: *mut PciDevRaw);
    pub(crate) fn warpq_pci_to_dev(pdev: *mut PciDevRaw) -> *mut DeviceRaw;
    pub(crate) fn warpq_pci_name(pdev: *mut PciDevRaw) -> *const c_char;
    pub(crate) fn warpq_pci_ids_of(pdev: *mut PciDevRaw, vendor: *mut u16, device: *mut u16, revision: *mut u8);
    pub(crate) fn warpq_pci_enable(pdev: *mut PciDevRaw) -> c_int;
    pub(crate) fn warpq_pci_clear_master(pdev: *mut PciDevRaw);
    pub(crate) fn warpq_pci_disable(pdev: *mut PciDevRaw);
    pub(crate) fn warpq_pci_map_bar0(pdev: *mut PciDevRaw, err: *mut c_int) -> *mut c_void;
    pub(crate) fn warpq_pci_unmap_bar0(pdev: *mut PciDevRaw, bar: *mut c_void);
    pub(crate) fn warpq_readl(bar: *mut c_void, off: c_ulong) -> u32;
    pub(crate) fn warpq_writel(bar: *mut c_void, off: c_ulong, val: u32);
    pub(crate) fn warpq_writeq(bar: *mut c_void, off: c_ulong, val: u64);
    pub(crate) fn warpq_pci_set_drvdata(pdev: *mut PciDevRaw, data: *mut c_void);
    pub(crate) fn warpq_pci_get_drvdata(pdev: *mut PciDevRaw) -> *mut c_void;
    pub(crate) fn warpq_dma_set_mask(dev: *mut DeviceRaw, bits: c_uint) -> c_int;
    pub(crate) fn warpq_iommu_describe(dev: *mut DeviceRaw, group_id: *mut c_int) -> c_int;

    // Character device and file.
    pub(crate) fn warpq_misc_register(
        index: c_uint,
        parent: *mut DeviceRaw,
        owner: *mut c_void,
        err: *mut c_int,
    ) -> *mut c_void;
    pub(crate) fn warpq_misc_deregister(handle: *mut c_void);
    pub(crate) fn warpq_file_set_private(file: *mut FileRaw, data: *mut c_void);

    // The queue's vma (more to come: the zap worker).
    pub(crate) fn warpq_vma_setup(vma: *mut VmaRaw, size: c_ulong, private: *mut c_void) -> c_int;

    // How a queue vma is recognised (`vma_rules.rs`).
    pub(crate) fn warpq_queue_vm_ops() -> *const bindings::vm_operations_struct;

    // mm references.
    pub(crate) fn warpq_current_mm() -> *mut MmRaw;
    pub(crate) fn warpq_mm_has_users(mm: *mut MmRaw) -> bool;
    pub(crate) fn warpq_mmgrab(mm: *mut MmRaw);
    pub(crate) fn warpq_mmdrop(mm: *mut MmRaw);
    pub(crate) fn warpq_mmget_not_zero(mm: *mut MmRaw) -> bool;
    pub(crate) fn warpq_mmput(mm: *mut MmRaw);
    pub(crate) fn warpq_mmap_read_lock(mm: *mut MmRaw);
    pub(crate) fn warpq_mmap_read_unlock(mm: *mut MmRaw);
    pub(crate) fn warpq_mmap_write_lock(mm: *mut MmRaw);
    pub(crate) fn warpq_mmap_write_unlock(mm: *mut MmRaw);

    // Locks, wait queues, time.
    pub(crate) fn warpq_mutex_init(lock: *mut bindings::mutex);
    pub(crate) fn warpq_waitqueue_init(wq: *mut bindings::wait_queue_head);
    pub(crate) fn warpq_wake_up_all(wq: *mut bindings::wait_queue_head);
    pub(crate) fn warpq_wake_up_pollers(wq: *mut bindings::wait_queue_head);
    pub(crate) fn warpq_poll_wait(
        file: *mut FileRaw,
        wq: *mut bindings::wait_queue_head,
        pt: *mut bindings::poll_table_struct,
    );
    pub(crate) fn warpq_wait_until(
        wq: *mut bindings::wait_queue_head,
        cond: unsafe extern "C" fn(*const c_void) -> bool,
        arg: *const c_void,
        timeout_ns: u64,
    ) -> bool;
    pub(crate) fn warpq_wait_event_interruptible(
        wq: *mut bindings::wait_queue_head,
        cond: unsafe extern "C" fn(*const c_void) -> bool,
        arg: *const c_void,
    ) -> c_int;
    pub(crate) fn warpq_wait_interruptible_timeout(
        wq: *mut bindings::wait_queue_head,
        cond: unsafe extern "C" fn(*const c_void) -> bool,
        arg: *const c_void,
        timeout_ns: u64,
    ) -> core::ffi::c_long;
    pub(crate) fn warpq_kthread_run(
        f: unsafe extern "C" fn(*mut c_void) -> c_int,
        data: *mut c_void,
        name: *const c_char,
        err: *mut c_int,
    ) -> *mut TaskRaw;
    pub(crate) fn warpq_ktime_ns() -> u64;
    pub(crate) fn warpq_cond_resched();

    // Work items.
    pub(crate) fn warpq_work_init(
        work: *mut bindings::work_struct,
        f: unsafe extern "C" fn(*mut bindings::work_struct),
    );
    pub(crate) fn warpq_work_schedule(work: *mut bindings::work_struct);
    pub(crate) fn warpq_work_cancel_sync(work: *mut bindings::work_struct);

    // Interval notifiers.
    pub(crate) fn warpq_interval_insert(
        sub: *mut IntervalRaw,
        mm: *mut MmRaw,
        start: c_ulong,
        length: c_ulong,
    ) -> c_int;
    pub(crate) fn warpq_interval_remove(sub: *mut IntervalRaw);
    pub(crate) fn warpq_interval_read_begin(sub: *mut IntervalRaw) -> c_ulong;
    pub(crate) fn warpq_interval_read_retry(sub: *mut IntervalRaw, seq: c_ulong) -> bool;
    pub(crate) fn warpq_interval_set_seq(sub: *mut IntervalRaw, cur_seq: c_ulong);
    pub(crate) fn warpq_range_blockable(range: *const RangeRaw) -> bool;
    pub(crate) fn warpq_mmap_lock_held(mm: *mut MmRaw) -> bool;
    pub(crate) fn warpq_range_info(range: *const RangeRaw, start: *mut c_ulong, end: *mut c_ulong, event: *mut c_uint);

    // Pinning and DMA.
    pub(crate) fn warpq_mirror_pages(
        sub: *mut IntervalRaw,
        mm: *mut MmRaw,
        start: c_ulong,
        nr: c_ulong,
        write: bool,
        seq: c_ulong,
        pfns: *mut c_ulong,
        pages: *mut *mut PageRaw,
    ) -> core::ffi::c_long;
    pub(crate) fn warpq_dma_map_chunk(
        dev: *mut DeviceRaw,
        pages: *mut *mut PageRaw,
        n: c_uint,
        device_writes: bool,
        dma: *mut u64,
        err: *mut c_int,
    ) -> *mut SgTableRaw;
    pub(crate) fn warpq_dma_unmap_chunk(dev: *mut DeviceRaw, sgt: *mut SgTableRaw, device_writes: bool);
    pub(crate) fn warpq_dma_to_kernel(dev: *mut DeviceRaw, addr: u64) -> *mut u8;
    pub(crate) fn warpq_set_page_dirty(page: *mut PageRaw);
    pub(crate) fn warpq_get_page(page: *mut PageRaw);
    pub(crate) fn warpq_put_page(page: *mut PageRaw);
    pub(crate) fn warpq_atomic_long_add_within(v: *mut bindings::atomic_long_t, n: c_ulong, limit: c_ulong) -> bool;
    pub(crate) fn warpq_atomic_long_sub(v: *mut bindings::atomic_long_t, n: c_ulong);
    pub(crate) fn warpq_atomic64_add(v: *mut bindings::atomic64_t, n: i64);
    pub(crate) fn warpq_rlimit_memlock() -> c_ulong;
    pub(crate) fn warpq_current_user_get() -> *mut UserRaw;
    pub(crate) fn warpq_current_identity(comm: *mut u8) -> c_int;
    pub(crate) fn warpq_seq_write(m: *mut SeqFileRaw, data: *const c_void, len: usize);
    pub(crate) fn warpq_user_put(user: *mut UserRaw);

    // Tracepoints.
    pub(crate) fn warpq_trace_invalidate_start(
        notifier: c_ulong,
        mm: c_ulong,
        start: c_ulong,
        end: c_ulong,
        event: c_uint,
    );
    pub(crate) fn warpq_trace_invalidate_end(
        notifier: c_ulong,
        mm: c_ulong,
        event: c_uint,
        outcome: c_uint,
        pages: c_ulong,
        drain_ns: u64,
        drain_timed_out: bool,
    );
    pub(crate) fn warpq_trace_unmap_unpin(mm: c_ulong, pages: c_ulong, unmap_ns: u64, unpin_ns: u64);
    pub(crate) fn warpq_trace_drain_start(mm: c_ulong, in_flight: c_uint, timeout_ns: u64);
    pub(crate) fn warpq_trace_drain_end(mm: c_ulong, abandoned: c_uint, ns: u64);
    pub(crate) fn warpq_trace_zap(mm: c_ulong);
    pub(crate) fn warpq_trace_rebuild_start(mm: c_ulong, from_fault: bool);
    pub(crate) fn warpq_trace_rebuild_end(mm: c_ulong, regions: c_uint, pages: c_ulong, retries: c_uint, result: c_int);
    pub(crate) fn warpq_trace_queue_state(mm: c_ulong, paused: bool);
    pub(crate) fn warpq_trace_submit_ioctl(mm: c_ulong, count: c_uint, queued: c_uint);

    // debugfs.
    pub(crate) fn warpq_debugfs_init();
    pub(crate) fn warpq_debugfs_exit();
    pub(crate) fn warpq_debugfs_add_device(index: c_uint, owner: *mut c_void) -> *mut c_void;
    pub(crate) fn warpq_debugfs_remove_device(dir: *mut c_void);

    // Ring memory.
    pub(crate) fn warpq_ring_alloc(size: usize) -> *mut u8;
    pub(crate) fn warpq_ring_free(ring: *mut u8);

    // eventfd.
    pub(crate) fn warpq_eventfd_get(fd: c_int, ctx: *mut *mut c_void) -> c_int;
    pub(crate) fn warpq_eventfd_signal(ctx: *mut c_void);
    pub(crate) fn warpq_eventfd_put(ctx: *mut c_void);
}
