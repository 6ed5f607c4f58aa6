// SPDX-License-Identifier: GPL-2.0

//! Seeded random operations over the whole state machine, as a host-side
//! fuzz target (a seeded runner on the stable toolchain: no cargo-fuzz).
//! Processes (mms) come and go and fork, contexts are created at fault
//! time, regions are registered, armed and unregistered, the kernel
//! invalidates random ranges with random events under both policies
//! (sometimes non-blocking), faults rebuild with injected collisions and
//! pin failures, the engine runs commands, the zap worker runs, contexts
//! are released and reaped.
//!
//! Generation, application and checking are apart: [`ops::generate`] turns
//! a seed into a `Vec<Op>` holding every choice; [`sim::Sim::apply`]
//! applies one operation without drawing a random number; and
//! [`sim::Sim::check`] checks the invariants after every step: pins match
//! what is mapped, the engine only touched pages that were pinned, current
//! and of its own mm, the stale state equals "a region needs a rebuild", a
//! stale queue never keeps its ring mapped without a zap pending, every
//! command completes exactly once, every context is released exactly once.
//!
//! A failing seed is shrunk (delta debugging over its operations, keeping
//! a removal when the run still panics with the same message) and the
//! shortest failing sequence is printed as Rust, ready to paste into a
//! `#[test]` that calls [`replay`].
//!
//! `WARPQ_SEED=<n>` runs one seed; `WARPQ_STEPS=<n>` sets the steps per
//! seed, `WARPQ_SEEDS=<n>` the number of seeds.

#![cfg(not(loom))]

mod common;
// `whole_region` is for the other suites.
#[path = "random/ops.rs"]
mod ops;
#[path = "random/shrink.rs"]
mod shrink;
#[path = "random/sim.rs"]
mod sim;
#[allow(dead_code)]
mod support;

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

use ops::{generate, Op};
use sim::Sim;

/// Applies `ops` to a fresh simulation, checking after every step, then
/// ends it (every process exits); panics at the first violation.
pub(crate) fn replay(ops: &[Op]) -> BTreeMap<&'static str, u64> {
    let mut sim = Sim::new();
    run(&mut sim, ops);
    sim.stats
}

fn run(sim: &mut Sim, ops: &[Op]) {
    for op in ops {
        sim.apply(op);
        // A submission only queues a command: the invariants are checked
        // after the engine step that runs it (and after every other step).
        if !matches!(op, Op::Submit { .. }) {
            sim.check();
        }
    }
    sim.finish();
}

/// The panic's message.
fn message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(no message)".into())
}

/// What "failing the same way" compares: the message's first line with
/// its numbers blanked out.
fn signature(msg: &str) -> String {
    let first = msg.lines().next().unwrap_or("");
    first.split(|c: char| c.is_ascii_digit()).filter(|s| !s.is_empty()).collect::<Vec<_>>().join("#")
}

/// Runs `ops`; the panic message if it fails.
fn failure(ops: &[Op]) -> Option<String> {
    catch_unwind(AssertUnwindSafe(|| replay(ops))).err().map(|p| message(&*p))
}

/// Shrinks a failing `ops` (quietly: candidates panic by the hundred) and
/// prints the shortest failing sequence as a replayable test.
fn report_failure(seed: u64, ops: &[Op], msg: &str) {
    let sig = signature(msg);
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let min = shrink::ddmin(ops.to_vec(), &mut |c: &[Op]| failure(c).is_some_and(|m| signature(&m) == sig));
    std::panic::set_hook(hook);
    eprintln!("random protocol test FAILED with seed {seed}: {msg}");
    eprintln!("shrunk from {} to {} operations; replay with this test:", ops.len(), min.len());
    eprintln!("#[test]\nfn regression() {{\n    use ops::{{Acc::*, Op::*, Range::*}};\n    use warpq_notifier::policy::Event::*;\n    replay(&[");
    for op in &min {
        eprintln!("        {op:?},");
    }
    eprintln!("    ]);\n}}");
    eprintln!("(or the whole run: WARPQ_SEED={seed} cargo test -p warpq-notifier --test random)");
}

fn run_seed(seed: u64, steps: u64) -> BTreeMap<&'static str, u64> {
    let ops = generate(seed, steps);
    let mut sim = Sim::new();
    let outcome = catch_unwind(AssertUnwindSafe(|| run(&mut sim, &ops)));
    if let Err(panic) = outcome {
        eprintln!("last steps of seed {seed}:");
        for line in &sim.log {
            eprintln!("  {line}");
        }
        report_failure(seed, &ops, &message(&*panic));
        std::panic::resume_unwind(panic);
    }
    sim.stats
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn random_operations_keep_the_invariants() {
    let steps = env_u64("WARPQ_STEPS").unwrap_or(400);
    let seeds: Vec<u64> = match env_u64("WARPQ_SEED") {
        Some(seed) => vec![seed],
        None => (1..=env_u64("WARPQ_SEEDS").unwrap_or(1000)).collect(),
    };
    let mut total: BTreeMap<&'static str, u64> = BTreeMap::new();
    for seed in &seeds {
        for (what, n) in run_seed(*seed, steps) {
            *total.entry(what).or_default() += n;
        }
    }
    println!("{} seeds x {steps} steps: {total:?}", seeds.len());
    // The run must actually exercise the interesting paths.
    for what in [
        "rebuild with collisions",
        "rebuild exhausted",
        "rebuild short of memory",
        "rebuild evicted",
        "non-blocking refused",
        "commands ok",
        "commands faulted",
        "commands waiting for a rebuild",
        "zaps",
        "forks",
        "releases",
        "reaps",
    ] {
        if seeds.len() > 20 {
            assert!(total.get(what).copied().unwrap_or(0) > 0, "never exercised: {what}");
        }
    }
}

#[test]
fn applying_draws_no_random_numbers() {
    // The same operations give the same run: the log and the counts.
    let ops = generate(7, 400);
    let (mut a, mut b) = (Sim::new(), Sim::new());
    run(&mut a, &ops);
    run(&mut b, &ops);
    assert_eq!(a.log, b.log);
    assert_eq!(a.stats, b.stats);
    assert!(a.stats.get("commands ok").copied().unwrap_or(0) > 0);
}

#[test]
fn every_subsequence_is_a_valid_run() {
    // Picks are reduced modulo what exists, so removing operations (what
    // the shrinker does) never makes a run invalid by itself.
    let ops = generate(11, 300);
    for keep in [2, 3, 5, 7] {
        let sub: Vec<Op> = ops.iter().enumerate().filter(|(i, _)| i % keep == 0).map(|(_, o)| o.clone()).collect();
        replay(&sub);
        replay(&ops[ops.len() / keep..]);
    }
}

#[test]
fn a_planted_violation_shrinks_to_the_operations_that_cause_it() {
    // A synthetic invariant: "no process exits after a fork". The shrinker
    // must find a fork followed by an exit, out of a few hundred steps.
    let ops = generate(3, 400);
    let violates = |c: &[Op]| {
        let fork = c.iter().position(|o| matches!(o, Op::Fork { .. }));
        fork.is_some_and(|f| c[f..].iter().any(|o| matches!(o, Op::Exit { .. })))
    };
    assert!(violates(&ops));
    let min = shrink::ddmin(ops, &mut |c: &[Op]| violates(c));
    assert_eq!(min.len(), 2, "{min:?}");
    assert!(matches!((&min[0], &min[1]), (Op::Fork { .. }, Op::Exit { .. })));
    // Its print-out is Rust that replays.
    let printed = format!("{:?}", min[0]);
    assert!(printed.starts_with("Fork { mm: "), "{printed}");
}

#[test]
fn a_shrunk_sequence_replays() {
    // Pasted from a print-out: every kind of operation, applied and checked.
    use ops::{Acc::*, Op::*, Range::*};
    use warpq_notifier::policy::Event::*;
    let stats = replay(&[
        NewProcess { reuse: false },
        Register { mm: 0, page: 3, misalign: false, pages: 2, short: false, access: RW, arm_now: true },
        Register { mm: 1, page: 9, misalign: false, pages: 1, short: false, access: R, arm_now: false },
        Arm { mm: 1 },
        Fault { mm: 0, collisions: 2, transient: false },
        Submit { mm: 0, other: None, region: Some(0), off: 5, len: 100, access: W, keep_access: true },
        Engine { mm: 0 },
        Invalidate {
            mm: 0,
            range: InRegion { region: 0, off: 1, extra: 3 },
            event: Unmap,
            blockable: true,
            rolls: [10, 90, 0, 0],
        },
        Zap { mm: 0 },
        SetPolicy { strict: false },
        Invalidate {
            mm: 1,
            range: Pages { start: 8, pages: 3 },
            event: ProtectionVma,
            blockable: false,
            rolls: [0; 4],
        },
        Fork { mm: 0 },
        Unregister { mm: 1, armed: true, region: 0 },
        Exit { mm: 0, again: true },
        Reap { slot: 0 },
    ]);
    assert_eq!(stats.get("forks"), Some(&1));
    assert_eq!(stats.get("commands ok").copied().unwrap_or(0) + stats.get("commands faulted").copied().unwrap_or(0), 1);
}
