//! `warpq-copy-check`: COPY, FILL and CRC32C through the mapped ring (or
//! WARPQ_IOC_SUBMIT), every result verified against a model kept by the CPU;
//! then the fault statuses; and COPY by the edu device's own DMA.

use warpq::sys::*;
use warpq::{crc32c, Device, Queue};

use crate::report::Report;
use crate::stream::{reap, sqe};
use crate::{Anon, Rng};

const BUF: usize = 1 << 20;

/// What a command must complete with.
struct Expect {
    status: u32,
    result: Option<u64>,
}

/// COPY through the edu device's own DMA engine (real DMA through the
/// IOMMU): `count` copies of up to 4 KiB at random offsets, each verified.
pub fn edu(r: &mut Report, count: u64, path: &str) -> Result<(), String> {
    let dev = Device::open(path).map_err(|e| format!("open {path}: {e}"))?;
    if dev.info().map_err(|e| format!("INFO: {e}"))?.capabilities & WARPQ_CAP_EDU_DMA == 0 {
        return Err("the device does not offer edu DMA".into());
    }
    let mut q = dev.queue().map_err(|e| format!("map queue: {e}"))?;
    let (a, b) = (Anon::new(64 * 1024), Anon::new(64 * 1024));
    let mut rng = Rng(0xed0_d3a);
    let pattern: Vec<u8> = (0..a.len()).map(|_| rng.next_u64() as u8).collect();
    a.write(&pattern);
    let rw = WARPQ_ACCESS_READ | WARPQ_ACCESS_WRITE;
    // SAFETY: only raw pointers refer to the buffers; they outlive the registrations.
    let ha = unsafe { dev.register_raw(a.ptr(), a.len(), WARPQ_ACCESS_READ) }.map_err(|e| format!("register: {e}"))?;
    // SAFETY: as above.
    let hb = unsafe { dev.register_raw(b.ptr(), b.len(), rw) }.map_err(|e| format!("register: {e}"))?;
    let mut model = b.bytes();
    let mut pages_crossed = 0;
    for i in 0..count {
        // The first: one whole, aligned page (a single 4096-byte transfer
        // makes QEMU 7.2's edu model abort the VM; the driver splits it).
        let (len, so, d) = if i == 0 {
            (4096, 4096, 2 * 4096)
        } else {
            let len = 1 + rng.below(4096) as usize;
            (len, rng.below((a.len() - len) as u64) as usize, rng.below((b.len() - len) as u64) as usize)
        };
        if so / 4096 != (so + len - 1) / 4096 || d / 4096 != (d + len - 1) / 4096 {
            pages_crossed += 1;
        }
        let mut s = sqe(WARPQ_OP_COPY, i, a.addr(so), b.addr(d), len as u64, 0);
        s.flags = WARPQ_SQE_EDU_DMA;
        q.push(&s).map_err(|_| "ring full")?;
        q.submit().map_err(|e| format!("submit: {e}"))?;
        let c = reap(&mut q)?;
        if c.user_data != i || c.status != WARPQ_STATUS_OK || c.result != len as u64 {
            return Err(format!("edu COPY {i}: status {} result {}", c.status, c.result));
        }
        model[d..d + len].copy_from_slice(&pattern[so..so + len]);
    }
    if b.bytes() != model {
        return Err("destination differs from the model after edu DMA copies".into());
    }
    let mut big = sqe(WARPQ_OP_COPY, 99, a.addr(0), b.addr(0), 8192, 0);
    big.flags = WARPQ_SQE_EDU_DMA;
    q.push(&big).map_err(|_| "ring full")?;
    q.submit().map_err(|e| format!("submit: {e}"))?;
    let c = reap(&mut q)?;
    if c.status != WARPQ_STATUS_INVALID {
        return Err(format!("edu COPY of 8 KiB: status {} (expected invalid)", c.status));
    }
    dev.unregister(ha).map_err(|e| format!("unregister: {e}"))?;
    dev.unregister(hb).map_err(|e| format!("unregister: {e}"))?;
    r.ok("edu", &format!(
        "{count} COPY commands by edu DMA through the IOMMU verified (one a whole aligned page, {pages_crossed} crossing pages); an 8 KiB one refused"
    ));
    Ok(())
}

/// Registers two 1 MiB buffers, submits `commands` random COPY, FILL and
/// CRC32C commands (through the mapped ring with no system call on the
/// submit path except need-wakeup, or with `via_ioctl` through
/// WARPQ_IOC_SUBMIT), checks every completion (status, CRC value), then
/// every byte of the destination buffer; then the fault statuses:
/// unregistered, crossing a buffer's end, read-only buffer written, invalid
/// opcode, zero length, and a buffer after UNREGISTER. Each step is an `ok`
/// line of `r`.
pub fn stream(r: &mut Report, via_ioctl: bool, commands: u64, path: &str) -> Result<(), String> {
    let dev = Device::open(path).map_err(|e| format!("open {path}: {e}"))?;
    let mut q = dev.queue().map_err(|e| format!("map queue: {e}"))?;

    let a = Anon::new(BUF);
    let b = Anon::new(BUF);
    let ro = Anon::new(4096);
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut pattern = vec![0u8; BUF];
    for (i, x) in pattern.iter_mut().enumerate() {
        *x = (i as u64).wrapping_mul(2654435761).to_le_bytes()[1] ^ (rng.next_u64() as u8);
    }
    a.write(&pattern);
    b.write(&vec![0u8; BUF]);
    let rw = WARPQ_ACCESS_READ | WARPQ_ACCESS_WRITE;
    // SAFETY: the buffers stay mapped until after UNREGISTER below and only
    // raw pointers refer to them.
    let ha = unsafe { dev.register_raw(a.ptr(), BUF, rw) }.map_err(|e| format!("register A: {e}"))?;
    // SAFETY: as above.
    let hb = unsafe { dev.register_raw(b.ptr(), BUF, rw) }.map_err(|e| format!("register B: {e}"))?;
    // SAFETY: as above; read-only device access.
    let hro =
        unsafe { dev.register_raw(ro.ptr(), 4096, WARPQ_ACCESS_READ) }.map_err(|e| format!("register RO: {e}"))?;
    r.ok("register", "two 1 MiB buffers and a read-only page");

    // The model of B as the device will leave it, updated in submission order.
    let mut model_b = vec![0u8; BUF];
    let mut expected: std::collections::VecDeque<(u64, Expect)> = Default::default();
    let (mut wakes, mut submits, mut verified) = (0u64, 0u64, 0u64);
    let mut next = 0u64;
    let mut ioctl_batch = Vec::new();
    let check = |c: warpq_cqe, want: (u64, Expect)| -> Result<(), String> {
        let (id, e) = want;
        if c.user_data != id {
            return Err(format!("completion for {} arrived where {} was expected", c.user_data, id));
        }
        if c.status != e.status {
            return Err(format!("command {id}: status {} (expected {})", c.status, e.status));
        }
        if let Some(r) = e.result {
            if c.result != r {
                return Err(format!("command {id}: result {:#x} (expected {r:#x})", c.result));
            }
        }
        Ok(())
    };
    while next < commands || !expected.is_empty() {
        // Push a batch.
        let batch = 1 + rng.below(32);
        let mut pushed = 0;
        while next < commands && pushed < batch && expected.len() < 200 {
            let len = 1 + rng.below(3 * 4096) as usize;
            let so = rng.below((BUF - len) as u64) as usize;
            let d = rng.below((BUF - len) as u64) as usize;
            let (s, e) = match rng.below(3) {
                0 => {
                    model_b[d..d + len].copy_from_slice(&pattern[so..so + len]);
                    (
                        sqe(WARPQ_OP_COPY, next, a.addr(so), b.addr(d), len as u64, 0),
                        Expect { status: 0, result: Some(len as u64) },
                    )
                }
                1 => {
                    let v = rng.next_u64() as u8;
                    model_b[d..d + len].fill(v);
                    (
                        sqe(WARPQ_OP_FILL, next, 0, b.addr(d), len as u64, u64::from(v)),
                        Expect { status: 0, result: Some(len as u64) },
                    )
                }
                _ => {
                    let seed = rng.next_u64() as u32;
                    let crc = crc32c(seed, &model_b[d..d + len]);
                    (
                        sqe(WARPQ_OP_CRC32C, next, b.addr(d), 0, len as u64, u64::from(seed)),
                        Expect { status: 0, result: Some(u64::from(crc)) },
                    )
                }
            };
            if via_ioctl {
                ioctl_batch.push(s);
            } else if q.push(&s).is_err() {
                break;
            }
            expected.push_back((next, e));
            next += 1;
            pushed += 1;
        }
        if pushed > 0 && via_ioctl {
            submits += 1;
            let n = dev.submit_batch(&ioctl_batch).map_err(|e| format!("SUBMIT: {e}"))?;
            if n as usize != ioctl_batch.len() {
                return Err(format!("SUBMIT queued {n} of {}", ioctl_batch.len()));
            }
            ioctl_batch.clear();
        } else if pushed > 0 {
            submits += 1;
            let before = q.wakeups();
            q.submit().map_err(|e| format!("submit: {e}"))?;
            wakes += q.wakeups() - before;
        }
        // Reap at least one.
        if let Some(want) = expected.pop_front() {
            let c = reap(&mut q)?;
            check(c, want)?;
            verified += 1;
            while let Some(c) = q.pop() {
                let want = expected.pop_front().ok_or("more completions than submissions")?;
                check(c, want)?;
                verified += 1;
            }
        }
    }
    if verified != commands {
        return Err(format!("{verified} completions for {commands} commands"));
    }
    if b.bytes() != model_b {
        let first = b.bytes().iter().zip(&model_b).position(|(x, y)| x != y).unwrap_or(0);
        return Err(format!("destination buffer differs from the model at byte {first}"));
    }
    if via_ioctl {
        r.ok("ioctl", &format!("{commands} commands verified through WARPQ_IOC_SUBMIT ({submits} ioctls), destination buffer matches byte for byte"));
    } else {
        r.ok("ring", &format!("{commands} commands verified ({submits} submits, {wakes} need-wakeup system calls), destination buffer matches byte for byte"));
    }

    // Fault statuses: each completes with its status and touches nothing.
    let before = b.bytes();
    let not_registered = Anon::new(4096);
    let faults = [
        (
            sqe(WARPQ_OP_FILL, 1_000_001, 0, not_registered.addr(0), 64, 0xaa),
            WARPQ_STATUS_FAULT_UNREGISTERED,
            "unregistered address",
        ),
        (
            sqe(WARPQ_OP_FILL, 1_000_002, 0, b.addr(BUF - 64), 128, 0xaa),
            WARPQ_STATUS_FAULT_BOUNDS,
            "crossing the buffer's end",
        ),
        (
            sqe(WARPQ_OP_FILL, 1_000_003, 0, ro.addr(0), 64, 0xaa),
            WARPQ_STATUS_FAULT_ACCESS,
            "writing a read-only buffer",
        ),
        (sqe(9, 1_000_004, 0, b.addr(0), 64, 0), WARPQ_STATUS_INVALID, "invalid opcode"),
        (sqe(WARPQ_OP_COPY, 1_000_005, a.addr(0), b.addr(0), 0, 0), WARPQ_STATUS_INVALID, "zero length"),
    ];
    let send = |q: &mut Queue<'_>, s: &warpq_sqe| -> Result<(), String> {
        if via_ioctl {
            match dev.submit_batch(std::slice::from_ref(s)) {
                Ok(1) => Ok(()),
                other => Err(format!("SUBMIT: {other:?}")),
            }
        } else {
            q.push(s).map_err(|_| "ring full".to_string())?;
            q.submit().map(|_| ()).map_err(|e| format!("submit: {e}"))
        }
    };
    for (s, status, what) in faults {
        send(&mut q, &s)?;
        let c = reap(&mut q)?;
        if c.user_data != s.user_data || c.status != status {
            return Err(format!("{what}: status {} (expected {status})", c.status));
        }
        r.ok("fault", &format!("{what} completes with status {status}"));
    }
    if b.bytes() != before {
        return Err("a faulting command changed the destination buffer".into());
    }
    r.ok("fault", "faulting commands touched nothing");
    for h in [ha, hb, hro] {
        dev.unregister(h).map_err(|e| format!("unregister: {e}"))?;
    }
    let gone = sqe(WARPQ_OP_FILL, 2_000_000, 0, b.addr(0), 64, 1);
    send(&mut q, &gone)?;
    let c = reap(&mut q)?;
    if c.status != WARPQ_STATUS_FAULT_UNREGISTERED {
        return Err(format!("after UNREGISTER: status {}", c.status));
    }
    r.ok("unregister", "after UNREGISTER the buffer is unreachable");
    Ok(())
}
