//! warpq-oom-check: an OOM kill of a process with registered buffers and
//! commands in flight.
//!
//! `warpq-oom-check [ROUNDS]` (default 3).
//!
//! Memory-cgroup OOM kills of a process with a registered buffer and a full
//! ring, then the OOM reaper's non-blockable invalidation through
//! `process_mrelease(2)`: see `warpq_stress::oom`. After all, every pin has
//! come back. A splat (sleeping in atomic context, lockdep) or a leak fails
//! the run through the harness.

use std::process::ExitCode;

use warpq_stress::report::Report;

fn main() -> ExitCode {
    let rounds: u32 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(3);
    let mut report = Report::new();
    if let Err(e) = warpq_stress::oom::run(rounds, &mut report) {
        report.fail("oom", &e);
    }
    report.finish()
}
