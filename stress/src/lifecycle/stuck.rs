//! A device that stops answering (`fail_edu_stall`): a COPY through the
//! edu DMA engine hangs; the munmap of its source and the close of its file
//! complete, but the page the pending transfer reads stays held (the
//! device's quarantine, debugfs `device`, and the pin counters show it).
//! Then either the knob is cleared and the next edu COPY finds the device
//! idle again, or the device is unbound (bus mastering off): everything is
//! released and the pins balance.

use std::time::{Duration, Instant};

use warpq::opcode;
use warpq::sys::*;

use super::{bound_device, open, rebind, sysfs_driver, CASE_LIMIT, PAGE};
use crate::check::Check;
use crate::harness::run_case;
use crate::mem::Anon;
use crate::raw::{self, header, RawRing};
use crate::report::Report;
use crate::PinCounts;

const STALL: &str = "/sys/module/warpq/parameters/fail_edu_stall";

/// Clears the stall knob when dropped (also on an early return).
struct Stall;

impl Stall {
    fn on() -> Result<Stall, String> {
        std::fs::write(STALL, "Y").map_err(|e| format!("{STALL}: {e}"))?;
        Ok(Stall)
    }
}

impl Drop for Stall {
    fn drop(&mut self) {
        let _ = std::fs::write(STALL, "N");
    }
}

/// debugfs `device` of `/dev/warpqN`: (edu stuck, pages held).
fn held(node: &str) -> Result<(bool, u64), String> {
    let path = format!("/sys/kernel/debug/warpq/{}/device", node.trim_start_matches("/dev/"));
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    let value = |key: &str| -> Option<u64> { text.lines().find_map(|l| l.strip_prefix(key)?.trim().parse().ok()) };
    match (value("edu_stuck "), value("pages_held ")) {
        (Some(stuck), Some(pages)) => Ok((stuck != 0, pages)),
        _ => Err(format!("{path}: {text:?}")),
    }
}

fn pins() -> Result<i128, String> {
    Ok(PinCounts::read().map_err(|e| format!("/proc/vmstat: {e}"))?.outstanding())
}

/// One edu COPY of 1 KiB from `src` to `dst`, run to completion.
fn edu_copy(ring: &RawRing, src: u64, dst: u64) -> Result<warpq_cqe, String> {
    ring.run(opcode::Copy::new(src, dst, 1024).edu_dma(true))
}

/// One round, in a child: `unbind` false recovers by clearing the knob,
/// true unbinds the stuck device and binds it again.
fn stuck_round(unbind: bool) -> Result<String, String> {
    let (pci, node) = bound_device()?;
    let fd = open(&node)?;
    let ring = RawRing::map(fd).map_err(|e| format!("map the ring: {e}"))?;
    let mut src = Anon::new(4 * PAGE);
    src.write(&[0x5a; 4 * PAGE]);
    let dst = Anon::new(4 * PAGE);
    raw::register(fd, src.addr(0), src.len() as u64, WARPQ_ACCESS_READ).map_err(|e| format!("REGISTER src: {e}"))?;
    raw::register(fd, dst.addr(0), dst.len() as u64, WARPQ_ACCESS_READ | WARPQ_ACCESS_WRITE)
        .map_err(|e| format!("REGISTER dst: {e}"))?;
    let c = edu_copy(&ring, src.addr(0), dst.addr(0))?;
    if c.status != WARPQ_STATUS_OK || dst.bytes()[..1024].iter().any(|&b| b != 0x5a) {
        return Err(format!("an edu COPY before the stall: status {}", c.status));
    }
    let pins_before = pins()?;

    let stall = Stall::on()?;
    let cq_tail = ring.get(header::CQ_TAIL);
    ring.push(opcode::Copy::new(src.addr(PAGE), dst.addr(PAGE), 1024).edu_dma(true))?;
    ring.kick()?;
    std::thread::sleep(Duration::from_millis(500));
    if ring.get(header::CQ_TAIL) != cq_tail {
        return Err("the COPY completed although the device never finishes a transfer".into());
    }
    // The source the pending transfer reads goes away: munmap completes
    // (the drain gives up on the engine, which leaves its transfer).
    let t0 = Instant::now();
    src.unmap();
    let munmap_took = t0.elapsed();
    let c = ring.reap(Duration::from_secs(30))?;
    if c.status != WARPQ_STATUS_ABORTED && c.status != WARPQ_STATUS_DEVICE_ERROR {
        return Err(format!("the hung COPY completed with status {} (want ABORTED or DEVICE_ERROR)", c.status));
    }
    let (stuck, held_after_munmap) = held(&node)?;
    if !stuck || held_after_munmap == 0 {
        return Err(format!(
            "after the munmap: edu_stuck {stuck}, {held_after_munmap} pages held: the page the transfer reads was released"
        ));
    }
    let pins_munmap = pins()?;
    // Close: completes; what the device may reach stays held.
    drop(ring);
    let t1 = Instant::now();
    // SAFETY: our descriptor, closed once.
    unsafe { libc::close(fd) };
    let close_took = t1.elapsed();
    let (_, held_after_close) = held(&node)?;
    if held_after_close < held_after_munmap {
        return Err(format!(
            "close released pages the stuck device may reach ({held_after_munmap} held before, {held_after_close} after)"
        ));
    }
    let pins_close = pins()?;
    let shown = format!(
        "munmap of the source took {munmap_took:?}, close {close_took:?}; pages held {held_after_munmap} after munmap, \
         {held_after_close} after close; pins outstanding {pins_before} before the stall, {pins_munmap} after munmap, \
         {pins_close} after close"
    );

    let how = if unbind {
        drop(stall);
        sysfs_driver("unbind", &pci)?;
        let back = rebind(&pci)?;
        format!("unbind (bus mastering off) released them; bound again in {back:?}")
    } else {
        drop(stall);
        // A new file: its first edu COPY finds the device idle again.
        let fd = open(&node)?;
        let ring = RawRing::map(fd).map_err(|e| format!("map the ring: {e}"))?;
        let a = Anon::new(PAGE);
        a.write(&[0x33; PAGE]);
        let b = Anon::new(PAGE);
        raw::register(fd, a.addr(0), PAGE as u64, WARPQ_ACCESS_READ).map_err(|e| format!("REGISTER: {e}"))?;
        raw::register(fd, b.addr(0), PAGE as u64, WARPQ_ACCESS_READ | WARPQ_ACCESS_WRITE)
            .map_err(|e| format!("REGISTER: {e}"))?;
        let c = edu_copy(&ring, a.addr(0), b.addr(0))?;
        if c.status != WARPQ_STATUS_OK || b.bytes()[..1024].iter().any(|&x| x != 0x33) {
            return Err(format!("the edu COPY after the knob was cleared: status {}", c.status));
        }
        drop(ring);
        // SAFETY: our descriptor, closed once.
        unsafe { libc::close(fd) };
        "the knob cleared, the next edu COPY found the device idle and released them".into()
    };
    let (stuck, held_now) = held(&bound_device()?.1)?;
    if stuck || held_now != 0 {
        return Err(format!("{shown}; then {how}, but edu_stuck {stuck}, {held_now} pages still held"));
    }
    Ok(format!("{shown}; {how}"))
}

/// Both rounds, each followed by the pin and kernel-log check.
pub fn stuck_device(r: &mut Report) {
    for unbind in [false, true] {
        let name = if unbind { "stuck-device then unbind" } else { "stuck-device then recovery" };
        let mut check = match Check::new() {
            Ok(c) => c,
            Err(e) => return r.fail(name, &e),
        };
        let outcome = run_case(CASE_LIMIT, move || stuck_round(unbind)).into_result();
        let _ = std::fs::write(STALL, "N");
        let outcome = outcome.and_then(|m| check.after_case().map(|()| m));
        r.record(name, &outcome);
    }
}
