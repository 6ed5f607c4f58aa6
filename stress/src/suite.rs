//! The stress suite (`warpq-stress-suite`): the stress scenarios one after
//! another, each checked afterwards for what it left behind.
//!
//! The storm gets most of the time; the others have fixed or proportional
//! shares:
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
//! the program exited 0, and the one post-case check of [`crate::check`]
//! passes: the kernel log since it started has no splat (read from
//! `/dev/kmsg`); `nr_foll_pin_acquired == nr_foll_pin_released` again and
//! the driver's `pages_pinned` is 0 (within 10 s); a kmemleak scan finds
//! nothing.
//!
//! Each scenario's figures: commands verified, forks, execs from the
//! program's `figures:` line; invalidations, teardowns and rebuilds from the
//! driver's counters.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

use warpq::sysfs::Sysfs;

use crate::check::Check;

const POLICY: &str = "/sys/module/warpq/parameters/policy";

/// A scenario: the shell commands it runs, under an invalidation policy.
pub struct Scenario {
    /// Its name on the command line and in the report.
    pub name: &'static str,
    policy: Option<&'static str>,
    /// The commands, run one after another through `sh -c`.
    pub commands: Vec<String>,
}

/// Every scenario, with its share of `seconds`.
pub fn scenarios(seconds: u64) -> Vec<Scenario> {
    let storm = (seconds * 7 / 10).max(10);
    let fuzz = (seconds / 16).max(10);
    let churn_rounds = (seconds / 600).max(1);
    let s = |name, policy, commands: &[String]| Scenario { name, policy, commands: commands.to_vec() };
    vec![
        s("storm", None, &[format!("warpq-storm --seconds {storm}")]),
        s("churn-filtered", Some("filtered"), &[format!("warpq-churn --rounds {churn_rounds}")]),
        s("churn-strict", Some("strict"), &[format!("warpq-churn --rounds {churn_rounds}")]),
        s("death", None, &["warpq-invalidate-check death".into(), "warpq-invalidate-check scm".into()]),
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
    Sysfs::system().stats("warpq0").map(|v| v.into_iter().collect()).unwrap_or_default()
}

/// Runs one command through `sh -c`, echoing its output indented; adds its
/// `figures:` key=value pairs to `figures`.
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
        Err(format!("`{cmd}` exited with {status}{}", last_fail.map(|l| format!(": {l}")).unwrap_or_default()))
    }
}

/// How a scenario went.
pub struct Outcome {
    /// The scenario's name.
    pub name: &'static str,
    /// How long it took, with its check.
    pub seconds: f64,
    /// Its figures (see the module docs).
    pub figures: BTreeMap<String, u64>,
    /// Why it failed.
    pub error: Option<String>,
}

/// Runs a scenario and the post-case check after it.
pub fn run_scenario(sc: &Scenario) -> Outcome {
    let start = Instant::now();
    let mut figures = BTreeMap::new();
    let result = (|| -> Result<(), String> {
        let mut check = Check::zero()?.with_kmemleak(true);
        let before = driver_stats();
        if let Some(p) = sc.policy {
            std::fs::write(POLICY, p).map_err(|e| format!("set policy {p}: {e}"))?;
        }
        let ran = sc.commands.iter().try_for_each(|c| run_command(c, &mut figures));
        if sc.policy.is_some() {
            let _ = std::fs::write(POLICY, "filtered");
        }
        let after = driver_stats();
        for key in ["invalidations", "teardowns", "rebuilds"] {
            let d = after.get(key).copied().unwrap_or(0).saturating_sub(before.get(key).copied().unwrap_or(0));
            figures.insert(key.to_string(), d);
        }
        ran?;
        check.after_case()
    })();
    Outcome { name: sc.name, seconds: start.elapsed().as_secs_f64(), figures, error: result.err() }
}

/// The figures as `N commands, N forks, ...`.
pub fn figures_text(f: &BTreeMap<String, u64>) -> String {
    let order = ["commands", "forks", "execs", "invalidations", "teardowns", "rebuilds"];
    let mut parts: Vec<String> = order.iter().map(|k| format!("{} {}", f.get(*k).copied().unwrap_or(0), k)).collect();
    parts.extend(f.iter().filter(|(k, _)| !order.contains(&k.as_str())).map(|(k, v)| format!("{v} {k}")));
    parts.join(", ")
}

/// The JSON summary the host saves as `target/stress/summary.json`.
pub fn json(
    outcomes: &[Outcome],
    totals: &BTreeMap<String, u64>,
    seconds: u64,
    passed: usize,
    failed: usize,
) -> String {
    let map = |f: &BTreeMap<String, u64>| f.iter().map(|(k, v)| format!("\"{k}\": {v}")).collect::<Vec<_>>().join(", ");
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
