//! Invalidations with commands in flight (`warpq-invalidate-check`): what
//! munmap, fork, exec, process death and fd passing do to a queue whose
//! commands are running.
//!
//! - [`munmap_in_flight`] and [`touch_rebuilds`] ([`unmap`]): a registered
//!   buffer unmapped (or a page of it dropped) under the device;
//! - [`fork_in_flight`] and [`fork_storm`] ([`fork`]): fork with commands in
//!   flight, and children in sequence on the parent's file;
//! - [`death`] and [`scm_rights`] ([`death`](mod@death)): SIGKILL and close
//!   with work in flight, and the fd passed to another process;
//! - [`unmap_semantics`] ([`remap`]): a registered buffer replaced at its
//!   address (munmap + mmap, `MAP_FIXED`, `MREMAP_DONTUNMAP`) is never the
//!   registration's; a shrinking mremap cuts only its chunks;
//! - [`overtake`] ([`overtake`](mod@overtake)): commands marked
//!   `WARPQ_SQE_UNORDERED` overtake one that waits for its chunk's
//!   rebuild, and commands on that chunk keep their order;
//!   [`overtake_random`] ([`overtake_random`](mod@overtake_random)): random
//!   FILLs and COPYs, some UNORDERED, under a stream of dropped pages,
//!   against a sequential model;
//! - [`numa_hinting`] ([`numa`]): NUMA balancing scans over registered
//!   memory (2-node guest): the teardowns hinting causes, and mprotect still
//!   revoking device writes;
//! - [`swap_out_idle`] ([`swap`]): an idle queue's registered memory under a
//!   memory cgroup limit with swap on: how much reclaim takes per backing;
//! - [`beyond_the_window`] ([`window`]): more memory registered than the
//!   device can address at once, streamed over while another process's
//!   queue keeps completing commands.

pub mod death;
pub mod fork;
pub mod numa;
pub mod overtake;
pub mod overtake_random;
pub mod remap;
pub mod swap;
pub mod unmap;
pub mod window;

pub use death::{death, scm_rights};
pub use fork::{fork_in_flight, fork_storm};
pub use numa::numa_hinting;
pub use overtake::overtake;
pub use overtake_random::overtake_random;
pub use remap::unmap_semantics;
pub use swap::swap_out_idle;
pub use unmap::{munmap_in_flight, touch_rebuilds};
pub use window::beyond_the_window;

const PAGE: usize = 4096;

/// How long a child of these checks may run (each takes seconds at most).
const CHILD_LIMIT: std::time::Duration = std::time::Duration::from_secs(120);
