//! Submission entries ([`Entry`], built with [`opcode`]),
//! completions ([`Completion`]) and their [`Status`].

use std::fmt;

use crate::sys;

/// A submission entry: one command for the device (`struct warpq_sqe`).
///
/// Build one with the [`opcode`] builders and tag it with
/// [`Entry::user_data`]; the completion carries the same tag back:
///
/// ```
/// use warpq::opcode;
/// let e = opcode::Fill::new(0x7000_0000, 4096, 0xaa).build().user_data(7);
/// assert_eq!(e.get_user_data(), 7);
/// ```
///
/// Addresses are the submitting process's virtual addresses inside buffers
/// registered with its queue. An address outside them completes with a
/// fault [`Status`] and touches nothing, so building and pushing entries is
/// safe: what the device may touch is decided by the registrations.
#[repr(transparent)]
#[derive(Clone, Copy, Default)]
pub struct Entry(pub(crate) sys::warpq_sqe);

impl Entry {
    /// Sets the tag echoed in this command's completion.
    #[must_use]
    pub fn user_data(mut self, user_data: u64) -> Self {
        self.0.user_data = user_data;
        self
    }

    /// Lets this command complete before earlier commands that wait for
    /// the rebuild of memory an invalidation took from the device
    /// (`WARPQ_SQE_UNORDERED`), unless it touches a chunk one of them
    /// touches: commands on the same memory keep their order. Without it,
    /// commands complete in submission order, and one that waits for a
    /// rebuild holds up those behind it. Match completions by
    /// [`Entry::user_data`].
    #[must_use]
    pub fn unordered(mut self) -> Self {
        self.0.flags |= sys::WARPQ_SQE_UNORDERED;
        self
    }

    /// The tag set with [`Entry::user_data`].
    pub fn get_user_data(&self) -> u64 {
        self.0.user_data
    }

    /// The opcode (`sys::WARPQ_OP_*`).
    pub fn opcode(&self) -> u8 {
        self.0.opcode
    }

    /// An entry with exactly these bytes (for tests of the driver's checks:
    /// unknown opcodes, reserved fields...).
    pub fn from_raw(raw: sys::warpq_sqe) -> Self {
        Self(raw)
    }

    /// The ABI structure.
    pub fn as_raw(&self) -> &sys::warpq_sqe {
        &self.0
    }
}

impl From<sys::warpq_sqe> for Entry {
    fn from(raw: sys::warpq_sqe) -> Self {
        Self(raw)
    }
}

impl From<&sys::warpq_sqe> for Entry {
    fn from(raw: &sys::warpq_sqe) -> Self {
        Self(*raw)
    }
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = &self.0;
        let name = match e.opcode {
            sys::WARPQ_OP_NOP => "Nop",
            sys::WARPQ_OP_COPY => "Copy",
            sys::WARPQ_OP_FILL => "Fill",
            sys::WARPQ_OP_CRC32C => "Crc32c",
            _ => "Unknown",
        };
        f.debug_struct("Entry")
            .field("op", &format_args!("{name}({})", e.opcode))
            .field("flags", &e.flags)
            .field("user_data", &e.user_data)
            .field("src", &format_args!("{:#x}", e.src))
            .field("dst", &format_args!("{:#x}", e.dst))
            .field("len", &e.len)
            .field("value", &format_args!("{:#x}", e.value))
            .finish()
    }
}

/// How a command completed (`WARPQ_STATUS_*` in `driver/uapi/warpq.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// Done.
    Ok,
    /// Unknown opcode, bad flags, a reserved field set, zero or too long.
    Invalid,
    /// An address is not inside any buffer registered with this queue.
    FaultUnregistered,
    /// The range crosses the end of its registered buffer.
    FaultBounds,
    /// The buffer is not registered for this access (e.g. writing a
    /// buffer registered read-only).
    FaultAccess,
    /// The buffer is gone (munmap...) and could not be rebuilt.
    FaultUnmapped,
    /// The DMA address did not translate (IOMMU or DMA mask).
    FaultIommu,
    /// The queue was reset (drain timeout, close, exit) before the command ran.
    Aborted,
    /// The device (the edu DMA engine) reported an error.
    DeviceError,
    /// The buffer's pages could not be made reachable for the device for
    /// want of memory (over `RLIMIT_MEMLOCK` under the `pin` backing, out of
    /// memory, no device addresses left); only commands that waited for
    /// that part of the buffer fail, and a later command may succeed.
    FaultNoMemory,
    /// A status this crate does not know (a newer driver).
    Unknown(u32),
}

impl Status {
    /// From the `status` field of a completion.
    pub fn from_raw(raw: u32) -> Self {
        match raw {
            sys::WARPQ_STATUS_OK => Status::Ok,
            sys::WARPQ_STATUS_INVALID => Status::Invalid,
            sys::WARPQ_STATUS_FAULT_UNREGISTERED => Status::FaultUnregistered,
            sys::WARPQ_STATUS_FAULT_BOUNDS => Status::FaultBounds,
            sys::WARPQ_STATUS_FAULT_ACCESS => Status::FaultAccess,
            sys::WARPQ_STATUS_FAULT_UNMAPPED => Status::FaultUnmapped,
            sys::WARPQ_STATUS_FAULT_IOMMU => Status::FaultIommu,
            sys::WARPQ_STATUS_ABORTED => Status::Aborted,
            sys::WARPQ_STATUS_DEVICE_ERROR => Status::DeviceError,
            sys::WARPQ_STATUS_FAULT_NOMEM => Status::FaultNoMemory,
            other => Status::Unknown(other),
        }
    }

    /// The `WARPQ_STATUS_*` value.
    pub fn as_raw(self) -> u32 {
        match self {
            Status::Ok => sys::WARPQ_STATUS_OK,
            Status::Invalid => sys::WARPQ_STATUS_INVALID,
            Status::FaultUnregistered => sys::WARPQ_STATUS_FAULT_UNREGISTERED,
            Status::FaultBounds => sys::WARPQ_STATUS_FAULT_BOUNDS,
            Status::FaultAccess => sys::WARPQ_STATUS_FAULT_ACCESS,
            Status::FaultUnmapped => sys::WARPQ_STATUS_FAULT_UNMAPPED,
            Status::FaultIommu => sys::WARPQ_STATUS_FAULT_IOMMU,
            Status::Aborted => sys::WARPQ_STATUS_ABORTED,
            Status::DeviceError => sys::WARPQ_STATUS_DEVICE_ERROR,
            Status::FaultNoMemory => sys::WARPQ_STATUS_FAULT_NOMEM,
            Status::Unknown(raw) => raw,
        }
    }

    /// Whether the command succeeded.
    pub fn is_ok(self) -> bool {
        self == Status::Ok
    }
}

impl PartialEq<u32> for Status {
    fn eq(&self, raw: &u32) -> bool {
        self.as_raw() == *raw
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Status::Ok => f.write_str("ok"),
            Status::Invalid => {
                f.write_str("invalid command (unknown opcode, bad flags or reserved fields, zero or too long)")
            }
            Status::FaultUnregistered => f.write_str("address not in a buffer registered with this queue"),
            Status::FaultBounds => f.write_str("range crosses the end of its registered buffer"),
            Status::FaultAccess => f.write_str("buffer not registered for this access"),
            Status::FaultUnmapped => f.write_str("buffer gone (unmapped)"),
            Status::FaultIommu => f.write_str("DMA address did not translate"),
            Status::Aborted => f.write_str("aborted (queue reset)"),
            Status::DeviceError => f.write_str("device error"),
            Status::FaultNoMemory => f.write_str("out of memory for the buffer's pages"),
            Status::Unknown(raw) => write!(f, "unknown status {raw}"),
        }
    }
}

impl std::error::Error for Status {}

/// A completion: which command ([`Completion::user_data`]), how it went
/// ([`Completion::status`]) and its result (`struct warpq_cqe`).
#[repr(transparent)]
#[derive(Clone, Copy)]
pub struct Completion(pub(crate) sys::warpq_cqe);

impl Completion {
    /// The tag of the command this completes.
    pub fn user_data(&self) -> u64 {
        self.0.user_data
    }

    /// How it completed.
    pub fn status(&self) -> Status {
        Status::from_raw(self.0.status)
    }

    /// The result: bytes done for COPY and FILL, the CRC for CRC32C
    /// (0 unless the status is [`Status::Ok`]).
    pub fn result(&self) -> u64 {
        self.0.result
    }

    /// `Ok(result)` on success, `Err(status)` otherwise.
    pub fn into_result(self) -> Result<u64, Status> {
        match self.status() {
            Status::Ok => Ok(self.0.result),
            s => Err(s),
        }
    }

    /// The ABI structure.
    pub fn into_raw(self) -> sys::warpq_cqe {
        self.0
    }

    /// From the ABI structure.
    pub fn from_raw(raw: sys::warpq_cqe) -> Self {
        Self(raw)
    }
}

impl fmt::Debug for Completion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Completion")
            .field("user_data", &self.user_data())
            .field("status", &self.status())
            .field("result", &format_args!("{:#x}", self.result()))
            .finish()
    }
}

/// Typed builders for every command, in the io-uring crate's shape:
/// `opcode::X::new(..).option(..).build()` gives an [`Entry`].
///
/// ```
/// use warpq::opcode;
/// let copy = opcode::Copy::new(0x1000_0000, 0x2000_0000, 4096).edu_dma(true).build().user_data(1);
/// let crc = opcode::Crc32c::new(0x1000_0000, 4096).seed(0).build().user_data(2);
/// # let _ = (copy, crc);
/// ```
pub mod opcode {
    use super::Entry;
    use crate::sys;

    fn entry(opcode: u8) -> sys::warpq_sqe {
        sys::warpq_sqe { opcode, ..Default::default() }
    }

    /// Does nothing and touches no memory; completes with [`Status::Ok`](super::Status::Ok).
    #[derive(Debug, Clone, Copy, Default)]
    pub struct Nop;

    impl Nop {
        /// A NOP.
        pub fn new() -> Self {
            Nop
        }

        /// The entry.
        pub fn build(self) -> Entry {
            Entry(entry(sys::WARPQ_OP_NOP))
        }
    }

    /// Copies `len` bytes from `src` to `dst` (result: `len`). `src` must be
    /// in a buffer registered readable, `dst` in one registered writable.
    #[derive(Debug, Clone, Copy)]
    pub struct Copy {
        src: u64,
        dst: u64,
        len: u64,
        edu_dma: bool,
    }

    impl Copy {
        /// A copy done by the driver's engine.
        pub fn new(src: u64, dst: u64, len: u64) -> Self {
            Self { src, dst, len, edu_dma: false }
        }

        /// Whether the edu device's own DMA engine does the copy (real
        /// device DMA through the IOMMU; at most 4 KiB, needs
        /// `sys::WARPQ_CAP_EDU_DMA`; slow: about 100 ms per transfer).
        pub fn edu_dma(mut self, on: bool) -> Self {
            self.edu_dma = on;
            self
        }

        /// The entry.
        pub fn build(self) -> Entry {
            let mut e = entry(sys::WARPQ_OP_COPY);
            e.src = self.src;
            e.dst = self.dst;
            e.len = self.len;
            e.flags = if self.edu_dma { sys::WARPQ_SQE_EDU_DMA } else { 0 };
            Entry(e)
        }
    }

    /// Sets `len` bytes at `dst` to `byte` (result: `len`). `dst` must be in
    /// a buffer registered writable.
    #[derive(Debug, Clone, Copy)]
    pub struct Fill {
        dst: u64,
        len: u64,
        byte: u8,
    }

    impl Fill {
        /// A fill.
        pub fn new(dst: u64, len: u64, byte: u8) -> Self {
            Self { dst, len, byte }
        }

        /// The entry.
        pub fn build(self) -> Entry {
            let mut e = entry(sys::WARPQ_OP_FILL);
            e.dst = self.dst;
            e.len = self.len;
            e.value = u64::from(self.byte);
            Entry(e)
        }
    }

    /// CRC-32C (Castagnoli) of `len` bytes at `src` (result: the CRC, as
    /// [`crc32c`](crate::crc32c) computes it). `src` must be in a buffer
    /// registered readable. Chain pieces with [`Crc32c::seed`]: the CRC of
    /// `a ‖ b` is the CRC of `b` seeded with the CRC of `a`.
    #[derive(Debug, Clone, Copy)]
    pub struct Crc32c {
        src: u64,
        len: u64,
        seed: u32,
    }

    impl Crc32c {
        /// A CRC with seed 0 (the standard checksum).
        pub fn new(src: u64, len: u64) -> Self {
            Self { src, len, seed: 0 }
        }

        /// Continues from the CRC of the bytes before these.
        pub fn seed(mut self, seed: u32) -> Self {
            self.seed = seed;
            self
        }

        /// The entry.
        pub fn build(self) -> Entry {
            let mut e = entry(sys::WARPQ_OP_CRC32C);
            e.src = self.src;
            e.len = self.len;
            e.value = u64::from(self.seed);
            Entry(e)
        }
    }

    macro_rules! into_entry {
        ($($t:ty),*) => {$(
            impl From<$t> for Entry {
                fn from(b: $t) -> Entry {
                    b.build()
                }
            }
        )*};
    }
    into_entry!(Nop, Copy, Fill, Crc32c);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_fill_the_abi_fields() {
        let c = opcode::Copy::new(1, 2, 3).build().user_data(9);
        let r = c.as_raw();
        assert_eq!((r.opcode, r.flags, r.src, r.dst, r.len, r.user_data), (sys::WARPQ_OP_COPY, 0, 1, 2, 3, 9));
        let c = opcode::Copy::new(1, 2, 3).edu_dma(true).build();
        assert_eq!(c.as_raw().flags, sys::WARPQ_SQE_EDU_DMA);
        let u = c.unordered();
        assert_eq!(u.as_raw().flags, sys::WARPQ_SQE_EDU_DMA | sys::WARPQ_SQE_UNORDERED);
        let f = opcode::Fill::new(0x5000, 64, 0xaa).build();
        let r = f.as_raw();
        assert_eq!((r.opcode, r.dst, r.len, r.value, r.src), (sys::WARPQ_OP_FILL, 0x5000, 64, 0xaa, 0));
        let k = opcode::Crc32c::new(0x6000, 10).seed(0xdead_beef).build();
        let r = k.as_raw();
        assert_eq!((r.opcode, r.src, r.len, r.value), (sys::WARPQ_OP_CRC32C, 0x6000, 10, 0xdead_beef));
        let n: Entry = opcode::Nop::new().into();
        assert_eq!(n.opcode(), sys::WARPQ_OP_NOP);
        assert_eq!(n.as_raw().rsvd2, [0, 0]);
    }

    #[test]
    fn status_round_trips_every_value() {
        for raw in 0..20u32 {
            let s = Status::from_raw(raw);
            assert_eq!(s.as_raw(), raw);
            assert_eq!(s, raw);
            assert_eq!(matches!(s, Status::Unknown(_)), raw > sys::WARPQ_STATUS_FAULT_NOMEM);
        }
        assert!(Status::Ok.is_ok() && !Status::Aborted.is_ok());
        assert_eq!(Status::from_raw(sys::WARPQ_STATUS_FAULT_IOMMU), Status::FaultIommu);
    }

    #[test]
    fn completion_accessors() {
        let c = Completion(sys::warpq_cqe { user_data: 5, status: 0, result: 42, ..Default::default() });
        assert_eq!(c.into_result(), Ok(42));
        let c =
            Completion(sys::warpq_cqe { user_data: 5, status: sys::WARPQ_STATUS_FAULT_BOUNDS, ..Default::default() });
        assert_eq!(c.into_result(), Err(Status::FaultBounds));
        assert!(format!("{c:?}").contains("FaultBounds"));
    }
}
