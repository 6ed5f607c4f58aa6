// SPDX-License-Identifier: GPL-2.0

//! Safe wrappers for the `warpq:*` tracepoints (`warpq_trace.h`). Each costs
//! a call into the shim and a static-key test while the event is disabled.

use kernel::ffi::{c_int, c_uint, c_ulong};

use crate::shim;

/// `warpq_invalidate_end`'s `outcome`.
#[derive(Clone, Copy)]
pub(crate) enum InvalidateOutcome {
    Ignored = 0,
    NothingMapped = 1,
    CannotProceed = 2,
    TornDown = 3,
    Error = 4,
}

pub(crate) fn invalidate_start(notifier: usize, mm: usize, start: u64, end: u64, event: u32) {
    // SAFETY: plain values; the shim only records them.
    unsafe { shim::warpq_trace_invalidate_start(notifier as c_ulong, mm as c_ulong, start as c_ulong, end as c_ulong, event as c_uint) };
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn invalidate_end(notifier: usize, mm: usize, event: u32, outcome: InvalidateOutcome, pages: u64, drain_ns: u64, drain_timed_out: bool) {
    // SAFETY: plain values; the shim only records them.
    unsafe {
        shim::warpq_trace_invalidate_end(notifier as c_ulong, mm as c_ulong, event, outcome as c_uint, pages as c_ulong, drain_ns, drain_timed_out)
    };
}

pub(crate) fn unmap_unpin(mm: usize, pages: u64, unmap_ns: u64, unpin_ns: u64) {
    // SAFETY: plain values; the shim only records them.
    unsafe { shim::warpq_trace_unmap_unpin(mm as c_ulong, pages as c_ulong, unmap_ns, unpin_ns) };
}

pub(crate) fn zap(mm: usize) {
    // SAFETY: plain values; the shim only records them.
    unsafe { shim::warpq_trace_zap(mm as c_ulong) };
}

pub(crate) fn rebuild_start(mm: usize, from_fault: bool) {
    // SAFETY: plain values; the shim only records them.
    unsafe { shim::warpq_trace_rebuild_start(mm as c_ulong, from_fault) };
}

pub(crate) fn rebuild_end(mm: usize, regions: u32, pages: u64, retries: u32, result: i32) {
    // SAFETY: plain values; the shim only records them.
    unsafe { shim::warpq_trace_rebuild_end(mm as c_ulong, regions, pages as c_ulong, retries, result as c_int) };
}

pub(crate) fn queue_state(mm: usize, paused: bool) {
    // SAFETY: plain values; the shim only records them.
    unsafe { shim::warpq_trace_queue_state(mm as c_ulong, paused) };
}

pub(crate) fn submit_ioctl(mm: usize, count: u32, queued: u32) {
    // SAFETY: plain values; the shim only records them.
    unsafe { shim::warpq_trace_submit_ioctl(mm as c_ulong, count, queued) };
}
