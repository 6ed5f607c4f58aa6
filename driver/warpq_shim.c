// SPDX-License-Identifier: GPL-2.0
/*
 * warpq C shim: only what Rust cannot reach in 6.12.
 *
 * - struct pci_driver / struct pci_device_id and the pci_register_driver()
 *   macro: bindgen does not see linux/pci.h in 6.12's kernel crate;
 * - static inline helpers (pci_name, dma_set_mask_and_coherent, ...);
 * - IOMMU queries (linux/iommu.h is not in the bindings either).
 *
 * Every function here is a one-liner around the kernel API it names, so that
 * the logic stays in Rust. Rust calls these through driver/shim.rs.
 */
#include <linux/module.h>
#include <linux/pci.h>
#include <linux/iommu.h>
#include <linux/dma-mapping.h>
#include <linux/dma-direct.h>
#include <linux/scatterlist.h>
#include <linux/miscdevice.h>
#include <linux/fs.h>
#include <linux/mm.h>
#include <linux/mmap_lock.h>
#include <linux/sched/mm.h>
#include <linux/sched/user.h>
#include <linux/cred.h>
#include <linux/mmu_notifier.h>
#include <linux/hmm.h>
#include <linux/userfaultfd_k.h>
#include <linux/slab.h>
#include <linux/highmem.h>
#include <linux/kthread.h>
#include <linux/wait.h>
#include <linux/mutex.h>
#include <linux/vmalloc.h>
#include <linux/workqueue.h>
#include <linux/debugfs.h>
#include <linux/seq_file.h>

#include <linux/moduleparam.h>
#include <linux/sysfs.h>
#include <linux/string.h>
#include <linux/eventfd.h>

#include "uapi/warpq.h"
#include "warpq_shim.h"

#define CREATE_TRACE_POINTS
#include "warpq_trace.h"

/* ---- module parameters (module_param_cb and friends are macros) ---------- */

/*
 * A parameter that takes one of a few names and holds the index of the
 * name given (policy, backing, engine): one set/get pair for all of them.
 */
struct warpq_choice {
	int *value;
	const char *const *names;
	int count;
};

static int warpq_choice_set(const char *val, const struct kernel_param *kp)
{
	const struct warpq_choice *choice = kp->arg;
	int i;

	for (i = 0; i < choice->count; i++) {
		if (sysfs_streq(val, choice->names[i])) {
			WRITE_ONCE(*choice->value, i);
			return 0;
		}
	}
	return -EINVAL;
}

static int warpq_choice_get(char *buf, const struct kernel_param *kp)
{
	const struct warpq_choice *choice = kp->arg;

	return sysfs_emit(buf, "%s\n", choice->names[READ_ONCE(*choice->value)]);
}

static const struct kernel_param_ops warpq_choice_ops = {
	.set = warpq_choice_set,
	.get = warpq_choice_get,
};

#define WARPQ_CHOICE(name, variable, ...)						\
	static const char *const variable##_names[] = { __VA_ARGS__ };			\
	static struct warpq_choice variable##_choice = {					\
		.value = &variable, .names = variable##_names,				\
		.count = ARRAY_SIZE(variable##_names),					\
	};										\
	module_param_cb(name, &warpq_choice_ops, &variable##_choice, 0644)

/* Indices into the names: 0 strict, 1 filtered (as Policy::from_raw). */
static int warpq_policy = 1;
WARPQ_CHOICE(policy, warpq_policy, "strict", "filtered");
MODULE_PARM_DESC(policy, "invalidation policy for new queues: strict (tear down on every event) or filtered (default)");

/* 0 pin, 1 mirror (as queue::current_backing). */
static int warpq_backing;
WARPQ_CHOICE(backing, warpq_backing, "pin", "mirror");
MODULE_PARM_DESC(backing, "how new queues hold registered memory: pin (GUP FOLL_LONGTERM, charged to RLIMIT_MEMLOCK; default) or mirror (hmm_range_fault, no page reference, no charge)");

int warpq_param_backing(void)
{
	return READ_ONCE(warpq_backing);
}

static unsigned int chunk_kb = 256;
module_param(chunk_kb, uint, 0644);
MODULE_PARM_DESC(chunk_kb, "chunk size of registered memory for new queues, in KiB (default 256, at least 64, rounded up to a power of two; a region has at most 65536 chunks, so a region past 4 GiB at 64 KiB gets larger chunks): the unit of invalidation and rebuild");

unsigned int warpq_param_chunk_kb(void)
{
	return READ_ONCE(chunk_kb);
}

static unsigned int drain_timeout_ms = 1000;
module_param(drain_timeout_ms, uint, 0644);
MODULE_PARM_DESC(drain_timeout_ms, "how long an invalidation waits for the engine before resetting the queue");

/* 0 cpu, 1 edu. */
static int engine_edu;
WARPQ_CHOICE(engine, engine_edu, "cpu", "edu");
MODULE_PARM_DESC(engine, "engine for COPY: cpu (the software engine, default) or edu (the edu device's DMA for copies of at most 4 KiB; others stay on cpu)");

static bool rebuild_worker = true;
module_param(rebuild_worker, bool, 0644);
MODULE_PARM_DESC(rebuild_worker, "when a command waits for the rebuild of a chunk, a worker rebuilds it at once (default Y); N leaves it to the owner's next ring touch or ioctl (the fault-injection tests use N to arm the ioctl path)");

bool warpq_param_rebuild_worker(void)
{
	return READ_ONCE(rebuild_worker);
}

static unsigned int engine_idle_us = 200;
module_param(engine_idle_us, uint, 0644);
MODULE_PARM_DESC(engine_idle_us, "how long an idle engine polls the ring before it sleeps and asks for a wake-up (like io_uring's sq_thread_idle)");

static unsigned int engine_threads;
module_param(engine_threads, uint, 0444);
MODULE_PARM_DESC(engine_threads, "engine threads per device, serving all its queues a batch at a time, round robin (default 0: one per online CPU)");

/* num_online_cpus() is a static inline. */
unsigned int warpq_param_engine_threads(void)
{
	return engine_threads ?: num_online_cpus();
}

unsigned int warpq_param_engine_idle_us(void)
{
	return READ_ONCE(engine_idle_us);
}

void warpq_cpu_relax(void)
{
	cpu_relax();
}

static unsigned int max_regions = 1024;
module_param(max_regions, uint, 0644);
MODULE_PARM_DESC(max_regions, "registered buffers per queue (at most 1024)");

static unsigned int max_region_mb = 64;
module_param(max_region_mb, uint, 0644);
MODULE_PARM_DESC(max_region_mb, "largest registered buffer in MiB (default 64, at most 4096: a REGISTER faults its whole range in once, chunk by chunk)");

bool warpq_param_engine_edu(void)
{
	return READ_ONCE(engine_edu);
}

unsigned int warpq_param_max_regions(void)
{
	return READ_ONCE(max_regions);
}

unsigned int warpq_param_max_region_mb(void)
{
	return READ_ONCE(max_region_mb);
}

static unsigned int device_share_mb = 64;
module_param(device_share_mb, uint, 0644);
MODULE_PARM_DESC(device_share_mb, "device addresses one new queue may hold, in MiB (default 64, a quarter of the edu device's 256 MiB window; 0 for no limit): past it, a rebuild evicts the least recently used chunks, which are rebuilt when a command needs them again");

unsigned int warpq_param_device_share_mb(void)
{
	return READ_ONCE(device_share_mb);
}

/* Fault injection for tests: a REGISTER sleeps this long between inserting
 * its notifier and arming its region (the window in which the queue stays
 * stale), so a test can hold it there. 0, the default, in production. */
static unsigned int fail_register_arm_delay_ms;
module_param(fail_register_arm_delay_ms, uint, 0644);
MODULE_PARM_DESC(fail_register_arm_delay_ms, "fault injection: REGISTER sleeps this long between inserting its notifier and arming its region (default 0)");

unsigned int warpq_param_fail_register_arm_delay_ms(void)
{
	return READ_ONCE(fail_register_arm_delay_ms);
}

/* Fault injection for tests: a rebuild of the chunks commands wait for (by
 * the rebuild worker or an ioctl) sleeps this long first, so a test can
 * watch commands overtake one that waits (warpq-invalidate-check overtake).
 * 0, the default, in production. */
static unsigned int fail_rebuild_delay_ms;
module_param(fail_rebuild_delay_ms, uint, 0644);
MODULE_PARM_DESC(fail_rebuild_delay_ms, "fault injection: a rebuild of the chunks commands wait for (worker or ioctl) sleeps this long first (default 0)");

unsigned int warpq_param_fail_rebuild_delay_ms(void)
{
	return READ_ONCE(fail_rebuild_delay_ms);
}

/* Queues one user may have on one device; CAP_SYS_RESOURCE is not limited. */
static unsigned int max_queues_per_user = 256;
module_param(max_queues_per_user, uint, 0644);
MODULE_PARM_DESC(max_queues_per_user, "queues (each with its engine thread) one user may have on one device; more fail with EDQUOT (default 256; CAP_SYS_RESOURCE is exempt)");

unsigned int warpq_param_max_queues_per_user(void)
{
	return READ_ONCE(max_queues_per_user);
}

/* Fault injection for tests: while set, edu DMA transfers never complete
 * (the driver never sees the device finish), as a hung device's would not:
 * the device becomes stuck and what it may still reach is held (edu.rs). */
static bool fail_edu_stall;
module_param(fail_edu_stall, bool, 0644);
MODULE_PARM_DESC(fail_edu_stall, "fault injection: edu DMA transfers never complete while set (default N)");

bool warpq_param_fail_edu_stall(void)
{
	return READ_ONCE(fail_edu_stall);
}

int warpq_param_policy(void)
{
	return READ_ONCE(warpq_policy);
}

unsigned int warpq_param_drain_timeout_ms(void)
{
	return READ_ONCE(drain_timeout_ms);
}

/* QEMU's educational PCI device: the stand-in for a non-SVA accelerator. */
static const struct pci_device_id warpq_pci_ids[] = {
	{ PCI_DEVICE(0x1234, 0x11e8) },
	{ }
};
MODULE_DEVICE_TABLE(pci, warpq_pci_ids);

static int warpq_shim_probe(struct pci_dev *pdev, const struct pci_device_id *id)
{
	return warpq_rs_probe(pdev);
}

static void warpq_shim_remove(struct pci_dev *pdev)
{
	warpq_rs_remove(pdev);
}

static struct pci_driver warpq_pci_driver = {
	.name = "warpq",
	.id_table = warpq_pci_ids,
	.probe = warpq_shim_probe,
	.remove = warpq_shim_remove,
};

int warpq_pci_register_driver(void)
{
	return pci_register_driver(&warpq_pci_driver);
}

void warpq_pci_unregister_driver(void)
{
	pci_unregister_driver(&warpq_pci_driver);
}

struct pci_dev *warpq_pci_dev_get(struct pci_dev *pdev)
{
	return pci_dev_get(pdev);
}

void warpq_pci_dev_put(struct pci_dev *pdev)
{
	pci_dev_put(pdev);
}

struct device *warpq_pci_to_dev(struct pci_dev *pdev)
{
	return &pdev->dev;
}

const char *warpq_pci_name(struct pci_dev *pdev)
{
	return pci_name(pdev);
}

void warpq_pci_ids_of(struct pci_dev *pdev, u16 *vendor, u16 *device, u8 *revision)
{
	*vendor = pdev->vendor;
	*device = pdev->device;
	*revision = pdev->revision;
}

int warpq_pci_enable(struct pci_dev *pdev)
{
	int ret = pci_enable_device(pdev);

	if (ret)
		return ret;
	pci_set_master(pdev);
	return 0;
}

void warpq_pci_clear_master(struct pci_dev *pdev)
{
	pci_clear_master(pdev);
}

void warpq_pci_disable(struct pci_dev *pdev)
{
	pci_clear_master(pdev);
	pci_disable_device(pdev);
}

/* BAR 0 of the edu device: its registers and DMA engine. */
void __iomem *warpq_pci_map_bar0(struct pci_dev *pdev, int *err)
{
	void __iomem *bar;

	*err = pci_request_region(pdev, 0, "warpq");
	if (*err)
		return NULL;
	bar = pci_iomap(pdev, 0, 0);
	if (!bar) {
		pci_release_region(pdev, 0);
		*err = -ENOMEM;
	}
	return bar;
}

void warpq_pci_unmap_bar0(struct pci_dev *pdev, void __iomem *bar)
{
	pci_iounmap(pdev, bar);
	pci_release_region(pdev, 0);
}

u32 warpq_readl(void __iomem *bar, unsigned long off)
{
	return readl(bar + off);
}

void warpq_writel(void __iomem *bar, unsigned long off, u32 val)
{
	writel(val, bar + off);
}

void warpq_writeq(void __iomem *bar, unsigned long off, u64 val)
{
	writeq(val, bar + off);
}

void warpq_pci_set_drvdata(struct pci_dev *pdev, void *data)
{
	pci_set_drvdata(pdev, data);
}

void *warpq_pci_get_drvdata(struct pci_dev *pdev)
{
	return pci_get_drvdata(pdev);
}

int warpq_dma_set_mask(struct device *dev, unsigned int bits)
{
	return dma_set_mask_and_coherent(dev, DMA_BIT_MASK(bits));
}

/*
 * What the device's DMA goes through: the IOMMU group (or -1 without one)
 * and the kind of domain the DMA API put it in.
 */
int warpq_iommu_describe(struct device *dev, int *group_id)
{
	struct iommu_group *group = iommu_group_get(dev);
	struct iommu_domain *domain;

	*group_id = -1;
	if (!group)
		return WARPQ_DMA_DIRECT;
	*group_id = iommu_group_id(group);
	iommu_group_put(group);

	domain = iommu_get_domain_for_dev(dev);
	if (!domain)
		return WARPQ_DMA_DIRECT;
	switch (domain->type) {
	case IOMMU_DOMAIN_DMA:
		return WARPQ_DMA_IOMMU_STRICT;
	case IOMMU_DOMAIN_DMA_FQ:
		return WARPQ_DMA_IOMMU_LAZY;
	case IOMMU_DOMAIN_IDENTITY:
		return WARPQ_DMA_IOMMU_IDENTITY;
	default:
		return WARPQ_DMA_IOMMU_OTHER;
	}
}

/* ---- character device ---------------------------------------------------- */

/*
 * The file operations live here because .owner must be THIS_MODULE (a
 * macro): an open file then holds a reference on the module, so rmmod is
 * refused while any queue is open.
 */
struct warpq_misc {
	struct miscdevice misc;
	void *owner;		/* the Rust device, handed back to open */
	char name[16];
};

/* sysfs: /sys/class/misc/warpqN/{stats,dma_translation} */
static struct warpq_misc *warpq_misc_of(struct device *dev)
{
	struct miscdevice *misc = dev_get_drvdata(dev);

	return container_of(misc, struct warpq_misc, misc);
}

static ssize_t stats_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	/* sysfs hands a page; Rust formats into it. */
	return warpq_rs_device_stats_show(warpq_misc_of(dev)->owner, buf, PAGE_SIZE);
}
static DEVICE_ATTR_RO(stats);

static ssize_t dma_translation_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%s\n", warpq_rs_device_dma_translation(warpq_misc_of(dev)->owner));
}
static DEVICE_ATTR_RO(dma_translation);

static ssize_t reset_store(struct device *dev, struct device_attribute *attr,
			   const char *buf, size_t count)
{
	bool yes;

	if (kstrtobool(buf, &yes) || !yes)
		return -EINVAL;
	warpq_rs_device_reset(warpq_misc_of(dev)->owner);
	return count;
}
static DEVICE_ATTR_WO(reset);

static struct attribute *warpq_attrs[] = {
	&dev_attr_reset.attr,
	&dev_attr_stats.attr,
	&dev_attr_dma_translation.attr,
	NULL,
};
ATTRIBUTE_GROUPS(warpq);

static int warpq_fop_open(struct inode *inode, struct file *file)
{
	/* misc_open() stored the struct miscdevice in private_data. */
	struct warpq_misc *wm = container_of(file->private_data, struct warpq_misc, misc);

	return warpq_rs_open(wm->owner, file);
}

static int warpq_fop_release(struct inode *inode, struct file *file)
{
	warpq_rs_release(file->private_data);
	return 0;
}

static long warpq_fop_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	return warpq_rs_ioctl(file->private_data, cmd, arg);
}

static int warpq_fop_mmap(struct file *file, struct vm_area_struct *vma)
{
	return warpq_rs_mmap(file->private_data, vma);
}

static __poll_t warpq_fop_poll(struct file *file, struct poll_table_struct *pt)
{
	return warpq_rs_poll(file->private_data, file, pt);
}

/* poll_wait() is a static inline. */
void warpq_poll_wait(struct file *file, struct wait_queue_head *wq, struct poll_table_struct *pt)
{
	poll_wait(file, wq, pt);
}

/* Wakes pollers, if any (wq_has_sleeper: no lock taken on an empty queue). */
void warpq_wake_up_pollers(struct wait_queue_head *wq)
{
	if (wq_has_sleeper(wq))
		wake_up_all(wq);
}

static const struct file_operations warpq_fops = {
	.owner = THIS_MODULE,
	.open = warpq_fop_open,
	.release = warpq_fop_release,
	.unlocked_ioctl = warpq_fop_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.mmap = warpq_fop_mmap,
	.poll = warpq_fop_poll,
	.llseek = noop_llseek,
};

void *warpq_misc_register(unsigned int index, struct device *parent, void *owner, int *err)
{
	struct warpq_misc *wm = kzalloc(sizeof(*wm), GFP_KERNEL);

	if (!wm) {
		*err = -ENOMEM;
		return NULL;
	}
	snprintf(wm->name, sizeof(wm->name), "warpq%u", index);
	wm->misc.minor = MISC_DYNAMIC_MINOR;
	wm->misc.name = wm->name;
	wm->misc.fops = &warpq_fops;
	wm->misc.parent = parent;
	wm->misc.mode = 0660;
	wm->misc.groups = warpq_groups;
	wm->owner = owner;
	*err = misc_register(&wm->misc);
	if (*err) {
		kfree(wm);
		return NULL;
	}
	return wm;
}

void warpq_misc_deregister(void *handle)
{
	struct warpq_misc *wm = handle;

	misc_deregister(&wm->misc);
	kfree(wm);
}

void warpq_file_set_private(struct file *file, void *data)
{
	file->private_data = data;
}

/* ---- the queue's vma ------------------------------------------------------- */

static vm_fault_t warpq_vm_fault(struct vm_fault *vmf)
{
	struct page *page = NULL;
	vm_fault_t ret = warpq_rs_fault(vmf->vma->vm_private_data, vmf->vma->vm_mm,
					vmf->vma->vm_start, vmf->pgoff, &page);

	if (ret)
		return ret;
	/* The PTE gets its own reference: the page outlives the queue if need be. */
	get_page(page);
	vmf->page = page;
	return 0;
}

static void warpq_vm_open(struct vm_area_struct *vma)
{
	warpq_rs_vma_open(vma->vm_private_data, vma->vm_mm);
}

static void warpq_vm_close(struct vm_area_struct *vma)
{
	warpq_rs_vma_close(vma->vm_private_data, vma->vm_mm);
}

/* A queue mapping moves or splits only as a whole: refuse both. */
static int warpq_vm_may_split(struct vm_area_struct *vma, unsigned long addr)
{
	return -EINVAL;
}

static int warpq_vm_mremap(struct vm_area_struct *vma)
{
	return -EINVAL;
}

static const struct vm_operations_struct warpq_vm_ops = {
	.open = warpq_vm_open,
	.close = warpq_vm_close,
	.may_split = warpq_vm_may_split,
	.mremap = warpq_vm_mremap,
	.fault = warpq_vm_fault,
};

/*
 * Checks the mapping request and sets the vma up for warpq_vm_ops:
 * MAP_SHARED only (the pages are the kernel's ring, a private COW copy would
 * detach user space from it), never executable, never expanded, not dumped.
 * Page-backed through ->fault, not VM_PFNMAP/VM_MIXEDMAP: fork does not copy
 * the PTEs of such a shared mapping, so a child's first touch faults and
 * gets its own queue.
 */
int warpq_vma_setup(struct vm_area_struct *vma, unsigned long size, void *private)
{
	if (!(vma->vm_flags & VM_MAYSHARE))
		return -EINVAL;
	if (vma->vm_flags & VM_EXEC)
		return -EPERM;
	if (vma->vm_pgoff != 0 || vma->vm_end - vma->vm_start != size)
		return -EINVAL;
	vm_flags_set(vma, VM_DONTEXPAND | VM_DONTDUMP);
	vm_flags_clear(vma, VM_MAYEXEC);
	vma->vm_ops = &warpq_vm_ops;
	vma->vm_private_data = private;
	return 0;
}

struct mm_struct *warpq_vma_mm(struct vm_area_struct *vma)
{
	return vma->vm_mm;
}

unsigned long warpq_vma_start(struct vm_area_struct *vma)
{
	return vma->vm_start;
}

/* The queue mappings' operations: how Rust recognises a queue vma. */
const struct vm_operations_struct *warpq_queue_vm_ops(void)
{
	return &warpq_vm_ops;
}

/* ---- mm references and locks --------------------------------------------- */

struct mm_struct *warpq_current_mm(void)
{
	return current->mm;
}

/* Whether the address space still has users (has not exited). */
bool warpq_mm_has_users(struct mm_struct *mm)
{
	return atomic_read(&mm->mm_users) > 0;
}

void warpq_mmgrab(struct mm_struct *mm)
{
	mmgrab(mm);
}

void warpq_mmdrop(struct mm_struct *mm)
{
	mmdrop(mm);
}

bool warpq_mmget_not_zero(struct mm_struct *mm)
{
	return mmget_not_zero(mm);
}

void warpq_mmput(struct mm_struct *mm)
{
	mmput(mm);
}

void warpq_mmap_read_lock(struct mm_struct *mm)
{
	mmap_read_lock(mm);
}

void warpq_mmap_write_lock(struct mm_struct *mm)
{
	mmap_write_lock(mm);
}

void warpq_mmap_write_unlock(struct mm_struct *mm)
{
	mmap_write_unlock(mm);
}

void warpq_mmap_read_unlock(struct mm_struct *mm)
{
	mmap_read_unlock(mm);
}

/* ---- interval notifiers --------------------------------------------------- */

bool warpq_range_blockable(const struct mmu_notifier_range *range)
{
	return mmu_notifier_range_blockable(range);
}

/*
 * Whether @mm's mmap lock is held, by anyone (lockdep: by this task). Every
 * 6.12 caller of a PROTECTION_VMA invalidation holds it (mprotect_fixup,
 * change_prot_numa, uffd_wp_range, pagemap_scan), so vma_rules.rs may walk
 * the vmas from the callback; false when in doubt.
 */
bool warpq_mmap_lock_held(struct mm_struct *mm)
{
#ifdef CONFIG_LOCKDEP
	return lockdep_is_held(&mm->mmap_lock);
#else
	return rwsem_is_locked(&mm->mmap_lock);
#endif
}

void warpq_range_info(const struct mmu_notifier_range *range, unsigned long *start,
		      unsigned long *end, unsigned int *event)
{
	*start = range->start;
	*end = range->end;
	*event = range->event;
}

bool warpq_interval_read_retry(struct mmu_interval_notifier *sub, unsigned long seq)
{
	return mmu_interval_read_retry(sub, seq);
}

void warpq_interval_set_seq(struct mmu_interval_notifier *sub, unsigned long cur_seq)
{
	mmu_interval_set_seq(sub, cur_seq);
}

/* ---- DMA ------------------------------------------------------------------ */

/*
 * One chunk's @n pages as one scatter-gather table, DMA-mapped in one call
 * (for_each_sgtable_dma_sg and sg_dma_address are macros): behind an IOMMU
 * that is one contiguous IOVA range, one map and one unmap (one IOTLB flush)
 * per chunk instead of one per page. Writes each page's bus address to
 * @dma (the engine addresses memory page by page). Returns the table, or
 * NULL with *err set: -EREMOTEIO if a page would be bounced through swiotlb
 * (the caller refuses such memory: the device would work on copies), else
 * the allocation's or the mapping's error.
 */
struct sg_table *warpq_dma_map_chunk(struct device *dev, struct page **pages, unsigned int n,
				     bool device_writes, u64 *dma, int *err)
{
	enum dma_data_direction dir = device_writes ? DMA_BIDIRECTIONAL : DMA_TO_DEVICE;
	struct scatterlist *sg;
	struct sg_table *sgt;
	unsigned int i, k = 0;
	int ret;

	sgt = kzalloc(sizeof(*sgt), GFP_KERNEL);
	if (!sgt) {
		*err = -ENOMEM;
		return NULL;
	}
	ret = sg_alloc_table_from_pages_segment(sgt, pages, n, 0, (unsigned long)n << PAGE_SHIFT,
						dma_get_max_seg_size(dev), GFP_KERNEL);
	if (ret)
		goto free;
	ret = dma_map_sgtable(dev, sgt, dir, 0);
	if (ret)
		goto table;
	for_each_sgtable_dma_sg(sgt, sg, i) {
		dma_addr_t addr = sg_dma_address(sg);
		unsigned int len = sg_dma_len(sg), off;

		for (off = 0; off < len && k < n; off += PAGE_SIZE)
			dma[k++] = addr + off;
	}
	ret = k == n ? 0 : -EIO;
	for (k = 0; !ret && k < n; k++)
		if (dma_need_sync(dev, dma[k]))
			ret = -EREMOTEIO;
	if (ret)
		goto unmap;
	*err = 0;
	return sgt;
unmap:
	dma_unmap_sgtable(dev, sgt, dir, 0);
table:
	sg_free_table(sgt);
free:
	kfree(sgt);
	*err = ret;
	return NULL;
}

/* Undoes warpq_dma_map_chunk(); frees the table. */
void warpq_dma_unmap_chunk(struct device *dev, struct sg_table *sgt, bool device_writes)
{
	dma_unmap_sgtable(dev, sgt, device_writes ? DMA_BIDIRECTIONAL : DMA_TO_DEVICE, 0);
	sg_free_table(sgt);
	kfree(sgt);
}

/*
 * What the device reaches at bus address @addr, as a kernel pointer, or NULL
 * if nothing: the IOMMU domain's translation when there is one (an unmapped
 * IOVA translates to nothing, even before the lazy IOTLB flush), else
 * dma-direct's. This is how the software engine touches memory "the way a
 * device would".
 */
void *warpq_dma_to_kernel(struct device *dev, dma_addr_t addr)
{
	struct iommu_domain *domain = iommu_get_domain_for_dev(dev);
	phys_addr_t phys;

	if (domain && domain->type != IOMMU_DOMAIN_IDENTITY)
		phys = iommu_iova_to_phys(domain, addr);
	else
		phys = dma_to_phys(dev, addr);
	if (!phys || !pfn_valid(PHYS_PFN(phys)))
		return NULL;
	return phys_to_virt(phys);
}

void warpq_set_page_dirty(struct page *page)
{
	set_page_dirty(page);
}

void warpq_get_page(struct page *page)
{
	get_page(page);
}

void warpq_put_page(struct page *page)
{
	put_page(page);
}

/* ---- locks, wait queues, threads (macros with a lockdep key per call site) - */

/* The queue lock L (queue.rs): one lockdep class for all queues. */
void warpq_mutex_init(struct mutex *lock)
{
	static struct lock_class_key warpq_queue_lock_key;

	__mutex_init(lock, "warpq_queue_lock", &warpq_queue_lock_key);
}

void warpq_waitqueue_init(struct wait_queue_head *wq)
{
	init_waitqueue_head(wq);
}

void warpq_wake_up_all(struct wait_queue_head *wq)
{
	wake_up_all(wq);
}

/*
 * Sleeps (uninterruptibly) until cond(arg) or @timeout_ns elapsed; returns
 * the last value of cond(arg). wait_event_timeout() registers as a waiter
 * before each test of the condition, so no wake-up is lost.
 */
bool warpq_wait_until(struct wait_queue_head *wq, bool (*cond)(const void *), const void *arg,
		      u64 timeout_ns)
{
	long jiffies_left;

	if (timeout_ns == U64_MAX) {
		wait_event(*wq, cond(arg));
		return true;
	}
	jiffies_left = nsecs_to_jiffies(timeout_ns);
	return wait_event_timeout(*wq, cond(arg), max(jiffies_left, 1L)) > 0 || cond(arg);
}

/*
 * The engine thread's idle sleep: until cond(arg), kthread_should_stop() or a
 * signal-free interruption. Returns 0, or -ERESTARTSYS.
 */
int warpq_wait_event_interruptible(struct wait_queue_head *wq, bool (*cond)(const void *),
				   const void *arg)
{
	return wait_event_interruptible(*wq, cond(arg) || kthread_should_stop());
}

/*
 * WAIT: sleeps until cond(arg), @timeout_ns (U64_MAX: none) or a signal.
 * Returns > 0 if cond(arg) holds, 0 on timeout, -ERESTARTSYS on a signal.
 */
long warpq_wait_interruptible_timeout(struct wait_queue_head *wq, bool (*cond)(const void *),
				      const void *arg, u64 timeout_ns)
{
	long jiffies_left;

	if (timeout_ns == U64_MAX)
		return wait_event_interruptible(*wq, cond(arg)) ?: 1;
	jiffies_left = max_t(long, nsecs_to_jiffies(timeout_ns), 1);
	return wait_event_interruptible_timeout(*wq, cond(arg), jiffies_left);
}

struct task_struct *warpq_kthread_run(int (*fn)(void *), void *data, const char *name, int *err)
{
	struct task_struct *task = kthread_run(fn, data, "%s", name);

	if (IS_ERR(task)) {
		*err = PTR_ERR(task);
		return NULL;
	}
	*err = 0;
	return task;
}

void warpq_cond_resched(void)
{
	cond_resched();
}

#if !(defined(CONFIG_NET) || defined(CONFIG_IO_URING) || defined(CONFIG_SECRETMEM))
#error "warpq charges pins to user_struct.locked_vm, which needs CONFIG_NET (or IO_URING, SECRETMEM)"
#endif

/*
 * Atomic primitives for the pin backing's charge (mapping.rs decides whom
 * to charge and against which limit): adds @n to @v unless that would pass
 * @limit (or wrap); lock-free, so the uncharge may run in an invalidation.
 */
bool warpq_atomic_long_add_within(atomic_long_t *v, unsigned long n, unsigned long limit)
{
	unsigned long cur = atomic_long_read(v), next;

	do {
		next = cur + n;
		if (next > limit || next < cur)
			return false;
	} while (!atomic_long_try_cmpxchg(v, (long *)&cur, next));
	return true;
}

void warpq_atomic_long_sub(atomic_long_t *v, unsigned long n)
{
	atomic_long_sub(n, v);
}

void warpq_atomic64_add(atomic64_t *v, s64 n)
{
	atomic64_add(n, v);
}

/* The calling task's RLIMIT_MEMLOCK in bytes (rlimit() is a static inline). */
unsigned long warpq_rlimit_memlock(void)
{
	return rlimit(RLIMIT_MEMLOCK);
}

struct user_struct *warpq_current_user_get(void)
{
	return get_uid(current_user());
}

/*
 * current's thread-group id (initial PID namespace); its comm into @comm
 * (TASK_COMM_LEN bytes, NUL-terminated).
 */
int warpq_current_identity(char *comm)
{
	__get_task_comm(comm, TASK_COMM_LEN, current);
	return task_tgid_nr(current);
}

void warpq_user_put(struct user_struct *user)
{
	free_uid(user);
}

/* Streaming DMA that needs syncs (swiotlb bouncing) cannot be shared memory. */
u64 warpq_ktime_ns(void)
{
	return ktime_get_ns();
}

/* ---- ring memory ------------------------------------------------------------ */

/*
 * Zeroed, page-granular (mapped to user space page by page by the fault
 * handler), and charged to the creating task's memory cgroup.
 */
void *warpq_ring_alloc(size_t size)
{
	return __vmalloc(size, GFP_KERNEL_ACCOUNT | __GFP_ZERO);
}

void warpq_ring_free(void *ring)
{
	vfree(ring);
}

/* ---- eventfd (WARPQ_IOC_EVENTFD) ------------------------------------------ */

/* eventfd_signal() is a static inline; the other two are wrapped beside it so
 * the ERR_PTR convention stays on this side. */
int warpq_eventfd_get(int fd, void **ctx)
{
	struct eventfd_ctx *c = eventfd_ctx_fdget(fd);

	if (IS_ERR(c))
		return PTR_ERR(c);
	*ctx = c;
	return 0;
}

void warpq_eventfd_signal(void *ctx)
{
	eventfd_signal(ctx);
}

void warpq_eventfd_put(void *ctx)
{
	eventfd_ctx_put(ctx);
}

/* ---- interval notifiers ----------------------------------------------------- */

static bool warpq_interval_invalidate(struct mmu_interval_notifier *sub,
				      const struct mmu_notifier_range *range,
				      unsigned long cur_seq)
{
	return warpq_rs_invalidate(sub, range, cur_seq);
}

static const struct mmu_interval_notifier_ops warpq_interval_ops = {
	.invalidate = warpq_interval_invalidate,
};

/* Takes the mmap lock itself: never call with it held (not from ->fault). */
int warpq_interval_insert(struct mmu_interval_notifier *sub, struct mm_struct *mm,
			  unsigned long start, unsigned long length)
{
	return mmu_interval_notifier_insert(sub, mm, start, length, &warpq_interval_ops);
}

void warpq_interval_remove(struct mmu_interval_notifier *sub)
{
	mmu_interval_notifier_remove(sub);
}

unsigned long warpq_interval_read_begin(struct mmu_interval_notifier *sub)
{
	return mmu_interval_read_begin(sub);
}

/* ---- pinning ---------------------------------------------------------------- */

/*
 * hmm_range_fault() says -EFAULT for every fault error, VM_FAULT_OOM
 * included, where GUP says -ENOMEM: fault the range in page by page to
 * learn which it was, so that an allocation failure leaves the chunk
 * unmapped (retried) rather than dead. -EFAULT: no vma, no permission,
 * SIGBUS (a truncated file); -ENOMEM: out of memory; 0: every page faulted
 * in this time (the caller looks again once). Called with the mmap lock
 * held, never on a queue mapping (its fault handler rebuilds).
 */
static long warpq_mirror_fault_errno(struct mm_struct *mm, unsigned long start,
				     unsigned long end, bool write)
{
	unsigned long addr;
	int ret;

	for (addr = start; addr < end; addr += PAGE_SIZE) {
		struct vm_area_struct *vma = vma_lookup(mm, addr);

		if (!vma || (vma->vm_flags & (VM_IO | VM_PFNMAP)) ||
		    !(vma->vm_flags & (write ? VM_WRITE : VM_READ)))
			return -EFAULT;
		ret = fixup_user_fault(mm, addr, write ? FAULT_FLAG_WRITE : 0, NULL);
		if (ret)
			return ret;
	}
	return 0;
}

/*
 * The mirror backing's fault-in (hmm_range_fault() and its struct, whose
 * pfn-to-page conversion is a static inline): faults in [start, start + nr
 * pages) of @mm for reading, or writing if @write, and returns one struct
 * page pointer per page in @pages, without taking a reference. The pages
 * stay the process's only while @sub's sequence is still @seq: the caller
 * checks mmu_interval_read_retry() under its lock before publishing them,
 * and its invalidate callback drops them. @pfns is scratch space for @nr
 * entries. The caller holds @mm's mmap lock and a user reference, and has
 * checked that the range holds no queue mapping (mapping.rs). -EBUSY: @sub
 * was invalidated after @seq was read (retry); -EFAULT: no vma, a hole, no
 * permission, VM_IO/VM_PFNMAP.
 */
long warpq_mirror_pages(struct mmu_interval_notifier *sub, struct mm_struct *mm,
			unsigned long start, unsigned long nr, bool write,
			unsigned long seq, unsigned long *pfns, struct page **pages)
{
	struct hmm_range range = {
		.notifier = sub,
		.notifier_seq = seq,
		.start = start,
		.end = start + nr * PAGE_SIZE,
		.hmm_pfns = pfns,
		.default_flags = HMM_PFN_REQ_FAULT | (write ? HMM_PFN_REQ_WRITE : 0),
	};
	unsigned long i;
	long ret;

	ret = hmm_range_fault(&range);
	if (ret == -EFAULT) {
		ret = warpq_mirror_fault_errno(mm, range.start, range.end, write);
		/*
		 * Every page faulted in: the failure was transient (an
		 * allocation), or a page hmm refuses whatever its state (a
		 * special pte): look once more and take that answer.
		 */
		if (!ret)
			ret = hmm_range_fault(&range);
	}
	if (ret)
		return ret;
	for (i = 0; i < nr; i++) {
		if (!(pfns[i] & HMM_PFN_VALID) || (write && !(pfns[i] & HMM_PFN_WRITE)))
			return -EFAULT;
		pages[i] = hmm_pfn_to_page(pfns[i]);
	}
	return 0;
}

/* ---- work items ------------------------------------------------------------- */

void warpq_work_init(struct work_struct *work, void (*fn)(struct work_struct *))
{
	INIT_WORK(work, fn);
}

void warpq_work_schedule(struct work_struct *work)
{
	schedule_work(work);
}

void warpq_work_cancel_sync(struct work_struct *work)
{
	cancel_work_sync(work);
}

/* ---- tracepoints (wrappers: TRACE_EVENT makes static inlines) ------------ */

void warpq_trace_invalidate_start(unsigned long notifier, unsigned long mm, unsigned long start,
				  unsigned long end, unsigned int event)
{
	trace_warpq_invalidate_start(notifier, mm, start, end, event);
}

void warpq_trace_invalidate_end(unsigned long notifier, unsigned long mm, unsigned int event,
				unsigned int outcome, unsigned long pages, u64 drain_ns,
				bool drain_timed_out)
{
	trace_warpq_invalidate_end(notifier, mm, event, outcome, pages, drain_ns, drain_timed_out);
}

void warpq_trace_unmap_unpin(unsigned long mm, unsigned long pages, u64 unmap_ns, u64 unpin_ns)
{
	trace_warpq_unmap_unpin(mm, pages, unmap_ns, unpin_ns);
}

void warpq_trace_drain_start(unsigned long mm, unsigned int in_flight, u64 timeout_ns)
{
	trace_warpq_drain_start(mm, in_flight, timeout_ns);
}

void warpq_trace_drain_end(unsigned long mm, unsigned int abandoned, u64 ns)
{
	trace_warpq_drain_end(mm, abandoned, ns);
}

void warpq_trace_zap(unsigned long mm)
{
	trace_warpq_zap(mm);
}

void warpq_trace_rebuild_start(unsigned long mm, bool from_fault)
{
	trace_warpq_rebuild_start(mm, from_fault);
}

void warpq_trace_rebuild_end(unsigned long mm, unsigned int regions, unsigned long pages,
			     unsigned int retries, int result)
{
	trace_warpq_rebuild_end(mm, regions, pages, retries, result);
}

void warpq_trace_queue_state(unsigned long mm, bool paused)
{
	trace_warpq_queue_state(mm, paused);
}

void warpq_trace_submit_ioctl(unsigned long mm, unsigned int count, unsigned int queued)
{
	trace_warpq_submit_ioctl(mm, count, queued);
}

/* ---- debugfs: /sys/kernel/debug/warpq/warpqN/hist ------------------------ */

static struct dentry *warpq_debugfs_root;

static int warpq_hist_show(struct seq_file *m, void *unused)
{
	void *owner = m->private;
	unsigned int h, b;

	for (h = 0; h < warpq_rs_hist_kinds(); h++) {
		u64 sum = warpq_rs_hist_sum(owner, h);

		for (b = 0; b < warpq_rs_hist_buckets(); b++) {
			u64 count = warpq_rs_hist_get(owner, h, b);

			if (count)
				seq_printf(m, "%s %u %llu\n", warpq_rs_hist_name(h), b, count);
		}
		/* A comment to readers of the buckets alone (docs/tracing.md). */
		if (sum)
			seq_printf(m, "# sum_ns %s %llu\n", warpq_rs_hist_name(h), sum);
	}
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(warpq_hist);

/* /sys/kernel/debug/warpq/warpqN/queues: written by the Rust side. */
static int warpq_queues_show(struct seq_file *m, void *unused)
{
	return warpq_rs_queues_show(m->private, m);
}
DEFINE_SHOW_ATTRIBUTE(warpq_queues);

/* /sys/kernel/debug/warpq/warpqN/device: the edu device's stuck state and
 * what its quarantine holds (edu.rs, "A device that stops answering"). */
static int warpq_device_show(struct seq_file *m, void *unused)
{
	bool stuck;
	u64 held, leaked;

	warpq_rs_held_counts(m->private, &stuck, &held, &leaked);
	seq_printf(m, "edu_stuck %d\npages_held %llu\npages_held_for_good %llu\n", stuck, held, leaked);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(warpq_device);

void warpq_seq_write(struct seq_file *m, const void *data, size_t len)
{
	seq_write(m, data, len);
}

void warpq_debugfs_init(void)
{
	warpq_debugfs_root = debugfs_create_dir("warpq", NULL);
}

void warpq_debugfs_exit(void)
{
	debugfs_remove_recursive(warpq_debugfs_root);
}

void *warpq_debugfs_add_device(unsigned int index, void *owner)
{
	char name[16];
	struct dentry *dir;

	snprintf(name, sizeof(name), "warpq%u", index);
	dir = debugfs_create_dir(name, warpq_debugfs_root);
	debugfs_create_file("hist", 0444, dir, owner, &warpq_hist_fops);
	debugfs_create_file("queues", 0400, dir, owner, &warpq_queues_fops);
	debugfs_create_file("device", 0444, dir, owner, &warpq_device_fops);
	return dir;
}

void warpq_debugfs_remove_device(void *dir)
{
	debugfs_remove_recursive(dir);
}
