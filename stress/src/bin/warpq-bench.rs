//! warpq-bench: side-by-side measurements in one boot, run by `make bench`
//! on the perf kernel (`vm/bench.sh`); the benchmarks and the report's
//! format are `warpq_stress::bench`.
//!
//! ```text
//! warpq-bench [NAME...]   only the benchmarks named (`B1`, `B1 tracepoint cost`, `B2` ... `B6`); all without arguments
//! warpq-bench --list      the benchmarks' names
//! ```

use std::process::ExitCode;

use warpq_stress::bench;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        eprintln!("usage: warpq-bench [NAME...]   (names: warpq-bench --list; all without arguments)");
        return ExitCode::from(2);
    }
    if args.iter().any(|a| a == "--list") {
        bench::names().for_each(|name| println!("{name}"));
        return ExitCode::SUCCESS;
    }
    if bench::run("/dev/warpq0", &args) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
