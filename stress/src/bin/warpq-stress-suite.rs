//! warpq-stress-suite: runs the stress scenarios one after another and
//! checks, after every one, that it left nothing behind.
//!
//! `warpq-stress-suite [--seconds D] [SCENARIO...]` (default 600 s, every
//! scenario). `make stress DURATION=D` runs it in the VM; `make test` runs a
//! short subset. Scenarios: `storm`, `churn-filtered`, `churn-strict`,
//! `death`, `oom`, `adversarial`, `fuzz`, `fault-inject` (see
//! `warpq_stress::suite`). After every scenario: the program exited 0, no
//! splat in the kernel log, every pin released and the driver's
//! `pages_pinned` 0, kmemleak clean.
//!
//! Prints one line per scenario with its figures (commands verified, forks,
//! execs from the program's `figures:` line; invalidations, teardowns and
//! rebuilds from the driver's counters), the totals, `N passed, N failed`,
//! and a JSON summary between `==WARPQ-STRESS-JSON-BEGIN==` and
//! `==WARPQ-STRESS-JSON-END==` (the host saves it under `target/stress/`).

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Instant;

use warpq_stress::report::Report;
use warpq_stress::suite::{self, figures_text};

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut seconds = 600;
    if let Some(i) = args.iter().position(|a| a == "--seconds") {
        seconds = args.get(i + 1).and_then(|s| s.parse().ok()).unwrap_or(seconds);
        args.drain(i..(i + 2).min(args.len()));
    }
    let all = suite::scenarios(seconds);
    if let Some(unknown) = args.iter().find(|a| !all.iter().any(|s| s.name == a.as_str())) {
        println!(
            "FAIL {unknown}: unknown scenario; known: {}",
            all.iter().map(|s| s.name).collect::<Vec<_>>().join(" ")
        );
        return ExitCode::FAILURE;
    }
    let start = Instant::now();
    let mut report = Report::new();
    let mut outcomes = Vec::new();
    for sc in all.iter().filter(|s| args.is_empty() || args.iter().any(|a| a == s.name)) {
        println!("=== stress: {} ({})", sc.name, sc.commands.join("; "));
        let o = suite::run_scenario(sc);
        let figures = figures_text(&o.figures);
        match &o.error {
            None => report.ok(o.name, &format!("{:.0} s: {figures}", o.seconds)),
            Some(e) => report.fail(o.name, &format!("{:.0} s: {e}; {figures}", o.seconds)),
        }
        outcomes.push(o);
    }
    let mut totals = BTreeMap::new();
    for o in &outcomes {
        for (k, v) in &o.figures {
            *totals.entry(k.clone()).or_insert(0) += v;
        }
    }
    println!();
    println!("=== stress summary ({:.0} s)", start.elapsed().as_secs_f64());
    for o in &outcomes {
        let verdict = if o.error.is_none() { "PASS" } else { "FAIL" };
        println!("{verdict}  {:<15} {:>6.0} s  {}", o.name, o.seconds, figures_text(&o.figures));
    }
    println!("total: {}", figures_text(&totals));
    println!("==WARPQ-STRESS-JSON-BEGIN==");
    println!("{}", suite::json(&outcomes, &totals, seconds, report.passed(), report.failed()));
    println!("==WARPQ-STRESS-JSON-END==");
    report.finish()
}
