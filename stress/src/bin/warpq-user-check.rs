//! warpq-user-check: the `warpq` crate's API on the real driver
//! (`warpq_stress::checks::user`).
//!
//! `warpq-user-check [DEVICE]` (default `/dev/warpq0`). One `ok` line per
//! check (with the error text where one is expected); the first failure is
//! a `FAIL` line and ends the run; then `N passed, N failed`.
//!
//! `warpq-user-check unbind [DEVICE]`: unbinds the device (sysfs) while a
//! queue and a registration are open, prints what each call then returns,
//! and binds it again. Not part of the default run: the driver does not
//! support unbinding with open files yet (docs/driver.md).
//!
//! `warpq-user-check queues [DEVICE]`: three processes register five
//! regions of known sizes; `warpqctl queues --json` must list exactly them.
//!
//! `warpq-user-check accounting [DEVICE]`: 64 queues made in a fresh memory
//! cgroup are charged to it (their rings, in its `vmalloc`).
//!
//! `warpq-user-check queue-limit [DEVICE]`: `max_queues_per_user` at 3: an
//! unprivileged user's 4th queue gets EDQUOT until one of its files closes;
//! root is exempt.
//!
//! `warpq-user-check writeback-file [DEVICE]`: a `MAP_SHARED` mapping of a
//! file on ext2 (a file system that writes back) under the loaded backing:
//! `pin` refuses it read/write with the reason, `mirror` takes it and the
//! device's writes after a writeback reach the disk.

use std::process::ExitCode;

use warpq_stress::checks::{accounting, conclude, queue_limit, queues, user, writeback, Section};
use warpq_stress::report::Report;

fn main() -> ExitCode {
    let mut r = Report::new();
    let first = std::env::args().nth(1);
    let result = if first.as_deref() == Some("unbind") {
        let path = std::env::args().nth(2).unwrap_or_else(|| "/dev/warpq0".into());
        user::unbind(&mut r, &path).section("unbind")
    } else if first.as_deref() == Some("accounting") {
        let path = std::env::args().nth(2).unwrap_or_else(|| "/dev/warpq0".into());
        accounting::accounting(&mut r, &path).section("accounting")
    } else if first.as_deref() == Some("queue-limit") {
        let path = std::env::args().nth(2).unwrap_or_else(|| "/dev/warpq0".into());
        queue_limit::queue_limit(&mut r, &path).section("queue-limit")
    } else if first.as_deref() == Some("writeback-file") {
        let path = std::env::args().nth(2).unwrap_or_else(|| "/dev/warpq0".into());
        writeback::writeback_file(&mut r, &path).section("writeback-file")
    } else if first.as_deref() == Some("queues") {
        let path = std::env::args().nth(2).unwrap_or_else(|| "/dev/warpq0".into());
        queues::queues(&mut r, &path).section("queues")
    } else {
        user::run(&mut r, &first.unwrap_or_else(|| "/dev/warpq0".into()))
    };
    conclude(r, result)
}
