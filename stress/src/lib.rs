//! Guest-side helpers shared by warpq's checks, stress and benchmark programs.
//!
//! - [`harness`]: the child-process harness (the only `fork` in `stress/`);
//! - [`check`]: the post-case check (pins, `pages_pinned`, kmemleak, splats);
//! - [`report`]: the `ok`/`FAIL` lines and the `N passed, N failed` summary;
//! - [`raw`]: the raw ABI and ring layer for malformed input;
//! - [`cmd`]: the guest's own tools, run from a check;
//! - [`pins`], [`kmsg`], [`mem`], [`fd`], [`rng`], [`stream`]: pin counters,
//!   the kernel log, anonymous memory, descriptor passing, random numbers
//!   and verified command streams.

#![warn(missing_docs)]

// The foundation every program shares.
pub mod check;
pub mod cmd;
pub mod fd;
pub mod harness;
pub mod kmsg;
pub mod mem;
pub mod param;
pub mod pins;
pub mod raw;
pub mod report;
pub mod rng;
pub mod stream;

// The programs' case files, by program (each bin in src/bin is a thin
// front end to one of these).
pub mod adversarial;
pub mod bench;
pub mod checks;
pub mod churn;
pub mod fault;
pub mod fuzz;
pub mod invalidate;
pub mod lifecycle;
pub mod notify;
pub mod oom;
pub mod plot;
pub mod storm;
pub mod suite;

pub use fd::{recv_fd, send_fd};
pub use kmsg::{is_splat, KernelLog};
pub use mem::Anon;
pub use pins::PinCounts;
pub use rng::Rng;
