// SPDX-License-Identifier: GPL-2.0

//! What the std tests and the loom models share. Unlike `common` (the
//! recording double, std only), nothing here depends on the platform or
//! lock a test uses, so the loom models can include it too.

use warpq_notifier::context::RegionRequest;
use warpq_notifier::platform::Mapping;
use warpq_notifier::policy::Event;
use warpq_notifier::region::{Access, ChunkState, RegionDesc, MAX_CHUNKS};
use warpq_notifier::teardown::Invalidation;

/// A registration of `[start, start + len)`, with chunk states for as many
/// chunks as a region can have (the driver allocates just what it needs).
pub(crate) fn request<M>(start: u64, len: u64, access: Access) -> RegionRequest<M>
where
    M: Mapping<Chunks = Box<[ChunkState<M>]>>,
{
    let chunks = (0..MAX_CHUNKS).map(|_| ChunkState::Unmapped).collect();
    RegionRequest { start, len, access, chunks }
}

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
