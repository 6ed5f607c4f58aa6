//! B5: teardowns that unrelated address-space activity causes, strict
//! against filtered, for a buffer the device only reads (the headline: no
//! such event can change what it reads) and, reported beside it, one it
//! may write (fork's and clear_refs' write-protects must revoke the
//! device's write right, so filtered tears those down too).

use warpq::sys::*;
use warpq::Device;

use super::b4_fork::fork_latencies;
use super::report::{Report, Target};
use super::{set_policy, PAGE};
use crate::stream::{push_all, reap, sqe};
use crate::Anon;

pub(super) fn b5(path: &str, r: &mut Report) -> Result<(), String> {
    r.line("## B5 teardowns caused by unrelated activity (mprotect/mmap/munmap of other memory, fork, clear_refs)\n");
    r.line("| buffer | policy | invalidations | teardowns | ignored |");
    r.line("|---|---|---|---|---|");
    let mut teardowns = Vec::new();
    for (writable, policy) in [(false, "strict"), (false, "filtered"), (true, "strict"), (true, "filtered")] {
        set_policy(policy);
        let dev = Device::open(path).map_err(|e| e.to_string())?;
        let mut q = dev.queue().map_err(|e| e.to_string())?;
        let buf = Anon::new(64 * PAGE);
        buf.write(&[5u8; 4096]);
        let access = if writable { WARPQ_ACCESS_READ | WARPQ_ACCESS_WRITE } else { WARPQ_ACCESS_READ };
        // SAFETY: raw pointers only; unregistered below.
        let h = unsafe { dev.register_raw(buf.ptr(), buf.len(), access) }.map_err(|e| e.to_string())?;
        let before = dev.stats().map_err(|e| e.to_string())?;
        for i in 0..100 {
            let other = Anon::new(16 * PAGE);
            other.write(&[1u8; 4096]);
            // SAFETY: our own mapping.
            unsafe { libc::mprotect(other.ptr().cast(), other.len(), libc::PROT_READ) };
            drop(other);
            if i % 10 == 0 {
                let _ = std::fs::write("/proc/self/clear_refs", "4");
                fork_latencies(1);
            }
            // The device uses the buffer every round: a FILL if it may
            // write, else a CRC32C.
            let cmd = if writable {
                sqe(WARPQ_OP_FILL, i, 0, buf.addr(0), 4096, i)
            } else {
                sqe(WARPQ_OP_CRC32C, i, buf.addr(0), 0, 4096, 0)
            };
            push_all(&mut q, &[cmd])?;
            let c = reap(&mut q)?;
            if c.status != WARPQ_STATUS_OK {
                return Err(format!("B5 round {i}: status {}", c.status));
            }
        }
        let after = dev.stats().map_err(|e| e.to_string())?;
        let (inv, td, ign) = (
            after.invalidations - before.invalidations,
            after.teardowns - before.teardowns,
            after.ignored_by_policy - before.ignored_by_policy,
        );
        let kind = if writable { "read/write" } else { "read-only" };
        r.line(format!("| {kind} | {policy} | {inv} | {td} | {ign} |"));
        let key = if writable { "rw" } else { "ro" };
        r.figure(&format!("b5_{key}_{policy}_teardowns"), td as f64);
        teardowns.push(td);
        dev.unregister(h).map_err(|e| e.to_string())?;
    }
    set_policy("filtered");
    let removed =
        if teardowns[0] == 0 { 100.0 } else { 100.0 * (teardowns[0] - teardowns[1]) as f64 / teardowns[0] as f64 };
    r.line(format!(
        "\nRead-only buffer: filtered removes {removed:.1}% of strict's teardowns (target >= 99%: none of these events \
         can change what the device reads). Read/write buffer: fork's PROTECTION_PAGE and clear_refs' SOFT_DIRTY \
         write-protect pages the device may write, so filtered revokes the device's write right at each, as strict \
         does (docs/protocol.md, the policy table).\n"
    ));
    r.figure("b5_removed_percent", removed);
    r.headline("b5", "B5 % of strict's teardowns that filtered removes", "filtered", removed, Target::AtLeast(99.0));
    Ok(())
}
