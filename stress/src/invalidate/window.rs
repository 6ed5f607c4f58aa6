//! Registered memory beyond the device's address window
//! (`warpq-invalidate-check window [MIB]`).
//!
//! The edu device addresses 28 bits: all queues together can map at most
//! 256 MiB at once. A queue holds at most its share of that
//! (`device_share_mb`, 64 MiB by default); past it a rebuild evicts the
//! least recently used chunks, and a command on an evicted chunk waits for
//! its rebuild like one on a torn-down chunk.
//!
//! One process registers MIB MiB (default 320, more than the window): one
//! buffer of 256 MiB (past the default `max_region_mb`, raised for the
//! check; 64 chunks of 4 MiB), then 64 MiB ones, and streams FILLs and COPYs of a page each to random
//! pages all over it, checked against a model. Meanwhile a forked process
//! with its own queue and a 4 MiB buffer keeps running verified FILLs.
//! Checked: every command completes OK and the bytes are right; chunks
//! were evicted; the streaming queue holds no more than its share when it
//! ends; the other process completed commands all along (in each second
//! of the stream).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use warpq::sysfs::Sysfs;
use warpq::{opcode, Device, Status};

use crate::harness;
use crate::param::ParamGuard;
use crate::rng::Rng;
use crate::Anon;

use super::PAGE;

/// The registered buffers after the first (the driver's `max_region_mb`
/// default).
const REGION: usize = 64 << 20;
/// The first buffer, larger than that default (`max_region_mb` raised for
/// the check).
const BIG: usize = 256 << 20;
/// How long the stream runs.
const STREAM: Duration = Duration::from_secs(6);

/// What the parent and the other process share (a `MAP_SHARED` page).
#[repr(C)]
struct Shared {
    stop: AtomicU64,
    /// The other process's completed commands, by second of the stream.
    per_second: [AtomicU64; 64],
    /// Nonzero if it found a wrong byte or a failed command.
    failed: AtomicU64,
}

/// Runs the stream; one line of what happened.
pub fn beyond_the_window(dev: &Device, mib: usize) -> Result<String, String> {
    // One big buffer, then 64 MiB ones up to `mib`.
    let mut sizes = vec![BIG.min(mib << 20)];
    while sizes.iter().sum::<usize>() < mib << 20 {
        sizes.push(REGION);
    }
    let _big = ParamGuard::set("max_region_mb", &(BIG >> 20).to_string())?;
    // SAFETY: a `Shared` of zeros is valid (atomics) and fits in a page.
    let shared: &'static Shared = unsafe { crate::mem::shared_zeroed() };
    let t0 = Instant::now();
    let child = harness::spawn(|| match other_process(shared, t0) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("window: other process: {e}");
            shared.failed.store(1, Ordering::SeqCst);
            1
        }
    })
    .map_err(|e| format!("fork: {e}"))?;
    let result = stream(dev, &sizes, t0);
    shared.stop.store(1, Ordering::SeqCst);
    let exit = child.wait(Duration::from_secs(60));
    let (line, streamed) = result?;
    if !exit.success() || shared.failed.load(Ordering::SeqCst) != 0 {
        return Err(format!("the other process failed ({exit:?}); the stream: {line}"));
    }
    let seconds = (streamed.as_secs() as usize).clamp(1, shared.per_second.len());
    let per_second: Vec<u64> = shared.per_second[..seconds].iter().map(|c| c.load(Ordering::SeqCst)).collect();
    if per_second.contains(&0) {
        return Err(format!(
            "the other process stalled: its commands per second of the stream {per_second:?}; the stream: {line}"
        ));
    }
    Ok(format!("{line}; the other process's queue completed {per_second:?} commands per second meanwhile"))
}

/// The streaming process's side: `(line, how long it streamed)`.
fn stream(dev: &Device, sizes: &[usize], t0: Instant) -> Result<(String, Duration), String> {
    let share = std::fs::read_to_string("/sys/module/warpq/parameters/device_share_mb")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .ok_or("no device_share_mb parameter")?;
    let mut q = dev.queue().map_err(|e| format!("queue: {e}"))?;
    let bufs: Vec<Anon> = sizes.iter().map(|&len| Anon::new(len)).collect();
    let rw = warpq::sys::WARPQ_ACCESS_READ | warpq::sys::WARPQ_ACCESS_WRITE;
    for (i, b) in bufs.iter().enumerate() {
        // SAFETY: only raw pointers refer to the buffers while registered.
        unsafe { dev.register_raw(b.ptr(), b.len(), rw) }.map_err(|e| {
            format!("register of buffer {i} ({} MiB registered so far): {e}", sizes[..i].iter().sum::<usize>() >> 20)
        })?;
    }
    let evictions = || -> Result<u64, String> {
        let me = std::process::id() as i32;
        let queues = Sysfs::system().queues("warpq0").map_err(|e| format!("queues: {e}"))?;
        let line = queues.iter().find(|q| q.pid == me).ok_or("our queue is not in the queues file")?;
        line.number("evictions").ok_or_else(|| "no evictions in the queue line".to_string())
    };
    // REGISTER maps every chunk once, keeping what fits: it evicts too.
    let evicted_by_register = evictions()?;
    // Page `p` of the whole: the buffers one after the other.
    let starts: Vec<usize> = sizes.iter().scan(0, |at, &len| Some(std::mem::replace(at, *at + len / PAGE))).collect();
    let total_pages = sizes.iter().sum::<usize>() / PAGE;
    let addr = |page: usize| {
        let i = starts.partition_point(|&s| s <= page) - 1;
        bufs[i].addr((page - starts[i]) * PAGE)
    };
    let registered_mib = sizes.iter().sum::<usize>() >> 20;
    // The model: the value every byte of a page holds (fresh pages are 0).
    let mut model = vec![0u8; total_pages];
    let mut rng = Rng(0x0005_eed0_f3d0);
    let (mut commands, mut copies, mut batches) = (0u64, 0u64, 0u64);
    let started = Instant::now();
    while started.elapsed() < STREAM {
        // A batch of 8 commands on distinct pages (no two in flight touch
        // the same page, so completion order does not matter).
        let mut used = Vec::with_capacity(16);
        let pick = |rng: &mut Rng, used: &mut Vec<usize>| loop {
            let p = rng.below(total_pages as u64) as usize;
            if !used.contains(&p) {
                used.push(p);
                return p;
            }
        };
        let mut effects = Vec::with_capacity(8);
        for i in 0..8u64 {
            let id = commands + i;
            let dst = pick(&mut rng, &mut used);
            let e = if rng.below(4) == 0 {
                let src = pick(&mut rng, &mut used);
                effects.push((dst, model[src]));
                copies += 1;
                opcode::Copy::new(addr(src), addr(dst), PAGE as u64).build().user_data(id)
            } else {
                let value = (rng.below(255) + 1) as u8;
                effects.push((dst, value));
                opcode::Fill::new(addr(dst), PAGE as u64, value).build().user_data(id)
            };
            q.submission().push(&e).map_err(|e| format!("push: {e}"))?;
        }
        let mut done = 0;
        while done < 8 {
            q.submit_and_wait(1).map_err(|e| format!("submit_and_wait: {e}"))?;
            for c in q.completion() {
                if c.status() != Status::Ok {
                    return Err(format!("command {} completed {:?}", c.user_data(), c.status()));
                }
                done += 1;
            }
        }
        for (page, value) in effects {
            model[page] = value;
        }
        commands += 8;
        batches += 1;
    }
    let streamed = t0.elapsed();
    // Every page the stream touched, and a sample of the others, byte for
    // byte (reading faults nothing the device needs: the queue is idle).
    for (page, &value) in model.iter().enumerate() {
        if value == 0 && page % 97 != 0 {
            continue;
        }
        // SAFETY: inside a mapped buffer; the device is idle.
        let bytes = unsafe { std::slice::from_raw_parts(addr(page) as *const u8, PAGE) };
        if let Some(bad) = bytes.iter().position(|&b| b != value) {
            return Err(format!("page {page}: byte {bad} is {:#x}, the model says {value:#x}", bytes[bad]));
        }
    }
    let me = std::process::id() as i32;
    let queues = Sysfs::system().queues("warpq0").map_err(|e| format!("queues: {e}"))?;
    let line = queues.iter().find(|q| q.pid == me).ok_or("our queue is not in the queues file")?;
    let evictions = evictions()? - evicted_by_register;
    let mapped = line.number("mapped_bytes").ok_or("no mapped_bytes in the queue line")?;
    if evictions == 0 {
        return Err(format!(
            "{registered_mib} MiB registered over a {share} MiB share and the stream evicted nothing \
             ({evicted_by_register} evictions during REGISTER)"
        ));
    }
    // Each rebuilder (the worker, an ioctl) makes room before it maps, so
    // two at once may each publish a chunk past it: two chunks of slack.
    if share != 0 && mapped > (share << 20) + 2 * (4 << 20) {
        return Err(format!("the queue holds {mapped} bytes of device addresses, over its {share} MiB share"));
    }
    Ok((
        format!(
            "{registered_mib} MiB registered (one buffer of {} MiB, {} of 64 MiB, in chunks of {} KiB) \
             over a {share} MiB share: {commands} commands ({copies} COPYs) \
             in {batches} batches of 8 in {:.1} s, every byte verified; {evictions} chunks evicted by the stream \
             ({evicted_by_register} by the REGISTERs); {} MiB mapped at the end",
            sizes[0] >> 20,
            sizes.len() - 1,
            crate::param::chunk_bytes()? >> 10,
            started.elapsed().as_secs_f64(),
            mapped >> 20
        ),
        streamed,
    ))
}

/// The other process: its own device file and queue, a 4 MiB buffer,
/// verified FILLs one at a time until told to stop; counts them per second
/// since `t0`.
fn other_process(shared: &Shared, t0: Instant) -> Result<(), String> {
    let dev = Device::open("/dev/warpq0").map_err(|e| format!("open: {e}"))?;
    let mut q = dev.queue().map_err(|e| format!("queue: {e}"))?;
    let buf = Anon::new(4 << 20);
    let rw = warpq::sys::WARPQ_ACCESS_READ | warpq::sys::WARPQ_ACCESS_WRITE;
    // SAFETY: only raw pointers refer to the buffer while registered.
    unsafe { dev.register_raw(buf.ptr(), buf.len(), rw) }.map_err(|e| format!("register: {e}"))?;
    let mut n = 0u64;
    while shared.stop.load(Ordering::SeqCst) == 0 {
        let page = (n as usize * 7) % (buf.len() / PAGE);
        let value = (n % 255 + 1) as u8;
        let e = opcode::Fill::new(buf.addr(page * PAGE), PAGE as u64, value).build().user_data(n);
        q.submission().push(&e).map_err(|e| format!("push: {e}"))?;
        q.submit_and_wait(1).map_err(|e| format!("submit_and_wait: {e}"))?;
        let c = q.completion().next().ok_or("no completion after submit_and_wait(1)")?;
        if c.status() != Status::Ok {
            return Err(format!("FILL {n} completed {:?}", c.status()));
        }
        // SAFETY: inside the buffer; the command completed.
        let bytes = unsafe { std::slice::from_raw_parts(buf.ptr().add(page * PAGE), PAGE) };
        if bytes.iter().any(|&b| b != value) {
            return Err(format!("FILL {n}: page {page} not {value:#x}"));
        }
        let second = (t0.elapsed().as_secs() as usize).min(shared.per_second.len() - 1);
        shared.per_second[second].fetch_add(1, Ordering::SeqCst);
        n += 1;
    }
    Ok(())
}
