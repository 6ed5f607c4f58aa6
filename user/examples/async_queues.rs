//! Drive two queues from one tokio task (cargo feature `tokio`).
//!
//! `async_queues [DEVICE] [ROUNDS]` (default `/dev/warpq0`, 2000 rounds):
//! the device is opened twice, so the process has two queues, each with a
//! registered 64 KiB buffer. Every round pushes 8 FILLs on each queue
//! (each FILL writes a round-specific byte into its own 8 KiB of the
//! buffer), submits both, then awaits both queues' completions together
//! with `tokio::join!`, in a current-thread runtime: one task, one thread,
//! no blocking system call. Every completion is checked, and the buffers
//! after the last round. Exit status 1 on a mismatch.

use std::process::ExitCode;

use warpq::{opcode, Access, AsyncQueue, Device, RegisteredBuffer, Status};

const FILLS: usize = 8;
const SLICE: usize = 8 << 10;

fn byte(queue: usize, round: usize, i: usize) -> u8 {
    (round.wrapping_mul(31) + i * 7 + queue * 101) as u8
}

/// Pushes this round's FILLs and submits them (no wait).
fn submit(q: &mut AsyncQueue<'_>, buf: &RegisteredBuffer<'_>, queue: usize, round: usize) -> warpq::Result<()> {
    let fills: Vec<_> = (0..FILLS)
        .map(|i| {
            opcode::Fill::new(buf.addr_at(i * SLICE), SLICE as u64, byte(queue, round, i))
                .build()
                .user_data((round * FILLS + i) as u64)
        })
        .collect();
    let q = q.get_mut();
    q.submission().push_multiple(&fills).expect("the ring has room for one round");
    q.submit()?;
    Ok(())
}

/// Awaits this round's completions on `q`; how many times it waited.
async fn reap(q: &mut AsyncQueue<'_>, round: usize) -> Result<usize, String> {
    let (mut seen, mut waits) = (0, 0);
    while seen < FILLS {
        waits += 1;
        for c in q.completions().await.map_err(|e| e.to_string())? {
            let want = (round * FILLS + seen) as u64;
            if c.user_data() != want || c.status() != Status::Ok {
                return Err(format!("round {round}: completion {c:?}, expected user_data {want} and ok"));
            }
            seen += 1;
        }
    }
    Ok(waits)
}

async fn run(path: &str, rounds: usize) -> Result<String, String> {
    let (dev_a, dev_b) =
        (Device::open(path).map_err(|e| e.to_string())?, Device::open(path).map_err(|e| e.to_string())?);
    let buf_a = dev_a.alloc(FILLS * SLICE, Access::ReadWrite).map_err(|e| e.to_string())?;
    let buf_b = dev_b.alloc(FILLS * SLICE, Access::ReadWrite).map_err(|e| e.to_string())?;
    let mut a = AsyncQueue::new(dev_a.queue().map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    let mut b = AsyncQueue::new(dev_b.queue().map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    let mut waits = 0;
    for round in 0..rounds {
        submit(&mut a, &buf_a, 0, round).map_err(|e| e.to_string())?;
        submit(&mut b, &buf_b, 1, round).map_err(|e| e.to_string())?;
        let (wa, wb) = tokio::join!(reap(&mut a, round), reap(&mut b, round));
        waits += wa? + wb?;
    }
    let last = rounds - 1;
    for (queue, buf) in [(0, &buf_a), (1, &buf_b)] {
        let data = buf.to_vec();
        for i in 0..FILLS {
            if data[i * SLICE..(i + 1) * SLICE].iter().any(|&x| x != byte(queue, last, i)) {
                return Err(format!("queue {queue}: slice {i} does not hold the last round's FILL"));
            }
        }
    }
    Ok(format!(
        "2 queues driven from one task: {rounds} rounds, {} completions each, all ok, buffers verified; {waits} waits",
        rounds * FILLS
    ))
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let path = args.next().unwrap_or_else(|| "/dev/warpq0".into());
    let rounds = args.next().and_then(|s| s.parse().ok()).unwrap_or(2000usize).max(1);
    let rt = tokio::runtime::Builder::new_current_thread().enable_io().build().expect("a tokio runtime");
    match rt.block_on(run(&path, rounds)) {
        Ok(msg) => {
            println!("async_queues: {msg}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("async_queues: FAIL: {e}");
            ExitCode::FAILURE
        }
    }
}
