//! warpq-check: guest-side assertions used by the VM suites.
//!
//! `warpq-check pins` exits non-zero unless every page pinned with
//! `pin_user_pages*()` has been released (`/proc/vmstat`) once the system is
//! quiet: an exited process's address space may be torn down a moment after
//! its parent sees it exit (by whichever kernel thread drops the last
//! reference), so the check waits up to 10 s for the counters to meet.

use std::process::ExitCode;
use warpq_stress::PinCounts;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("pins") => match wait_for_balance() {
            Ok((c, waited)) if c.outstanding() == 0 => {
                println!("pins balanced: acquired {} released {} (after {waited} ms)", c.acquired, c.released);
                ExitCode::SUCCESS
            }
            Ok((c, waited)) => {
                println!(
                    "pins NOT balanced after {waited} ms: acquired {} released {} ({} outstanding)",
                    c.acquired, c.released, c.outstanding()
                );
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("warpq-check: {e}");
                ExitCode::FAILURE
            }
        },
        _ => {
            eprintln!("usage: warpq-check pins");
            ExitCode::from(2)
        }
    }
}

/// Reads the counters until they balance or 10 s pass.
fn wait_for_balance() -> std::io::Result<(PinCounts, u64)> {
    let mut waited = 0;
    loop {
        let c = PinCounts::read()?;
        if c.outstanding() == 0 || waited >= 10_000 {
            return Ok((c, waited));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        waited += 50;
    }
}
