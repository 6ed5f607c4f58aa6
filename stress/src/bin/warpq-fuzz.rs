//! warpq-fuzz: seeded random operations on a warpq queue, checked against
//! a model of the driver; failing runs are saved as operations files that
//! replay and shrink. What is fuzzed and checked: `warpq_stress::fuzz`.
//!
//! ```text
//! warpq-fuzz [--seed S] [--runs N] [--steps K] [--seconds T] [--device PATH] [--save-dir DIR]
//! warpq-fuzz --replay FILE
//! warpq-fuzz --shrink FILE [--seconds T]
//! ```
//!
//! Defaults: a seed from the clock, 20 runs of 300 steps, 100 s in all
//! (each run gets `T / N` seconds and stops taking steps when they are
//! up), operations files in `/tmp`; shrinking stops after 600 s.

use std::process::ExitCode;

use warpq_stress::fuzz::{self, Opts};

fn main() -> ExitCode {
    match Opts::parse(std::env::args().skip(1)) {
        Ok(o) => fuzz::main(o),
        Err(e) => {
            eprintln!("warpq-fuzz: {e}\n{}", fuzz::USAGE);
            ExitCode::from(2)
        }
    }
}
