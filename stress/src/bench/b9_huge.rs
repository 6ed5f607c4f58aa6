//! B9: what a huge page costs the device mapping. One 2 MiB chunk backed
//! by 512 base pages, by one transparent huge page, or by one hugetlb page,
//! torn down and rebuilt.
//!
//! Each sample: `mprotect(PROT_READ)` then `mprotect(PROT_READ|PROT_WRITE)`
//! of the registered 2 MiB buffer (the first takes device write access
//! away, so the chunk is torn down; the second keeps it and is ignored),
//! then a 4 KiB FILL at its start, timed from submission to completion: it
//! waits for the rebuild of the whole chunk (pin or fault, then DMA map).
//! The driver's `pin_ns` and `map_ns` histograms of the same samples split
//! that cost. The driver maps a chunk as one scatter-gather table
//! (`dma_map_sgtable`, one IOVA range), so the IOMMU can map a huge page
//! with large entries: the rows differ in the pin or fault side and in the
//! map.

use warpq::{Access, Backing, Buffer, Device, HUGE_PAGE_SIZE};

use super::report::Report;
use super::{fill_round_trip, fmt_opt, hist_quantile_us, hist_read, hist_reset, percentile, set_backing};

const ROUNDS: usize = 5;
const SAMPLES: usize = 12;
const KINDS: [(&str, Backing); 3] =
    [("512 base pages", Backing::Anonymous), ("THP", Backing::TransparentHuge), ("hugetlb", Backing::Hugetlb)];

/// `SAMPLES` first-FILL-after-teardown latencies (µs) on a fresh 2 MiB
/// buffer of `kind`, and how many 4 KiB pages of it were in huge pages.
fn samples(path: &str, kind: Backing) -> Result<Vec<f64>, String> {
    let dev = Device::open(path).map_err(|e| e.to_string())?;
    let mut q = dev.queue().map_err(|e| e.to_string())?;
    let mut buf = match kind {
        Backing::Anonymous => Buffer::new(HUGE_PAGE_SIZE),
        _ => Buffer::huge(HUGE_PAGE_SIZE, kind),
    }
    .map_err(|e| e.to_string())?;
    buf.fill(7);
    let b = dev.register_buffer(buf, Access::ReadWrite).map_err(|e| e.to_string())?;
    fill_round_trip(&mut q, b.addr()).map_err(|e| format!("{kind:?}, before the samples: {e}"))?;
    let mut out = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES {
        for prot in [libc::PROT_READ, libc::PROT_READ | libc::PROT_WRITE] {
            // SAFETY: our own registered mapping; nothing reads or writes it
            // from this thread meanwhile.
            let rc = unsafe { libc::mprotect(b.addr() as *mut libc::c_void, HUGE_PAGE_SIZE, prot) };
            if rc != 0 {
                return Err(format!("mprotect: {}", std::io::Error::last_os_error()));
            }
        }
        out.push(fill_round_trip(&mut q, b.addr()).map_err(|e| format!("{kind:?}, sample {i}: {e}"))?);
    }
    b.unregister().map_err(|e| e.to_string())?;
    Ok(out)
}

pub(super) fn b9(path: &str, r: &mut Report) -> Result<(), String> {
    // A 2 MiB chunk whatever the default: the question is what a huge page
    // behind one chunk costs.
    let _chunk = crate::param::ParamGuard::set("chunk_kb", "2048")?;
    r.line("## B9 huge pages: rebuild of one 2 MiB chunk (µs, `chunk_kb` = 2048 for this benchmark)\n");
    r.line(format!(
        "Per backing, {ROUNDS} interleaved rounds of {SAMPLES} samples per page kind. A sample: mprotect(PROT_READ) \
         and back (the first revokes device writes, so the chunk is torn down), then a 4 KiB FILL at the chunk's \
         start, timed from submission to completion: it waits for the rebuild of the whole 2 MiB chunk. pin_ns and \
         map_ns are the driver's phases of the same rebuilds (histogram bucket upper bounds). The driver maps \
         a chunk as one scatter-gather table (one IOVA range): the rows differ in the pin (GUP) or fault \
         (hmm_range_fault) side and in how many IOMMU entries the map takes.\n"
    ));
    crate::mem::reserve_huge_pages(1)?;
    r.line(
        "| backing | chunk backed by | first FILL p50 | spread of round p50s | pin_ns p50 | map_ns p50 | rebuilds |",
    );
    r.line("|---|---|---|---|---|---|---|");
    for backing in ["pin", "mirror"] {
        set_backing(backing);
        let mut all = vec![Vec::new(); KINDS.len()];
        let mut round_p50 = vec![Vec::new(); KINDS.len()];
        let mut phases = vec![(None, None, 0); KINDS.len()];
        for round in 0..ROUNDS {
            for (i, (_, kind)) in KINDS.iter().enumerate() {
                let last = round == ROUNDS - 1;
                if last {
                    hist_reset(path);
                }
                let mut s = samples(path, *kind).map_err(|e| format!("{backing}: {e}"))?;
                round_p50[i].push(percentile(&mut s, 0.5));
                all[i].extend(s);
                if last {
                    let h = hist_read(path);
                    let (pin, _) = hist_quantile_us(&h, "pin_ns", 0.5);
                    let (map, rebuilds) = hist_quantile_us(&h, "map_ns", 0.5);
                    phases[i] = (pin, map, rebuilds);
                }
            }
        }
        for (i, (name, _)) in KINDS.iter().enumerate() {
            let p50 = percentile(&mut all[i], 0.5);
            let mut rounds = round_p50[i].clone();
            let (lo, hi) = (percentile(&mut rounds, 0.0), percentile(&mut rounds, 1.0));
            let (pin, map, rebuilds) = phases[i];
            r.line(format!(
                "| {backing} | {name} | {p50:.0} | {lo:.0}..{hi:.0} | {} | {} | {rebuilds} |",
                fmt_opt(pin),
                fmt_opt(map)
            ));
            let key = name.split(' ').next().unwrap_or(name).to_ascii_lowercase();
            r.figure(&format!("b9_{backing}_{key}_rebuild_p50_us"), p50);
        }
        let ratio = |i: usize| {
            let mut v: Vec<f64> = (0..ROUNDS).map(|k| round_p50[i][k] / round_p50[0][k]).collect();
            percentile(&mut v, 0.5)
        };
        r.figure(&format!("b9_{backing}_thp_over_base"), ratio(1));
        r.figure(&format!("b9_{backing}_hugetlb_over_base"), ratio(2));
        r.line(format!(
            "\n{backing}: rebuild of a THP chunk / of a base-page chunk {:.2}x, hugetlb / base {:.2}x (medians of the \
             rounds' p50 ratios).\n",
            ratio(1),
            ratio(2)
        ));
    }
    set_backing("pin");
    Ok(())
}
