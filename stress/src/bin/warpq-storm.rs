//! warpq-storm: the fork/exec storm of `make stress`.
//!
//! `warpq-storm [--seconds T] [--workers P] [--streamers S] [--device PATH]`
//! (default 60 s, 2 forking workers, 1 streamer, `/dev/warpq0`).
//!
//! Forking workers stream verified commands and fork `quick`, `cow`,
//! `exit-in-flight`, `exec` and `exec-cloexec` children with every batch in
//! flight, while streamers stream alongside: see `warpq_stress::storm`.
//! `warpq-storm exec-child|exec-cloexec FD SEED` is the image an `exec`
//! child runs.
//!
//! Prints one `storm:` line and a `figures:` line (for
//! `warpq-stress-suite`); exit status non-zero on any failure.

use std::process::ExitCode;

use warpq_stress::storm::{self, Options};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if let (Some(mode @ ("exec-child" | "exec-cloexec")), Some(fd), Some(seed)) = (
        args.get(1).map(String::as_str),
        args.get(2).and_then(|a| a.parse().ok()),
        args.get(3).and_then(|a| a.parse().ok()),
    ) {
        return match storm::exec_child(mode == "exec-child", fd, seed) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("FAIL {mode}: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let opt = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let defaults = Options::default();
    let opts = Options {
        seconds: opt("--seconds").and_then(|s| s.parse().ok()).unwrap_or(defaults.seconds),
        workers: opt("--workers").and_then(|s| s.parse().ok()).unwrap_or(defaults.workers),
        streamers: opt("--streamers").and_then(|s| s.parse().ok()).unwrap_or(defaults.streamers),
        path: opt("--device").unwrap_or(defaults.path),
    };
    if storm::run(&opts) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
