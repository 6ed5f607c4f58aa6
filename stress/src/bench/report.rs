//! The report `warpq-bench` prints: Markdown, then the same figures as JSON
//! between `==WARPQ-BENCH-JSON-BEGIN==` and `==WARPQ-BENCH-JSON-END==` (the
//! format `vm/bench.sh` splits and `warpq-plot` reads).

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The report under construction: Markdown lines and JSON members.
pub(super) struct Report {
    pub(super) md: String,
    pub(super) json: Vec<String>,
    pub(super) headlines: Vec<String>,
    pub(super) hists: Vec<String>,
}

/// A JSON string literal.
fn js(s: &str) -> String {
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

/// How a headline figure is judged against its target.
#[derive(Clone, Copy)]
pub(super) enum Target {
    None,
    AtLeast(f64),
    AtMost(f64),
}

impl Report {
    pub(super) fn line(&mut self, s: impl AsRef<str>) {
        self.md.push_str(s.as_ref());
        self.md.push('\n');
    }
    pub(super) fn figure(&mut self, key: &str, value: f64) {
        self.json.push(format!("\"{key}\": {value:.3}"));
    }
    /// A bar of chart `chart` (titled `title`) in `warpq-plot`'s bar charts.
    pub(super) fn headline(&mut self, chart: &str, title: &str, label: &str, value: f64, target: Target) {
        let (t, dir) = match target {
            Target::None => ("null".to_string(), "none"),
            Target::AtLeast(t) => (format!("{t}"), ">="),
            Target::AtMost(t) => (format!("{t}"), "<="),
        };
        self.headlines.push(format!(
            "{{\"chart\": {}, \"title\": {}, \"label\": {}, \"value\": {value:.4}, \"target\": {t}, \"direction\": \"{dir}\"}}",
            js(chart),
            js(title),
            js(label)
        ));
    }
    /// One series of histogram plot `group`: log2 ns bucket -> count.
    pub(super) fn hist(&mut self, group: &str, title: &str, series: &str, source: &str, buckets: &BTreeMap<u32, u64>) {
        if buckets.values().all(|&n| n == 0) {
            return;
        }
        let b: Vec<String> = buckets.iter().filter(|(_, &n)| n > 0).map(|(b, n)| format!("[{b}, {n}]")).collect();
        self.hists.push(format!(
            "{{\"group\": {}, \"title\": {}, \"series\": {}, \"source\": {}, \"unit\": \"ns\", \"buckets\": [{}]}}",
            js(group),
            js(title),
            js(series),
            js(source),
            b.join(", ")
        ));
    }
}

/// Latencies in µs as log2 nanosecond buckets (the driver's format).
pub(super) fn log2_hist(us: &[f64]) -> BTreeMap<u32, u64> {
    let mut h = BTreeMap::new();
    for &v in us {
        let ns = (v * 1000.0).round().max(0.0) as u64;
        let b = if ns == 0 { 0 } else { 63 - ns.leading_zeros() };
        *h.entry(b).or_insert(0) += 1;
    }
    h
}

impl Report {
    /// An empty report.
    pub(super) fn new() -> Report {
        Report { md: String::new(), json: Vec::new(), headlines: Vec::new(), hists: Vec::new() }
    }

    /// Prints the Markdown, then the JSON object between its marker lines.
    pub(super) fn print(mut self) {
        println!("{}", self.md);
        println!("==WARPQ-BENCH-JSON-BEGIN==");
        self.json.push(format!("\"headlines\": [\n{}\n]", self.headlines.join(",\n")));
        self.json.push(format!("\"histograms\": [\n{}\n]", self.hists.join(",\n")));
        println!("{{{}}}", self.json.join(", "));
        println!("==WARPQ-BENCH-JSON-END==");
    }
}
