//! Overlapping COPYs: memmove semantics on the CPU engine and through the
//! edu device's DMA engine.

use warpq::sys::*;

use super::*;

pub(super) fn cases() -> Vec<Case> {
    vec![
        story(
            "sqe-copy-overlap-page",
            "COPY with overlapping source and destination inside one page, both directions, and src == dst: OK, \
             memmove results",
            Expect::Ok,
            |env| {
                overlap(
                    env,
                    false,
                    0x33,
                    &[
                        ("dst 200 after src", 100, 300, 1000),
                        ("dst 100 before src", 2000, 1900, 1500),
                        ("src == dst", 5000, 5000, 2000),
                    ],
                )
            },
        ),
        // The edu engine moves at most 2 KiB per transfer (QEMU 7.2), so a
        // longer overlapping COPY is several transfers: their order must
        // still give memmove results.
        story(
            "sqe-copy-overlap-edu",
            "COPY through the edu DMA engine (WARPQ_SQE_EDU_DMA) with overlapping source and destination, 3000 bytes \
             within a page and a whole page across two, both directions: OK with memmove semantics, as the CPU \
             engine",
            Expect::Ok,
            |env| {
                overlap(
                    env,
                    true,
                    0x55,
                    &[
                        ("dst 0x200 after src", 0x100, 0x300, 3000),
                        ("dst 0x200 before src", 0x2300, 0x2100, 3000),
                        ("dst 300 after src, a page across two", 4 * PAGE + 1000, 4 * PAGE + 1300, PAGE),
                        ("dst 300 before src, a page across two", 6 * PAGE + 1300, 6 * PAGE + 1000, PAGE),
                    ],
                )
            },
        ),
        story(
            "sqe-copy-overlap-pages",
            "COPY of 12 KiB with overlapping source and destination across pages, dst < src and dst > src: OK, \
             memmove results",
            Expect::Ok,
            |env| {
                overlap(
                    env,
                    false,
                    0x44,
                    &[
                        ("dst 100 before src", PAGE + 100, PAGE, 3 * PAGE),
                        ("dst 100 after src", 8 * PAGE, 8 * PAGE + 100, 3 * PAGE),
                    ],
                )
            },
        ),
    ]
}

/// Runs each `(what, src, dst, len)` COPY inside one 16-page buffer and
/// compares the buffer with memmove's result; lists every copy that
/// differs (continuing from what the device produced).
fn overlap(env: &Env, edu: bool, seed: u8, copies: &[(&str, usize, usize, usize)]) -> Result<Got, String> {
    let (_dev, ring, buf, _) = setup(env, 16)?;
    let mut model = pattern(buf.len(), seed);
    buf.write(&model);
    let mut wrong = Vec::new();
    for &(what, src, dst, len) in copies {
        let c = ring.run(op::Copy::new(buf.addr(src), buf.addr(dst), len as u64).edu_dma(edu))?;
        ensure!(
            c.status == WARPQ_STATUS_OK && c.result == len as u64,
            "COPY {what}: {} result {}",
            st(c.status),
            c.result
        );
        model.copy_within(src..src + len, dst);
        let got = buf.bytes();
        let bad: Vec<usize> = (0..got.len()).filter(|&i| got[i] != model[i]).collect();
        if let (Some(&first), Some(&last)) = (bad.first(), bad.last()) {
            wrong.push(format!(
                "COPY {what} ({len} bytes): {} bytes differ from memmove (offsets {first:#x}..={last:#x}; byte \
                 {first:#x} is {:#x}, memmove gives {:#x})",
                bad.len(),
                got[first],
                model[first]
            ));
            model = got;
        }
    }
    ensure!(wrong.is_empty(), "{}", wrong.join("; "));
    Ok(Got::ok(format!(
        "{} overlapping COPYs{}: memmove results",
        copies.len(),
        if edu { " through edu DMA" } else { "" }
    )))
}
