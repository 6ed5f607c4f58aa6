//! warpq-plot: draws `make bench`'s figures as SVG (run on the host by
//! `vm/bench.sh`, after the guest's `warpq-bench` has written the report),
//! printing each file's path; the drawing is `warpq_stress::plot`.
//!
//! ```text
//! warpq-plot [REPORT_JSON [OUT_DIR]]     default: target/bench/report.json, its directory
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") || args.len() > 2 {
        eprintln!("usage: warpq-plot [REPORT_JSON [OUT_DIR]]   (default target/bench/report.json, its directory)");
        return ExitCode::from(2);
    }
    let json = PathBuf::from(args.first().map_or("target/bench/report.json", String::as_str));
    let out = args
        .get(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| json.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf));
    match warpq_stress::plot::run(&json, &out) {
        Ok(files) if files.is_empty() => {
            eprintln!("warpq-plot: {} has no headlines or histograms to draw", json.display());
            ExitCode::FAILURE
        }
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("warpq-plot: {e}");
            ExitCode::FAILURE
        }
    }
}
