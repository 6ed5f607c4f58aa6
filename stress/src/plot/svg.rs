//! The SVG drawings, written by hand (no dependency): ratio bar charts and
//! log2-bucket histogram plots.

use std::fmt::Write as _;

/// Text for SVG content and attribute values.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A number as a chart prints it.
fn num(v: f64) -> String {
    let a = v.abs();
    if a >= 1000.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// `2^b` ns in a human unit.
fn ns_label(b: u32) -> String {
    let ns = 2f64.powi(b as i32);
    let (v, unit) = if ns >= 1e9 {
        (ns / 1e9, "s")
    } else if ns >= 1e6 {
        (ns / 1e6, "ms")
    } else if ns >= 1e3 {
        (ns / 1e3, "µs")
    } else {
        (ns, "ns")
    };
    if v >= 10.0 {
        format!("{v:.0}{unit}")
    } else {
        format!("{v:.1}{unit}")
    }
}

const FONT: &str = "font-family=\"sans-serif\"";

fn svg_open(out: &mut String, w: u32, h: u32, title: &str) {
    let _ = writeln!(out, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>");
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\">"
    );
    let _ = writeln!(out, "<title>{}</title>", esc(title));
    let _ = writeln!(out, "<rect x=\"0\" y=\"0\" width=\"{w}\" height=\"{h}\" fill=\"white\"/>");
    let _ = writeln!(
        out,
        "<text x=\"{}\" y=\"24\" {FONT} font-size=\"15\" font-weight=\"bold\" text-anchor=\"middle\">{}</text>",
        w / 2,
        esc(title)
    );
}

/// One bar of a ratio chart.
pub(crate) struct Bar {
    pub(crate) label: String,
    pub(crate) value: f64,
    /// (target, ">=" or "<=").
    pub(crate) target: Option<(f64, String)>,
}

/// A horizontal bar chart; each bar with its target (if any) marked by a
/// dashed line; green if met, red if missed, blue without a target. A log10
/// axis when the values span more than 30x.
pub(crate) fn bar_chart(title: &str, bars: &[Bar]) -> String {
    let longest =
        bars.iter().map(|b| b.label.chars().count() + if b.target.is_some() { 16 } else { 0 }).max().unwrap_or(10);
    let (label_w, plot_w, row_h, top, bottom) = ((longest as f64 * 6.8 + 20.0).max(200.0), 480.0, 30.0, 44.0, 56.0);
    let w = (label_w + plot_w + 90.0) as u32;
    let h = (top + row_h * bars.len() as f64 + bottom) as u32;
    let mut out = String::new();
    svg_open(&mut out, w, h, title);
    let all: Vec<f64> = bars
        .iter()
        .flat_map(|b| std::iter::once(b.value).chain(b.target.as_ref().map(|t| t.0)))
        .filter(|v| v.is_finite())
        .collect();
    let max = all.iter().copied().fold(0.0, f64::max).max(1e-9);
    let min_pos = all.iter().copied().filter(|&v| v > 0.0).fold(f64::MAX, f64::min);
    let log = min_pos < f64::MAX && max / min_pos > 30.0;
    let (lo, hi) = if log {
        (min_pos.log10().floor(), max.log10().ceil().max(min_pos.log10().floor() + 1.0))
    } else {
        (0.0, max * 1.1)
    };
    let x_of = |v: f64| -> f64 {
        let f = if log { (v.max(10f64.powf(lo)).log10() - lo) / (hi - lo) } else { v / hi };
        label_w + plot_w * f.clamp(0.0, 1.0)
    };
    // Axis and ticks.
    let axis_y = top + row_h * bars.len() as f64;
    let _ = writeln!(out, "<line x1=\"{label_w}\" y1=\"{top}\" x2=\"{label_w}\" y2=\"{axis_y}\" stroke=\"black\"/>");
    let _ = writeln!(
        out,
        "<line x1=\"{label_w}\" y1=\"{axis_y}\" x2=\"{}\" y2=\"{axis_y}\" stroke=\"black\"/>",
        label_w + plot_w
    );
    let ticks: Vec<f64> = if log {
        (lo as i32..=hi as i32).map(|e| 10f64.powi(e)).collect()
    } else {
        let raw = hi / 5.0;
        let mag = 10f64.powf(raw.log10().floor());
        let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|&s| s >= raw).unwrap_or(raw);
        (0..).map(|k| k as f64 * step).take_while(|&v| v <= hi).collect()
    };
    for t in ticks {
        let x = x_of(t);
        let _ = writeln!(out, "<line x1=\"{x:.1}\" y1=\"{top}\" x2=\"{x:.1}\" y2=\"{axis_y}\" stroke=\"#dddddd\"/>");
        let _ = writeln!(
            out,
            "<text x=\"{x:.1}\" y=\"{:.1}\" {FONT} font-size=\"11\" text-anchor=\"middle\">{}</text>",
            axis_y + 15.0,
            esc(&num(t))
        );
    }
    if log {
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" {FONT} font-size=\"11\" text-anchor=\"middle\">log scale</text>",
            label_w + plot_w / 2.0,
            axis_y + 32.0
        );
    }
    for (i, b) in bars.iter().enumerate() {
        let y = top + row_h * i as f64;
        let met = b.target.as_ref().map(|(t, dir)| if dir == "<=" { b.value <= *t } else { b.value >= *t });
        let colour = match met {
            Some(true) => "#4caf50",
            Some(false) => "#e53935",
            None => "#5c8fd6",
        };
        let x0 = label_w;
        let x1 = x_of(b.value);
        let label = match &b.target {
            Some((t, dir)) => format!("{} (target {} {})", b.label, if dir == "<=" { "≤" } else { "≥" }, num(*t)),
            None => b.label.clone(),
        };
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" {FONT} font-size=\"12\" text-anchor=\"end\">{}</text>",
            label_w - 8.0,
            y + row_h / 2.0 + 4.0,
            esc(&label)
        );
        let _ = writeln!(
            out,
            "<rect x=\"{x0:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{colour}\"/>",
            y + 5.0,
            (x1 - x0).max(1.0),
            row_h - 10.0
        );
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" {FONT} font-size=\"11\">{}</text>",
            x1 + 4.0,
            y + row_h / 2.0 + 4.0,
            esc(&num(b.value))
        );
        if let Some((t, _)) = &b.target {
            let xt = x_of(*t);
            let _ = writeln!(
                out,
                "<line x1=\"{xt:.1}\" y1=\"{:.1}\" x2=\"{xt:.1}\" y2=\"{:.1}\" stroke=\"black\" stroke-width=\"2\" stroke-dasharray=\"4,2\"/>",
                y + 1.0,
                y + row_h - 1.0
            );
        }
    }
    let _ = writeln!(
        out,
        "<text x=\"{:.1}\" y=\"{:.1}\" {FONT} font-size=\"10\" fill=\"#555555\">green: target met; red: missed; blue: no target; dashed line: the target</text>",
        10.0,
        h as f64 - 8.0
    );
    out.push_str("</svg>\n");
    out
}

/// One line of a histogram plot.
pub(crate) struct Series {
    pub(crate) name: String,
    pub(crate) source: String,
    pub(crate) buckets: Vec<(u32, f64)>,
}

const COLOURS: [&str; 8] = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

/// Each series as a step line of its share of samples per log2 bucket.
pub(crate) fn hist_plot(title: &str, series: &[Series]) -> String {
    let longest = series.iter().map(|s| s.name.chars().count() + s.source.chars().count() + 12).max().unwrap_or(20);
    let (left, right, top, plot_h) = (60.0, (longest as f64 * 6.5 + 50.0).max(200.0), 44.0, 300.0);
    let bmin = series.iter().flat_map(|s| s.buckets.iter().map(|b| b.0)).min().unwrap_or(0).saturating_sub(1);
    let bmax = series.iter().flat_map(|s| s.buckets.iter().map(|b| b.0)).max().unwrap_or(1) + 2;
    let nb = (bmax - bmin) as f64;
    let bw = (600.0 / nb).clamp(18.0, 48.0);
    let plot_w = bw * nb;
    let w = (left + plot_w + right) as u32;
    let h = (top + plot_h + 60.0) as u32;
    let mut out = String::new();
    svg_open(&mut out, w, h, title);
    let share = |s: &Series| -> Vec<(u32, f64)> {
        let total: f64 = s.buckets.iter().map(|b| b.1).sum::<f64>().max(1.0);
        s.buckets.iter().map(|&(b, n)| (b, n / total)).collect()
    };
    let peak = series.iter().flat_map(|s| share(s).into_iter().map(|b| b.1)).fold(0.0, f64::max).max(0.01);
    // y ticks every 5, 10, 20 or 25 %; the axis ends at the tick above the peak.
    let ystep = [0.05, 0.1, 0.2, 0.25].into_iter().find(|&st| peak / st <= 6.0).unwrap_or(0.25);
    let yticks = (peak / ystep - 1e-9).ceil().max(1.0) as usize;
    let ymax = ystep * yticks as f64;
    let x_of = |b: f64| left + (b - bmin as f64) * bw;
    let y_of = |f: f64| top + plot_h * (1.0 - f / ymax);
    let axis_y = top + plot_h;
    let _ = writeln!(out, "<line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{axis_y}\" stroke=\"black\"/>");
    let _ = writeln!(
        out,
        "<line x1=\"{left}\" y1=\"{axis_y}\" x2=\"{:.1}\" y2=\"{axis_y}\" stroke=\"black\"/>",
        left + plot_w
    );
    for k in 0..=yticks {
        let f = ystep * k as f64;
        let y = y_of(f);
        let _ = writeln!(
            out,
            "<line x1=\"{left}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#eeeeee\"/>",
            left + plot_w
        );
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" {FONT} font-size=\"11\" text-anchor=\"end\">{:.0}%</text>",
            left - 5.0,
            y + 4.0,
            f * 100.0
        );
    }
    let step = if bw < 30.0 { 2 } else { 1 };
    for b in (bmin..=bmax).step_by(step) {
        let x = x_of(b as f64);
        let _ = writeln!(
            out,
            "<line x1=\"{x:.1}\" y1=\"{axis_y}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"black\"/>",
            axis_y + 4.0
        );
        let _ = writeln!(
            out,
            "<text x=\"{x:.1}\" y=\"{:.1}\" {FONT} font-size=\"10\" text-anchor=\"middle\">{}</text>",
            axis_y + 16.0,
            esc(&ns_label(b))
        );
    }
    let _ = writeln!(
        out,
        "<text x=\"{:.1}\" y=\"{:.1}\" {FONT} font-size=\"11\" text-anchor=\"middle\">latency (log2 buckets: [2^b, 2^(b+1)) ns); y: share of the series' samples</text>",
        left + plot_w / 2.0,
        axis_y + 36.0
    );
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let sh = share(s);
        // A step line over every bucket from bmin to bmax (0 where empty).
        let mut pts = vec![format!("{:.1},{:.1}", x_of(bmin as f64), y_of(0.0))];
        for b in bmin..bmax {
            let f = sh.iter().find(|x| x.0 == b).map_or(0.0, |x| x.1);
            pts.push(format!("{:.1},{:.1}", x_of(b as f64), y_of(f)));
            pts.push(format!("{:.1},{:.1}", x_of(b as f64 + 1.0), y_of(f)));
        }
        pts.push(format!("{:.1},{:.1}", x_of(bmax as f64), y_of(0.0)));
        let _ = writeln!(
            out,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" stroke-opacity=\"0.85\"/>",
            pts.join(" ")
        );
        let n: f64 = s.buckets.iter().map(|b| b.1).sum();
        let ly = top + 10.0 + 20.0 * i as f64;
        let lx = left + plot_w + 15.0;
        let _ = writeln!(
            out,
            "<line x1=\"{lx:.1}\" y1=\"{ly:.1}\" x2=\"{:.1}\" y2=\"{ly:.1}\" stroke=\"{colour}\" stroke-width=\"3\"/>",
            lx + 18.0
        );
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" {FONT} font-size=\"11\">{} (n={n:.0}, {})</text>",
            lx + 24.0,
            ly + 4.0,
            esc(&s.name),
            esc(&s.source)
        );
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_charts() {
        let bars = [
            Bar { label: "a <b>".into(), value: 6.5, target: Some((10.0, ">=".into())) },
            Bar { label: "c".into(), value: 168.0, target: Some((1.3, "<=".into())) },
            Bar { label: "d".into(), value: 1.0, target: None },
        ];
        let svg = bar_chart("t & u", &bars);
        assert!(svg.contains("log scale") && svg.contains("a &lt;b&gt;") && svg.contains("t &amp; u"));
        assert!(svg.ends_with("</svg>\n"));
        let s = [Series { name: "x".into(), source: "user".into(), buckets: vec![(10, 3.0), (12, 1.0)] }];
        let svg = hist_plot("h", &s);
        assert!(svg.contains("<polyline") && svg.contains("n=4"));
    }
}
