//! warpq-invalidate-check: invalidations with commands in flight.
//!
//! `warpq-invalidate-check munmap|fork|death|scm|touch|overtake|unmap-semantics|swap [DEVICE]`,
//! `warpq-invalidate-check forkstorm [COUNT]`, `warpq-invalidate-check numa [SECONDS]`,
//! `warpq-invalidate-check overtake-random [SECONDS]`, `warpq-invalidate-check window [MIB]`
//!
//! - `munmap`: a registered buffer is unmapped while FILL commands into it
//!   are queued and running. Every command completes, with success (it ran
//!   before) or a fault/abort status; none is lost; the queue counts the
//!   teardown; the queue keeps working afterwards.
//! - `fork`: the parent forks while COPY and FILL commands into its buffer
//!   are in flight. The parent's results land in the parent's pages (checked
//!   byte for byte against a model), while the child writes different data
//!   into its copy of the same buffer at the same time and checks the
//!   device never touches it; the child cannot reach the parent's buffers
//!   through the device; the child then uses the device itself, with its own
//!   queue and registrations, concurrently with the parent, verified too.
//! - `death`, `scm`, `touch`, `overtake`, `overtake-random`, `unmap-semantics`, `swap`, `forkstorm`, `numa`,
//!   `window`: see
//!   `warpq_stress::invalidate`.

use std::process::ExitCode;

use warpq::Device;
use warpq_stress::invalidate;
use warpq_stress::report::Report;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let what = args.next().unwrap_or_default();
    let counted = matches!(what.as_str(), "forkstorm" | "numa" | "overtake-random" | "window");
    let path = if counted { "/dev/warpq0".into() } else { args.next().unwrap_or_else(|| "/dev/warpq0".into()) };
    let dev = match Device::open(&path) {
        Ok(d) => d,
        Err(e) => {
            println!("FAIL open: {path}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match what.as_str() {
        "munmap" => invalidate::munmap_in_flight(&dev),
        "fork" => invalidate::fork_in_flight(&dev),
        "death" => invalidate::death(&dev),
        "scm" => invalidate::scm_rights(&dev),
        "touch" => invalidate::touch_rebuilds(&dev),
        "overtake" => invalidate::overtake(&dev),
        "unmap-semantics" => invalidate::unmap_semantics(&dev),
        "swap" => invalidate::swap_out_idle(&path),
        "forkstorm" => invalidate::fork_storm(&dev, args.next().and_then(|n| n.parse().ok()).unwrap_or(200)),
        "numa" => invalidate::numa_hinting(&dev, args.next().and_then(|n| n.parse().ok()).unwrap_or(60)),
        "overtake-random" => invalidate::overtake_random(&dev, args.next().and_then(|n| n.parse().ok()).unwrap_or(10)),
        "window" => invalidate::beyond_the_window(&dev, args.next().and_then(|n| n.parse().ok()).unwrap_or(320)),
        _ => {
            eprintln!(
                "usage: warpq-invalidate-check munmap|fork|death|scm|touch|overtake|unmap-semantics|swap [DEVICE] | forkstorm [COUNT] | numa [SECONDS] | overtake-random [SECONDS] | window [MIB]"
            );
            return ExitCode::from(2);
        }
    };
    let mut report = Report::new();
    report.record(&what, &result);
    report.finish()
}
