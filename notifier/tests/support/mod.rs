// SPDX-License-Identifier: GPL-2.0

//! What the std tests and the loom models share. Unlike `common` (the
//! recording double, std only), nothing here depends on the platform or
//! lock a test uses, so the loom models can include it too.

use warpq_notifier::policy::Event;
use warpq_notifier::region::RegionDesc;
use warpq_notifier::teardown::Invalidation;

/// The callback's arguments when the kernel invalidates all of `region` on
/// behalf of someone else (`range->owner` is not this driver). Tests of
/// other ranges override `start`/`end` with struct update syntax.
pub(crate) fn whole_region(region: RegionDesc, cur_seq: u64, event: Event, blockable: bool) -> Invalidation {
    Invalidation {
        region,
        cur_seq,
        start: region.start,
        end: region.end(),
        event,
        blockable,
        owner_is_us: false,
        write_kept: false,
    }
}
