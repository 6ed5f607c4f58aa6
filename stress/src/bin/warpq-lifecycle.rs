//! warpq-lifecycle: a queue whose device goes away under it, a ring rewound
//! while the queue is torn down, a WAIT beside a held REGISTER, and a device
//! that stops answering (`stress/src/lifecycle`).
//!
//! ```text
//! warpq-lifecycle [unbind [ROUNDS]] [rewound] [wait] [stuck]    default: all, 20 unbind rounds
//! ```

use std::process::ExitCode;

use warpq_stress::lifecycle;
use warpq_stress::report::Report;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let all = args.is_empty();
    let mut r = Report::new();
    if all || args.iter().any(|a| a == "unbind") {
        let rounds = args.iter().skip_while(|a| *a != "unbind").nth(1).and_then(|n| n.parse().ok()).unwrap_or(20);
        lifecycle::unbind_under_load(&mut r, rounds);
    }
    if all || args.iter().any(|a| a == "rewound") {
        lifecycle::rewound_ring(&mut r);
    }
    if all || args.iter().any(|a| a == "wait") {
        lifecycle::wait_while_registering(&mut r);
    }
    if all || args.iter().any(|a| a == "stuck") {
        lifecycle::stuck_device(&mut r);
    }
    r.finish()
}
