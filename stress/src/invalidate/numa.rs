//! NUMA balancing over registered memory, on a 2-node guest (`VM_NUMA=2`).
//!
//! NUMA hinting (`change_prot_numa`) makes a task's PTEs PROT_NONE every
//! scan period to learn where it touches memory, and every such pass is a
//! `PROTECTION_VMA` invalidation over whatever it scans. Under `filtered` a
//! `PROTECTION_VMA` on device-writable memory whose VMAs still grant write
//! is ignored (`IgnoreReason::WriteRightKept`); the pages migrated after a
//! hinting fault come as invalidations of their own. This check runs a
//! verified stream while the scanner works, counts the teardowns hinting
//! caused (the `warpq_invalidate_end` tracepoint, keyed by event and
//! outcome), and then shows that `mprotect(PROT_READ)` still revokes device
//! writes before it returns.

use std::time::{Duration, Instant};

use warpq::sys::*;
use warpq::Device;

use super::PAGE;
use crate::raw;
use crate::stream::{push_all, reap, sqe, Stream};
use crate::Anon;

const TRACING: &str = "/sys/kernel/tracing";
const HIST_TRIGGER: &str = "hist:keys=event,outcome";
/// `trace::InvalidateOutcome::TornDown` in the driver.
const OUTCOME_TORN_DOWN: u64 = 3;
const SCAN_KNOBS: &str = "/sys/kernel/debug/sched/numa_balancing";

/// Writes `value` to a file and puts the old content back when dropped.
struct Knob {
    path: String,
    old: Option<String>,
}

impl Knob {
    fn set(path: &str, value: &str) -> Result<Knob, String> {
        let old = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
        std::fs::write(path, value).map_err(|e| format!("{path} = {value}: {e}"))?;
        Ok(Knob { path: path.into(), old: Some(old.trim_end().into()) })
    }

    /// Appends to a trigger file; dropping writes `!value` (removes it).
    fn trigger(path: &str, value: &str) -> Result<Knob, String> {
        std::fs::write(path, value).map_err(|e| format!("{path} <- {value}: {e}"))?;
        Ok(Knob { path: path.into(), old: Some(format!("!{value}")) })
    }
}

impl Drop for Knob {
    fn drop(&mut self) {
        if let Some(old) = self.old.take() {
            let _ = std::fs::write(&self.path, old);
        }
    }
}

/// Pins the calling thread to `cpu`.
fn run_on(cpu: usize) -> Result<(), String> {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET writes inside it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is far inside the set's bounds (a 2-CPU guest).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) } != 0 {
        return Err(format!("sched_setaffinity({cpu}): {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Hit counts of the (event, outcome) hist trigger.
fn hist_counts(path: &str) -> Result<Vec<(u64, u64, u64)>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let field = |line: &str, key: &str| -> Option<u64> {
        let rest = &line[line.find(key)? + key.len()..];
        rest.trim_start().split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    };
    Ok(text
        .lines()
        .filter(|l| l.starts_with('{'))
        .filter_map(|l| Some((field(l, "event:")?, field(l, "outcome:")?, field(l, "hitcount:")?)))
        .collect())
}

/// A verified stream for `seconds` with NUMA balancing scanning the
/// registered buffers, then `mprotect(PROT_READ)` with FILLs in flight.
pub fn numa_hinting(dev: &Device, seconds: u64) -> Result<String, String> {
    if !std::path::Path::new("/sys/devices/system/node/node1").exists() {
        return Err("needs a 2-node guest (vm/run.sh VM_NUMA=2): there is no node1".into());
    }
    let param = |n: &str| std::fs::read_to_string(format!("/sys/module/warpq/parameters/{n}")).unwrap_or_default();
    let (policy, backing) = (param("policy").trim().to_string(), param("backing").trim().to_string());
    let _balancing = Knob::set("/proc/sys/kernel/numa_balancing", "1")?;
    // Scan often (the defaults start after 1 s and back off to 60 s), so
    // that the run sees hundreds of passes instead of a handful.
    let _knobs = [("scan_delay_ms", "0"), ("scan_period_min_ms", "100"), ("scan_period_max_ms", "400")]
        .iter()
        .map(|(k, v)| Knob::set(&format!("{SCAN_KNOBS}/{k}"), v))
        .collect::<Result<Vec<_>, _>>()?;
    let hist = format!("{TRACING}/events/warpq/warpq_invalidate_end/hist");
    let _trigger = Knob::trigger(&format!("{TRACING}/events/warpq/warpq_invalidate_end/trigger"), HIST_TRIGGER)?;

    // The buffers' pages come from node 0 (first touch on CPU 0); the
    // stream then runs on CPU 1, so hinting also finds them misplaced.
    run_on(0)?;
    let src = Anon::new(256 * PAGE);
    let dst = Anon::new(1024 * PAGE);
    src.write(&(0..src.len()).map(|i| (i * 7 + 3) as u8).collect::<Vec<_>>());
    dst.write(&vec![0x5a; dst.len()]);
    run_on(1)?;
    let mut q = dev.queue().map_err(|e| format!("map queue: {e}"))?;
    // SAFETY: both buffers outlive the registrations (the queue and the
    // registrations go first, at the end of this function).
    let _hs = unsafe { dev.register_raw(src.ptr(), src.len(), WARPQ_ACCESS_READ) }
        .map_err(|e| format!("register src: {e}"))?;
    // SAFETY: as above.
    let _hd = unsafe { dev.register_raw(dst.ptr(), dst.len(), WARPQ_ACCESS_READ | WARPQ_ACCESS_WRITE) }
        .map_err(|e| format!("register dst: {e}"))?;

    let before = dev.stats().map_err(|e| format!("STATS: {e}"))?;
    let mut stream = Stream::new(&src, &dst, 0, dst.len(), 0x6e75_6d61).max_len(16 * PAGE);
    let t0 = Instant::now();
    let mut rounds = 0u64;
    while t0.elapsed() < Duration::from_secs(seconds) {
        stream.push(&mut q, 32)?;
        stream.reap_all(&mut q)?;
        rounds += 1;
        // The CPU reads the buffer too (hinting faults, then migration).
        if rounds.is_multiple_of(16) {
            stream.verify("during the scans")?;
        }
    }
    stream.verify("after the scans")?;
    let after = dev.stats().map_err(|e| format!("STATS: {e}"))?;
    let counts = hist_counts(&hist)?;
    let count = |event: u64, torn: bool| -> u64 {
        counts.iter().filter(|c| c.0 == event && (c.1 == OUTCOME_TORN_DOWN) == torn).map(|c| c.2).sum()
    };
    let pvma = 2u64;
    let (hint_torn, hint_kept) = (count(pvma, true), count(pvma, false));
    let other_torn: u64 = (0..8).filter(|&e| e != pvma).map(|e| count(e, true)).sum();
    let by_event = |i: usize| after.invalidations_by_event[i] - before.invalidations_by_event[i];
    if by_event(pvma as usize) == 0 {
        return Err(format!("no PROTECTION_VMA invalidation reached the driver in {seconds} s: nothing was measured"));
    }
    // The trigger is read after STATS, and the scanner does not stop: it
    // may have seen more, never fewer.
    if hint_torn + hint_kept < by_event(pvma as usize) {
        return Err(format!(
            "the tracepoint saw {} PROTECTION_VMA invalidations, fewer than STATS' {}",
            hint_torn + hint_kept,
            by_event(pvma as usize)
        ));
    }
    if policy == "filtered" && hint_torn != 0 {
        return Err(format!(
            "filtered: {hint_torn} of {} PROTECTION_VMA invalidations (NUMA hinting) tore the buffers down",
            hint_torn + hint_kept
        ));
    }
    let measured = format!(
        "{policy}/{backing}, {seconds} s: {} PROTECTION_VMA invalidations (NUMA hinting passes) over the registered \
         buffers: teardowns {hint_torn}, skipped {hint_kept}; other invalidations UNMAP/CLEAR/MIGRATE {:?} (a \
         migrated page is a CLEAR), {other_torn} teardowns by them; {} commands verified",
        by_event(pvma as usize),
        [by_event(0), by_event(1), by_event(6)],
        stream.tally.ok
    );
    drop(stream);
    let revoked = mprotect_revokes(&mut q, &dst)?;
    Ok(format!("{measured}; {revoked}"))
}

/// `mprotect(PROT_READ)` of the device-writable buffer with 64 FILLs in
/// flight: OK then FAULT_UNMAPPED, and no byte changes after it returns.
fn mprotect_revokes(q: &mut warpq::Queue<'_>, dst: &Anon) -> Result<String, String> {
    const N: u64 = 64;
    let chunk = dst.len() / N as usize;
    let fills: Vec<_> =
        (0..N).map(|i| sqe(WARPQ_OP_FILL, 1000 + i, 0, dst.addr(i as usize * chunk), chunk as u64, i + 1)).collect();
    push_all(q, &fills)?;
    raw::mprotect(dst.addr(0), dst.len(), libc::PROT_READ).map_err(|e| format!("mprotect PROT_READ: {e}"))?;
    let at = q.header().sq_head;
    let snapshot = dst.bytes();
    // One more after mprotect returned: it must fault whatever ran before.
    push_all(q, &[sqe(WARPQ_OP_FILL, 1000 + N, 0, dst.addr(0), PAGE as u64, 0xee)])?;
    let (mut ok, mut faulted) = (0, 0);
    for i in 0..=N {
        let c = reap(q)?;
        match c.status {
            WARPQ_STATUS_OK if faulted == 0 && i < N => ok += 1,
            WARPQ_STATUS_FAULT_UNMAPPED => faulted += 1,
            s => {
                return Err(format!("FILL {i} around mprotect(PROT_READ): status {s} after {ok} OK, {faulted} faulted"))
            }
        }
    }
    if dst.bytes() != snapshot {
        return Err("the device wrote the buffer after mprotect(PROT_READ) returned".into());
    }
    raw::mprotect(dst.addr(0), dst.len(), libc::PROT_READ | libc::PROT_WRITE)
        .map_err(|e| format!("mprotect back: {e}"))?;
    Ok(format!(
        "mprotect(PROT_READ) returned with the engine at entry {at}: {ok} OK then {faulted} FAULT_UNMAPPED, no write after it"
    ))
}
