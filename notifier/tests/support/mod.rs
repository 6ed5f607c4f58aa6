// SPDX-License-Identifier: GPL-2.0

//! What the std tests and the loom models share. Unlike `common` (the
//! recording double, std only), nothing here depends on the platform or
//! lock a test uses, so the loom models can include it too.

use warpq_notifier::context::RegionRequest;
use warpq_notifier::platform::Mapping;
use warpq_notifier::policy::Event;
use warpq_notifier::region::{chunk_count_for, Access, Chunk, RegionDesc, MIN_CHUNK_SHIFT};
use warpq_notifier::teardown::Invalidation;

/// A registration of `[start, start + len)`, with as many chunk states as
/// the region has chunks at the smallest chunk size (exactly what the
/// driver allocates with the tests' `chunk_shift` of 16; an access past the
/// region's chunks would fall off the end, as in the driver).
pub(crate) fn request<M>(start: u64, len: u64, access: Access) -> RegionRequest<M>
where
    M: Mapping<Chunks = Box<[Chunk<M>]>>,
{
    let chunks = (0..chunk_count_for(len, MIN_CHUNK_SHIFT)).map(|_| Chunk::new()).collect();
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
