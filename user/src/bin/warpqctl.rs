//! warpqctl: inspect and tune the warpq driver.
//!
//! ```text
//! warpqctl list [--json]              devices bound to the driver
//! warpqctl stats [--json] [DEVICE]    device counters (sum over their queues)
//! warpqctl hist [--json] [DEVICE]     latency histograms (log2 buckets, counts, bars)
//! warpqctl queues [--json] [DEVICE]   every queue: owner, regions, bytes registered/mapped/pinned, state
//! warpqctl reset [DEVICE]             zero a device's counters and histograms
//! warpqctl policy get                 invalidation policy for new queues
//! warpqctl policy set strict|filtered
//! ```
//!
//! DEVICE is `warpqN` or `/dev/warpqN`; without it, every device. The files
//! read and their formats are documented in the `warpq::sysfs` module and
//! `docs/user.md`. `WARPQCTL_ROOT=dir` reads them under `dir` instead of `/`
//! (for tests). Exit status: 0 done, 1 failed, 2 bad usage.

use std::fmt::Write as _;
use std::process::ExitCode;

use warpq::sysfs::{Histogram, Policy, QueueEntry, Sysfs};

const USAGE: &str = "usage: warpqctl list [--json]
       warpqctl stats [--json] [DEVICE]
       warpqctl hist [--json] [DEVICE]
       warpqctl queues [--json] [DEVICE]
       warpqctl reset [DEVICE]
       warpqctl policy get | policy set strict|filtered
DEVICE: warpqN or /dev/warpqN (default: every device)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let sys = match std::env::var_os("WARPQCTL_ROOT") {
        Some(root) => Sysfs::at(root),
        None => Sysfs::system(),
    };
    match run(&sys, &args) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(Failure::Usage(msg)) => {
            if !msg.is_empty() {
                eprintln!("warpqctl: {msg}");
            }
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
        Err(Failure::Failed(msg)) => {
            eprintln!("warpqctl: {msg}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Debug)]
enum Failure {
    Usage(String),
    Failed(String),
}

impl From<warpq::Error> for Failure {
    fn from(e: warpq::Error) -> Self {
        Failure::Failed(e.hint().to_string())
    }
}

/// Options of a subcommand: `--json` and at most one device.
struct Opts {
    json: bool,
    device: Option<String>,
}

fn opts(args: &[String], json_ok: bool) -> Result<Opts, Failure> {
    let mut o = Opts { json: false, device: None };
    for a in args {
        match a.as_str() {
            "--json" if json_ok => o.json = true,
            s if s.starts_with('-') => return Err(Failure::Usage(format!("unknown option {s}"))),
            s if o.device.is_none() => {
                let name = s.strip_prefix("/dev/").unwrap_or(s);
                if !name.starts_with("warpq") || name.contains('/') {
                    return Err(Failure::Usage(format!("{s} is not a device name (warpqN or /dev/warpqN)")));
                }
                o.device = Some(name.to_string());
            }
            s => return Err(Failure::Usage(format!("unexpected argument {s}"))),
        }
    }
    Ok(o)
}

fn run(sys: &Sysfs, args: &[String]) -> Result<String, Failure> {
    let (cmd, rest) = args.split_first().ok_or(Failure::Usage(String::new()))?;
    match cmd.as_str() {
        "list" => list(sys, &opts(rest, true)?),
        "stats" => stats(sys, &opts(rest, true)?),
        "hist" => hist(sys, &opts(rest, true)?),
        "queues" => queues(sys, &opts(rest, true)?),
        "reset" => reset(sys, &opts(rest, false)?),
        "policy" => policy(sys, rest),
        "help" | "--help" | "-h" => Err(Failure::Usage(String::new())),
        other => Err(Failure::Usage(format!("unknown command {other}"))),
    }
}

/// The device names to act on: the one asked for, or all bound ones.
fn targets(sys: &Sysfs, o: &Opts) -> Result<Vec<String>, Failure> {
    if let Some(d) = &o.device {
        return Ok(vec![d.clone()]);
    }
    let names: Vec<String> = sys.devices()?.into_iter().filter_map(|d| d.name).collect();
    if names.is_empty() {
        return Err(Failure::Failed(format!(
            "no device is bound to the warpq driver ({} is empty or absent: is warpq.ko loaded?)",
            sys.driver_dir().display()
        )));
    }
    Ok(names)
}

fn list(sys: &Sysfs, o: &Opts) -> Result<String, Failure> {
    if o.device.is_some() {
        return Err(Failure::Usage("list takes no device".into()));
    }
    let devices = sys.devices()?;
    if devices.is_empty() {
        return Err(Failure::Failed(format!(
            "no device is bound to the warpq driver ({} is empty or absent: is warpq.ko loaded?)",
            sys.driver_dir().display()
        )));
    }
    let mut out = String::new();
    if o.json {
        out.push('[');
        for (i, d) in devices.iter().enumerate() {
            let name = d.name.as_deref();
            let dma = name.and_then(|n| sys.dma_translation(n).ok());
            let _ = write!(
                out,
                "{}{{\"name\":{},\"dev\":{},\"pci\":{},\"dma_translation\":{}}}",
                if i > 0 { "," } else { "" },
                json_opt(name),
                json_opt(d.dev_path().as_deref().and_then(|p| p.to_str())),
                json_str(&d.pci_address),
                json_opt(dma.as_deref())
            );
        }
        out.push_str("]\n");
    } else {
        for d in &devices {
            let name = d.name.as_deref().unwrap_or("-");
            let dev = d.dev_path().map_or("-".into(), |p| p.display().to_string());
            let dma = d.name.as_deref().and_then(|n| sys.dma_translation(n).ok()).unwrap_or_else(|| "-".into());
            let _ = writeln!(out, "{name}\t{dev}\t{}\tdma:{dma}\t{}", d.pci_address, d.sysfs_path.display());
        }
    }
    Ok(out)
}

fn stats(sys: &Sysfs, o: &Opts) -> Result<String, Failure> {
    let mut all = Vec::new();
    for name in targets(sys, o)? {
        let counters = sys.stats(&name)?;
        all.push((name, counters));
    }
    Ok(if o.json { stats_json(&all) } else { stats_text(&all) })
}

fn stats_text(all: &[(String, Vec<(String, u64)>)]) -> String {
    let mut out = String::new();
    for (name, counters) in all {
        let _ = writeln!(out, "{name}:");
        let width = counters.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
        for (n, v) in counters {
            let _ = writeln!(out, "  {n:<width$}  {v:>12}");
        }
    }
    out
}

fn stats_json(all: &[(String, Vec<(String, u64)>)]) -> String {
    let mut out = String::from("{");
    for (i, (name, counters)) in all.iter().enumerate() {
        let _ = write!(out, "{}{}:{{", if i > 0 { "," } else { "" }, json_str(name));
        for (j, (n, v)) in counters.iter().enumerate() {
            let _ = write!(out, "{}{}:{v}", if j > 0 { "," } else { "" }, json_str(n));
        }
        out.push('}');
    }
    out.push_str("}\n");
    out
}

fn hist(sys: &Sysfs, o: &Opts) -> Result<String, Failure> {
    let mut all = Vec::new();
    for name in targets(sys, o)? {
        let h = sys.hist(&name)?;
        all.push((name, h));
    }
    Ok(if o.json { hist_json(&all) } else { hist_text(&all) })
}

/// A value of a histogram in its unit (`_ns` names: human time units).
fn fmt_value(v: u64, ns: bool) -> String {
    if !ns {
        return v.to_string();
    }
    let f = v as f64;
    if v < 1_000 {
        format!("{v}ns")
    } else if v < 1_000_000 {
        format!("{:.1}us", f / 1e3)
    } else if v < 1_000_000_000 {
        format!("{:.1}ms", f / 1e6)
    } else {
        format!("{:.1}s", f / 1e9)
    }
}

const BAR: usize = 40;

fn hist_text(all: &[(String, Vec<Histogram>)]) -> String {
    let mut out = String::new();
    for (name, hists) in all {
        if hists.is_empty() {
            let _ = writeln!(out, "{name}: no histograms");
        }
        for h in hists {
            let ns = h.name.ends_with("_ns");
            let total = h.total();
            let _ = write!(out, "{name} {}: {total} samples", h.name);
            if let (Some(p50), Some(p99)) = (h.quantile_upper_bound(0.5), h.quantile_upper_bound(0.99)) {
                let _ = write!(out, ", p50 < {}, p99 < {}", fmt_value(p50, ns), fmt_value(p99, ns));
            }
            out.push('\n');
            let (Some((&first, _)), Some((&last, _))) = (h.buckets.first_key_value(), h.buckets.last_key_value())
            else {
                continue;
            };
            let max = h.buckets.values().copied().max().unwrap_or(1).max(1);
            for b in first..=last {
                let n = h.buckets.get(&b).copied().unwrap_or(0);
                let (lo, hi) = Histogram::bucket_range(b);
                let bar = ((n as u128 * BAR as u128).div_ceil(max as u128)) as usize;
                let _ = writeln!(
                    out,
                    "  [{:>8}, {:>8}) {n:>12} |{}",
                    fmt_value(lo, ns),
                    fmt_value(hi, ns),
                    "#".repeat(bar)
                );
            }
        }
    }
    out
}

fn hist_json(all: &[(String, Vec<Histogram>)]) -> String {
    let mut out = String::from("{");
    for (i, (name, hists)) in all.iter().enumerate() {
        let _ = write!(out, "{}{}:{{", if i > 0 { "," } else { "" }, json_str(name));
        for (j, h) in hists.iter().enumerate() {
            let _ = write!(
                out,
                "{}{}:{{\"total\":{},\"buckets\":[",
                if j > 0 { "," } else { "" },
                json_str(&h.name),
                h.total()
            );
            for (k, (&b, &n)) in h.buckets.iter().enumerate() {
                let (lo, hi) = Histogram::bucket_range(b);
                let _ = write!(
                    out,
                    "{}{{\"bucket\":{b},\"lo\":{lo},\"hi\":{hi},\"count\":{n}}}",
                    if k > 0 { "," } else { "" }
                );
            }
            out.push_str("]}");
        }
        out.push('}');
    }
    out.push_str("}\n");
    out
}

fn queues(sys: &Sysfs, o: &Opts) -> Result<String, Failure> {
    let mut all = Vec::new();
    for name in targets(sys, o)? {
        let q = sys.queues(&name)?;
        all.push((name, q));
    }
    Ok(if o.json { queues_json(&all) } else { queues_text(&all) })
}

/// Bytes in binary units.
fn fmt_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

fn queues_text(all: &[(String, Vec<QueueEntry>)]) -> String {
    let mut out = String::new();
    for (name, queues) in all {
        let _ = writeln!(out, "{name}: {} queue{}", queues.len(), if queues.len() == 1 { "" } else { "s" });
        for q in queues {
            let n = |k: &str| q.number(k).unwrap_or(0);
            let w = |k: &str| q.word(k).unwrap_or("-");
            let _ = writeln!(
                out,
                "  queue {} pid {} ({}) {} {} {}: {} region{}, {} registered, {} mapped, {} pinned; \
                 {} ok, {} failed, {} teardowns, {} rebuilds",
                q.id,
                q.pid,
                q.comm,
                w("backing"),
                w("policy"),
                w("state"),
                n("region_count"),
                if n("region_count") == 1 { "" } else { "s" },
                fmt_bytes(n("registered_bytes")),
                fmt_bytes(n("mapped_bytes")),
                fmt_bytes(n("pinned_bytes")),
                n("commands_ok"),
                n("commands_failed"),
                n("teardowns"),
                n("rebuilds"),
            );
            for r in &q.regions {
                let rn = |k: &str| r.number(k).unwrap_or(0);
                let _ = writeln!(
                    out,
                    "    region {:#x} at {:#x}: {} {}, {} of {} chunks mapped ({} dead), {} mapped, {}",
                    r.handle,
                    r.addr,
                    fmt_bytes(rn("len")),
                    r.word("access").unwrap_or("-"),
                    rn("mapped_chunks"),
                    rn("chunks"),
                    rn("dead_chunks"),
                    fmt_bytes(rn("mapped_bytes")),
                    r.word("state").unwrap_or("-"),
                );
            }
        }
    }
    out
}

/// `{"warpq0":[{"id":..,"pid":..,"comm":..,<words>,<numbers>,"regions":[{..}]}]}`:
/// every key of the file, numbers as numbers.
fn queues_json(all: &[(String, Vec<QueueEntry>)]) -> String {
    let mut out = String::from("{");
    for (i, (name, queues)) in all.iter().enumerate() {
        let _ = write!(out, "{}{}:[", if i > 0 { "," } else { "" }, json_str(name));
        for (j, q) in queues.iter().enumerate() {
            let _ = write!(
                out,
                "{}{{\"id\":{},\"pid\":{},\"comm\":{}",
                if j > 0 { "," } else { "" },
                q.id,
                q.pid,
                json_str(&q.comm)
            );
            for (k, v) in &q.words {
                let _ = write!(out, ",{}:{}", json_str(k), json_str(v));
            }
            for (k, v) in &q.numbers {
                let _ = write!(out, ",{}:{v}", json_str(k));
            }
            out.push_str(",\"regions\":[");
            for (k, r) in q.regions.iter().enumerate() {
                let _ = write!(out, "{}{{\"handle\":{},\"addr\":{}", if k > 0 { "," } else { "" }, r.handle, r.addr);
                for (key, v) in &r.words {
                    let _ = write!(out, ",{}:{}", json_str(key), json_str(v));
                }
                for (key, v) in &r.numbers {
                    let _ = write!(out, ",{}:{v}", json_str(key));
                }
                out.push('}');
            }
            out.push_str("]}");
        }
        out.push(']');
    }
    out.push_str("}\n");
    out
}

fn reset(sys: &Sysfs, o: &Opts) -> Result<String, Failure> {
    let mut out = String::new();
    for name in targets(sys, o)? {
        sys.reset(&name)?;
        let _ = writeln!(out, "{name}: counters and histograms reset");
    }
    Ok(out)
}

fn policy(sys: &Sysfs, args: &[String]) -> Result<String, Failure> {
    match args {
        [get] if get == "get" => Ok(format!("{}\n", sys.policy()?)),
        [set, value] if set == "set" => {
            let p: Policy = value.parse().map_err(Failure::Usage)?;
            sys.set_policy(p)?;
            let now = sys.policy()?;
            if now != p {
                return Err(Failure::Failed(format!("wrote {p} but the driver reports {now}")));
            }
            Ok(format!("{now} (applies to queues created from now on)\n"))
        }
        _ => Err(Failure::Usage("policy get | policy set strict|filtered".into())),
    }
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_opt(s: Option<&str>) -> String {
    s.map_or("null".into(), json_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(tag: &str) -> (std::path::PathBuf, Sysfs) {
        let dir = std::env::temp_dir().join(format!("warpqctl-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let pci = dir.join("sys/bus/pci/drivers/warpq/0000:00:03.0/misc/warpq0");
        std::fs::create_dir_all(&pci).unwrap();
        let class = dir.join("sys/class/misc/warpq0");
        std::fs::create_dir_all(&class).unwrap();
        std::fs::write(class.join("stats"), "commands_ok 7\ncommands_failed 1\n").unwrap();
        std::fs::write(class.join("dma_translation"), "iommu-strict\n").unwrap();
        std::fs::create_dir_all(dir.join("sys/module/warpq/parameters")).unwrap();
        std::fs::write(dir.join("sys/module/warpq/parameters/policy"), "filtered\n").unwrap();
        std::fs::create_dir_all(dir.join("sys/kernel/debug/warpq/warpq0")).unwrap();
        let sys = Sysfs::at(&dir);
        (dir, sys)
    }

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn queues_text_and_json() {
        let (dir, sys) = tree("queues");
        let q = dir.join("sys/kernel/debug/warpq/warpq0/queues");
        std::fs::write(
            &q,
            "queue 4 pid 99 comm a\\x22b backing pin policy filtered state running region_count 1 registered_bytes 65536 \
             mapped_bytes 65536 pinned_bytes 65536 commands_ok 2\n\
             region 65537 queue 4 addr 0x10000 len 65536 access rw chunk_bytes 65536 chunks 1 mapped_chunks 1 \
             dead_chunks 0 mapped_bytes 65536 state mapped\n",
        )
        .unwrap();
        let out = run(&sys, &args("queues")).unwrap();
        assert!(out.contains("queue 4 pid 99 (a\"b) pin filtered running: 1 region, 64.0 KiB registered"), "{out}");
        assert!(out.contains("region 0x10001 at 0x10000: 64.0 KiB rw, 1 of 1 chunks mapped (0 dead)"), "{out}");
        let out = run(&sys, &args("queues --json warpq0")).unwrap();
        assert_eq!(
            out,
            "{\"warpq0\":[{\"id\":4,\"pid\":99,\"comm\":\"a\\\"b\",\"backing\":\"pin\",\"policy\":\"filtered\",\
             \"state\":\"running\",\"region_count\":1,\"registered_bytes\":65536,\"mapped_bytes\":65536,\
             \"pinned_bytes\":65536,\"commands_ok\":2,\"regions\":[{\"handle\":65537,\"addr\":65536,\
             \"access\":\"rw\",\"state\":\"mapped\",\"len\":65536,\"chunk_bytes\":65536,\"chunks\":1,\
             \"mapped_chunks\":1,\"dead_chunks\":0,\"mapped_bytes\":65536}]}]}\n"
        );
        std::fs::remove_file(&q).unwrap();
        match run(&sys, &args("queues")) {
            Err(Failure::Failed(msg)) => assert!(msg.contains("queues does not exist"), "{msg}"),
            other => panic!("{other:?}"),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn list_and_stats() {
        let (dir, sys) = tree("stats");
        let out = run(&sys, &args("list")).unwrap();
        assert!(out.starts_with("warpq0\t/dev/warpq0\t0000:00:03.0\tdma:iommu-strict"), "{out}");
        let out = run(&sys, &args("list --json")).unwrap();
        assert_eq!(
            out,
            "[{\"name\":\"warpq0\",\"dev\":\"/dev/warpq0\",\"pci\":\"0000:00:03.0\",\"dma_translation\":\"iommu-strict\"}]\n"
        );
        let out = run(&sys, &args("stats")).unwrap();
        assert_eq!(out, "warpq0:\n  commands_ok                 7\n  commands_failed             1\n");
        let out = run(&sys, &args("stats --json /dev/warpq0")).unwrap();
        assert_eq!(out, "{\"warpq0\":{\"commands_ok\":7,\"commands_failed\":1}}\n");
        match run(&sys, &args("stats warpq9")) {
            Err(Failure::Failed(m)) => assert!(m.contains("warpq9/stats"), "{m}"),
            other => panic!("{other:?}"),
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn hist_absent_is_a_clear_failure_and_present_is_drawn() {
        let (dir, sys) = tree("hist");
        match run(&sys, &args("hist")) {
            Err(Failure::Failed(m)) => assert!(m.contains("this driver has no histograms"), "{m}"),
            other => panic!("{other:?}"),
        }
        std::fs::write(
            dir.join("sys/kernel/debug/warpq/warpq0/hist"),
            "# histogram bucket count\nsubmit_to_complete_ns 10 30\nsubmit_to_complete_ns 12 10\n",
        )
        .unwrap();
        let out = run(&sys, &args("hist")).unwrap();
        let lines: Vec<_> = out.lines().collect();
        assert_eq!(lines[0], "warpq0 submit_to_complete_ns: 40 samples, p50 < 2.0us, p99 < 8.2us");
        assert_eq!(lines[1], format!("  [   1.0us,    2.0us)           30 |{}", "#".repeat(40)));
        assert_eq!(lines[2], "  [   2.0us,    4.1us)            0 |");
        assert_eq!(lines[3], format!("  [   4.1us,    8.2us)           10 |{}", "#".repeat(14)));
        let out = run(&sys, &args("hist --json")).unwrap();
        assert_eq!(
            out,
            "{\"warpq0\":{\"submit_to_complete_ns\":{\"total\":40,\"buckets\":[{\"bucket\":10,\"lo\":1024,\"hi\":2048,\"count\":30},{\"bucket\":12,\"lo\":4096,\"hi\":8192,\"count\":10}]}}}\n"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reset_and_policy() {
        let (dir, sys) = tree("reset");
        match run(&sys, &args("reset")) {
            Err(Failure::Failed(m)) => assert!(m.contains("no reset attribute"), "{m}"),
            other => panic!("{other:?}"),
        }
        std::fs::write(dir.join("sys/class/misc/warpq0/reset"), "").unwrap();
        assert_eq!(run(&sys, &args("reset warpq0")).unwrap(), "warpq0: counters and histograms reset\n");
        assert_eq!(std::fs::read_to_string(dir.join("sys/class/misc/warpq0/reset")).unwrap(), "1\n");
        assert_eq!(run(&sys, &args("policy get")).unwrap(), "filtered\n");
        assert_eq!(run(&sys, &args("policy set strict")).unwrap(), "strict (applies to queues created from now on)\n");
        assert_eq!(run(&sys, &args("policy get")).unwrap(), "strict\n");
        assert!(matches!(run(&sys, &args("policy set lazy")), Err(Failure::Usage(_))));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_usage() {
        let sys = Sysfs::at("/nonexistent");
        for a in ["", "frob", "stats --yaml", "stats a b", "reset --json", "list warpq0", "stats /tmp/x", "policy"] {
            assert!(matches!(run(&sys, &args(a)), Err(Failure::Usage(_))), "{a:?} accepted");
        }
        match run(&sys, &args("stats")) {
            Err(Failure::Failed(m)) => assert!(m.contains("no device is bound"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_str("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }
}
