//! B3: the rebuild, as the first command after an invalidation against
//! the steady state.

use std::time::Instant;

use warpq::sys::*;
use warpq::{Device, Queue};

use super::report::Report;
use super::{hist_of, hist_read, hist_reset, percentile, PAGE};
use crate::stream::{push_all, reap, sqe};
use crate::Anon;

/// Round-trip latency (µs) of one 4 KiB FILL.
fn round_trip(q: &mut Queue<'_>, addr: u64) -> Result<f64, String> {
    let t = Instant::now();
    push_all(q, &[sqe(WARPQ_OP_FILL, 9, 0, addr, 4096, 1)])?;
    let c = reap(q)?;
    if c.status != WARPQ_STATUS_OK {
        return Err(format!("FILL failed with status {}", c.status));
    }
    Ok(t.elapsed().as_secs_f64() * 1e6)
}

pub(super) fn b3(path: &str, r: &mut Report) -> Result<(), String> {
    r.line("## B3 rebuild: first command after an invalidation vs steady state (µs)\n");
    r.line("| buffer | steady p50 | after invalidation p50 | ratio |");
    r.line("|---|---|---|---|");
    for pages in [64usize, 1024] {
        let dev = Device::open(path).map_err(|e| e.to_string())?;
        let mut q = dev.queue().map_err(|e| e.to_string())?;
        let buf = Anon::new(pages * PAGE);
        buf.write(&vec![5u8; pages * PAGE]);
        // SAFETY: raw pointers only; unregistered below.
        let h = unsafe { dev.register_raw(buf.ptr(), buf.len(), WARPQ_ACCESS_READ | WARPQ_ACCESS_WRITE) }
            .map_err(|e| e.to_string())?;
        let mut steady: Vec<f64> = (0..100).map(|_| round_trip(&mut q, buf.addr(0))).collect::<Result<_, _>>()?;
        hist_reset(path);
        let mut after = Vec::new();
        for _ in 0..30 {
            // Invalidate (one page DONTNEED: CLEAR tears the region down).
            // SAFETY: advice on our own mapping.
            unsafe { libc::madvise(buf.ptr().add(PAGE).cast(), PAGE, libc::MADV_DONTNEED) };
            after.push(round_trip(&mut q, buf.addr(0))?);
        }
        let driver = hist_read(path);
        let title = "B3 the driver's rebuild_ns after an invalidation";
        r.hist("b3_rebuild_driver", title, &format!("{pages} pages"), "driver", &hist_of(&driver, "rebuild_ns"));
        let s50 = percentile(&mut steady, 0.5);
        let a50 = percentile(&mut after, 0.5);
        r.line(format!("| {pages} pages | {s50:.0} | {a50:.0} | {:.1}x |", a50 / s50));
        r.figure(&format!("b3_{pages}p_steady_p50_us"), s50);
        r.figure(&format!("b3_{pages}p_after_invalidation_p50_us"), a50);
        dev.unregister(h).map_err(|e| e.to_string())?;
    }
    r.line("\nThe per-phase costs (pin_ns, map_ns, rebuild_ns, unmap_ns, unpin_ns) are in `warpqctl hist` after the run.\n");
    Ok(())
}
