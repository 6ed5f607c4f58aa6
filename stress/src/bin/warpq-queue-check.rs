//! warpq-queue-check: the queue mapping's rules, on the real driver
//! (`warpq_stress::checks::queue` lists them).
//!
//! `warpq-queue-check [DEVICE]` (default `/dev/warpq0`). One `ok` line per
//! check; the first failure is a `FAIL` line and ends the run; then
//! `N passed, N failed`.

use std::process::ExitCode;

use warpq_stress::checks::{conclude, queue};
use warpq_stress::report::Report;

fn main() -> ExitCode {
    let path = std::env::args().nth(1).unwrap_or_else(|| "/dev/warpq0".into());
    let mut r = Report::new();
    let result = queue::run(&mut r, &path);
    conclude(r, result)
}
