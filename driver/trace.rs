// SPDX-License-Identifier: GPL-2.0

//! Safe wrappers for the `warpq:*` tracepoints (`warpq_trace.h`). Each costs
//! a call into the shim and a static-key test while the event is disabled.
//!
//! Built with `--cfg warpq_no_trace` (`make module-notrace`: `WARPQ_NO_TRACE=1`
//! in `driver/Kbuild`), every wrapper is an empty `#[inline(always)]`
//! function: the tracepoint calls are compiled out, which is what `make
//! bench` compares the normal module against.

#[cfg(not(warpq_no_trace))]
use kernel::ffi::{c_int, c_uint, c_ulong};

#[cfg(not(warpq_no_trace))]
use crate::shim;

// Compiled out, the shim's declarations (driver/shim.rs) would be unused and
// `-Dwarnings` would refuse them: naming them here counts as a use.
#[cfg(warpq_no_trace)]
const _: () = {
    let _ = crate::shim::warpq_trace_invalidate_start;
    let _ = crate::shim::warpq_trace_invalidate_end;
    let _ = crate::shim::warpq_trace_unmap_unpin;
    let _ = crate::shim::warpq_trace_drain_start;
    let _ = crate::shim::warpq_trace_drain_end;
    let _ = crate::shim::warpq_trace_zap;
    let _ = crate::shim::warpq_trace_rebuild_start;
    let _ = crate::shim::warpq_trace_rebuild_end;
    let _ = crate::shim::warpq_trace_queue_state;
    let _ = crate::shim::warpq_trace_submit_ioctl;
};

/// `warpq_invalidate_end`'s `outcome`.
#[derive(Clone, Copy)]
pub(crate) enum InvalidateOutcome {
    Ignored = 0,
    NothingMapped = 1,
    CannotProceed = 2,
    TornDown = 3,
    Error = 4,
}

#[cfg_attr(warpq_no_trace, inline(always), allow(unused_variables))]
pub(crate) fn invalidate_start(notifier: usize, mm: usize, start: u64, end: u64, event: u32) {
    #[cfg(not(warpq_no_trace))]
    // SAFETY: plain values; the shim only records them.
    unsafe {
        shim::warpq_trace_invalidate_start(
            notifier as c_ulong,
            mm as c_ulong,
            start as c_ulong,
            end as c_ulong,
            event as c_uint,
        )
    };
}

#[allow(clippy::too_many_arguments)]
#[cfg_attr(warpq_no_trace, inline(always), allow(unused_variables))]
pub(crate) fn invalidate_end(
    notifier: usize,
    mm: usize,
    event: u32,
    outcome: InvalidateOutcome,
    pages: u64,
    drain_ns: u64,
    drain_timed_out: bool,
) {
    #[cfg(not(warpq_no_trace))]
    // SAFETY: plain values; the shim only records them.
    unsafe {
        shim::warpq_trace_invalidate_end(
            notifier as c_ulong,
            mm as c_ulong,
            event,
            outcome as c_uint,
            pages as c_ulong,
            drain_ns,
            drain_timed_out,
        )
    };
}

#[cfg_attr(warpq_no_trace, inline(always), allow(unused_variables))]
pub(crate) fn unmap_unpin(mm: usize, pages: u64, unmap_ns: u64, unpin_ns: u64) {
    #[cfg(not(warpq_no_trace))]
    // SAFETY: plain values; the shim only records them.
    unsafe {
        shim::warpq_trace_unmap_unpin(mm as c_ulong, pages as c_ulong, unmap_ns, unpin_ns)
    };
}

#[cfg_attr(warpq_no_trace, inline(always), allow(unused_variables))]
pub(crate) fn drain_start(mm: usize, in_flight: u32, timeout_ns: u64) {
    #[cfg(not(warpq_no_trace))]
    // SAFETY: plain values; the shim only records them.
    unsafe {
        shim::warpq_trace_drain_start(mm as c_ulong, in_flight as c_uint, timeout_ns)
    };
}

#[cfg_attr(warpq_no_trace, inline(always), allow(unused_variables))]
pub(crate) fn drain_end(mm: usize, abandoned: u32, ns: u64) {
    #[cfg(not(warpq_no_trace))]
    // SAFETY: plain values; the shim only records them.
    unsafe {
        shim::warpq_trace_drain_end(mm as c_ulong, abandoned as c_uint, ns)
    };
}

#[cfg_attr(warpq_no_trace, inline(always), allow(unused_variables))]
pub(crate) fn zap(mm: usize) {
    #[cfg(not(warpq_no_trace))]
    // SAFETY: plain values; the shim only records them.
    unsafe {
        shim::warpq_trace_zap(mm as c_ulong)
    };
}

#[cfg_attr(warpq_no_trace, inline(always), allow(unused_variables))]
pub(crate) fn rebuild_start(mm: usize, from_fault: bool) {
    #[cfg(not(warpq_no_trace))]
    // SAFETY: plain values; the shim only records them.
    unsafe {
        shim::warpq_trace_rebuild_start(mm as c_ulong, from_fault)
    };
}

#[cfg_attr(warpq_no_trace, inline(always), allow(unused_variables))]
pub(crate) fn rebuild_end(mm: usize, regions: u32, pages: u64, retries: u32, result: i32) {
    #[cfg(not(warpq_no_trace))]
    // SAFETY: plain values; the shim only records them.
    unsafe {
        shim::warpq_trace_rebuild_end(mm as c_ulong, regions, pages as c_ulong, retries, result as c_int)
    };
}

#[cfg_attr(warpq_no_trace, inline(always), allow(unused_variables))]
pub(crate) fn queue_state(mm: usize, paused: bool) {
    #[cfg(not(warpq_no_trace))]
    // SAFETY: plain values; the shim only records them.
    unsafe {
        shim::warpq_trace_queue_state(mm as c_ulong, paused)
    };
}

#[cfg_attr(warpq_no_trace, inline(always), allow(unused_variables))]
pub(crate) fn submit_ioctl(mm: usize, count: u32, queued: u32) {
    #[cfg(not(warpq_no_trace))]
    // SAFETY: plain values; the shim only records them.
    unsafe {
        shim::warpq_trace_submit_ioctl(mm as c_ulong, count, queued)
    };
}
