//! warpq-check: guest-side assertions used by the VM suites.
//!
//! `warpq-check pins` exits non-zero unless every page pinned with
//! `pin_user_pages*()` has been released (`/proc/vmstat`).

use std::process::ExitCode;
use warpq_stress::PinCounts;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("pins") => match PinCounts::read() {
            Ok(c) if c.outstanding() == 0 => {
                println!("pins balanced: acquired {} released {}", c.acquired, c.released);
                ExitCode::SUCCESS
            }
            Ok(c) => {
                println!(
                    "pins NOT balanced: acquired {} released {} ({} outstanding)",
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
