//! warpq-copy-check: COPY, FILL and CRC32C through the mapped ring, every
//! result verified against a model kept by the CPU (`warpq_stress::checks::copy`).
//!
//! `warpq-copy-check [--ioctl] [COMMANDS] [DEVICE]` (default 10000, /dev/warpq0),
//! `warpq-copy-check --edu [COMMANDS] [DEVICE]` (COPY by the edu device's DMA):
//! registers two 1 MiB buffers, submits COMMANDS commands with no system
//! call on the submit path except need-wakeup, checks every completion
//! (status, CRC value), then every byte of the destination buffer. With
//! `--ioctl` the commands go through WARPQ_IOC_SUBMIT instead. Then the
//! fault statuses: unregistered, crossing a buffer's end, read-only buffer
//! written, invalid opcode. One `ok`/`FAIL` line per step, then
//! `N passed, N failed`.

use std::process::ExitCode;

use warpq_stress::checks::{conclude, copy, Section};
use warpq_stress::report::Report;

fn main() -> ExitCode {
    let mut r = Report::new();
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().is_some_and(|a| a == "--edu") {
        args.next();
        let count = args.next().and_then(|s| s.parse().ok()).unwrap_or(20);
        let path = args.next().unwrap_or_else(|| "/dev/warpq0".into());
        let result = copy::edu(&mut r, count, &path).section("edu");
        return conclude(r, result);
    }
    let via_ioctl = args.peek().is_some_and(|a| a == "--ioctl");
    if via_ioctl {
        args.next();
    }
    let commands: u64 = args.next().map(|s| s.parse().unwrap_or(10_000)).unwrap_or(10_000);
    let path = args.next().unwrap_or_else(|| "/dev/warpq0".into());
    let result = copy::stream(&mut r, via_ioctl, commands, &path).section(if via_ioctl { "ioctl" } else { "ring" });
    conclude(r, result)
}
