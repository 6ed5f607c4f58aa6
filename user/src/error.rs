//! The crate's one error type: what was being done ([`Op`]), what went wrong
//! ([`ErrorKind`]), the errno the kernel gave (if any) and a hint that says
//! what to do about it.

use std::borrow::Cow;
use std::fmt;
use std::io;

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What the crate was doing when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Op {
    /// Opening the device file.
    Open,
    /// `WARPQ_IOC_INFO`.
    Info,
    /// Mapping the queue ring (`mmap`).
    MapQueue,
    /// Allocating a [`Buffer`](crate::Buffer) (`mmap`).
    Alloc,
    /// `WARPQ_IOC_REGISTER`.
    Register,
    /// `WARPQ_IOC_UNREGISTER`.
    Unregister,
    /// Publishing submissions (the ring, or `WARPQ_IOC_SUBMIT`).
    Submit,
    /// `WARPQ_IOC_WAIT`.
    Wait,
    /// `WARPQ_IOC_WAKE`.
    Wake,
    /// `WARPQ_IOC_STATS`.
    Stats,
    /// `WARPQ_IOC_EVENTFD`.
    EventFd,
    /// `poll(2)` on the device file, or waiting in an async runtime.
    Poll,
    /// Reading or writing the driver's sysfs/debugfs files.
    Sysfs,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Open => "open",
            Op::Info => "WARPQ_IOC_INFO",
            Op::MapQueue => "mmap of the queue ring",
            Op::Alloc => "buffer allocation",
            Op::Register => "WARPQ_IOC_REGISTER",
            Op::Unregister => "WARPQ_IOC_UNREGISTER",
            Op::Submit => "submit",
            Op::Wait => "WARPQ_IOC_WAIT",
            Op::Wake => "WARPQ_IOC_WAKE",
            Op::Stats => "WARPQ_IOC_STATS",
            Op::EventFd => "WARPQ_IOC_EVENTFD",
            Op::Poll => "poll of the device file",
            Op::Sysfs => "sysfs",
        })
    }
}

/// What went wrong, for code that wants to react to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// No such device file (driver not loaded, no device bound, wrong path).
    NotFound,
    /// The file exists but may not be opened or written (permissions).
    PermissionDenied,
    /// The file is not a warpq device (it does not answer `WARPQ_IOC_INFO`).
    NotWarpq,
    /// The driver speaks another ABI version than this crate.
    AbiVersion,
    /// The [`Queue`](crate::Queue) was made by another process: this process
    /// forked from it. Call [`Device::queue`](crate::Device::queue) here.
    Forked,
    /// The memory does not start or end on a page boundary.
    Unaligned,
    /// Zero bytes.
    Empty,
    /// More bytes than the device accepts (per buffer or per command).
    TooLarge,
    /// The memory could not be pinned: unmapped, or read-only while the
    /// device was to write it.
    BadMemory,
    /// The memory overlaps a buffer this queue already has registered.
    Overlap,
    /// The queue's region table is full.
    TooManyRegions,
    /// This user already has as many queues on the device as the driver
    /// allows (`EDQUOT`; module parameter `max_queues_per_user`).
    TooManyQueues,
    /// No registered buffer has this handle.
    NoSuchRegion,
    /// The device did not drain in time; try again.
    Busy,
    /// This process already has a [`Queue`](crate::Queue) on this device file.
    InUse,
    /// A signal interrupted a blocking call.
    Interrupted,
    /// The queue or its device is gone (process exiting, device unbound).
    QueueGone,
    /// The kernel ran out of memory.
    OutOfMemory,
    /// The driver file this needs does not exist (feature not in this driver).
    Unsupported,
    /// Any other invalid argument.
    InvalidArgument,
    /// Anything else; see [`Error::errno`].
    Other,
}

/// An error from the warpq crate: what was being done, the errno (when the
/// kernel gave one) and what was wrong, in words.
///
/// `Display` prints all three, e.g.
/// `WARPQ_IOC_REGISTER: address 0x7f3a00000010 is not page aligned: a
/// registered buffer must start and end on a page boundary (allocate it with
/// warpq::Buffer) [EINVAL: Invalid argument]`.
#[derive(Debug, Clone)]
pub struct Error {
    op: Op,
    kind: ErrorKind,
    errno: Option<i32>,
    hint: Cow<'static, str>,
}

impl Error {
    /// An error with every part given.
    pub(crate) fn new(op: Op, kind: ErrorKind, errno: Option<i32>, hint: impl Into<Cow<'static, str>>) -> Self {
        Self { op, kind, errno, hint: hint.into() }
    }

    /// An error for `errno` from `op`, with the generic meaning of that errno
    /// for that operation (callers that know more use [`Error::new`]).
    pub(crate) fn from_errno(op: Op, errno: i32) -> Self {
        let (kind, hint): (ErrorKind, &'static str) = match (op, errno) {
            (_, libc::EINTR) => (ErrorKind::Interrupted, "interrupted by a signal; call again"),
            (_, libc::ENOMEM) if op != Op::Register => (ErrorKind::OutOfMemory, "the kernel is out of memory"),
            (Op::Open | Op::Sysfs, libc::ENOENT) => {
                (ErrorKind::NotFound, "no such file: is warpq.ko loaded and a device bound? (`warpqctl list`)")
            }
            (_, libc::EACCES | libc::EPERM) => (ErrorKind::PermissionDenied, "permission denied (run as root?)"),
            (Op::Info, libc::ENOTTY | libc::EINVAL) => {
                (ErrorKind::NotWarpq, "not a warpq device: it does not answer WARPQ_IOC_INFO")
            }
            (Op::MapQueue, libc::EINVAL) => (
                ErrorKind::InvalidArgument,
                "the driver refused the mapping (it must be MAP_SHARED, read/write, WARPQ_RING_SIZE bytes at offset 0)",
            ),
            (Op::Register, libc::EINVAL) => (
                ErrorKind::InvalidArgument,
                "the driver refused the range: it must be page aligned, non-empty, within the size limit, \
                 with read and/or write access",
            ),
            (Op::Register, libc::EFAULT | libc::ENOMEM) => (
                ErrorKind::BadMemory,
                "the pages could not be pinned: the range is not mapped, or is read-only while the device \
                 may write it (Access::Write/ReadWrite)",
            ),
            (Op::Register, libc::EEXIST) => {
                (ErrorKind::Overlap, "the range overlaps a buffer this queue already has registered")
            }
            (Op::Register, libc::E2BIG) => (
                ErrorKind::TooLarge,
                "the range is larger than the device takes per registered buffer (WARPQ_IOC_INFO max_region_bytes)",
            ),
            (Op::Register, libc::ENOSPC) => (
                ErrorKind::TooManyRegions,
                "this queue's region table is full (WARPQ_IOC_INFO max_regions): drop a registration first",
            ),
            (Op::Unregister, libc::ENOENT | libc::EINVAL) => {
                (ErrorKind::NoSuchRegion, "no registered buffer has this handle (already unregistered?)")
            }
            (Op::EventFd, libc::EBADF | libc::EINVAL) => {
                (ErrorKind::InvalidArgument, "the descriptor is not an open eventfd (eventfd(2))")
            }
            (_, libc::EDQUOT) => (
                ErrorKind::TooManyQueues,
                "this user has as many queues on the device as it may (module parameter max_queues_per_user): \
                 close a device file in another process, or ask for a higher limit",
            ),
            (_, libc::EBUSY) => (ErrorKind::Busy, "the device did not drain in time; try again"),
            (_, libc::ESRCH) => (ErrorKind::QueueGone, "this process's queue is being torn down (exiting?)"),
            (_, libc::ENODEV | libc::ENXIO | libc::EIO) => {
                (ErrorKind::QueueGone, "the device is gone (unbound or removed): open one again (`warpqctl list`)")
            }
            (_, libc::ENOTTY) => (ErrorKind::Other, "the driver does not know this request (older driver?)"),
            (_, libc::EINVAL) => (ErrorKind::InvalidArgument, "invalid argument"),
            (_, libc::EAGAIN) => (ErrorKind::Busy, "the device is busy rebuilding its mappings; try again"),
            _ => (ErrorKind::Other, "the system call failed"),
        };
        Self::new(op, kind, Some(errno), hint)
    }

    /// `from_errno` with the calling thread's errno.
    pub(crate) fn last_os(op: Op) -> Self {
        Self::from_io(op, &io::Error::last_os_error())
    }

    /// From an `io::Error` (an errno if it carries one).
    pub(crate) fn from_io(op: Op, e: &io::Error) -> Self {
        match e.raw_os_error() {
            Some(errno) => Self::from_errno(op, errno),
            None => Self::new(op, ErrorKind::Other, None, e.to_string()),
        }
    }

    /// Replaces the hint (keeps op, kind and errno).
    pub(crate) fn with_hint(mut self, hint: impl Into<Cow<'static, str>>) -> Self {
        self.hint = hint.into();
        self
    }

    /// Replaces the kind and the hint.
    pub(crate) fn with(mut self, kind: ErrorKind, hint: impl Into<Cow<'static, str>>) -> Self {
        self.kind = kind;
        self.hint = hint.into();
        self
    }

    /// What the crate was doing.
    pub fn op(&self) -> Op {
        self.op
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The errno the kernel returned, if the error came from a system call.
    pub fn errno(&self) -> Option<i32> {
        self.errno
    }

    /// What was wrong and what to do about it, in words.
    pub fn hint(&self) -> &str {
        &self.hint
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.op, self.hint)?;
        if let Some(errno) = self.errno {
            write!(f, " [{}: {}]", errno_name(errno).unwrap_or("errno"), strerror(errno))?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

impl From<Error> for io::Error {
    fn from(e: Error) -> Self {
        let kind = match e.kind {
            ErrorKind::NotFound => io::ErrorKind::NotFound,
            ErrorKind::PermissionDenied => io::ErrorKind::PermissionDenied,
            ErrorKind::Interrupted => io::ErrorKind::Interrupted,
            ErrorKind::OutOfMemory => io::ErrorKind::OutOfMemory,
            ErrorKind::Unsupported | ErrorKind::AbiVersion | ErrorKind::NotWarpq => io::ErrorKind::Unsupported,
            ErrorKind::Unaligned | ErrorKind::Empty | ErrorKind::TooLarge | ErrorKind::InvalidArgument => {
                io::ErrorKind::InvalidInput
            }
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}

/// The symbolic name of an errno, for the ones this driver can return.
pub fn errno_name(errno: i32) -> Option<&'static str> {
    Some(match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::E2BIG => "E2BIG",
        libc::ESRCH => "ESRCH",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::ENODEV => "ENODEV",
        libc::EINVAL => "EINVAL",
        libc::ENOSPC => "ENOSPC",
        libc::EDQUOT => "EDQUOT",
        libc::ENOTTY => "ENOTTY",
        libc::ENOSYS => "ENOSYS",
        libc::EOVERFLOW => "EOVERFLOW",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        _ => return None,
    })
}

/// The C library's description of an errno, without Rust's "(os error N)".
fn strerror(errno: i32) -> String {
    let s = io::Error::from_raw_os_error(errno).to_string();
    match s.rfind(" (os error ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_op_hint_and_errno() {
        let e = Error::from_errno(Op::Register, libc::ENOSPC);
        assert_eq!(e.kind(), ErrorKind::TooManyRegions);
        assert_eq!(e.errno(), Some(libc::ENOSPC));
        let s = e.to_string();
        assert!(s.starts_with("WARPQ_IOC_REGISTER: this queue's region table is full"), "{s}");
        assert!(s.ends_with("[ENOSPC: No space left on device]"), "{s}");
    }

    #[test]
    fn not_a_device() {
        let e = Error::from_errno(Op::Info, libc::ENOTTY);
        assert_eq!(e.kind(), ErrorKind::NotWarpq);
        assert!(e.to_string().contains("not a warpq device"));
    }

    #[test]
    fn errors_without_errno_print_no_bracket() {
        let e = Error::new(Op::Submit, ErrorKind::Forked, None, "forked");
        assert_eq!(e.to_string(), "submit: forked");
    }

    #[test]
    fn converts_to_io_error_keeping_the_message() {
        let e: io::Error = Error::from_errno(Op::Open, libc::ENOENT).into();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(e.to_string().contains("warpqctl list"));
    }

    #[test]
    fn every_errno_name_is_distinct() {
        let mut names: Vec<_> = (1..200).filter_map(errno_name).collect();
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n);
    }
}
