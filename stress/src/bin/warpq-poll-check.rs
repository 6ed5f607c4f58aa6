//! warpq-poll-check: `poll`/`epoll` on `/dev/warpqN` (`stress/src/notify.rs`).
//!
//! ```text
//! warpq-poll-check [COMPLETIONS]    default 100000
//! ```

use std::process::ExitCode;

use warpq_stress::report::Report;

fn main() -> ExitCode {
    let completions = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(100_000);
    let mut r = Report::new();
    if let Err(e) = warpq_stress::notify::run(&mut r, completions) {
        r.fail("poll", &e);
    }
    r.finish()
}
