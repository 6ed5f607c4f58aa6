//! The fuzzer's operations: `Op` holds every choice a step makes, so that a
//! run is a `Vec<Op>` that can be saved, replayed and shrunk.
//!
//! Objects are named by *picks*, not by identity: a [`Pick`] is reduced
//! modulo the number of candidates when the operation is applied (files,
//! descriptors, buffers, rings, registrations, tombstones). Any subsequence
//! of a run is therefore a valid run too, which is what shrinking needs.
//! When an operation finds nothing to act on it either does nothing or runs
//! the fallback the module documentation of `apply` lists, with parameters
//! taken from its own fields.

/// An index resolved modulo the number of candidates at apply time.
pub type Pick = u32;

/// Where an ioctl argument is placed (`Pick`s choose offsets).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// In the read/write scratch page, at an 8-byte aligned offset, with
    /// canary bytes around it.
    Normal(Pick),
    /// In the read-only scratch page.
    ReadOnly(Pick),
    /// At the end of the read-only page, running into the PROT_NONE one.
    Straddle(Pick),
    /// A null pointer.
    Null,
    /// One of four unmapped or kernel addresses.
    Wild(u8),
}

/// The structure's declared `size` field, relative to its version 1 size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Size {
    /// Exactly version 1.
    V1,
    /// Version 1 plus `1 + n` bytes.
    Above(u16),
    /// Version 1 plus `n` bytes (up to 8 KiB).
    Far(u16),
    /// `u32::MAX`.
    Max,
    /// Smaller than version 1 (`pick % v1`).
    Below(Pick),
    /// Zero.
    Zero,
}

/// How an ioctl argument is passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arg {
    /// Where the structure lies.
    pub place: Place,
    /// Its declared size.
    pub size: Size,
    /// Random size bits in the ioctl number (14 bits), or the real number.
    pub bits: Option<u16>,
}

impl Arg {
    /// A well-formed argument: normal memory, the version 1 size.
    pub const PLAIN: Arg = Arg { place: Place::Normal(0), size: Size::V1, bits: None };
}

/// A run of consecutive mapped pages of a buffer (see `pick_mapped_run`):
/// a mapped page, then the run's first page and its length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    /// Which mapped page.
    pub at: Pick,
    /// First page, between the run's start and that page.
    pub first: Pick,
    /// Page count, up to the run's end.
    pub count: Pick,
}

/// A protection for `mprotect` of a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BufProt {
    /// `PROT_READ`.
    Rd,
    /// `PROT_NONE`.
    None,
    /// `PROT_READ | PROT_WRITE`.
    Rw,
}

/// A protection for `mprotect` of a ring mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingProt {
    /// `PROT_READ`.
    Rd,
    /// `PROT_NONE`.
    None,
    /// `PROT_READ | PROT_WRITE`.
    Rw,
    /// `PROT_READ | PROT_EXEC` (refused).
    RdExec,
}

/// How `mmap-ring` maps the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapHow {
    /// A shared mapping into a free window slot; `rw` asks for write access
    /// (refused on a read-only descriptor).
    Map {
        /// Which free slot.
        slot: Pick,
        /// Read/write, or read-only.
        rw: bool,
    },
    /// One of five mappings the driver must refuse (private, too long,
    /// too short, offset, executable).
    Refused(u8),
}

/// Which ring pages an operation covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pages {
    /// The whole mapping.
    Whole,
    /// `count` pages from `first` (both reduced to the mapping).
    Part {
        /// First page.
        first: u8,
        /// Pages.
        count: u8,
    },
}

/// How `mremap-ring` tries to change a queue mapping (always refused).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MremapHow {
    /// Move it onto a free window slot.
    Move(Pick),
    /// Grow it in place by a page.
    Grow,
    /// Shrink it in place by `1 + k % (pages - 1)` pages.
    Shrink(u8),
}

/// The range a REGISTER names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegRange {
    /// The whole buffer.
    Whole,
    /// Some of its pages: the first (reduced to the buffer) and the count
    /// (reduced to the pages from there).
    Pages(Pick, Pick),
    /// The buffer and its guard page.
    PlusPage,
    /// The buffer's length from `1 + off % 4095` bytes in.
    Misaligned(u16),
    /// The buffer less `1 + by % 4095` bytes.
    Short(u16),
    /// Zero bytes.
    Zero,
    /// Two pages wrapping past the top of the address space.
    Overflow,
    /// One page more than the device allows.
    TooLarge,
    /// A tombstone (`0+4096` if there is none).
    Tomb(Pick),
    /// A fixed address and length.
    Abs(u64, u64),
    /// A ring mapping of any file (the whole buffer if there is none).
    Ring(Pick),
}

/// The handle an UNREGISTER names. A list that is empty falls through to
/// the next (live, dead, foreign, then handle 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handle {
    /// A live registration of the file.
    Live(Pick),
    /// One it unregistered before.
    Dead(Pick),
    /// The parent's (in a child).
    Foreign(Pick),
    /// A made-up value.
    Value(u64),
}

/// Where SUBMIT's entry array lies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubmitAt {
    /// On the heap, `count` = the entries.
    Heap,
    /// At the end of the read-only scratch page, `count` running `1 + n`
    /// entries past it into the PROT_NONE page (null if they do not fit).
    Scratch(u8),
    /// A null pointer and this count.
    Null(u32),
    /// A kernel address and this count.
    Kernel(u32),
}

/// A submission entry address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Addr {
    /// Inside a registration of the file (one the device may write for a
    /// destination), `off` reduced so the command fits if it can.
    InReg(Pick, u64),
    /// Straddling the end of a registration, `back` bytes before it.
    RegEnd(Pick, u64),
    /// Anywhere in a buffer.
    InBuf(Pick, u64),
    /// Anywhere in a tombstone.
    InTomb(Pick, u64),
    /// Anywhere in one of the file's ring mappings (sources only).
    InRing(Pick, u64),
    /// A fixed value.
    Abs(u64),
}

/// A reserved field of an entry set non-zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rsvd {
    /// `rsvd0`.
    R0(u16),
    /// `rsvd1`.
    R1(u32),
    /// `rsvd2[i]`.
    R2(u8, u64),
}

/// A submission entry as the fuzzer chose it; `user_data` is assigned when
/// it is applied (a counter, tagged by process).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sqe {
    /// `WARPQ_OP_*` or any byte.
    pub opcode: u8,
    /// `WARPQ_SQE_*` or any byte.
    pub flags: u8,
    /// Bytes.
    pub len: u64,
    /// Source.
    pub src: Addr,
    /// Destination.
    pub dst: Addr,
    /// FILL byte or CRC32C seed.
    pub value: u64,
    /// A reserved field set, if any.
    pub rsvd: Option<Rsvd>,
    /// The edu engine's edge: one whole page, page-aligned in a
    /// registration on both sides (picks of the source and destination
    /// registrations, then the page). Used when the entry goes to the edu
    /// engine.
    pub edge: Option<(Pick, Pick)>,
}

/// A garbage tail relative to the ring's `sq_head`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tail {
    /// Beyond the ring: head + entries + 1 + n.
    Far(u32),
    /// Behind the head: head - 1 - n.
    Behind(u32),
    /// Within the ring: head + n % (entries + 1).
    Near(u32),
    /// This value.
    Any(u32),
}

/// A ring header field the fuzzer overwrites.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HdrField {
    /// `cq_head` (the user's index: no STATS consequence).
    CqHead,
    /// `sq_head`.
    SqHead,
    /// `cq_tail`.
    CqTail,
    /// `flags`.
    Flags,
}

/// How the overwritten header field changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Plus `1 + n`.
    Add(u32),
    /// Minus `1 + n`.
    Sub(u32),
    /// This value.
    Set(u32),
}

/// How a forked child ends after its operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildEnd {
    /// Drains its queues and checks its buffers, then exits.
    Drain,
    /// Exits at once.
    Exit,
    /// Fills every sane ring with long FILLs, then exits.
    ExitBusy,
}

macro_rules! ops {
    ($( $(#[$m:meta])* $var:ident $text:literal { $($f:ident : $t:ty),* $(,)? } )*) => {
        /// One step of a run.
        #[derive(Clone, Debug, PartialEq, Eq)]
        #[allow(missing_docs)]
        pub enum Op {
            $( $(#[$m])* $var { $($f: $t),* }, )*
        }

        impl Op {
            /// The names of the operations as the ops file spells them.
            pub const NAMES: &'static [&'static str] = &[$($text),*];

            /// This operation's name.
            pub fn name(&self) -> &'static str {
                match self { $(Op::$var { .. } => $text,)* }
            }

            /// Appends ` key=value` for every field but nested operations.
            pub(crate) fn put_fields(&self, out: &mut String) {
                match self {
                    $(Op::$var { $($f),* } => {
                        $( super::text::put_field(out, stringify!($f), $f); )*
                    })*
                }
            }

            /// Builds the operation `name` from its fields.
            pub(crate) fn from_fields(name: &str, f: &mut super::text::Fields) -> Result<Op, String> {
                match name {
                    $($text => Ok(Op::$var { $($f: f.take(stringify!($f))?),* }),)*
                    _ => Err(format!("unknown operation {name:?}")),
                }
            }
        }
    };
}

ops! {
    /// Opens the device again (read-only if `rdonly`).
    Open "open" { rdonly: bool }
    /// Duplicates a descriptor of a file that has one.
    Dup "dup" { file: Pick, fd: Pick }
    /// Closes a descriptor.
    Close "close" { file: Pick, fd: Pick }
    /// Maps a buffer of `pages` (fresh, or over a tombstone when `tomb`
    /// names one) and fills it from `seed`.
    NewBuf "new-buffer" { tomb: Option<Pick>, pages: u8, shared: bool, seed: u64 }
    /// Writes pages of a buffer from the CPU (when nothing else touches them).
    CpuWrite "cpu-write" { buf: Pick, first: Pick, count: Pick, seed: u64 }
    /// Compares a quiet buffer with the model.
    CpuVerify "cpu-verify" { buf: Pick }
    /// munmap of a buffer: whole, or a run of its pages.
    UnmapBuf "munmap-buffer" { buf: Pick, run: Option<Run> }
    /// mprotect of a run of a buffer's pages.
    MprotectBuf "mprotect-buffer" { buf: Pick, run: Run, prot: BufProt }
    /// mremap of a whole buffer to a new place, grown by `grow` pages when
    /// private (falls back to DONTNEED of `run` if split or protected).
    MremapBuf "mremap-buffer" { buf: Pick, grow: u8, run: Run }
    /// madvise(DONTNEED) of a run of a buffer's pages.
    DontneedBuf "dontneed-buffer" { buf: Pick, run: Run }
    /// mmap of the device (or a refused mmap).
    MapRing "mmap-ring" { file: Pick, fd: Pick, how: MapHow }
    /// munmap of a ring mapping (part of it is refused).
    UnmapRing "munmap-ring" { ring: Pick, pages: Pages }
    /// mprotect of a ring mapping.
    MprotectRing "mprotect-ring" { ring: Pick, pages: Pages, prot: RingProt }
    /// mremap of a ring mapping (refused).
    MremapRing "mremap-ring" { ring: Pick, how: MremapHow }
    /// madvise(DONTNEED) of a ring mapping.
    DontneedRing "dontneed-ring" { ring: Pick }
    /// WARPQ_IOC_INFO.
    Info "INFO" { file: Pick, fd: Pick, arg: Arg }
    /// WARPQ_IOC_STATS.
    Stats "STATS" { file: Pick, fd: Pick, arg: Arg }
    /// WARPQ_IOC_WAIT.
    Wait "WAIT" { file: Pick, fd: Pick, arg: Arg, min_ready: u32, timeout_ns: i64 }
    /// WARPQ_IOC_WAKE.
    Wake "WAKE" { file: Pick, fd: Pick, arg: Arg }
    /// An ioctl number the driver does not know.
    UnknownIoctl "unknown-ioctl" { file: Pick, fd: Pick, cmd: u64 }
    /// WARPQ_IOC_REGISTER of a range near a buffer.
    Register "REGISTER" { file: Pick, fd: Pick, buf: Pick, range: RegRange, access: u32, arg: Arg }
    /// WARPQ_IOC_UNREGISTER.
    Unregister "UNREGISTER" { file: Pick, fd: Pick, handle: Handle, arg: Arg }
    /// WARPQ_IOC_SUBMIT of entries.
    Submit "SUBMIT" { file: Pick, fd: Pick, sqes: Vec<Sqe>, at: SubmitAt, arg: Arg }
    /// Entries published through the ring's tail (or, on a garbage ring,
    /// written at `start` with the tail `tail` past the head, unless
    /// `resync`), then WAKE if the engine sleeps and `wake`.
    RingSubmit "ring-submit" { file: Pick, fd: Pick, sqes: Vec<Sqe>, wake: bool, resync: bool, start: u32, tail: u32 }
    /// Waits until the file's commands completed (resynchronises a garbage ring).
    Drain "drain" { file: Pick, fd: Pick }
    /// A garbage `sq_tail`.
    GarbageTail "garbage-tail" { file: Pick, tail: Tail }
    /// Overwrites a header index or the flags.
    CorruptHeader "corrupt-header" { file: Pick, field: HdrField, change: Change }
    /// Brings a garbage ring back to a known state (drains a sane one).
    Resync "resync" { file: Pick, fd: Pick }
    /// fork: the child runs `ops` on what it inherited, then ends as `end`
    /// says (the parent only; `ops` follow the line, indented).
    Fork "fork" { tag: u32, end: ChildEnd, ops: Vec<Op> }
    /// A child fills its rings with long FILLs and exits at once.
    ExitNow "child-exit" {}
    /// The end of a run: `abrupt` closes everything without draining;
    /// otherwise the files whose bit is set in `drain` are drained and those
    /// in `unregister` unregister every region before closing.
    Finish "finish" { abrupt: bool, drain: u8, unregister: u8 }
}

impl Op {
    /// This operation's index in [`Op::NAMES`].
    pub fn kind(&self) -> usize {
        let n = self.name();
        Self::NAMES.iter().position(|x| *x == n).unwrap_or(0)
    }

    /// The number of operations, nested ones included.
    pub fn count(ops: &[Op]) -> usize {
        ops.iter()
            .map(|o| match o {
                Op::Fork { ops, .. } => 1 + Op::count(ops),
                _ => 1,
            })
            .sum()
    }
}

/// A run: the user_data tag of the parent's commands and its operations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Case {
    /// The high 32 bits of the user_data the parent submits.
    pub tag: u32,
    /// The operations, in order.
    pub ops: Vec<Op>,
}
