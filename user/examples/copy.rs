//! Copy a buffer through the device and verify it.
//!
//! `copy [DEVICE] [MIB]` (default `/dev/warpq0`, 8 MiB):
//!
//! 1. owned, registered buffers: the source is filled by the CPU, then
//!    copied by the device in 1 MiB commands (no system call per command);
//! 2. borrowed memory registered in a scope: the device copies into it, and
//!    after the scope the plain slice is checked;
//! 3. if the device offers it, one 4 KiB copy by the edu device's own DMA
//!    engine (real device DMA through the IOMMU).
//!
//! Every completion and every byte is checked; exit status 1 on a mismatch.

use std::process::ExitCode;

use warpq::{opcode, sys, Access, Buffer, Completion, Device, Entry, Queue, Status};

const CHUNK: usize = 1 << 20;

/// Pushes `entries` (submitting whenever the ring is full) and returns
/// their completions, in order.
fn run(q: &mut Queue<'_>, entries: &[Entry]) -> warpq::Result<Vec<Completion>> {
    let mut done = Vec::with_capacity(entries.len());
    let mut next = 0;
    while done.len() < entries.len() {
        {
            let mut sq = q.submission();
            while next < entries.len() && sq.push(&entries[next]).is_ok() {
                next += 1;
            }
        }
        q.submit_and_wait(1)?;
        done.extend(q.completion());
    }
    Ok(done)
}

/// Checks that completion `i` is `(i, Ok, want)`.
fn check(done: &[Completion], want: impl Fn(usize) -> u64) -> Result<(), String> {
    for (i, c) in done.iter().enumerate() {
        if c.user_data() != i as u64 || c.status() != Status::Ok || c.result() != want(i) {
            return Err(format!("command {i}: {c:?} (expected ok, result {})", want(i)));
        }
    }
    Ok(())
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| ((i as u32).wrapping_mul(2_654_435_761) >> 13) as u8).collect()
}

fn main_() -> Result<String, String> {
    let mut args = std::env::args().skip(1);
    let path = args.next().unwrap_or_else(|| "/dev/warpq0".into());
    let mib: usize = args.next().map_or(Ok(8), |s| s.parse()).map_err(|e| format!("MIB: {e}"))?;
    let len = mib.max(1) * CHUNK;
    let dev = Device::open(&path).map_err(|e| e.to_string())?;
    let info = dev.info().map_err(|e| e.to_string())?;
    let mut q = dev.queue().map_err(|e| e.to_string())?;

    // 1. Owned buffers. The source is an ordinary buffer until registered.
    let want = pattern(len);
    let src = dev
        .register_buffer(Buffer::from_slice(&want).map_err(|e| e.to_string())?, Access::Read)
        .map_err(|e| e.to_string())?;
    let dst = dev.alloc(len, Access::ReadWrite).map_err(|e| e.to_string())?;
    let copies: Vec<Entry> = (0..len / CHUNK)
        .map(|i| {
            opcode::Copy::new(src.addr_at(i * CHUNK), dst.addr_at(i * CHUNK), CHUNK as u64).build().user_data(i as u64)
        })
        .collect();
    let done = run(&mut q, &copies).map_err(|e| e.to_string())?;
    check(&done, |_| CHUNK as u64)?;
    if dst.to_vec() != want {
        return Err("owned: the destination differs from the source".into());
    }
    println!(
        "copy: {mib} MiB in {} commands through the ring, verified ({} wake-up system calls)",
        copies.len(),
        q.wakeups()
    );

    // 2. Borrowed memory, registered for the scope only.
    let mut back = Buffer::new(len).map_err(|e| e.to_string())?;
    let back_slice: &mut [u8] = &mut back;
    dev.scope(|s| -> Result<(), String> {
        let reg = s.register(&mut *back_slice, Access::Write).map_err(|e| e.to_string())?;
        let copies: Vec<Entry> = (0..len / CHUNK)
            .map(|i| {
                opcode::Copy::new(dst.addr_at(i * CHUNK), reg.addr_at(i * CHUNK), CHUNK as u64)
                    .build()
                    .user_data(i as u64)
            })
            .collect();
        let done = run(&mut q, &copies).map_err(|e| e.to_string())?;
        check(&done, |_| CHUNK as u64)
    })?;
    // The scope has unregistered it: the slice is ours again.
    if back_slice != &want[..] {
        return Err("scoped: the borrowed memory differs from the source".into());
    }
    println!("copy: {mib} MiB back into borrowed memory registered in a scope, verified");

    // 3. The edu device's DMA engine.
    if info.capabilities & sys::WARPQ_CAP_EDU_DMA != 0 {
        let n = warpq::MAX_EDU_DMA_BYTES as usize;
        let (from, to) = (12_345, len - n - 999);
        let e = opcode::Copy::new(src.addr_at(from), dst.addr_at(to), n as u64).edu_dma(true).build().user_data(0);
        let done = run(&mut q, &[e]).map_err(|e| e.to_string())?;
        check(&done, |_| n as u64)?;
        let mut got = vec![0; n];
        dst.read_at(to, &mut got);
        if got != want[from..from + n] {
            return Err("edu DMA: the destination differs from the source".into());
        }
        println!("copy: {n} bytes by the edu device's DMA engine, verified");
    } else {
        println!("copy: the device offers no edu DMA; skipped");
    }
    Ok(format!("all copies verified on {path}"))
}

fn main() -> ExitCode {
    match main_() {
        Ok(msg) => {
            println!("copy: ok: {msg}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("copy: FAIL: {e}");
            ExitCode::FAILURE
        }
    }
}
