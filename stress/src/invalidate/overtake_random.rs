//! Random overtaking against a sequential model
//! (`warpq-invalidate-check overtake-random [SECONDS]`).
//!
//! One buffer of four chunks (`chunk_kb`, read from the module) takes random FILLs and COPYs of
//! 256-byte cells, a random two thirds of them marked `UNORDERED`, up to 32
//! in flight, while a second thread drops page 0 of a random chunk every
//! 2 ms (no command touches those pages), so commands keep waiting for
//! rebuilds and overtaking each other. The model applies every command in
//! submission order. Checked:
//!
//! - every command completes OK;
//! - a command without the flag completes after every command before it;
//! - commands that share a chunk complete in submission order;
//! - at the end the buffer equals the model, byte for byte (reordering
//!   across chunks must not change a result);
//! - overtaking happened (at least one completion out of submission order).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use warpq::{opcode, Device, Status};

use crate::rng::Rng;
use crate::Anon;

use super::PAGE;

const CHUNKS: usize = 4;
const CELL: usize = 256;
const IN_FLIGHT: usize = 32;

/// A random cell (offset) of chunk `chunk`, never in its page 0.
fn cell(rng: &mut Rng, chunk_bytes: usize, chunk: usize) -> usize {
    let cells_per_chunk = (chunk_bytes - PAGE) / CELL;
    chunk * chunk_bytes + PAGE + (rng.below(cells_per_chunk as u64) as usize) * CELL
}

/// Runs for `seconds`; one line of what happened.
pub fn overtake_random(dev: &Device, seconds: u64) -> Result<String, String> {
    let mut q = dev.queue().map_err(|e| format!("queue: {e}"))?;
    let chunk_bytes = crate::param::chunk_bytes()?;
    let buf = Anon::new(CHUNKS * chunk_bytes);
    let rw = warpq::sys::WARPQ_ACCESS_READ | warpq::sys::WARPQ_ACCESS_WRITE;
    // SAFETY: only raw pointers refer to the buffer while it is registered;
    // this thread reads it only when no command is in flight.
    let h = unsafe { dev.register_raw(buf.ptr(), buf.len(), rw) }.map_err(|e| format!("register: {e}"))?;
    let mut model = vec![0u8; buf.len()];
    let mut rng = Rng(0x0e77_7a4e ^ seconds);

    let stop = Arc::new(AtomicBool::new(false));
    let dropper = {
        let (stop, base) = (stop.clone(), buf.ptr() as usize);
        std::thread::spawn(move || {
            let mut r = Rng(7);
            let mut drops = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let at = base + r.below(CHUNKS as u64) as usize * chunk_bytes;
                // SAFETY: page 0 of a chunk of our own mapping; no command
                // and no check touches page 0 of any chunk.
                unsafe { libc::madvise(at as *mut libc::c_void, PAGE, libc::MADV_DONTNEED) };
                drops += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            drops
        })
    };

    // Per command: its index, whether it is ordered, the chunks it touches.
    let mut in_flight: HashMap<u64, (bool, BTreeSet<usize>)> = HashMap::new();
    let mut done_below = 0u64; // every command below this index completed
    let mut completed: BTreeSet<u64> = BTreeSet::new();
    let mut last_on_chunk = [None::<u64>; CHUNKS];
    let (mut issued, mut overtakes, mut unordered) = (0u64, 0u64, 0u64);
    let t0 = Instant::now();
    let result = (|| -> Result<(), String> {
        loop {
            let submitting = t0.elapsed() < Duration::from_secs(seconds);
            if !submitting && in_flight.is_empty() {
                return Ok(());
            }
            if t0.elapsed() > Duration::from_secs(seconds + 60) {
                return Err(format!("{} commands still in flight 60 s after the last submission", in_flight.len()));
            }
            // The SQ can fill before 32 are in flight: `sq_head` stays at a
            // command that waits for a rebuild while later ones complete
            // (`sync` refreshes the view of it).
            q.submission().sync();
            while submitting && in_flight.len() < IN_FLIGHT && !q.submission().is_full() {
                let flagged = rng.below(3) != 0;
                let (e, chunks) = if rng.below(2) == 0 {
                    let c = rng.below(CHUNKS as u64) as usize;
                    let (dst, value) = (cell(&mut rng, chunk_bytes, c), rng.below(255) as u8 + 1);
                    model[dst..dst + CELL].fill(value);
                    (opcode::Fill::new(buf.addr(dst), CELL as u64, value).build(), BTreeSet::from([c]))
                } else {
                    let (cs, cd) = (rng.below(CHUNKS as u64) as usize, rng.below(CHUNKS as u64) as usize);
                    let (src, mut dst) = (cell(&mut rng, chunk_bytes, cs), cell(&mut rng, chunk_bytes, cd));
                    if dst == src {
                        dst = if src + CELL < (cd + 1) * chunk_bytes { src + CELL } else { src - CELL };
                    }
                    model.copy_within(src..src + CELL, dst);
                    (opcode::Copy::new(buf.addr(src), buf.addr(dst), CELL as u64).build(), BTreeSet::from([cs, cd]))
                };
                let e = e.user_data(issued);
                let e = if flagged { e.unordered() } else { e };
                q.submission().push(&e).map_err(|e| format!("push: {e}"))?;
                in_flight.insert(issued, (!flagged, chunks));
                unordered += u64::from(flagged);
                issued += 1;
            }
            if submitting {
                q.submit().map_err(|e| format!("submit: {e}"))?;
            }
            let mut any = false;
            for c in q.completion() {
                any = true;
                let id = c.user_data();
                let (ordered, chunks) = in_flight.remove(&id).ok_or_else(|| format!("unknown completion {id}"))?;
                if c.status() != Status::Ok {
                    return Err(format!("command {id} completed {:?}", c.status()));
                }
                if ordered && done_below < id {
                    return Err(format!(
                        "command {id} has no UNORDERED flag, yet completed before command {done_below}"
                    ));
                }
                for &k in &chunks {
                    if last_on_chunk[k].is_some_and(|last| last > id) {
                        return Err(format!(
                            "command {id} completed after command {} on the same chunk {k}, which was submitted \
                             later",
                            last_on_chunk[k].unwrap_or_default()
                        ));
                    }
                    last_on_chunk[k] = Some(id);
                }
                if id != done_below {
                    overtakes += 1;
                }
                completed.insert(id);
                while completed.remove(&done_below) {
                    done_below += 1;
                }
            }
            if !any {
                q.poll_completions(Some(Duration::from_millis(2))).map_err(|e| format!("poll: {e}"))?;
            }
        }
    })();
    stop.store(true, Ordering::Relaxed);
    let drops = dropper.join().map_err(|_| "the dropping thread panicked".to_string())?;
    result?;
    // Nothing in flight: compare everything but the dropped pages.
    // SAFETY: our mapping, no command in flight.
    let bytes = unsafe { std::slice::from_raw_parts(buf.ptr(), buf.len()) };
    for chunk in 0..CHUNKS {
        let range = chunk * chunk_bytes + PAGE..(chunk + 1) * chunk_bytes;
        if let Some(i) = range.clone().find(|&i| bytes[i] != model[i]) {
            return Err(format!(
                "byte {i:#x} (chunk {chunk}) is {:#x}, the sequential model says {:#x}",
                bytes[i], model[i]
            ));
        }
    }
    dev.unregister(h).map_err(|e| format!("unregister: {e}"))?;
    if overtakes == 0 {
        return Err(format!("{issued} commands, {drops} pages dropped, and not one completed out of order"));
    }
    Ok(format!(
        "{issued} commands ({unordered} UNORDERED) in {seconds} s with {drops} pages dropped: {overtakes} completed out \
         of submission order, none before an earlier command on its chunk or an UNORDERED-less one before its \
         predecessors; {} KiB ({CHUNKS} chunks) equal to the sequential model",
        buf.len() >> 10
    ))
}
