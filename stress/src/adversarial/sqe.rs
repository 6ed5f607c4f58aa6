//! Submission entries: addresses, bounds, opcodes, flags, reserved fields,
//! lengths, access rights, overlapping copies.
//!
//! Every table row runs one entry against a fresh layout of registered
//! buffers filled with a pattern, and the runner checks more than the
//! status: a command that completes OK must have done exactly what a CPU
//! model of it does (FILL and COPY with memmove semantics, result `len`;
//! CRC32C's result the CRC), and any other status must leave every byte of
//! every buffer as it was, with result 0; the ring's header stays intact.

use warpq::sys::*;
use warpq::{crc32c, Entry};

use super::*;
use crate::raw::{register, KERNEL_ADDR, NONCANONICAL, UNMAPPED, VSYSCALL};

const P: u64 = PAGE as u64;
const OK: Expect = Expect::Status(WARPQ_STATUS_OK);
const INVALID: Expect = Expect::Status(WARPQ_STATUS_INVALID);
const UNREG: Expect = Expect::Status(WARPQ_STATUS_FAULT_UNREGISTERED);
const BOUNDS: Expect = Expect::Status(WARPQ_STATUS_FAULT_BOUNDS);
const ACCESS: Expect = Expect::Status(WARPQ_STATUS_FAULT_ACCESS);
const EDU: u8 = WARPQ_SQE_EDU_DMA;

/// The registered buffers a row's entry is aimed at.
#[derive(Clone, Copy)]
pub enum Layout {
    /// One read/write buffer of this many pages.
    One(usize),
    /// 8 pages registered as two buffers of 4, meeting at `seam`.
    Seam,
    /// Three buffers of 4 pages: read/write, READ-only, WRITE-only.
    Access,
}

/// Addresses for building a row's entry.
pub struct Bufs {
    /// The (first) buffer.
    pub a: u64,
    /// Its length.
    pub len: u64,
    /// One past its end (Seam: past both).
    pub end: u64,
    /// Where the two buffers of `Layout::Seam` meet.
    pub seam: u64,
    /// `Layout::Access`: the READ-only buffer.
    pub ro: u64,
    /// `Layout::Access`: the WRITE-only buffer.
    pub wo: u64,
    /// The queue's ring.
    pub ring: u64,
    /// A mapped page that is not registered.
    pub other: u64,
}

/// A table row: one entry against a layout.
fn row(name: &str, does: &str, layout: Layout, expect: Expect, entry: impl Fn(&Bufs) -> Entry + 'static) -> Case {
    case(name, does, expect, Box::new(move |env| run_entry(env, layout, &entry)))
}

pub(super) fn cases() -> Vec<Case> {
    use op::{Copy, Crc32c as Crc, Fill};
    let one = Layout::One(16);
    let mut v = vec![
        row("sqe-unregistered/unmapped", "FILL at an unmapped address", one, UNREG, |_| {
            Fill::new(UNMAPPED, 64, 1).build()
        }),
        row("sqe-unregistered/unregistered", "FILL at mapped, unregistered memory", one, UNREG, |b| {
            Fill::new(b.other, 64, 1).build()
        }),
        row("sqe-unregistered/null", "FILL at address 0", one, UNREG, |_| Fill::new(0, 64, 1).build()),
        row("sqe-unregistered/kernel", "FILL at a kernel address", one, UNREG, |_| {
            Fill::new(KERNEL_ADDR, 64, 1).build()
        }),
        row("sqe-unregistered/noncanonical", "FILL at a non-canonical address", one, UNREG, |_| {
            Fill::new(NONCANONICAL, 64, 1).build()
        }),
        row("sqe-unregistered/ring", "FILL at the ring", one, UNREG, |b| Fill::new(b.ring, 64, 1).build()),
        row("sqe-unregistered/past-end", "FILL one past the buffer's end", one, UNREG, |b| {
            Fill::new(b.end, 64, 1).build()
        }),
        row("sqe-unregistered/before-start", "FILL ending just before the buffer", one, UNREG, |b| {
            Fill::new(b.a - 64, 64, 1).build()
        }),
        row("sqe-unregistered/crc-kernel", "CRC32C of a kernel address", one, UNREG, |_| {
            Crc::new(KERNEL_ADDR, 64).build()
        }),
        row("sqe-unregistered/crc-vsyscall", "CRC32C of the vsyscall page", one, UNREG, |_| {
            Crc::new(VSYSCALL, 64).build()
        }),
        row("sqe-unregistered/copy-to-kernel", "COPY from the buffer to a kernel address", one, UNREG, |b| {
            Copy::new(b.a, KERNEL_ADDR, 64).build()
        }),
        row(
            "sqe-unregistered/copy-from-unregistered",
            "COPY from unregistered memory into the buffer",
            one,
            UNREG,
            |b| Copy::new(b.other, b.a, 64).build(),
        ),
        row("sqe-unregistered/copy-from-ring", "COPY from the ring into the buffer", one, UNREG, |b| {
            Copy::new(b.ring, b.a, 64).build()
        }),
        row("sqe-bounds/fill-over-end", "FILL of 16 bytes 8 before the end", one, BOUNDS, |b| {
            Fill::new(b.end - 8, 16, 1).build()
        }),
        row("sqe-bounds/fill-len-plus-1", "FILL of the buffer + 1 byte", one, BOUNDS, |b| {
            Fill::new(b.a, b.len + 1, 1).build()
        }),
        row("sqe-bounds/crc-last-byte", "CRC32C of 2 bytes at the last byte", one, BOUNDS, |b| {
            Crc::new(b.end - 1, 2).build()
        }),
        row("sqe-bounds/copy-src-over-end", "COPY whose source crosses the end", one, BOUNDS, |b| {
            Copy::new(b.end - 100, b.a, 200).build()
        }),
        row("sqe-bounds/copy-dst-over-end", "COPY whose destination crosses the end", one, BOUNDS, |b| {
            Copy::new(b.a, b.end - 100, 200).build()
        }),
        row("sqe-bounds/fill-4mib", "FILL of 4 MiB into a 64 KiB buffer", one, BOUNDS, |b| {
            Fill::new(b.a, 4 << 20, 1).build()
        }),
        row("sqe-bounds/fill-exact-end", "FILL of the last 8 bytes exactly", one, OK, |b| {
            Fill::new(b.end - 8, 8, 0x42).build()
        }),
    ];
    let seam = Layout::Seam;
    v.extend([
        row("sqe-two-regions/fill-across", "FILL across the seam of two buffers", seam, BOUNDS, |b| {
            Fill::new(b.seam - 100, 200, 1).build()
        }),
        row("sqe-two-regions/crc-across", "CRC32C across the seam", seam, BOUNDS, |b| Crc::new(b.seam - 1, 2).build()),
        row("sqe-two-regions/copy-from-across", "COPY from across the seam", seam, BOUNDS, |b| {
            Copy::new(b.seam - 50, b.a, 100).build()
        }),
        row("sqe-two-regions/fill-both", "FILL of both buffers", seam, BOUNDS, |b| Fill::new(b.a, 8 * P, 1).build()),
        row("sqe-two-regions/fill-up-to", "FILL up to the seam", seam, OK, |b| Fill::new(b.seam - 100, 100, 2).build()),
        row("sqe-two-regions/fill-from", "FILL from the seam", seam, OK, |b| Fill::new(b.seam, 100, 3).build()),
        row("sqe-two-regions/copy-between", "COPY from one buffer into the other", seam, OK, |b| {
            Copy::new(b.a, b.seam + 1000, 100).build()
        }),
    ]);
    let small = Layout::One(4);
    for code in [4u8, 5, 0x7f, 0x80, 0xff] {
        let entry = move |b: &Bufs| raw_entry(code, b.a, b.a + P, 64, 0x77);
        v.push(row(&format!("sqe-opcode/{code:#x}"), &format!("opcode {code:#x}"), small, INVALID, entry));
    }
    for f in [0x04u8, 0x08, 0x80, 0xff] {
        let fill = move |b: &Bufs| with_flags(Fill::new(b.a + 2 * P, 64, 1), f);
        v.push(row(&format!("sqe-flags/fill-{f:#x}"), &format!("FILL with flags {f:#x}"), small, INVALID, fill));
        let copy = move |b: &Bufs| with_flags(Copy::new(b.a, b.a + 2 * P, 64), f);
        v.push(row(&format!("sqe-flags/copy-{f:#x}"), &format!("COPY with flags {f:#x}"), small, INVALID, copy));
        v.push(row(&format!("sqe-flags/nop-{f:#x}"), &format!("NOP with flags {f:#x}"), small, INVALID, move |_| {
            with_flags(nop(), f)
        }));
    }
    v.extend([
        row("sqe-flags/edu-fill", "EDU_DMA on a FILL", small, INVALID, |b| {
            with_flags(Fill::new(b.a + 2 * P, 64, 1), EDU)
        }),
        row("sqe-flags/edu-crc", "EDU_DMA on a CRC32C", small, INVALID, |b| with_flags(Crc::new(b.a, 64), EDU)),
        row("sqe-flags/edu-nop", "EDU_DMA on a NOP", small, INVALID, |_| with_flags(nop(), EDU)),
        row("sqe-flags/unordered-fill", "FILL with UNORDERED: runs as any FILL", small, OK, |b| {
            with_flags(Fill::new(b.a + 2 * P, 64, 1), WARPQ_SQE_UNORDERED)
        }),
        row("sqe-flags/unordered-nop", "NOP with UNORDERED", small, OK, |_| with_flags(nop(), WARPQ_SQE_UNORDERED)),
        row("sqe-flags/unordered-edu-fill", "UNORDERED | EDU_DMA on a FILL", small, INVALID, |b| {
            with_flags(Fill::new(b.a + 2 * P, 64, 1), EDU | WARPQ_SQE_UNORDERED)
        }),
        row("sqe-flags/edu-copy-4097", "EDU_DMA COPY of 4097 bytes (the edu buffer is 4 KiB)", small, INVALID, |b| {
            Copy::new(b.a, b.a + 2 * P, 4097).edu_dma(true).build()
        }),
        story(
            "sqe-flags/edu-copy-64",
            "EDU_DMA COPY of 64 bytes: OK and copied (FAULT_IOMMU where the device cannot reach the memory)",
            Expect::Ok,
            edu_copy_64,
        ),
    ]);
    let fill = |b: &Bufs| Fill::new(b.a, 64, 1).build();
    let rsvd: [(&str, &str, u16, u32, [u64; 2]); 5] = [
        ("fill-rsvd0-1", "FILL with rsvd0 = 1", 1, 0, [0, 0]),
        ("fill-rsvd0-0x8000", "FILL with rsvd0 = 0x8000", 0x8000, 0, [0, 0]),
        ("fill-rsvd1-1", "FILL with rsvd1 = 1", 0, 1, [0, 0]),
        ("fill-rsvd2-0", "FILL with rsvd2[0] = 1", 0, 0, [1, 0]),
        ("fill-rsvd2-1", "FILL with rsvd2[1] = 2^63", 0, 0, [0, 1 << 63]),
    ];
    for (name, does, r0, r1, r2) in rsvd {
        v.push(row(&format!("sqe-reserved/{name}"), does, small, INVALID, move |b| with_rsvd(fill(b), r0, r1, r2)));
    }
    v.extend([
        row("sqe-reserved/nop-rsvd1", "NOP with rsvd1 = 0xffffffff", small, INVALID, |_| {
            with_rsvd(nop(), 0, u32::MAX, [0, 0])
        }),
        row("sqe-reserved/nop-rsvd2", "NOP with rsvd2[1] = 2^64 - 1", small, INVALID, |_| {
            with_rsvd(nop(), 0, 0, [0, u64::MAX])
        }),
        row("sqe-reserved/nop-garbage", "NOP with garbage addresses and length", small, OK, |_| {
            raw_entry(WARPQ_OP_NOP, KERNEL_ADDR, NONCANONICAL, u64::MAX, u64::MAX)
        }),
        row("sqe-zero-len/fill", "FILL of 0 bytes", small, INVALID, |b| Fill::new(b.a, 0, 1).build()),
        row("sqe-zero-len/copy", "COPY of 0 bytes", small, INVALID, |b| Copy::new(b.a, b.a + P, 0).build()),
        row("sqe-zero-len/crc", "CRC32C of 0 bytes", small, INVALID, |b| Crc::new(b.a, 0).build()),
        row("sqe-zero-len/fill-kernel", "FILL of 0 bytes at a kernel address", small, INVALID, |_| {
            Fill::new(KERNEL_ADDR, 0, 1).build()
        }),
        row("sqe-zero-len/nop", "NOP of 0 bytes", small, OK, |_| nop()),
        row("sqe-huge-len/fill-4mib-plus-1", "FILL of 4 MiB + 1", one, INVALID, |b| {
            Fill::new(b.a, (4 << 20) + 1, 1).build()
        }),
        row("sqe-huge-len/fill-2-40", "FILL of 2^40", one, INVALID, |b| Fill::new(b.a, 1 << 40, 1).build()),
        row("sqe-huge-len/fill-2-63", "FILL of 2^63", one, INVALID, |b| Fill::new(b.a, 1 << 63, 1).build()),
        row("sqe-huge-len/fill-max", "FILL of 2^64 - 1", one, INVALID, |b| Fill::new(b.a, u64::MAX, 1).build()),
        row("sqe-huge-len/copy-max", "COPY of 2^64 - 1", one, INVALID, |b| Copy::new(b.a, b.a, u64::MAX).build()),
        row("sqe-huge-len/crc-max-at-end", "CRC32C of 2^64 - 1 at the end", one, INVALID, |b| {
            Crc::new(b.end - 1, u64::MAX).build()
        }),
        row("sqe-huge-len/fill-4mib", "FILL of 4 MiB exactly into 64 KiB", one, BOUNDS, |b| {
            Fill::new(b.a, 4 << 20, 1).build()
        }),
    ]);
    let acc = Layout::Access;
    v.extend([
        row("sqe-access/fill-ro", "FILL into the READ-only buffer", acc, ACCESS, |b| Fill::new(b.ro, 64, 1).build()),
        row("sqe-access/copy-into-ro", "COPY into the READ-only buffer", acc, ACCESS, |b| {
            Copy::new(b.a, b.ro + 100, 64).build()
        }),
        row("sqe-access/copy-within-ro", "COPY within the READ-only buffer", acc, ACCESS, |b| {
            Copy::new(b.ro, b.ro + P, 64).build()
        }),
        row("sqe-access/crc-wo", "CRC32C of the WRITE-only buffer", acc, ACCESS, |b| Crc::new(b.wo, 64).build()),
        row("sqe-access/copy-from-wo", "COPY from the WRITE-only buffer", acc, ACCESS, |b| {
            Copy::new(b.wo, b.a, 64).build()
        }),
        row("sqe-access/copy-ro-to-wo", "COPY READ-only -> WRITE-only", acc, OK, |b| {
            Copy::new(b.ro, b.wo, 4 * P).build()
        }),
        row("sqe-access/crc-ro", "CRC32C of the READ-only buffer", acc, OK, |b| Crc::new(b.ro, 4 * P).build()),
    ]);
    v
}

/// Maps and registers `layout`'s buffers (pattern-filled); the addresses
/// and the buffers (first the registered ones, then `other`).
fn build(layout: Layout, fd: i32, ring: u64) -> Result<(Bufs, Vec<Anon>), String> {
    let filled = |pages: usize, seed: u8| {
        let a = Anon::new(pages * PAGE);
        a.write(&pattern(a.len(), seed));
        a
    };
    let reg = |a: &Anon, off: usize, len: usize, access: u32| {
        want_ok("REGISTER", register(fd, a.addr(off), len as u64, access)).map(drop)
    };
    let mut bufs = Vec::new();
    match layout {
        Layout::One(pages) => {
            bufs.push(filled(pages, 1));
            reg(&bufs[0], 0, pages * PAGE, RW)?;
        }
        Layout::Seam => {
            bufs.push(filled(8, 2));
            reg(&bufs[0], 0, 4 * PAGE, RW)?;
            reg(&bufs[0], 4 * PAGE, 4 * PAGE, RW)?;
        }
        Layout::Access => {
            for (seed, access) in [(3, RW), (4, WARPQ_ACCESS_READ), (5, WARPQ_ACCESS_WRITE)] {
                bufs.push(filled(4, seed));
                reg(&bufs[bufs.len() - 1], 0, 4 * PAGE, access)?;
            }
        }
    }
    bufs.push(filled(1, 6));
    let a = bufs[0].addr(0);
    let len = bufs[0].len() as u64;
    let (ro, wo) = match layout {
        Layout::Access => (bufs[1].addr(0), bufs[2].addr(0)),
        _ => (0, 0),
    };
    let b = Bufs { a, len, end: a + len, seam: a + 4 * P, ro, wo, ring, other: bufs[bufs.len() - 1].addr(0) };
    Ok((b, bufs))
}

/// The CPU's model of the buffers: what an entry that completes OK must do.
struct Model(Vec<(u64, Vec<u8>)>);

impl Model {
    fn range(&mut self, addr: u64, len: u64) -> Option<&mut [u8]> {
        let (base, bytes) = self
            .0
            .iter_mut()
            .find(|(b, v)| addr >= *b && addr.checked_add(len).is_some_and(|end| end <= *b + v.len() as u64))?;
        let off = (addr - *base) as usize;
        Some(&mut bytes[off..off + len as usize])
    }

    /// Applies `e`; the result its completion must carry (None: not checked).
    fn apply(&mut self, e: &warpq_sqe) -> Result<Option<u64>, String> {
        let outside = || format!("an OK {:?} outside the model's buffers", Entry::from_raw(*e));
        Ok(match e.opcode {
            WARPQ_OP_FILL => {
                self.range(e.dst, e.len).ok_or_else(outside)?.fill(e.value as u8);
                Some(e.len)
            }
            WARPQ_OP_COPY => {
                let src = self.range(e.src, e.len).ok_or_else(outside)?.to_vec();
                self.range(e.dst, e.len).ok_or_else(outside)?.copy_from_slice(&src);
                Some(e.len)
            }
            WARPQ_OP_CRC32C => Some(u64::from(crc32c(e.value as u32, self.range(e.src, e.len).ok_or_else(outside)?))),
            _ => None,
        })
    }
}

fn run_entry(env: &Env, layout: Layout, entry: &dyn Fn(&Bufs) -> Entry) -> Result<Got, String> {
    let dev = open(env)?;
    let ring = map_ring(fd_of(&dev))?;
    let (b, bufs) = build(layout, fd_of(&dev), ring.base())?;
    let e = entry(&b);
    let mut model = Model(bufs.iter().map(|a| (a.addr(0), a.bytes())).collect());
    let c = ring.run(e)?;
    if c.status == WARPQ_STATUS_OK {
        if let Some(want) = model.apply(e.as_raw())? {
            ensure!(c.result == want, "OK with result {:#x}, the model says {want:#x}", c.result);
        }
    } else {
        ensure!(c.result == 0, "{} with result {:#x}", st(c.status), c.result);
    }
    for (a, (_, want)) in bufs.iter().zip(&model.0) {
        let got = a.bytes();
        if let Some(i) = got.iter().zip(want).position(|(x, y)| x != y) {
            return Err(format!(
                "{}: byte {:#x} is {:#x}, the model says {:#x}",
                st(c.status),
                a.addr(i),
                got[i],
                want[i]
            ));
        }
    }
    ensure!(ring.get(raw::header::MAGIC) == WARPQ_RING_MAGIC, "the ring's header changed");
    Ok(Got::status(c.status, format!("result {:#x}; memory as the model says", c.result)))
}

fn edu_copy_64(env: &Env) -> Result<Got, String> {
    let (_dev, ring, buf, _) = setup(env, 4)?;
    buf.write(&pattern(PAGE, 9));
    let c = ring.run(op::Copy::new(buf.addr(0), buf.addr(2 * PAGE), 64).edu_dma(true))?;
    let copied = buf.bytes()[2 * PAGE..2 * PAGE + 64] == pattern(64, 9)[..];
    ensure!(
        (c.status == WARPQ_STATUS_OK && copied) || c.status == WARPQ_STATUS_FAULT_IOMMU,
        "EDU_DMA COPY of 64 bytes: {} (data copied: {copied})",
        st(c.status)
    );
    Ok(Got::ok(format!("EDU_DMA COPY of 64 bytes: {}", st(c.status))))
}
