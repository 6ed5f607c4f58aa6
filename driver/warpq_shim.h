/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The C shim's interface, mirrored by hand in driver/shim.rs (bindgen does
 * not run on out-of-tree modules). Keep the two in step.
 */
#ifndef WARPQ_SHIM_H
#define WARPQ_SHIM_H

#include <linux/types.h>

struct pci_dev;
struct device;

/* How the device's DMA is translated (warpq_iommu_describe). */
enum warpq_dma_kind {
	WARPQ_DMA_DIRECT = 0,		/* no IOMMU: dma-direct */
	WARPQ_DMA_IOMMU_STRICT = 1,	/* dma-iommu, IOTLB flushed on unmap */
	WARPQ_DMA_IOMMU_LAZY = 2,	/* dma-iommu, flush queue (deferred) */
	WARPQ_DMA_IOMMU_IDENTITY = 3,	/* IOMMU in pass-through */
	WARPQ_DMA_IOMMU_OTHER = 4,
};

struct file;
struct vm_area_struct;
struct mm_struct;
struct page;
struct mmu_notifier_range;
struct mmu_interval_notifier;
struct mutex;
struct wait_queue_head;
struct task_struct;
struct work_struct;
struct seq_file;

/* Implemented in Rust (warpq_main.rs). */
int warpq_rs_probe(struct pci_dev *pdev);
void warpq_rs_remove(struct pci_dev *pdev);
int warpq_rs_open(void *owner, struct file *file);
void warpq_rs_release(void *private);
long warpq_rs_ioctl(void *private, unsigned int cmd, unsigned long arg);
int warpq_rs_mmap(void *private, struct vm_area_struct *vma);
__poll_t warpq_rs_poll(void *private, struct file *file, struct poll_table_struct *pt);
unsigned int warpq_rs_fault(void *private, struct mm_struct *mm, unsigned long vm_start,
			    unsigned long pgoff, struct page **page);
void warpq_rs_vma_open(void *private, struct mm_struct *mm);
void warpq_rs_vma_close(void *private, struct mm_struct *mm);
struct warpq_stats;
void warpq_rs_device_reset(void *owner);
unsigned int warpq_rs_hist_kinds(void);
unsigned int warpq_rs_hist_buckets(void);
const char *warpq_rs_hist_name(unsigned int kind);
u64 warpq_rs_hist_get(void *owner, unsigned int kind, unsigned int bucket);
u64 warpq_rs_hist_sum(void *owner, unsigned int kind);
void warpq_rs_held_counts(void *owner, bool *stuck, u64 *held, u64 *leaked);
int warpq_rs_queues_show(void *owner, struct seq_file *m);
ssize_t warpq_rs_device_stats_show(void *owner, char *buf, size_t len);
const char *warpq_rs_device_dma_translation(void *owner);
bool warpq_rs_invalidate(struct mmu_interval_notifier *sub, const struct mmu_notifier_range *range,
			 unsigned long cur_seq);

/* Implemented in warpq_shim.c. */
int warpq_param_policy(void);
int warpq_param_backing(void);
unsigned int warpq_param_chunk_kb(void);
unsigned int warpq_param_drain_timeout_ms(void);
bool warpq_param_engine_edu(void);
unsigned int warpq_param_engine_idle_us(void);
unsigned int warpq_param_engine_threads(void);
void warpq_cpu_relax(void);
unsigned int warpq_param_max_regions(void);
unsigned int warpq_param_max_region_mb(void);
unsigned int warpq_param_device_share_mb(void);
unsigned int warpq_param_fail_register_arm_delay_ms(void);
unsigned int warpq_param_fail_rebuild_delay_ms(void);
bool warpq_param_fail_edu_stall(void);
unsigned int warpq_param_max_queues_per_user(void);
int warpq_pci_register_driver(void);
void warpq_pci_unregister_driver(void);
struct device *warpq_pci_to_dev(struct pci_dev *pdev);
const char *warpq_pci_name(struct pci_dev *pdev);
void warpq_pci_ids_of(struct pci_dev *pdev, u16 *vendor, u16 *device, u8 *revision);
int warpq_pci_enable(struct pci_dev *pdev);
void warpq_pci_clear_master(struct pci_dev *pdev);
void warpq_pci_disable(struct pci_dev *pdev);
void __iomem *warpq_pci_map_bar0(struct pci_dev *pdev, int *err);
void warpq_pci_unmap_bar0(struct pci_dev *pdev, void __iomem *bar);
u32 warpq_readl(void __iomem *bar, unsigned long off);
void warpq_writel(void __iomem *bar, unsigned long off, u32 val);
void warpq_writeq(void __iomem *bar, unsigned long off, u64 val);
void warpq_pci_set_drvdata(struct pci_dev *pdev, void *data);
void *warpq_pci_get_drvdata(struct pci_dev *pdev);
int warpq_dma_set_mask(struct device *dev, unsigned int bits);
int warpq_iommu_describe(struct device *dev, int *group_id);
struct pci_dev *warpq_pci_dev_get(struct pci_dev *pdev);
void warpq_pci_dev_put(struct pci_dev *pdev);
void *warpq_misc_register(unsigned int index, struct device *parent, void *owner, int *err);
void warpq_misc_deregister(void *handle);
void warpq_file_set_private(struct file *file, void *data);
int warpq_vma_setup(struct vm_area_struct *vma, unsigned long size, void *private);
struct mm_struct *warpq_vma_mm(struct vm_area_struct *vma);
unsigned long warpq_vma_start(struct vm_area_struct *vma);
const struct vm_operations_struct *warpq_queue_vm_ops(void);
struct mm_struct *warpq_current_mm(void);
bool warpq_mm_has_users(struct mm_struct *mm);
void warpq_mmgrab(struct mm_struct *mm);
void warpq_mmdrop(struct mm_struct *mm);
bool warpq_mmget_not_zero(struct mm_struct *mm);
void warpq_mmput(struct mm_struct *mm);
void warpq_mmap_read_lock(struct mm_struct *mm);
void warpq_mmap_read_unlock(struct mm_struct *mm);
void warpq_mmap_write_lock(struct mm_struct *mm);
void warpq_mmap_write_unlock(struct mm_struct *mm);
bool warpq_range_blockable(const struct mmu_notifier_range *range);
bool warpq_mmap_lock_held(struct mm_struct *mm);
void warpq_range_info(const struct mmu_notifier_range *range, unsigned long *start, unsigned long *end, unsigned int *event);
bool warpq_interval_read_retry(struct mmu_interval_notifier *sub, unsigned long seq);
void warpq_interval_set_seq(struct mmu_interval_notifier *sub, unsigned long cur_seq);
struct sg_table *warpq_dma_map_chunk(struct device *dev, struct page **pages, unsigned int n,
				     bool device_writes, u64 *dma, int *err);
void warpq_dma_unmap_chunk(struct device *dev, struct sg_table *sgt, bool device_writes);
void *warpq_dma_to_kernel(struct device *dev, dma_addr_t addr);
void warpq_set_page_dirty(struct page *page);
void warpq_get_page(struct page *page);
void warpq_put_page(struct page *page);
void warpq_mutex_init(struct mutex *lock);
void warpq_waitqueue_init(struct wait_queue_head *wq);
void warpq_wake_up_all(struct wait_queue_head *wq);
void warpq_wake_up_pollers(struct wait_queue_head *wq);
void warpq_poll_wait(struct file *file, struct wait_queue_head *wq, struct poll_table_struct *pt);
bool warpq_wait_until(struct wait_queue_head *wq, bool (*cond)(const void *), const void *arg,
		      u64 timeout_ns);
int warpq_wait_event_interruptible(struct wait_queue_head *wq, bool (*cond)(const void *),
				   const void *arg);
long warpq_wait_interruptible_timeout(struct wait_queue_head *wq, bool (*cond)(const void *),
				      const void *arg, u64 timeout_ns);
struct task_struct *warpq_kthread_run(int (*fn)(void *), void *data, const char *name, int *err);
u64 warpq_ktime_ns(void);
void warpq_cond_resched(void);
bool warpq_atomic_long_add_within(atomic_long_t *v, unsigned long n, unsigned long limit);
void warpq_atomic_long_sub(atomic_long_t *v, unsigned long n);
void warpq_atomic64_add(atomic64_t *v, s64 n);
unsigned long warpq_rlimit_memlock(void);
bool warpq_param_rebuild_worker(void);
struct user_struct *warpq_current_user_get(void);
int warpq_current_identity(char *comm);
void warpq_seq_write(struct seq_file *m, const void *data, size_t len);
void warpq_user_put(struct user_struct *user);
void *warpq_ring_alloc(size_t size);
int warpq_interval_insert(struct mmu_interval_notifier *sub, struct mm_struct *mm,
			  unsigned long start, unsigned long length);
void warpq_interval_remove(struct mmu_interval_notifier *sub);
unsigned long warpq_interval_read_begin(struct mmu_interval_notifier *sub);
long warpq_mirror_pages(struct mmu_interval_notifier *sub, struct mm_struct *mm,
			unsigned long start, unsigned long nr, bool write,
			unsigned long seq, unsigned long *pfns, struct page **pages);
void warpq_work_init(struct work_struct *work, void (*fn)(struct work_struct *));
void warpq_work_schedule(struct work_struct *work);
void warpq_work_cancel_sync(struct work_struct *work);
void warpq_ring_free(void *ring);

int warpq_eventfd_get(int fd, void **ctx);
void warpq_eventfd_signal(void *ctx);
void warpq_eventfd_put(void *ctx);

void warpq_trace_invalidate_start(unsigned long notifier, unsigned long mm, unsigned long start,
				  unsigned long end, unsigned int event);
void warpq_trace_invalidate_end(unsigned long notifier, unsigned long mm, unsigned int event,
				unsigned int outcome, unsigned long pages, u64 drain_ns,
				bool drain_timed_out);
void warpq_trace_unmap_unpin(unsigned long mm, unsigned long pages, u64 unmap_ns, u64 unpin_ns);
void warpq_trace_drain_start(unsigned long mm, unsigned int in_flight, u64 timeout_ns);
void warpq_trace_drain_end(unsigned long mm, unsigned int abandoned, u64 ns);
void warpq_trace_zap(unsigned long mm);
void warpq_trace_rebuild_start(unsigned long mm, bool from_fault);
void warpq_trace_rebuild_end(unsigned long mm, unsigned int regions, unsigned long pages,
			     unsigned int retries, int result);
void warpq_trace_queue_state(unsigned long mm, bool paused);
void warpq_trace_submit_ioctl(unsigned long mm, unsigned int count, unsigned int queued);
void warpq_debugfs_init(void);
void warpq_debugfs_exit(void);
void *warpq_debugfs_add_device(unsigned int index, void *owner);
void warpq_debugfs_remove_device(void *dir);

#endif /* WARPQ_SHIM_H */
