//! A verified stream of device commands: COPY, FILL and CRC32C into one
//! window of a destination buffer, with the CPU's model of that window
//! updated **at completion time**, in completion order (the engine executes
//! in submission order). A command that completes with a fault changes
//! nothing in the model, so the model stays exact even when an invalidation
//! kills the buffer in the middle of the stream.

use std::collections::VecDeque;
use std::time::Duration;

use warpq::sys::*;
use warpq::{crc32c, Queue};

use crate::{Anon, Rng};

/// A submission entry.
pub fn sqe(op: u8, user_data: u64, src: u64, dst: u64, len: u64, value: u64) -> warpq_sqe {
    warpq_sqe { opcode: op, user_data, src, dst, len, value, ..Default::default() }
}

/// Reaps one completion: polls the ring, then sleeps in WAIT (which also
/// lets the driver rebuild what an invalidation tore down). Gives up after
/// about 20 s.
pub fn reap(q: &mut Queue<'_>) -> Result<warpq_cqe, String> {
    for _ in 0..1000 {
        if let Some(c) = q.pop() {
            return Ok(c);
        }
        std::hint::spin_loop();
    }
    for _ in 0..100 {
        if let Some(c) = q.pop() {
            return Ok(c);
        }
        q.wait(1, Some(Duration::from_millis(200))).map_err(|e| format!("WAIT: {e}"))?;
    }
    Err("no completion within 20 s".into())
}

/// Pushes every entry (submitting whenever the ring is full) and submits.
pub fn push_all(q: &mut Queue<'_>, sqes: &[warpq_sqe]) -> Result<(), String> {
    for s in sqes {
        while q.push(s).is_err() {
            q.submit().map_err(|e| format!("submit: {e}"))?;
            std::thread::yield_now();
        }
    }
    q.submit().map_err(|e| format!("submit: {e}"))?;
    Ok(())
}

#[derive(Clone, Copy)]
enum Op {
    Copy { src: usize, dst: usize, len: usize },
    Fill { dst: usize, len: usize, value: u8 },
    Crc { at: usize, len: usize },
}

/// Counts of how a stream's commands ended.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    /// Completed with success and the right result.
    pub ok: u64,
    /// Completed with a fault status (the buffer was gone or unmapped).
    pub faulted: u64,
    /// Completed as aborted (a drain timeout reset the queue).
    pub aborted: u64,
}

/// Commands into `dst[lo..hi]` from `src`, verified; see the module docs.
pub struct Stream<'a> {
    src: &'a Anon,
    src_pattern: Vec<u8>,
    dst: &'a Anon,
    lo: usize,
    hi: usize,
    model: Vec<u8>,
    rng: Rng,
    pending: VecDeque<(u64, Op)>,
    next: u64,
    /// Whether a fault status is acceptable (the test kills the buffer).
    faults_allowed: bool,
    /// Longest command, in bytes.
    max_len: usize,
    /// How the commands ended so far.
    pub tally: Tally,
}

impl<'a> Stream<'a> {
    /// A stream writing only `dst[lo..hi]`; `src` must not change while it runs.
    pub fn new(src: &'a Anon, dst: &'a Anon, lo: usize, hi: usize, seed: u64) -> Self {
        assert!(lo < hi && hi <= dst.len());
        Stream {
            src_pattern: src.bytes(),
            src,
            model: dst.bytes(),
            dst,
            lo,
            hi,
            rng: Rng(seed),
            pending: VecDeque::new(),
            next: 0,
            faults_allowed: false,
            max_len: 2 * 4096,
            tally: Tally::default(),
        }
    }

    /// Accept fault statuses (for tests that invalidate the buffer for good).
    pub fn allow_faults(mut self) -> Self {
        self.faults_allowed = true;
        self
    }

    /// Commands of at most `max_len` bytes (default 8 KiB): short commands
    /// make long runs count many more verified commands.
    pub fn max_len(mut self, max_len: usize) -> Self {
        self.max_len = max_len.max(1);
        self
    }

    /// Queues `count` random commands.
    pub fn push(&mut self, q: &mut Queue<'_>, count: u64) -> Result<(), String> {
        let mut batch = Vec::with_capacity(count as usize);
        let window = self.hi - self.lo;
        for _ in 0..count {
            let len = 1 + self.rng.below((self.max_len as u64).min(window as u64 - 1)) as usize;
            let d = self.lo + self.rng.below((window - len) as u64) as usize;
            let id = self.next;
            self.next += 1;
            let op = match self.rng.below(3) {
                0 => {
                    let s = self.rng.below((self.src.len() - len) as u64) as usize;
                    batch.push(sqe(WARPQ_OP_COPY, id, self.src.addr(s), self.dst.addr(d), len as u64, 0));
                    Op::Copy { src: s, dst: d, len }
                }
                1 => {
                    let value = self.rng.next_u64() as u8;
                    batch.push(sqe(WARPQ_OP_FILL, id, 0, self.dst.addr(d), len as u64, u64::from(value)));
                    Op::Fill { dst: d, len, value }
                }
                _ => {
                    batch.push(sqe(WARPQ_OP_CRC32C, id, self.dst.addr(d), 0, len as u64, 0));
                    Op::Crc { at: d, len }
                }
            };
            self.pending.push_back((id, op));
        }
        push_all(q, &batch)
    }

    /// Reaps and checks every queued command.
    pub fn reap_all(&mut self, q: &mut Queue<'_>) -> Result<(), String> {
        while let Some((id, op)) = self.pending.pop_front() {
            let c = reap(q)?;
            if c.user_data != id {
                return Err(format!("completion {} arrived where {id} was expected", c.user_data));
            }
            match c.status {
                WARPQ_STATUS_OK => {
                    let expect = match op {
                        Op::Copy { src, dst, len } => {
                            self.model[dst..dst + len].copy_from_slice(&self.src_pattern[src..src + len]);
                            len as u64
                        }
                        Op::Fill { dst, len, value } => {
                            self.model[dst..dst + len].fill(value);
                            len as u64
                        }
                        Op::Crc { at, len } => u64::from(crc32c(0, &self.model[at..at + len])),
                    };
                    if c.result != expect {
                        return Err(format!("command {id}: result {:#x}, expected {expect:#x}", c.result));
                    }
                    self.tally.ok += 1;
                }
                WARPQ_STATUS_FAULT_UNMAPPED | WARPQ_STATUS_FAULT_UNREGISTERED if self.faults_allowed => {
                    self.tally.faulted += 1
                }
                WARPQ_STATUS_ABORTED if self.faults_allowed => self.tally.aborted += 1,
                s => return Err(format!("command {id}: status {s}")),
            }
        }
        Ok(())
    }

    /// The window of the destination equals the model, byte for byte.
    pub fn verify(&self, who: &str) -> Result<(), String> {
        let got = self.dst.bytes();
        match got[self.lo..self.hi].iter().zip(&self.model[self.lo..self.hi]).position(|(a, b)| a != b) {
            None => Ok(()),
            Some(i) => Err(format!("{who}: byte {} of the buffer differs from the model", self.lo + i)),
        }
    }
}
