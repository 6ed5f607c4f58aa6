//! warpq-adversarial: the table of adversarial cases against the real driver.
//!
//! The rows live in `warpq_stress::adversarial`, one file per area; each
//! names a misuse of the ABI of `driver/uapi/warpq.h` and the outcome the
//! driver must give (`Expect::Ok`, an errno, a completion status or a
//! signal). Every row runs in a child process with a time limit (a hang
//! fails its row, it does not hang the run); after it, the post-case check
//! must pass: pins and the driver's `pages_pinned` back to where they were,
//! no new kernel splat. At the end, a kmemleak scan. Output:
//!
//! ```text
//! ok   <row>: <outcome>: <what happened>
//! FAIL <row>: expected <outcome>, got <outcome>: <what happened>
//! N passed, N failed
//! ```
//!
//! ```text
//! warpq-adversarial [DEVICE] [ROW|GROUP...]   run rows (default /dev/warpq0, all)
//! warpq-adversarial --list [ROW|GROUP...]     print the table
//! ```
//!
//! A GROUP is a row name up to its `/` (`reg-unaligned` selects every
//! `reg-unaligned/...` row). In the debug VM, the `adversarial` suite of
//! `vm/test.sh` runs `warpq-adversarial && warpq-check pins`.

use std::process::ExitCode;

use warpq::Device;
use warpq_stress::adversarial::{cases, run_isolated, Case, Env};
use warpq_stress::check::{kmemleak_scan, Check};
use warpq_stress::report::Report;

/// Whether `case` is selected by `args` (all when empty).
fn selected(case: &Case, args: &[String]) -> bool {
    args.is_empty() || args.iter().any(|a| *a == case.name || a == case.group())
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let list = args.first().is_some_and(|a| a == "--list");
    if list {
        args.remove(0);
    }
    let path = if args.first().is_some_and(|a| a.starts_with('/')) { args.remove(0) } else { "/dev/warpq0".into() };
    let all = cases();
    let unknown: Vec<&String> =
        args.iter().filter(|a| !all.iter().any(|c| selected(c, std::slice::from_ref(a)))).collect();
    if !unknown.is_empty() {
        eprintln!("warpq-adversarial: no such row or group: {unknown:?} (--list shows them)");
        return ExitCode::from(2);
    }
    let rows: Vec<&Case> = all.iter().filter(|c| selected(c, &args)).collect();
    if list {
        for c in &rows {
            println!("{}\n    does:   {}\n    expect: {}", c.name, c.does, c.expect);
        }
        let groups = rows.iter().map(|c| c.group()).collect::<std::collections::BTreeSet<_>>().len();
        println!("{} rows in {groups} groups", rows.len());
        return ExitCode::SUCCESS;
    }
    let mut report = Report::new();
    let info = match Device::open(&path).and_then(|d| d.info()) {
        Ok(info) => info,
        Err(e) => {
            report.fail("setup", &format!("expected {path} to open, got {e}"));
            return report.finish();
        }
    };
    let env = Env { path, info };
    let mut check = match Check::new() {
        Ok(c) => c,
        Err(e) => {
            report.fail("setup", &format!("the post-case check cannot start: {e}"));
            return report.finish();
        }
    };
    for case in rows {
        let mut verdict = run_isolated(&env, case);
        if let Err(left) = check.after_case() {
            let what = verdict.unwrap_or_else(|e| e);
            verdict = Err(format!("left something behind: {left} (the row said: {what})"));
        }
        report.record(&case.name, &verdict);
    }
    let end = check.pins_back().and_then(|()| kmemleak_scan());
    let end = end.map(|()| format!("pins back at the baseline ({} outstanding); kmemleak clean", check.pin_baseline()));
    report.record("after-all-rows", &end);
    report.finish()
}
