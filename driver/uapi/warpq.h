/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * warpq user API, version 1.
 *
 * A process opens /dev/warpqN, registers the buffers the device may touch
 * (WARPQ_IOC_REGISTER), maps the queue (mmap of WARPQ_RING_SIZE bytes at
 * offset 0, MAP_SHARED, PROT_READ|PROT_WRITE) and submits commands by
 * writing submission entries and publishing the SQ tail — no system call per
 * command. Completions appear in the CQ. When the ring's WARPQ_RING_NEED_WAKEUP
 * flag is set the engine sleeps: WARPQ_IOC_WAKE wakes it.
 *
 * Each (open file, mm) pair has its own queue: after fork the child's first
 * touch of the mapping gives it a fresh, empty queue of its own (a new
 * owner_id in the header), never the parent's, and none of the parent's
 * registrations.
 *
 * Every ioctl structure starts with its size in bytes, so that the structure
 * can grow: the kernel dispatches on the ioctl's type and number (not its
 * size bits), accepts any size >= the version 1 size and does not look at
 * (or write) bytes past the structure it knows.
 */
#ifndef _UAPI_WARPQ_H
#define _UAPI_WARPQ_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define WARPQ_UAPI_VERSION	1
#define WARPQ_IOC_MAGIC		0xb7

/* --- the shared ring ------------------------------------------------------ */

#define WARPQ_RING_MAGIC	0x51505257u	/* "WRPQ" */
#define WARPQ_SQ_ENTRIES	256
#define WARPQ_CQ_ENTRIES	512
#define WARPQ_RING_HEADER_SIZE	4096
#define WARPQ_RING_SQ_OFFSET	WARPQ_RING_HEADER_SIZE
#define WARPQ_RING_CQ_OFFSET	(WARPQ_RING_SQ_OFFSET + WARPQ_SQ_ENTRIES * 64)
#define WARPQ_RING_SIZE		(WARPQ_RING_CQ_OFFSET + WARPQ_CQ_ENTRIES * 32)

/* warpq_ring_header.flags, written by the kernel. */
#define WARPQ_RING_NEED_WAKEUP	(1u << 0)	/* engine asleep: WARPQ_IOC_WAKE */
/* bit 1 is reserved (never set) */
#define WARPQ_RING_STALE	(1u << 2)	/* waiting for a rebuild (touch the ring or ioctl) */
#define WARPQ_RING_DEAD		(1u << 3)	/* the queue's mm or device is gone */

/*
 * The first page of the mapping. Indices are free-running u32 counters; an
 * entry's slot is index & (entries - 1). Each index has one writer:
 *   sq_tail, cq_head: user space (store-release after writing the entries);
 *   sq_head, cq_tail, flags: the kernel.
 */
struct warpq_ring_header {
	__u32 magic;		/* WARPQ_RING_MAGIC */
	__u32 version;		/* WARPQ_UAPI_VERSION */
	__u32 sq_entries;	/* WARPQ_SQ_ENTRIES */
	__u32 cq_entries;	/* WARPQ_CQ_ENTRIES */
	__u32 sq_offset;	/* WARPQ_RING_SQ_OFFSET */
	__u32 cq_offset;	/* WARPQ_RING_CQ_OFFSET */
	__u64 owner_id;		/* differs between the queues of parent and child */
	__u8 pad0[32];
	__u32 sq_head;		/* kernel: next entry the engine will take */
	__u8 pad1[60];
	__u32 sq_tail;		/* user: one past the last published entry */
	__u8 pad2[60];
	__u32 cq_head;		/* user: next completion to consume */
	__u8 pad3[60];
	__u32 cq_tail;		/* kernel: one past the last posted completion */
	__u8 pad4[60];
	__u32 flags;		/* WARPQ_RING_* */
	__u32 pad5;
	__u64 sq_invalid;	/* entries completed with WARPQ_STATUS_INVALID */
};

/* Opcodes. */
#define WARPQ_OP_NOP	0	/* no memory access */
#define WARPQ_OP_COPY	1	/* len bytes from src to dst */
#define WARPQ_OP_FILL	2	/* len bytes at dst := the low byte of value, repeated */
#define WARPQ_OP_CRC32C	3	/* crc32c(value as seed, len bytes at src) in result */

/* warpq_sqe.flags */
#define WARPQ_SQE_EDU_DMA	(1u << 0)	/* COPY through the edu device's DMA engine */
/* May complete before earlier commands that wait for a rebuild of their
 * memory, unless it touches a chunk one of them touches. Without it,
 * commands complete in submission order. */
#define WARPQ_SQE_UNORDERED	(1u << 1)

/* A submission entry: 64 bytes. Addresses are the submitter's user virtual
 * addresses inside registered buffers. */
struct warpq_sqe {
	__u8 opcode;
	__u8 flags;
	__u16 rsvd0;
	__u32 rsvd1;
	__u64 user_data;	/* echoed in the completion */
	__u64 src;
	__u64 dst;
	__u64 len;
	__u64 value;
	__u64 rsvd2[2];
};

/* Completion statuses (warpq_cqe.status); 0 is success. */
#define WARPQ_STATUS_OK			0
#define WARPQ_STATUS_INVALID		1	/* unknown opcode, bad flags, zero or huge length */
#define WARPQ_STATUS_FAULT_UNREGISTERED	2	/* address not in a registered buffer */
#define WARPQ_STATUS_FAULT_BOUNDS	3	/* range crosses the end of its buffer */
#define WARPQ_STATUS_FAULT_ACCESS	4	/* buffer not registered for this access */
#define WARPQ_STATUS_FAULT_UNMAPPED	5	/* buffer gone (munmap, ...) */
#define WARPQ_STATUS_FAULT_IOMMU	6	/* the DMA address did not translate */
#define WARPQ_STATUS_ABORTED		7	/* queue reset (drain timeout, close, exit) */
#define WARPQ_STATUS_DEVICE_ERROR	8	/* the edu DMA engine failed */
/*
 * Its pages could not be made reachable for the device now, for want of
 * memory: over RLIMIT_MEMLOCK (pin backing), out of memory, or no device
 * addresses left, after evicting the queue's other chunks. Only the
 * commands that waited for that chunk fail; a later one tries again.
 * Counted in commands_failed, not in commands_by_status (9 entries).
 */
#define WARPQ_STATUS_FAULT_NOMEM	9

/* A completion entry: 32 bytes. */
struct warpq_cqe {
	__u64 user_data;
	__u32 status;		/* WARPQ_STATUS_* */
	__u32 rsvd;
	__u64 result;		/* CRC32C value; bytes done for COPY/FILL */
	__u64 rsvd2;
};

/* --- ioctls --------------------------------------------------------------- */

/* Capabilities (warpq_info.capabilities). */
#define WARPQ_CAP_RING		(1ull << 0)
#define WARPQ_CAP_SUBMIT_IOCTL	(1ull << 1)
#define WARPQ_CAP_EDU_DMA	(1ull << 2)	/* WARPQ_SQE_EDU_DMA available */
#define WARPQ_CAP_FORK_QUEUE	(1ull << 3)	/* the child gets its own queue at fault time */
#define WARPQ_CAP_POLL		(1ull << 4)	/* poll/epoll: EPOLLIN completions ready, EPOLLOUT
						 * SQ room, EPOLLERR|EPOLLHUP queue dead */
#define WARPQ_CAP_MIRROR	(1ull << 5)	/* the caller's queue (or, without one, a new
						 * queue) mirrors registered memory with
						 * hmm_range_fault: no pin, no RLIMIT_MEMLOCK
						 * charge (module parameter backing=mirror) */
#define WARPQ_CAP_EVENTFD	(1ull << 6)	/* WARPQ_IOC_EVENTFD */

#define WARPQ_POLICY_STRICT	0
#define WARPQ_POLICY_FILTERED	1

struct warpq_info {
	__u32 size;
	__u32 version;		/* out: WARPQ_UAPI_VERSION */
	__u64 capabilities;	/* out: WARPQ_CAP_* */
	__u32 sq_entries;	/* out */
	__u32 cq_entries;	/* out */
	__u32 ring_size;	/* out: bytes to mmap */
	__u32 max_regions;	/* out: per queue */
	__u64 max_region_bytes;	/* out */
	__u32 policy;		/* out: WARPQ_POLICY_* */
	__u32 dma_translation;	/* out: 0 dma-direct, 1 iommu strict, 2 iommu lazy,
				 * 3 iommu identity, 4 other iommu domain */
};

#define WARPQ_ACCESS_READ	(1u << 0)	/* the device may read the buffer */
#define WARPQ_ACCESS_WRITE	(1u << 1)	/* the device may write the buffer */

struct warpq_register {
	__u32 size;
	__u32 access;		/* WARPQ_ACCESS_* */
	__u64 addr;		/* page aligned */
	__u64 len;		/* page aligned, > 0 */
	__u64 handle;		/* out */
};

struct warpq_unregister {
	__u32 size;
	__u32 rsvd;
	__u64 handle;
};

struct warpq_submit {
	__u32 size;
	__u32 count;		/* entries at sqes */
	__u64 sqes;		/* user pointer to count struct warpq_sqe */
	__u32 submitted;	/* out: entries queued */
	__u32 rsvd;
};

struct warpq_wait {
	__u32 size;
	__u32 rsvd;
	__u32 min_ready;	/* wait until cq_tail - cq_head >= min_ready */
	__u32 ready;		/* out */
	__s64 timeout_ns;	/* < 0: no timeout */
};

struct warpq_wake {
	__u32 size;
	__u32 rsvd;
};

/*
 * An eventfd the caller's queue signals (adds 1 to) once per batch of
 * completions it publishes, so an event loop that already waits on
 * eventfds (io_uring's IORING_REGISTER_EVENTFD does the same) learns of
 * completions without polling the device file. fd -1 removes it; a new one
 * replaces the old. The queue keeps its own reference: closing the fd
 * afterwards does not stop the signals.
 */
struct warpq_eventfd {
	__u32 size;
	__s32 fd;		/* an eventfd, or -1 */
};

/* warpq_stats.hist rows. */
#define WARPQ_HIST_INVALIDATE	0	/* an invalidation that took the queue lock */
#define WARPQ_HIST_DRAIN	1	/* its pause and drain of the engine */
#define WARPQ_HIST_UNMAP	2	/* its DMA unmapping of one region */
#define WARPQ_HIST_UNPIN	3	/* its dirtying and unpinning of one region */
#define WARPQ_HIST_REBUILD	4	/* a rebuild that pinned something */
#define WARPQ_HIST_PIN		5	/* GUP of one region in a rebuild */
#define WARPQ_HIST_MAP		6	/* DMA mapping of one region in a rebuild */
#define WARPQ_HIST_PAUSED	7	/* how long the queue stayed stale after a teardown */
#define WARPQ_HIST_KINDS	8
#define WARPQ_HIST_BUCKETS	41

struct warpq_stats {
	__u32 size;
	__u32 rsvd;
	__u64 commands_ok;
	__u64 commands_failed;
	__u64 invalidations;
	__u64 ignored_by_policy;
	__u64 teardowns;
	__u64 drains;
	__u64 drain_timeouts;
	__u64 rebuilds;
	__u64 rebuild_retries;
	__u64 pages_pinned;
	__u64 pages_pinned_peak;
	__u64 faults;
	__u64 zaps;
	__u64 invalidations_by_event[8];	/* indexed by enum mmu_notifier_event */
	__u64 commands_by_status[9];		/* indexed by WARPQ_STATUS_* */
	/*
	 * This queue's latency histograms, for a caller whose size covers them
	 * (the size the kernel writes back says whether it wrote them): log2
	 * nanosecond buckets, hist[h][b] counts samples v with
	 * 2^b <= v < 2^(b+1) (bucket 0 also counts 0); h is a WARPQ_HIST_*.
	 * The device's sums are in debugfs (warpq/warpqN/hist).
	 */
	__u64 hist[WARPQ_HIST_KINDS][WARPQ_HIST_BUCKETS];
};

#define WARPQ_IOC_INFO		_IOWR(WARPQ_IOC_MAGIC, 0x00, struct warpq_info)
#define WARPQ_IOC_REGISTER	_IOWR(WARPQ_IOC_MAGIC, 0x01, struct warpq_register)
#define WARPQ_IOC_UNREGISTER	_IOWR(WARPQ_IOC_MAGIC, 0x02, struct warpq_unregister)
#define WARPQ_IOC_SUBMIT	_IOWR(WARPQ_IOC_MAGIC, 0x03, struct warpq_submit)
#define WARPQ_IOC_WAIT		_IOWR(WARPQ_IOC_MAGIC, 0x04, struct warpq_wait)
#define WARPQ_IOC_WAKE		_IOWR(WARPQ_IOC_MAGIC, 0x05, struct warpq_wake)
#define WARPQ_IOC_STATS		_IOWR(WARPQ_IOC_MAGIC, 0x06, struct warpq_stats)
#define WARPQ_IOC_EVENTFD	_IOWR(WARPQ_IOC_MAGIC, 0x07, struct warpq_eventfd)

#endif /* _UAPI_WARPQ_H */
