//! warpq-fuzz: seeded random sequences of everything a process can do to a
//! warpq queue, with the driver's answers checked after every step.
//!
//! A run is a list of operations ([`op::Op`]): [`gen::generate`] draws it
//! from a seed, `apply` executes it (drawing no random numbers), and the
//! oracle checks what the driver answered against the fuzzer's model. A
//! failing run is saved as an operations file ([`text`]) that `--replay`
//! runs again and `--shrink` reduces ([`shrink`]).
//!
//! # What is fuzzed
//!
//! Each run opens the device, maps its ring, maps a buffer and registers
//! it, then applies up to `--steps` operations, each a weighted random pick
//! among:
//!
//! - the ioctls: REGISTER (whole and partial buffers, edge addresses and
//!   lengths: misaligned, zero, overflowing, too large, unmapped, guard
//!   pages, kernel addresses, the ring itself; every access mask), UNREGISTER
//!   (live, stale, the parent's and garbage handles), INFO, STATS, WAIT
//!   (small timeouts), WAKE, SUBMIT (random entries, arrays that run into an
//!   unmapped page), unknown ioctl numbers; each argument with a random
//!   declared size (smaller, equal, larger), random size bits in the ioctl
//!   number, and placed in normal, read-only, straddling or unmapped memory;
//! - memory: `mmap`, `munmap` (whole and partial), `mprotect`, `mremap`
//!   (moved, grown) and `madvise(DONTNEED)` of the buffers it registered,
//!   private and shared, and a fresh buffer mapped over an address range a
//!   stale registration still follows; `mmap` (also the refused kinds),
//!   `munmap`, `mprotect`, `mremap` and `madvise(DONTNEED)` of the ring
//!   mappings (a queue mapping only moves or splits as a whole: the driver
//!   refuses the rest, and the fuzzer checks it does);
//! - the ring: random submission entries (random opcodes, flags, reserved
//!   bits, lengths; addresses inside, outside and straddling registered
//!   buffers) published through the tail; garbage tails and overwritten
//!   header indices, after which the fuzzer parks the tail out of reach and
//!   publishes a lone NOP: once it completes nothing is in flight and the
//!   ring is in a known state again;
//! - processes and files: fork (the child runs a few operations of its own
//!   on the inherited files and mappings, with its own queues, and sometimes
//!   exits with a ring full of commands in flight; the parent reaps it within
//!   a time bound), dup/close of descriptors, more opens of the device
//!   (read-only too).
//!
//! # What is checked
//!
//! The oracle's list (`oracle.rs`): documented errnos and predicted
//! outcomes of every ioctl, canary bytes around every argument, every
//! completion's status, order, uniqueness and result against the model,
//! the buffers' bytes against the byte model whenever nothing else can be
//! touching them, ring indices, SUBMIT's and WAIT's counts and STATS; a
//! child sees a fresh queue of its own. Nothing hangs: every wait is
//! bounded, a step that does not return within the hang limit is reported
//! with the fuzzer's kernel stack, a child is killed and reported after
//! 60 s, a run that overruns its time budget by more than the hang limit
//! fails. The limits catch hangs, not slowness: a KASAN kernel under TCG on
//! a loaded machine rebuilds a large region in seconds. At the end of each run,
//! with everything closed, the post-case check (`crate::check`): pins
//! balance, the driver's `pages_pinned` is 0, and the kernel log shows no
//! new splat.
//!
//! # Replaying and shrinking
//!
//! Each run prints its seed. A failing run prints the failure, the last
//! steps it took, and saves the operations it applied (up to the failing
//! one, and the finish) to `warpq-fuzz-<seed>.ops` in `--save-dir` (default
//! `/tmp`); it also prints the file between `==WARPQ-FUZZ-OPS-BEGIN==` and
//! `==WARPQ-FUZZ-OPS-END==`, so that a file made in the VM survives it.
//! `warpq-fuzz --replay FILE` applies the file again; `warpq-fuzz --shrink
//! FILE` reduces it (each candidate runs in a child; a candidate is kept
//! when it fails with the same signature) and writes `FILE.min`. The
//! interleaving with the engine may differ between runs, so a failure that
//! depends on it may need a few replays.

pub mod gen;
pub mod op;
pub mod shrink;
pub mod text;

mod apply;
mod model;
mod oracle;
mod run;
mod sys;

use std::time::Duration;

use warpq::sys::WARPQ_RING_SIZE;

use crate::raw::header;
pub(crate) use crate::rng::Rng;

pub use run::{main, Opts, USAGE};

pub(crate) type Res<T = ()> = Result<T, String>;

pub(crate) const PAGE: usize = 4096;
pub(crate) const PAGE64: u64 = PAGE as u64;
pub(crate) const RING_PAGES: usize = WARPQ_RING_SIZE / PAGE;
pub(crate) const RING64: u64 = WARPQ_RING_SIZE as u64;
/// Slots of the reserved window that holds the ring mappings and the ioctl
/// scratch pages (never device-writable memory).
pub(crate) const WIN_SLOTS: usize = 40;
pub(crate) const SLOT_BYTES: usize = 16 * PAGE;
/// Slot 0: scratch pages; the last slot: always PROT_NONE ("wild" pointers).
pub(crate) const WILD_SLOT: usize = WIN_SLOTS - 1;
/// The longest command the driver accepts.
pub(crate) const MAX_CMD: u64 = 4 << 20;
/// The longest edu DMA transfer.
pub(crate) const EDU_MAX: u64 = 4096;
pub(crate) const MAX_BUFS: usize = 8;
pub(crate) const MAX_FILES: usize = 3;
pub(crate) const MAX_FDS: usize = 4;
pub(crate) const MAX_RINGS: usize = 5;
pub(crate) const MAX_CHILDREN: usize = 2;
pub(crate) const CHILD_LIMIT: Duration = Duration::from_secs(60);
pub(crate) const DRAIN_LIMIT: Duration = Duration::from_secs(30);
pub(crate) const CANARY: u8 = 0xa5;
pub(crate) use crate::raw::{INFO_V1, KERNEL_ADDR, STATS_V1};

// Ring header offsets (`struct warpq_ring_header`).
pub(crate) const H_MAGIC: usize = header::MAGIC;
pub(crate) const H_VERSION: usize = header::VERSION;
pub(crate) const H_SQ_HEAD: usize = header::SQ_HEAD;
pub(crate) const H_SQ_TAIL: usize = header::SQ_TAIL;
pub(crate) const H_CQ_HEAD: usize = header::CQ_HEAD;
pub(crate) const H_CQ_TAIL: usize = header::CQ_TAIL;
pub(crate) const H_FLAGS: usize = header::FLAGS;

pub(crate) const RW: i32 = libc::PROT_READ | libc::PROT_WRITE;
pub(crate) const RD: i32 = libc::PROT_READ;
pub(crate) const NONE: i32 = libc::PROT_NONE;
/// A page that is not mapped (in `prot` arrays).
pub(crate) const GONE: i32 = -1;

/// `[a, a + al)` and `[b, b + bl)` share a byte (saturating at the top).
pub(crate) fn overlaps(a: u64, al: u64, b: u64, bl: u64) -> bool {
    al > 0 && bl > 0 && a < b.saturating_add(bl) && b < a.saturating_add(al)
}

/// Bytes of a reproducible pattern (a buffer's initial contents, CPU
/// writes): a function of the operation's seed, not a random draw.
pub(crate) fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut s = gen::splitmix(seed) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        v.extend_from_slice(&s.to_le_bytes());
    }
    v.truncate(len);
    v
}
