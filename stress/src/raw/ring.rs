//! A queue's ring mapped and driven by hand, with no cached indices: a
//! program can drive it as the ABI says or corrupt any word of it.
//!
//! The ring's ownership rules (`driver/uapi/warpq.h`): user space writes
//! the entries between `sq_head` and `sq_tail` and the two indices
//! `sq_tail` and `cq_head`; the kernel writes `sq_head`, `cq_tail`, `flags`,
//! `sq_invalid` and the completions. [`RawRing`] publishes with
//! store-release and reads indices with load-acquire, as the safe crate
//! does, but lets a caller store any value anywhere.

use std::mem::offset_of;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use warpq::sys::*;
use warpq::Entry;

use super::{mmap, wait, wake, Errno, Map};

/// Byte offsets of the ring header's fields.
pub mod header {
    use super::*;
    /// `magic`.
    pub const MAGIC: usize = offset_of!(warpq_ring_header, magic);
    /// `version`.
    pub const VERSION: usize = offset_of!(warpq_ring_header, version);
    /// `sq_entries`.
    pub const SQ_ENTRIES: usize = offset_of!(warpq_ring_header, sq_entries);
    /// `cq_entries`.
    pub const CQ_ENTRIES: usize = offset_of!(warpq_ring_header, cq_entries);
    /// `sq_offset`.
    pub const SQ_OFFSET: usize = offset_of!(warpq_ring_header, sq_offset);
    /// `cq_offset`.
    pub const CQ_OFFSET: usize = offset_of!(warpq_ring_header, cq_offset);
    /// `owner_id` (64-bit).
    pub const OWNER_ID: usize = offset_of!(warpq_ring_header, owner_id);
    /// `sq_head` (kernel-written).
    pub const SQ_HEAD: usize = offset_of!(warpq_ring_header, sq_head);
    /// `sq_tail` (user-written).
    pub const SQ_TAIL: usize = offset_of!(warpq_ring_header, sq_tail);
    /// `cq_head` (user-written).
    pub const CQ_HEAD: usize = offset_of!(warpq_ring_header, cq_head);
    /// `cq_tail` (kernel-written).
    pub const CQ_TAIL: usize = offset_of!(warpq_ring_header, cq_tail);
    /// `flags` (kernel-written).
    pub const FLAGS: usize = offset_of!(warpq_ring_header, flags);
    /// `sq_invalid` (64-bit, kernel-written).
    pub const SQ_INVALID: usize = offset_of!(warpq_ring_header, sq_invalid);
}

use header::*;

/// The eight little-endian words of an entry, as the ring holds them.
pub fn sqe_words(e: &warpq_sqe) -> [u64; 8] {
    [
        u64::from(e.opcode) | (u64::from(e.flags) << 8) | (u64::from(e.rsvd0) << 16) | (u64::from(e.rsvd1) << 32),
        e.user_data,
        e.src,
        e.dst,
        e.len,
        e.value,
        e.rsvd2[0],
        e.rsvd2[1],
    ]
}

/// A completion from its four words as the ring holds them.
pub fn cqe_from_words(w: [u64; 4]) -> warpq_cqe {
    warpq_cqe { user_data: w[0], status: w[1] as u32, rsvd: (w[1] >> 32) as u32, result: w[2], rsvd2: w[3] }
}

/// A mapping of a queue's ring on a descriptor.
pub struct RawRing {
    map: Map,
    fd: i32,
}

impl RawRing {
    /// Maps the ring of this process's queue on `fd` (shared, read/write,
    /// the whole `WARPQ_RING_SIZE`).
    pub fn map(fd: i32) -> Result<RawRing, Errno> {
        let map = mmap(WARPQ_RING_SIZE, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0)?;
        Ok(RawRing { map, fd })
    }

    /// A ring over an existing mapping `map` of the ring of `fd`.
    ///
    /// # Safety
    ///
    /// `map` must be a mapping of the whole ring, readable, and writable if
    /// any store method is used, for as long as this value is used.
    pub unsafe fn from_map(map: Map, fd: i32) -> RawRing {
        RawRing { map, fd }
    }

    /// The descriptor.
    pub fn fd(&self) -> i32 {
        self.fd
    }

    /// The mapping.
    pub fn mapping(&self) -> &Map {
        &self.map
    }

    /// The ring's user address.
    pub fn base(&self) -> u64 {
        self.map.addr(0)
    }

    /// The 32-bit word at byte `off` (4-aligned, inside the ring).
    pub fn u32_at(&self, off: usize) -> &AtomicU32 {
        assert!(off.is_multiple_of(4) && off + 4 <= WARPQ_RING_SIZE, "ring offset {off:#x}");
        // SAFETY: an aligned offset inside the ring mapping, which lives as
        // long as `self`; the kernel accesses the ring atomically too.
        unsafe { AtomicU32::from_ptr(self.map.ptr().add(off).cast()) }
    }

    /// The 64-bit word at byte `off` (8-aligned, inside the ring).
    pub fn u64_at(&self, off: usize) -> &AtomicU64 {
        assert!(off.is_multiple_of(8) && off + 8 <= WARPQ_RING_SIZE, "ring offset {off:#x}");
        // SAFETY: as in `u32_at`, 8-aligned.
        unsafe { AtomicU64::from_ptr(self.map.ptr().add(off).cast()) }
    }

    /// Load-acquire of the header word at `off` ([`header`]).
    pub fn get(&self, off: usize) -> u32 {
        self.u32_at(off).load(Ordering::Acquire)
    }

    /// Store-release of `v` into the header word at `off` (any word: the
    /// kernel-owned ones too).
    pub fn set(&self, off: usize, v: u32) {
        self.u32_at(off).store(v, Ordering::Release);
    }

    /// The header's `sq_invalid`.
    pub fn sq_invalid(&self) -> u64 {
        self.u64_at(SQ_INVALID).load(Ordering::Acquire)
    }

    /// The header's `owner_id`.
    pub fn owner_id(&self) -> u64 {
        self.u64_at(OWNER_ID).load(Ordering::Acquire)
    }

    /// The byte offset of submission slot `index` (masked).
    pub fn sqe_offset(index: u32) -> usize {
        WARPQ_RING_SQ_OFFSET + (index & (WARPQ_SQ_ENTRIES - 1)) as usize * 64
    }

    /// Writes the words `w` into submission slot `index` (masked).
    pub fn write_sqe_words(&self, index: u32, w: [u64; 8]) {
        let slot = Self::sqe_offset(index);
        for (i, w) in w.iter().enumerate() {
            self.u64_at(slot + i * 8).store(*w, Ordering::Relaxed);
        }
    }

    /// Writes `e` into submission slot `index` (masked).
    pub fn write_sqe(&self, index: u32, e: &warpq_sqe) {
        self.write_sqe_words(index, sqe_words(e));
    }

    /// Completion slot `index` (masked).
    pub fn read_cqe(&self, index: u32) -> warpq_cqe {
        let slot = WARPQ_RING_CQ_OFFSET + (index & (WARPQ_CQ_ENTRIES - 1)) as usize * 32;
        cqe_from_words(std::array::from_fn(|i| self.u64_at(slot + i * 8).load(Ordering::Relaxed)))
    }

    /// Writes `e` at `sq_tail` and publishes it (store-release of sq_tail).
    pub fn push(&self, e: impl Into<Entry>) -> Result<(), String> {
        let tail = self.get(SQ_TAIL);
        if tail.wrapping_sub(self.get(SQ_HEAD)) >= WARPQ_SQ_ENTRIES {
            return Err("the submission ring is full".into());
        }
        self.write_sqe(tail, e.into().as_raw());
        self.set(SQ_TAIL, tail.wrapping_add(1));
        Ok(())
    }

    /// `WARPQ_IOC_WAKE`: the engine looks at the ring.
    pub fn kick(&self) -> Result<(), String> {
        wake(self.fd).map_err(|e| format!("WAKE: {e}"))
    }

    /// The next completion, if one is posted (consumed: cq_head advances).
    pub fn pop(&self) -> Option<warpq_cqe> {
        let head = self.get(CQ_HEAD);
        if self.get(CQ_TAIL) == head {
            return None;
        }
        let c = self.read_cqe(head);
        self.set(CQ_HEAD, head.wrapping_add(1));
        Some(c)
    }

    /// The next completion, waiting at most `limit` (in WAIT, which also
    /// lets the driver rebuild).
    pub fn reap(&self, limit: Duration) -> Result<warpq_cqe, String> {
        let start = Instant::now();
        loop {
            if let Some(c) = self.pop() {
                return Ok(c);
            }
            let left = limit.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(format!("no completion within {limit:?}"));
            }
            let slice = left.min(Duration::from_millis(100)).as_nanos() as i64;
            wait(self.fd, 1, slice).map_err(|e| format!("WAIT: {e}"))?;
        }
    }

    /// Runs `entries` (at most a ring's worth) and returns their
    /// completions in order; `user_data` becomes the index + 1.
    pub fn run_batch(&self, entries: &[Entry]) -> Result<Vec<warpq_cqe>, String> {
        for (i, e) in entries.iter().enumerate() {
            self.push(e.user_data(i as u64 + 1))?;
        }
        self.kick()?;
        let mut out = Vec::with_capacity(entries.len());
        for i in 0..entries.len() {
            let c = self.reap(Duration::from_secs(30))?;
            if c.user_data != i as u64 + 1 {
                return Err(format!("completion for entry {} where {} was due", c.user_data, i + 1));
            }
            out.push(c);
        }
        Ok(out)
    }

    /// Runs one entry; its completion.
    pub fn run(&self, e: impl Into<Entry>) -> Result<warpq_cqe, String> {
        Ok(self.run_batch(&[e.into()])?[0])
    }

    /// Waits until the engine has taken everything published.
    pub fn settle(&self) -> Result<(), String> {
        let start = Instant::now();
        while self.get(SQ_HEAD) != self.get(SQ_TAIL) {
            if start.elapsed() > Duration::from_secs(10) {
                return Err("the engine did not drain the ring in 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    /// Kicks the engine and checks that for `ms` it takes no submission and
    /// posts no completion.
    pub fn stays_quiet(&self, ms: u64) -> Result<(), String> {
        let before = (self.get(SQ_HEAD), self.get(CQ_TAIL));
        self.kick()?;
        std::thread::sleep(Duration::from_millis(ms));
        let after = (self.get(SQ_HEAD), self.get(CQ_TAIL));
        if before != after {
            return Err(format!("the engine moved: (sq_head, cq_tail) {before:?} -> {after:?}"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_follow_the_abi_layout() {
        let e =
            warpq_sqe { opcode: 2, flags: 1, rsvd0: 3, rsvd1: 4, user_data: 5, rsvd2: [6, 7], ..Default::default() };
        let w = sqe_words(&e);
        assert_eq!(w[0], 2 | (1 << 8) | (3 << 16) | (4 << 32));
        assert_eq!((w[1], w[6], w[7]), (5, 6, 7));
        // SAFETY: reads the words of a plain 64-byte structure.
        let direct: [u64; 8] = unsafe { std::mem::transmute(e) };
        assert_eq!(w, direct);
        assert_eq!((SQ_HEAD, SQ_TAIL, CQ_HEAD, CQ_TAIL, FLAGS, SQ_INVALID), (64, 128, 192, 256, 320, 328));
    }
}
