//! warpq-check: guest-side assertions used by the VM suites.
//!
//! `warpq-check pins` exits non-zero unless every page pinned with
//! `pin_user_pages*()` has been released (`/proc/vmstat`) once the system is
//! quiet: an exited process's address space may be torn down a moment after
//! its parent sees it exit (by whichever kernel thread drops the last
//! reference), so the check waits up to 10 s for the counters to meet.

use std::process::ExitCode;
use std::time::Duration;

use warpq_stress::PinCounts;

/// How long the counters may take to meet.
const LIMIT: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() != Some("pins") {
        eprintln!("usage: warpq-check pins");
        return ExitCode::from(2);
    }
    let balanced = PinCounts::wait_balanced(LIMIT);
    let c = match PinCounts::read() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("warpq-check: {e}");
            return ExitCode::FAILURE;
        }
    };
    match balanced {
        Ok(waited) if c.outstanding() == 0 => {
            println!(
                "pins balanced: acquired {} released {} (after {} ms)",
                c.acquired,
                c.released,
                waited.as_millis()
            );
            ExitCode::SUCCESS
        }
        _ => {
            println!(
                "pins NOT balanced after {} ms: acquired {} released {} ({} outstanding)",
                LIMIT.as_millis(),
                c.acquired,
                c.released,
                c.outstanding()
            );
            ExitCode::FAILURE
        }
    }
}
