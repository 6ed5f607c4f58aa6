// SPDX-License-Identifier: GPL-2.0

//! The user API of `uapi/warpq.h`. Its layouts and constants are generated
//! from the header by bindgen (`uapi/warpq.rs`, see `uapi/gen`); this module
//! adds what only the driver needs: which structures may be copied from and
//! to user memory byte for byte, and how ioctl numbers are dispatched.

mod warpq;

pub(crate) use warpq::*;

// SAFETY (each of these): a uapi structure is `repr(C)` with integer fields
// only and no padding (bindgen's layout assertions in `uapi/warpq.rs` check
// every offset and size against the C compiler's), so every byte of it is
// initialised and every byte pattern is a valid value.
unsafe impl kernel::types::AsBytes for warpq_info {}
// SAFETY: see above.
unsafe impl kernel::types::AsBytes for warpq_register {}
// SAFETY: see above.
unsafe impl kernel::types::FromBytes for warpq_register {}
// SAFETY: see above.
unsafe impl kernel::types::FromBytes for warpq_unregister {}
// SAFETY: see above.
unsafe impl kernel::types::AsBytes for warpq_submit {}
// SAFETY: see above.
unsafe impl kernel::types::FromBytes for warpq_submit {}
// SAFETY: see above.
unsafe impl kernel::types::AsBytes for warpq_wait {}
// SAFETY: see above.
unsafe impl kernel::types::FromBytes for warpq_wait {}
// SAFETY: see above.
unsafe impl kernel::types::FromBytes for warpq_wake {}
// SAFETY: see above.
unsafe impl kernel::types::FromBytes for warpq_eventfd {}

/// The size bits of an ioctl number (`_IOC_SIZEMASK << _IOC_SIZESHIFT`):
/// dispatch ignores them, the structure's own size field says how large it is.
pub(crate) const IOC_SIZE_BITS: u32 = 0x3fff << 16;

/// `struct warpq_stats` as version 1 knew it: the counters, without the
/// histograms that follow them. A caller whose `size` is below the whole
/// structure gets this much.
pub(crate) const STATS_V1_SIZE: usize = core::mem::offset_of!(warpq_stats, hist);

// The histogram table of STATS is the driver's own histograms, row for row.
const _: () = assert!(WARPQ_HIST_KINDS == crate::hist::KINDS && WARPQ_HIST_BUCKETS == crate::hist::BUCKETS);
