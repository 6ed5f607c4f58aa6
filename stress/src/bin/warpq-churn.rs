//! warpq-churn: address-space churn while the device works.
//!
//! `warpq-churn [SCENARIO...] [--rounds N] [--interval-ms MS]` (default: all
//! scenarios, 6 rounds of 100 commands each and at least 5 churn intervals
//! per round, a churn operation every 100 ms).
//!
//! A verified stream into a registered buffer while another thread churns
//! the address space under it: see `warpq_stress::churn`. Scenarios:
//! `dontneed`, `pageout`, `mprotect`, `thp`, `ksm`, `compact`, `fork`,
//! `unrelated`, `fault-threads`, `mremap`, `fork-flags`, `pressure`.
//!
//! One line per scenario with its figures; exit status non-zero on failure.

use std::process::ExitCode;

use warpq::Device;
use warpq_stress::churn::{self, SCENARIOS};
use warpq_stress::report::Report;

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut rounds = 6;
    if let Some(i) = args.iter().position(|a| a == "--interval-ms") {
        if let Some(ms) = args.get(i + 1).and_then(|n| n.parse().ok()) {
            churn::set_interval_ms(ms);
        }
        args.drain(i..(i + 2).min(args.len()));
    }
    if let Some(i) = args.iter().position(|a| a == "--rounds") {
        rounds = args.get(i + 1).and_then(|n| n.parse().ok()).unwrap_or(rounds);
        args.drain(i..(i + 2).min(args.len()));
    }
    let dev = match Device::open("/dev/warpq0") {
        Ok(d) => d,
        Err(e) => {
            println!("FAIL open: /dev/warpq0: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut report = Report::new();
    for sc in SCENARIOS.iter().filter(|sc| args.is_empty() || args.iter().any(|a| a == sc.name)) {
        report.record(sc.name, &churn::run(&dev, sc, rounds));
    }
    println!("figures: commands={}", churn::verified());
    report.finish()
}
