/* SPDX-License-Identifier: GPL-2.0 */
/*
 * warpq tracepoints: `trace-cmd record -e warpq` or tracefs events/warpq/.
 * Fired from Rust through the warpq_trace_*() wrappers in warpq_shim.c.
 * docs/tracing.md has the hist-trigger recipes.
 */
#undef TRACE_SYSTEM
#define TRACE_SYSTEM warpq

#if !defined(_WARPQ_TRACE_H) || defined(TRACE_HEADER_MULTI_READ)
#define _WARPQ_TRACE_H

#include <linux/tracepoint.h>

/* An interval-notifier callback of one registered buffer begins. */
TRACE_EVENT(warpq_invalidate_start,
	TP_PROTO(unsigned long notifier, unsigned long mm, unsigned long start,
		 unsigned long end, unsigned int event),
	TP_ARGS(notifier, mm, start, end, event),
	TP_STRUCT__entry(
		__field(unsigned long, notifier)
		__field(unsigned long, mm)
		__field(unsigned long, start)
		__field(unsigned long, end)
		__field(unsigned int, event)
	),
	TP_fast_assign(
		__entry->notifier = notifier;
		__entry->mm = mm;
		__entry->start = start;
		__entry->end = end;
		__entry->event = event;
	),
	TP_printk("notifier=%lx mm=%lx range=%lx-%lx event=%u",
		  __entry->notifier, __entry->mm, __entry->start, __entry->end, __entry->event)
);

/*
 * ... and ends. outcome: 0 ignored by policy, 1 nothing mapped, 2 cannot
 * proceed (non-blocking), 3 torn down, 4 internal error.
 */
TRACE_EVENT(warpq_invalidate_end,
	TP_PROTO(unsigned long notifier, unsigned long mm, unsigned int event,
		 unsigned int outcome, unsigned long pages, u64 drain_ns, bool drain_timed_out),
	TP_ARGS(notifier, mm, event, outcome, pages, drain_ns, drain_timed_out),
	TP_STRUCT__entry(
		__field(unsigned long, notifier)
		__field(unsigned long, mm)
		__field(unsigned int, event)
		__field(unsigned int, outcome)
		__field(unsigned long, pages)
		__field(u64, drain_ns)
		__field(bool, drain_timed_out)
	),
	TP_fast_assign(
		__entry->notifier = notifier;
		__entry->mm = mm;
		__entry->event = event;
		__entry->outcome = outcome;
		__entry->pages = pages;
		__entry->drain_ns = drain_ns;
		__entry->drain_timed_out = drain_timed_out;
	),
	TP_printk("notifier=%lx mm=%lx event=%u outcome=%u pages=%lu drain_ns=%llu drain_timed_out=%d",
		  __entry->notifier, __entry->mm, __entry->event, __entry->outcome, __entry->pages,
		  __entry->drain_ns, __entry->drain_timed_out)
);

/* One region's DMA unmap and unpin (in a teardown, unregister or release). */
TRACE_EVENT(warpq_unmap_unpin,
	TP_PROTO(unsigned long mm, unsigned long pages, u64 unmap_ns, u64 unpin_ns),
	TP_ARGS(mm, pages, unmap_ns, unpin_ns),
	TP_STRUCT__entry(
		__field(unsigned long, mm)
		__field(unsigned long, pages)
		__field(u64, unmap_ns)
		__field(u64, unpin_ns)
	),
	TP_fast_assign(
		__entry->mm = mm;
		__entry->pages = pages;
		__entry->unmap_ns = unmap_ns;
		__entry->unpin_ns = unpin_ns;
	),
	TP_printk("mm=%lx pages=%lu unmap_ns=%llu unpin_ns=%llu",
		  __entry->mm, __entry->pages, __entry->unmap_ns, __entry->unpin_ns)
);

/* A teardown paused the queue's gate and drains its engine. */
TRACE_EVENT(warpq_drain_start,
	TP_PROTO(unsigned long mm, unsigned int in_flight, u64 timeout_ns),
	TP_ARGS(mm, in_flight, timeout_ns),
	TP_STRUCT__entry(
		__field(unsigned long, mm)
		__field(unsigned int, in_flight)
		__field(u64, timeout_ns)
	),
	TP_fast_assign(
		__entry->mm = mm;
		__entry->in_flight = in_flight;
		__entry->timeout_ns = timeout_ns;
	),
	TP_printk("mm=%lx in_flight=%u timeout_ns=%llu",
		  __entry->mm, __entry->in_flight, __entry->timeout_ns)
);

/* The drain is over: in time, or after a reset abandoned commands. */
TRACE_EVENT(warpq_drain_end,
	TP_PROTO(unsigned long mm, unsigned int abandoned, u64 ns),
	TP_ARGS(mm, abandoned, ns),
	TP_STRUCT__entry(
		__field(unsigned long, mm)
		__field(unsigned int, abandoned)
		__field(u64, ns)
	),
	TP_fast_assign(
		__entry->mm = mm;
		__entry->abandoned = abandoned;
		__entry->ns = ns;
	),
	TP_printk("mm=%lx abandoned=%u timed_out=%d ns=%llu",
		  __entry->mm, __entry->abandoned, __entry->abandoned != 0, __entry->ns)
);

/* The zap worker makes the queue mapping fault on its next touch. */
TRACE_EVENT(warpq_zap,
	TP_PROTO(unsigned long mm),
	TP_ARGS(mm),
	TP_STRUCT__entry(__field(unsigned long, mm)),
	TP_fast_assign(__entry->mm = mm;),
	TP_printk("mm=%lx", __entry->mm)
);

/* A fault or an ioctl rebuilds what teardowns left unmapped. */
TRACE_EVENT(warpq_rebuild_start,
	TP_PROTO(unsigned long mm, bool from_fault),
	TP_ARGS(mm, from_fault),
	TP_STRUCT__entry(
		__field(unsigned long, mm)
		__field(bool, from_fault)
	),
	TP_fast_assign(
		__entry->mm = mm;
		__entry->from_fault = from_fault;
	),
	TP_printk("mm=%lx from_fault=%d", __entry->mm, __entry->from_fault)
);

/* result: 0 ok, else a negative errno-like code. */
TRACE_EVENT(warpq_rebuild_end,
	TP_PROTO(unsigned long mm, unsigned int regions, unsigned long pages, unsigned int retries,
		 int result),
	TP_ARGS(mm, regions, pages, retries, result),
	TP_STRUCT__entry(
		__field(unsigned long, mm)
		__field(unsigned int, regions)
		__field(unsigned long, pages)
		__field(unsigned int, retries)
		__field(int, result)
	),
	TP_fast_assign(
		__entry->mm = mm;
		__entry->regions = regions;
		__entry->pages = pages;
		__entry->retries = retries;
		__entry->result = result;
	),
	TP_printk("mm=%lx regions=%u pages=%lu retries=%u result=%d",
		  __entry->mm, __entry->regions, __entry->pages, __entry->retries, __entry->result)
);

/* The queue stops (a teardown made it stale) or resumes (a rebuild). */
TRACE_EVENT(warpq_queue_state,
	TP_PROTO(unsigned long mm, bool paused),
	TP_ARGS(mm, paused),
	TP_STRUCT__entry(
		__field(unsigned long, mm)
		__field(bool, paused)
	),
	TP_fast_assign(
		__entry->mm = mm;
		__entry->paused = paused;
	),
	TP_printk("mm=%lx %s", __entry->mm, __entry->paused ? "paused" : "resumed")
);

/* WARPQ_IOC_SUBMIT. */
TRACE_EVENT(warpq_submit_ioctl,
	TP_PROTO(unsigned long mm, unsigned int count, unsigned int queued),
	TP_ARGS(mm, count, queued),
	TP_STRUCT__entry(
		__field(unsigned long, mm)
		__field(unsigned int, count)
		__field(unsigned int, queued)
	),
	TP_fast_assign(
		__entry->mm = mm;
		__entry->count = count;
		__entry->queued = queued;
	),
	TP_printk("mm=%lx count=%u queued=%u", __entry->mm, __entry->count, __entry->queued)
);

#endif /* _WARPQ_TRACE_H */

#undef TRACE_INCLUDE_PATH
#define TRACE_INCLUDE_PATH .
#undef TRACE_INCLUDE_FILE
#define TRACE_INCLUDE_FILE warpq_trace
#include <trace/define_trace.h>
