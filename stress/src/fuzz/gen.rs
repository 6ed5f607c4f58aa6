//! Generation: a seed becomes a [`Case`]. All the fuzzer's randomness is
//! here; applying the operations draws no random numbers.
//!
//! The weights and value distributions are the fuzzer's: each operation is
//! a weighted pick (parent and child weights differ: only the parent forks,
//! only a child exits early), and each field is drawn the way the action it
//! describes always drew it. Choices that depend on the state (which buffer,
//! which registration...) are [`Pick`]s resolved when applied.

use warpq::sys::*;

use super::op::*;
use super::{Rng, EDU_MAX, KERNEL_ADDR, MAX_CMD, PAGE64, RING_PAGES};

/// The operation kinds with their weight in the parent and in a child.
const WEIGHTS: &[(&str, u64, u64)] = &[
    ("new-buffer", 4, 2),
    ("REGISTER", 9, 8),
    ("UNREGISTER", 5, 4),
    ("INFO", 1, 1),
    ("STATS", 2, 1),
    ("WAIT", 3, 2),
    ("WAKE", 2, 1),
    ("SUBMIT", 5, 4),
    ("unknown-ioctl", 2, 1),
    ("ring-submit", 16, 12),
    ("drain", 3, 2),
    ("garbage-tail", 2, 1),
    ("corrupt-header", 1, 1),
    ("resync", 2, 1),
    ("mmap-ring", 3, 2),
    ("munmap-ring", 2, 2),
    ("mprotect-ring", 2, 1),
    ("mremap-ring", 1, 1),
    ("dontneed-ring", 2, 1),
    ("munmap-buffer", 2, 2),
    ("mprotect-buffer", 2, 1),
    ("mremap-buffer", 1, 1),
    ("dontneed-buffer", 2, 1),
    ("cpu-write", 4, 2),
    ("cpu-verify", 2, 2),
    ("fork", 2, 0),
    ("dup", 2, 1),
    ("close", 2, 2),
    ("open", 2, 1),
    ("child-exit", 0, 2),
];

/// `splitmix64`: spreads a seed over all 64 bits.
pub fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The parent's run for `seed`: setup (open, map a ring, a buffer,
/// REGISTER), `steps` random operations, then the finish.
pub fn generate(seed: u64, steps: u64) -> Case {
    let mut g = Gen { rng: Rng(splitmix(seed) | 1), child: false };
    let tag = 1 + g.below(0x7fff_fffe) as u32;
    let mut ops = vec![
        Op::Open { rdonly: false },
        Op::MapRing { file: 0, fd: 0, how: MapHow::Map { slot: g.pick(), rw: !g.chance(10) } },
        g.new_buf(),
        g.register(),
    ];
    for _ in 0..steps {
        ops.push(g.op());
    }
    ops.push(Op::Finish { abrupt: g.chance(30), drain: g.mask(70), unregister: g.mask(50) });
    Case { tag, ops }
}

struct Gen {
    rng: Rng,
    child: bool,
}

impl Gen {
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.rng.below(n)
        }
    }
    fn chance(&mut self, pct: u64) -> bool {
        self.rng.below(100) < pct
    }
    /// A pick: at most 16 files, descriptors, buffers, rings or
    /// registrations exist, and rarely more than 256 tombstones.
    fn pick(&mut self) -> Pick {
        self.below(256) as Pick
    }
    fn u32(&mut self) -> u32 {
        self.rng.next_u64() as u32
    }
    /// Three bits (one a file), each set with `pct` percent.
    fn mask(&mut self, pct: u64) -> u8 {
        (0..3).fold(0, |m, i| m | (u8::from(self.chance(pct)) << i))
    }
    fn run(&mut self) -> Run {
        Run { at: self.pick(), first: self.pick(), count: self.pick() }
    }

    fn op(&mut self) -> Op {
        let w = |e: &(&str, u64, u64)| if self.child { e.2 } else { e.1 };
        let total: u64 = WEIGHTS.iter().map(w).sum();
        let mut r = self.rng.below(total);
        let mut kind = "ring-submit";
        for e in WEIGHTS {
            if r < w(e) {
                kind = e.0;
                break;
            }
            r -= w(e);
        }
        self.make(kind)
    }

    fn make(&mut self, kind: &str) -> Op {
        let (file, fd) = (self.pick(), self.pick());
        match kind {
            "new-buffer" => self.new_buf(),
            "REGISTER" => self.register(),
            "UNREGISTER" => {
                let v = self.below(100);
                let handle = match v {
                    0..=69 => Handle::Live(self.pick()),
                    70..=81 => Handle::Dead(self.pick()),
                    82..=89 => Handle::Foreign(self.pick()),
                    _ => {
                        let g = [
                            0,
                            0xffff,
                            (1 << 16) | 20,
                            u64::MAX,
                            1 << 48,
                            (1 << 16) | self.below(16),
                            self.rng.next_u64() | (1 << 40),
                        ];
                        Handle::Value(g[self.below(g.len() as u64) as usize])
                    }
                };
                Op::Unregister { file, fd, handle, arg: self.arg() }
            }
            "INFO" => Op::Info { file, fd, arg: self.arg() },
            "STATS" => Op::Stats { file, fd, arg: self.arg() },
            "WAIT" => {
                let min_ready = match self.below(10) {
                    0..=1 => 0,
                    2..=6 => 1,
                    7..=8 => self.below(600) as u32,
                    _ => u32::MAX,
                };
                let timeout_ns: i64 = match self.below(10) {
                    0..=1 => 0,
                    2..=8 => (1 + self.below(30)) as i64 * 1_000_000,
                    _ if min_ready == 0 => [-1, i64::MAX][self.below(2) as usize],
                    _ => 5_000_000,
                };
                Op::Wait { file, fd, arg: self.arg(), min_ready, timeout_ns }
            }
            "WAKE" => Op::Wake { file, fd, arg: self.arg() },
            "SUBMIT" => {
                let k = match self.below(10) {
                    0 => 0,
                    1..=7 => 1 + self.below(8),
                    _ => 1 + self.below(40),
                };
                let sqes = (0..k).map(|_| self.sqe()).collect();
                let at = match self.below(100) {
                    0..=84 => SubmitAt::Heap,
                    85..=92 => SubmitAt::Scratch(self.below(64) as u8),
                    93..=96 => SubmitAt::Null(1 + self.below(64) as u32),
                    _ => SubmitAt::Kernel(1 + self.below(4) as u32),
                };
                Op::Submit { file, fd, sqes, at, arg: self.arg() }
            }
            "unknown-ioctl" => Op::UnknownIoctl { file, fd, cmd: self.unknown_cmd() },
            "ring-submit" => {
                let k = if self.chance(80) { 1 + self.below(8) } else { 1 + self.below(64) };
                let sqes = (0..k).map(|_| self.sqe()).collect();
                Op::RingSubmit {
                    file,
                    fd,
                    sqes,
                    wake: self.chance(90),
                    resync: self.chance(50),
                    start: self.u32(),
                    tail: self.below(u64::from(WARPQ_SQ_ENTRIES) + 1) as u32,
                }
            }
            "drain" => Op::Drain { file, fd },
            "resync" => Op::Resync { file, fd },
            "garbage-tail" => {
                let tail = match self.below(4) {
                    0 => Tail::Far(self.below(1 << 20) as u32),
                    1 => Tail::Behind(self.below(1000) as u32),
                    2 => Tail::Near(self.below(u64::from(WARPQ_SQ_ENTRIES) + 1) as u32),
                    _ => Tail::Any(self.u32()),
                };
                Op::GarbageTail { file, tail }
            }
            "corrupt-header" => {
                let field = [HdrField::CqHead, HdrField::CqHead, HdrField::SqHead, HdrField::CqTail, HdrField::Flags]
                    [self.below(5) as usize];
                let change = match self.below(3) {
                    0 => Change::Add(self.below(600) as u32),
                    1 => Change::Sub(self.below(600) as u32),
                    _ => Change::Set(self.u32()),
                };
                Op::CorruptHeader { file, field, change }
            }
            "mmap-ring" => {
                let how = match self.below(100) {
                    v @ 80..=99 => Op::refused_kind(v),
                    _ => MapHow::Map { slot: self.pick(), rw: !self.chance(20) },
                };
                Op::MapRing { file, fd, how }
            }
            "munmap-ring" => Op::UnmapRing { ring: file, pages: self.ring_pages() },
            "mprotect-ring" => {
                let pages = self.ring_pages();
                let prot = [RingProt::Rd, RingProt::None, RingProt::Rw, RingProt::Rw, RingProt::RdExec]
                    [self.below(5) as usize];
                Op::MprotectRing { ring: file, pages, prot }
            }
            "mremap-ring" => {
                let how = match self.below(10) {
                    0..=5 => MremapHow::Move(self.pick()),
                    6..=7 => MremapHow::Grow,
                    _ => MremapHow::Shrink(self.below(256) as u8),
                };
                Op::MremapRing { ring: file, how }
            }
            "dontneed-ring" => Op::DontneedRing { ring: file },
            "munmap-buffer" => {
                let run = if self.chance(60) { None } else { Some(self.run()) };
                Op::UnmapBuf { buf: file, run }
            }
            "mprotect-buffer" => {
                let run = self.run();
                let prot = [BufProt::Rd, BufProt::None, BufProt::Rw, BufProt::Rw][self.below(4) as usize];
                Op::MprotectBuf { buf: file, run, prot }
            }
            "mremap-buffer" => Op::MremapBuf { buf: file, grow: self.below(3) as u8, run: self.run() },
            "dontneed-buffer" => Op::DontneedBuf { buf: file, run: self.run() },
            "cpu-write" => Op::CpuWrite { buf: file, first: fd, count: self.pick(), seed: self.rng.next_u64() },
            "cpu-verify" => Op::CpuVerify { buf: file },
            "fork" => self.fork_op(),
            "dup" => Op::Dup { file, fd },
            "close" => Op::Close { file, fd },
            "open" => Op::Open { rdonly: self.chance(10) },
            "child-exit" => Op::ExitNow {},
            other => unreachable!("no generator for {other}"),
        }
    }

    fn new_buf(&mut self) -> Op {
        let tomb = self.chance(20).then(|| self.pick());
        let pages = if self.chance(80) { 1 + self.below(16) } else { 17 + self.below(48) } as u8;
        Op::NewBuf { tomb, pages, shared: self.chance(25), seed: self.rng.next_u64() }
    }

    fn register(&mut self) -> Op {
        let (file, fd, buf) = (self.pick(), self.pick(), self.pick());
        let range = match self.below(100) {
            0..=54 => RegRange::Whole,
            55..=69 => RegRange::Pages(self.pick(), self.pick()),
            70..=74 => RegRange::PlusPage,
            75..=77 => RegRange::Misaligned(self.below(4095) as u16),
            78..=79 => RegRange::Short(self.below(4095) as u16),
            80..=81 => RegRange::Zero,
            82..=83 => RegRange::Overflow,
            84..=86 => RegRange::TooLarge,
            87..=90 => RegRange::Tomb(self.pick()),
            91..=93 => {
                let (a, l) = [(0, PAGE64), (KERNEL_ADDR, PAGE64), (1 << 47, 4 * PAGE64)][self.below(3) as usize];
                RegRange::Abs(a, l)
            }
            _ => RegRange::Ring(self.pick()),
        };
        let access = match self.below(100) {
            0..=59 => WARPQ_ACCESS_READ | WARPQ_ACCESS_WRITE,
            60..=74 => WARPQ_ACCESS_READ,
            75..=89 => WARPQ_ACCESS_WRITE,
            _ => [0, 4, 7, 8, u32::MAX][self.below(5) as usize],
        };
        Op::Register { file, fd, buf, range, access, arg: self.arg() }
    }

    fn fork_op(&mut self) -> Op {
        let tag = 0x8000_0000 | self.below(0x7fff_ffff) as u32;
        let steps = 3 + self.below(28);
        self.child = true;
        let ops = (0..steps).map(|_| self.op()).collect();
        self.child = false;
        let end = match self.below(100) {
            0..=49 => ChildEnd::Drain,
            50..=84 => ChildEnd::ExitBusy,
            _ => ChildEnd::Exit,
        };
        Op::Fork { tag, end, ops }
    }

    fn arg(&mut self) -> Arg {
        // Offsets: any 8-byte slot of the scratch page (512 of them).
        let off = self.below(512) as Pick;
        let place = match self.below(100) {
            0..=84 => Place::Normal(off),
            85..=89 => Place::ReadOnly(off),
            90..=93 => Place::Straddle(off),
            94..=96 => Place::Null,
            _ => Place::Wild(self.below(4) as u8),
        };
        let size = match self.below(100) {
            0..=74 => Size::V1,
            75..=82 => Size::Above(self.below(64) as u16),
            83..=85 => Size::Far(self.below(8192) as u16),
            86..=88 => Size::Max,
            89..=95 => Size::Below(self.pick()),
            _ => Size::Zero,
        };
        let bits = self.chance(10).then(|| self.below(0x4000) as u16);
        Arg { place, size, bits }
    }

    fn ring_pages(&mut self) -> Pages {
        if self.chance(65) {
            Pages::Whole
        } else {
            Pages::Part { first: self.below(RING_PAGES as u64) as u8, count: self.below(RING_PAGES as u64) as u8 }
        }
    }

    fn unknown_cmd(&mut self) -> u64 {
        let magic = u64::from(WARPQ_IOC_MAGIC);
        let size = self.below(0x4000);
        match self.below(5) {
            // Our type, numbers past the last ioctl.
            0 | 1 => (3 << 30) | (size << 16) | (magic << 8) | (7 + self.below(249)),
            // Our numbers with another direction.
            2 => (self.below(3) << 30) | (size << 16) | (magic << 8) | self.below(7),
            // Neighbouring types no VFS ioctl uses.
            3 => (3 << 30) | (size << 16) | ((magic + 1) << 8) | self.below(256),
            // A terminal ioctl.
            #[allow(clippy::unnecessary_cast)] // c_ulong: u64 here, u32 elsewhere
            _ => libc::TCGETS as u64,
        }
    }

    fn len(&mut self) -> u64 {
        match self.below(100) {
            0..=44 => 1 + self.below(512),
            45..=64 => 1 + self.below(PAGE64),
            65..=79 => PAGE64 * (1 + self.below(16)),
            80..=84 => 0,
            85..=87 => MAX_CMD + 1 + self.below(1 << 20),
            88..=89 => u64::MAX - self.below(4096),
            90..=91 => MAX_CMD,
            _ => 1 + self.below(64 * PAGE64),
        }
    }

    fn addr(&mut self, write: bool) -> Addr {
        let off = self.below(1 << 32);
        match self.below(100) {
            0..=59 => Addr::InReg(self.pick(), off),
            60..=71 => Addr::RegEnd(self.pick(), off),
            72..=81 => Addr::InBuf(self.pick(), off),
            82..=87 => Addr::InTomb(self.pick(), off),
            88..=93 => {
                let weird = [0, u64::MAX - self.below(4096), KERNEL_ADDR + self.below(1 << 30), 0x1000, 1 << 47];
                Addr::Abs(weird[self.below(5) as usize])
            }
            94..=96 => Addr::Abs(self.rng.next_u64() | if write { 1 << 63 } else { 0 }),
            _ if write => Addr::Abs(0),
            _ => Addr::InRing(self.pick(), off),
        }
    }

    fn sqe(&mut self) -> Sqe {
        let opcode = match self.below(100) {
            0..=34 => WARPQ_OP_FILL,
            35..=59 => WARPQ_OP_COPY,
            60..=79 => WARPQ_OP_CRC32C,
            80..=89 => WARPQ_OP_NOP,
            _ => self.below(256) as u8,
        };
        let flags = match self.below(100) {
            0..=91 => 0,
            92..=96 => WARPQ_SQE_EDU_DMA,
            // Never UNORDERED: the oracle checks that completions come in
            // submission order (`warpq-user-check overtake` covers it).
            _ => self.below(256) as u8 & !WARPQ_SQE_UNORDERED,
        };
        let mut len = self.len();
        if flags == WARPQ_SQE_EDU_DMA && self.chance(70) {
            len = 1 + self.below(EDU_MAX);
        }
        let (src, dst) = (self.addr(false), self.addr(true));
        let edge = (opcode == WARPQ_OP_COPY && (flags == 0 || flags == WARPQ_SQE_EDU_DMA) && self.chance(30))
            .then(|| (self.pick(), self.pick()));
        let value = self.rng.next_u64();
        let rsvd = self.chance(3).then(|| match self.below(3) {
            0 => Rsvd::R0(1 + self.below(0xffff) as u16),
            1 => Rsvd::R1(1 + self.below(0xffff_fffe) as u32),
            _ => Rsvd::R2(self.below(2) as u8, 1 + self.below(u64::MAX - 1)),
        });
        Sqe { opcode, flags, len, src, dst, value, rsvd, edge }
    }
}

impl Op {
    /// The refused mapping for a roll of 80..100 (the fuzzer's split).
    fn refused_kind(v: u64) -> MapHow {
        MapHow::Refused(match v {
            80..=84 => 0,
            85..=87 => 1,
            88..=89 => 2,
            90..=94 => 3,
            _ => 4,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_a_function_of_the_seed() {
        assert_eq!(generate(7, 300), generate(7, 300));
        assert_ne!(generate(7, 300), generate(8, 300));
        let c = generate(7, 300);
        assert_eq!(c.ops.len(), 4 + 300 + 1);
        assert!(matches!(c.ops.last(), Some(Op::Finish { .. })));
    }

    #[test]
    fn children_never_fork_and_parents_never_exit_early() {
        for seed in 0..50 {
            for op in generate(seed, 300).ops {
                assert!(!matches!(op, Op::ExitNow {}));
                if let Op::Fork { ops, .. } = op {
                    assert!((3..=30).contains(&ops.len()));
                    assert!(ops.iter().all(|o| !matches!(o, Op::Fork { .. })));
                }
            }
        }
    }
}
