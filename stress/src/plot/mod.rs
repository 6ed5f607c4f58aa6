//! `warpq-plot`: draws `make bench`'s figures as SVG (run on the host by
//! `vm/bench.sh`, after the guest's `warpq-bench` has written the report).
//!
//! Reads the report's `headlines` (one bar each, grouped into charts by
//! `chart`, with their targets) and `histograms` (log2 nanosecond buckets,
//! grouped into plots by `group`, one line per `series`), and writes
//! `ratios-<chart>.svg` and `hist-<group>.svg` into the output directory.

pub(crate) mod json;
mod svg;

use std::path::{Path, PathBuf};

use json::{Json, Parser};
use svg::{bar_chart, hist_plot, Bar, Series};

/// A file name part from a chart or group name.
fn slug(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

/// Groups `items` by `key`, in first-seen order.
fn grouped<'a>(items: &'a [Json], key: &str) -> Vec<(String, Vec<&'a Json>)> {
    let mut out: Vec<(String, Vec<&Json>)> = Vec::new();
    for it in items {
        let k = it.get(key).and_then(Json::str).unwrap_or("").to_string();
        match out.iter_mut().find(|(g, _)| *g == k) {
            Some((_, v)) => v.push(it),
            None => out.push((k, vec![it])),
        }
    }
    out
}

/// Draws every chart and plot of the report at `json_path` into `out_dir`;
/// returns the files written.
pub fn run(json_path: &Path, out_dir: &Path) -> Result<Vec<PathBuf>, String> {
    let text = std::fs::read_to_string(json_path).map_err(|e| format!("{}: {e}", json_path.display()))?;
    let report = Parser::parse(&text).map_err(|e| format!("{}: {e}", json_path.display()))?;
    let mut written = Vec::new();
    let mut write = |name: String, svg: String| -> Result<(), String> {
        let p = out_dir.join(name);
        std::fs::write(&p, svg).map_err(|e| format!("{}: {e}", p.display()))?;
        written.push(p);
        Ok(())
    };
    let headlines = report.get("headlines").map(Json::arr).unwrap_or(&[]);
    for (chart, items) in grouped(headlines, "chart") {
        let title = items[0].get("title").and_then(Json::str).unwrap_or(&chart).to_string();
        let bars: Vec<Bar> = items
            .iter()
            .filter_map(|it| {
                let value = it.get("value")?.num()?;
                let label = it.get("label").and_then(Json::str).unwrap_or("").to_string();
                let dir = it.get("direction").and_then(Json::str).unwrap_or("none");
                let target =
                    it.get("target").and_then(Json::num).filter(|_| dir != "none").map(|t| (t, dir.to_string()));
                Some(Bar { label, value, target })
            })
            .collect();
        if !bars.is_empty() {
            write(format!("ratios-{}.svg", slug(&chart)), bar_chart(&title, &bars))?;
        }
    }
    let hists = report.get("histograms").map(Json::arr).unwrap_or(&[]);
    for (group, items) in grouped(hists, "group") {
        let title = items[0].get("title").and_then(Json::str).unwrap_or(&group).to_string();
        let series: Vec<Series> = items
            .iter()
            .map(|it| Series {
                name: it.get("series").and_then(Json::str).unwrap_or("").to_string(),
                source: it.get("source").and_then(Json::str).unwrap_or("").to_string(),
                buckets: it
                    .get("buckets")
                    .map(Json::arr)
                    .unwrap_or(&[])
                    .iter()
                    .filter_map(|p| Some((p.arr().first()?.num()? as u32, p.arr().get(1)?.num()?)))
                    .filter(|&(b, _)| b < 64)
                    .collect(),
            })
            .filter(|s| !s.buckets.is_empty())
            .collect();
        if !series.is_empty() {
            write(format!("hist-{}.svg", slug(&group)), hist_plot(&title, &series))?;
        }
    }
    Ok(written)
}
