//! warpq-stress-suite: runs the stress scenarios one after another and
//! checks, after every one, that it left nothing behind.
//!
//! `warpq-stress-suite [--seconds D] [SCENARIO...]` (default 600 s, every
//! scenario). `make stress DURATION=D` runs it in the VM; `make test` runs a
//! short subset. The storm gets most of the time; the others have fixed or
//! proportional shares:
//!
//! | scenario | program |
//! |---|---|
//! | `storm` | `warpq-storm`: fork/exec storm with verified streams |
//! | `churn-filtered`, `churn-strict` | `warpq-churn` under each policy |
//! | `death` | SIGKILL mid-command, close during WAIT, SCM_RIGHTS |
//! | `oom` | `warpq-oom-check`: memcg OOM kills, non-blockable invalidation |
//! | `adversarial` | `warpq-adversarial`: the table of bad inputs |
//! | `fuzz` | `warpq-fuzz`: seeded random sequences |
//! | `fault-inject` | `warpq-fault-inject`: fail-nth over the driver's paths |
//!
//! After every scenario, each of these must hold or the scenario fails:
//! the program exited 0; the kernel log since it started has no splat
//! (read from `/dev/kmsg`); `nr_foll_pin_acquired == nr_foll_pin_released`
//! again and the driver's `pages_pinned` is 0 (within 10 s); a kmemleak
//! scan finds nothing.
//!
//! Prints one line per scenario with its figures (commands verified, forks,
//! execs from the program's `figures:` line; invalidations, teardowns and
//! rebuilds from the driver's counters), the totals, `N passed, N failed`,
//! and a JSON summary between `==WARPQ-STRESS-JSON-BEGIN==` and
//! `==WARPQ-STRESS-JSON-END==` (the host saves it under `target/stress/`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use warpq::sysfs::Sysfs;
use warpq_stress::{KernelLog, PinCounts};

const KMEMLEAK: &str = "/sys/kernel/debug/kmemleak";
const POLICY: &str = "/sys/module/warpq/parameters/policy";

struct Scenario {
    name: &'static str,
    policy: Option<&'static str>,
    commands: Vec<String>,
}

fn scenarios(seconds: u64) -> Vec<Scenario> {
    let storm = (seconds * 7 / 10).max(10);
    let fuzz = (seconds / 16).max(10);
    let churn_rounds = (seconds / 600).max(1);
    let s = |name, policy, commands: &[String]| Scenario {
        name,
        policy,
        commands: commands.to_vec(),
    };
    vec![
        s("storm", None, &[format!("warpq-storm --seconds {storm}")]),
        s(
            "churn-filtered",
            Some("filtered"),
            &[format!("warpq-churn --rounds {churn_rounds}")],
        ),
        s(
            "churn-strict",
            Some("strict"),
            &[format!("warpq-churn --rounds {churn_rounds}")],
        ),
        s(
            "death",
            None,
            &[
                "warpq-invalidate-check death".into(),
                "warpq-invalidate-check scm".into(),
            ],
        ),
        s("oom", None, &["warpq-oom-check 2".into()]),
        s("adversarial", None, &["warpq-adversarial".into()]),
        s(
            "fuzz",
            None,
            &[format!(
                "warpq-fuzz --seed {} --runs {} --steps 300 --seconds {fuzz}",
                seconds * 7919 + 1,
                (fuzz / 4).max(5)
            )],
        ),
        s("fault-inject", None, &["warpq-fault-inject".into()]),
    ]
}

fn driver_stats() -> BTreeMap<String, u64> {
    Sysfs::system()
        .stats("warpq0")
        .map(|v| v.into_iter().collect())
        .unwrap_or_default()
}

/// Waits up to 10 s for `nr_foll_pin_acquired == nr_foll_pin_released`
/// (nothing else in the guest pins pages) and the driver's `pages_pinned`
/// to reach 0 (queues of exited processes are released by deferred work).
fn pins_released() -> Result<(), String> {
    let waited = PinCounts::wait_balanced(Duration::from_secs(10)).map_err(|e| format!("pins not released: {e}"))?;
    let left = Duration::from_secs(10).saturating_sub(waited);
    let start = Instant::now();
    loop {
        let driver = driver_stats().get("pages_pinned").copied().unwrap_or(0);
        if driver == 0 {
            return Ok(());
        }
        if start.elapsed() > left {
            return Err(format!("the driver still counts {driver} pages pinned"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A kmemleak scan; objects younger than 5 s are not reported, so wait
/// that long first. Clears what it found, so the next scenario starts clean.
fn kmemleak_clean() -> Result<(), String> {
    if !std::path::Path::new(KMEMLEAK).exists() {
        return Ok(());
    }
    std::thread::sleep(Duration::from_secs(6));
    std::fs::write(KMEMLEAK, "scan").map_err(|e| format!("kmemleak scan: {e}"))?;
    let report = std::fs::read_to_string(KMEMLEAK).map_err(|e| format!("kmemleak: {e}"))?;
    let _ = std::fs::write(KMEMLEAK, "clear");
    match report.lines().find(|l| l.contains("unreferenced object")) {
        None => Ok(()),
        Some(first) => Err(format!(
            "kmemleak: {} leaks, first: {first}",
            report.matches("unreferenced object").count()
        )),
    }
}

/// Runs one command through `sh -c`, echoing its output indented; returns
/// the sums of its `figures:` key=value pairs.
fn run_command(cmd: &str, figures: &mut BTreeMap<String, u64>) -> Result<(), String> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("{cmd} 2>&1"))
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{cmd}: {e}"))?;
    let out = child.stdout.take().expect("piped stdout");
    let mut last_fail = None;
    for line in BufReader::new(out).lines().map_while(Result::ok) {
        println!("    {line}");
        if let Some(pairs) = line.strip_prefix("figures: ") {
            for pair in pairs.split_whitespace() {
                if let Some((k, v)) = pair.split_once('=') {
                    *figures.entry(k.to_string()).or_insert(0) += v.parse::<u64>().unwrap_or(0);
                }
            }
        }
        if line.contains("FAIL") {
            last_fail = Some(line);
        }
    }
    let status = child.wait().map_err(|e| format!("{cmd}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{cmd}` exited with {status}{}",
            last_fail.map(|l| format!(": {l}")).unwrap_or_default()
        ))
    }
}

struct Outcome {
    name: &'static str,
    seconds: f64,
    figures: BTreeMap<String, u64>,
    error: Option<String>,
}

fn run_scenario(sc: &Scenario) -> Outcome {
    let start = Instant::now();
    let mut figures = BTreeMap::new();
    let result = (|| -> Result<(), String> {
        let mut log = KernelLog::from_now().map_err(|e| format!("/dev/kmsg: {e}"))?;
        let before = driver_stats();
        if let Some(p) = sc.policy {
            std::fs::write(POLICY, p).map_err(|e| format!("set policy {p}: {e}"))?;
        }
        let ran = sc
            .commands
            .iter()
            .try_for_each(|c| run_command(c, &mut figures));
        if sc.policy.is_some() {
            let _ = std::fs::write(POLICY, "filtered");
        }
        let after = driver_stats();
        for key in ["invalidations", "teardowns", "rebuilds"] {
            let d = after
                .get(key)
                .copied()
                .unwrap_or(0)
                .saturating_sub(before.get(key).copied().unwrap_or(0));
            figures.insert(key.to_string(), d);
        }
        ran?;
        pins_released()?;
        kmemleak_clean()?;
        if let Some(splat) = log.new_splats().first() {
            return Err(format!("kernel log: {splat}"));
        }
        Ok(())
    })();
    Outcome {
        name: sc.name,
        seconds: start.elapsed().as_secs_f64(),
        figures,
        error: result.err(),
    }
}

fn figures_text(f: &BTreeMap<String, u64>) -> String {
    let order = [
        "commands",
        "forks",
        "execs",
        "invalidations",
        "teardowns",
        "rebuilds",
    ];
    let mut parts: Vec<String> = order
        .iter()
        .map(|k| format!("{} {}", f.get(*k).copied().unwrap_or(0), k))
        .collect();
    parts.extend(
        f.iter()
            .filter(|(k, _)| !order.contains(&k.as_str()))
            .map(|(k, v)| format!("{v} {k}")),
    );
    parts.join(", ")
}

fn json(
    outcomes: &[Outcome],
    totals: &BTreeMap<String, u64>,
    seconds: u64,
    passed: usize,
    failed: usize,
) -> String {
    let map = |f: &BTreeMap<String, u64>| {
        f.iter()
            .map(|(k, v)| format!("\"{k}\": {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let escape = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let rows: Vec<String> = outcomes
        .iter()
        .map(|o| {
            format!(
                "    {{\"name\": \"{}\", \"passed\": {}, \"seconds\": {:.1}, \"figures\": {{{}}}{}}}",
                o.name,
                o.error.is_none(),
                o.seconds,
                map(&o.figures),
                o.error.as_ref().map(|e| format!(", \"error\": \"{}\"", escape(e))).unwrap_or_default()
            )
        })
        .collect();
    format!(
        "{{\n  \"duration_requested\": {seconds},\n  \"passed\": {passed},\n  \"failed\": {failed},\n  \"totals\": {{{}}},\n  \"scenarios\": [\n{}\n  ]\n}}",
        map(totals),
        rows.join(",\n")
    )
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut seconds = 600;
    if let Some(i) = args.iter().position(|a| a == "--seconds") {
        seconds = args
            .get(i + 1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(seconds);
        args.drain(i..(i + 2).min(args.len()));
    }
    let all = scenarios(seconds);
    if let Some(unknown) = args
        .iter()
        .find(|a| !all.iter().any(|s| s.name == a.as_str()))
    {
        println!(
            "FAIL: unknown scenario {unknown}; known: {}",
            all.iter().map(|s| s.name).collect::<Vec<_>>().join(" ")
        );
        return ExitCode::FAILURE;
    }
    let start = Instant::now();
    let mut outcomes = Vec::new();
    for sc in all
        .iter()
        .filter(|s| args.is_empty() || args.iter().any(|a| a == s.name))
    {
        println!("=== stress: {} ({})", sc.name, sc.commands.join("; "));
        let o = run_scenario(sc);
        match &o.error {
            None => println!(
                "PASS  {} ({:.0} s): {}",
                o.name,
                o.seconds,
                figures_text(&o.figures)
            ),
            Some(e) => println!(
                "FAIL  {} ({:.0} s): {e}; {}",
                o.name,
                o.seconds,
                figures_text(&o.figures)
            ),
        }
        outcomes.push(o);
    }
    let mut totals = BTreeMap::new();
    for o in &outcomes {
        for (k, v) in &o.figures {
            *totals.entry(k.clone()).or_insert(0) += v;
        }
    }
    let failed = outcomes.iter().filter(|o| o.error.is_some()).count();
    let passed = outcomes.len() - failed;
    println!();
    println!(
        "=== stress summary ({:.0} s)",
        start.elapsed().as_secs_f64()
    );
    for o in &outcomes {
        println!(
            "{}  {:<15} {:>6.0} s  {}",
            if o.error.is_none() { "PASS" } else { "FAIL" },
            o.name,
            o.seconds,
            figures_text(&o.figures)
        );
    }
    println!("total: {}", figures_text(&totals));
    println!("==WARPQ-STRESS-JSON-BEGIN==");
    println!("{}", json(&outcomes, &totals, seconds, passed, failed));
    println!("==WARPQ-STRESS-JSON-END==");
    println!("{passed} passed, {failed} failed");
    if failed == 0 && passed > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
