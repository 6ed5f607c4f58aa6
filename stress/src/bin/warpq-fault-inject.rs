//! warpq-fault-inject: allocation failures injected, one by one, into every
//! allocation the driver's paths make, as the kernel's `iommufd_fail_nth`
//! test does.
//!
//! `warpq-fault-inject [PATH...] [--max N]` (default: every path, at most 400
//! injection points each). Paths: `open`, `map-ring` (mmap + first touch,
//! which creates the queue), `register`, `rebuild` (the ioctl-driven rebuild
//! after an invalidation), `child-queue` (a forked child's first
//! registration, which creates its queue), `unregister` (which must not
//! allocate at all: a teardown path that can fail is a leak waiting).
//!
//! The sweep (failslab and fail_page_alloc limited to warpq.ko's text, n
//! written to `/proc/thread-self/fail-nth`) is `warpq_stress::fault`; this
//! program lists the paths and what each may fail with.
//!
//! Prints one line per path; ends with a `figures:` line; exit status
//! non-zero on failure. The harness checks the kernel log (no splat) and
//! kmemleak afterwards.

use std::process::ExitCode;

use libc::{EAGAIN, EFAULT, ENOMEM};
use warpq_stress::fault::{self, paths, FailNth, Path};
use warpq_stress::report::Report;

const PATHS: [Path; 6] = [
    Path { name: "open", allowed: &[ENOMEM], allocates: true, run: paths::open },
    Path { name: "map-ring", allowed: &[ENOMEM], allocates: true, run: paths::map_ring },
    Path { name: "register", allowed: &[ENOMEM, EFAULT], allocates: true, run: paths::register },
    Path { name: "rebuild", allowed: &[ENOMEM, EAGAIN], allocates: true, run: paths::rebuild },
    Path { name: "child-queue", allowed: &[ENOMEM], allocates: true, run: paths::child_queue },
    Path { name: "unregister", allowed: &[ENOMEM], allocates: false, run: paths::unregister },
];

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut max = 400;
    if let Some(i) = args.iter().position(|a| a == "--max") {
        max = args.get(i + 1).and_then(|s| s.parse().ok()).unwrap_or(max);
        args.drain(i..(i + 2).min(args.len()));
    }
    let (start, end) = match fault::limit_to_module("warpq") {
        Ok(r) => r,
        Err(e) => {
            println!("FAIL setup: fault injection: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("fault-inject: failslab and fail_page_alloc limited to stacks through warpq.ko {start:#x}..{end:#x}");
    let mut fail = match FailNth::open() {
        Ok(f) => f,
        Err(e) => {
            println!("FAIL setup: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut report = Report::new();
    let mut total_injected = 0;
    for path in PATHS.iter().filter(|p| args.is_empty() || args.iter().any(|a| a == p.name)) {
        let (sweep, verdict) = fault::fail_nth(path, &mut fail, max);
        total_injected += sweep.injected;
        report.record(path.name, &verdict.map(|()| sweep.to_string()));
    }
    println!("figures: injections={total_injected}");
    report.finish()
}
