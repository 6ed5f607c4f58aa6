// SPDX-License-Identifier: GPL-2.0

//! Always-on latency histograms: log2 nanosecond buckets, updated without
//! locks. Bucket `b` counts samples `v` with `2^b <= v < 2^(b+1)` (bucket 0
//! also counts 0), the format `warpqctl hist` reads from debugfs.

use core::sync::atomic::{AtomicU64, Ordering};

/// Buckets per histogram: up to 2^40 ns (about 18 minutes).
pub(crate) const BUCKETS: usize = 41;

/// What is measured, in nanoseconds.
#[derive(Clone, Copy)]
pub(crate) enum Kind {
    /// An invalidation callback that took the queue lock, start to end.
    Invalidate = 0,
    /// Its pause-and-drain of the engine.
    Drain,
    /// Its DMA unmapping of one region.
    Unmap,
    /// Its dirtying and unpinning of one region.
    Unpin,
    /// A rebuild that pinned something, start to end.
    Rebuild,
    /// GUP of one region in a rebuild.
    Pin,
    /// DMA mapping of one region in a rebuild.
    Map,
    /// How long a queue stayed stale (paused) after a teardown.
    Paused,
}

/// The histograms' names in debugfs, indexed by [`Kind`].
pub(crate) const NAMES: [&core::ffi::CStr; KINDS] =
    [c"invalidate_ns", c"drain_ns", c"unmap_ns", c"unpin_ns", c"rebuild_ns", c"pin_ns", c"map_ns", c"paused_ns"];

/// Number of [`Kind`]s.
pub(crate) const KINDS: usize = 8;

/// One histogram per [`Kind`].
pub(crate) struct Histograms {
    buckets: [[AtomicU64; BUCKETS]; KINDS],
    /// Per histogram: the sum of its samples in ns (exact means, where the
    /// log2 buckets only bound a quantile within a factor of two).
    sums: [AtomicU64; KINDS],
}

impl Default for Histograms {
    fn default() -> Self {
        Self {
            buckets: [const { [const { AtomicU64::new(0) }; BUCKETS] }; KINDS],
            sums: [const { AtomicU64::new(0) }; KINDS],
        }
    }
}

impl Histograms {
    /// Adds one sample of `ns` nanoseconds.
    pub(crate) fn record(&self, kind: Kind, ns: u64) {
        let b = if ns == 0 { 0 } else { 63 - ns.leading_zeros() as usize };
        if let Some(h) = self.buckets.get(kind as usize) {
            h[b.min(BUCKETS - 1)].fetch_add(1, Ordering::Relaxed);
        }
        if let Some(sum) = self.sums.get(kind as usize) {
            sum.fetch_add(ns, Ordering::Relaxed);
        }
    }

    /// The sum of the samples of histogram `kind` in ns (0 if out of range).
    pub(crate) fn sum(&self, kind: usize) -> u64 {
        self.sums.get(kind).map_or(0, |s| s.load(Ordering::Relaxed))
    }

    /// The count in bucket `b` of histogram `kind` (0 if out of range).
    pub(crate) fn get(&self, kind: usize, b: usize) -> u64 {
        self.buckets.get(kind).and_then(|h| h.get(b)).map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Zeroes every bucket (samples recorded meanwhile may survive).
    pub(crate) fn reset(&self) {
        for h in &self.buckets {
            for c in h {
                c.store(0, Ordering::Relaxed);
            }
        }
        for sum in &self.sums {
            sum.store(0, Ordering::Relaxed);
        }
    }
}
