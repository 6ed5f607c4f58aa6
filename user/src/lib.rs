//! warpq: drive a warpq accelerator queue from user space, with no system
//! call per command.
//!
//! The warpq driver gives each process its own queue on a device: a ring
//! of submissions and completions mapped into the process, and a table of
//! buffers the device may touch (pinned and mapped for the device, kept
//! correct by the driver across fork, munmap, migration...). This crate is
//! its user-space side, in the shape of the `io-uring` crate.
//!
//! The crate's first example, `examples/quickstart.rs` (the guest runs it
//! as `warpq-example-quickstart`):
//!
#![doc = concat!("```no_run\n", include_str!("../examples/quickstart.rs"), "```")]
//!
//! # What is where
//!
//! - Devices: [`devices`], [`Device::open`], [`Device::info`].
//! - The ring: [`Queue`] with its [`SubmissionQueue`], [`CompletionQueue`]
//!   and [`Submitter`] sides; commands built with [`opcode`] into
//!   [`Entry`]s; results as [`Completion`]s with a [`Status`].
//! - Memory the device may touch: owned [`Buffer`]s registered as
//!   [`RegisteredBuffer`]s ([`Device::alloc`], [`Device::register_buffer`],
//!   [`Device::register_mmap`] for a mapping the program has);
//!   borrowed memory registered in a [`Scope`] ([`Device::scope`]);
//!   [`Device::register_raw`] as the `unsafe` escape hatch.
//! - Errors: one [`Error`] type with the [`Op`], the errno and a hint.
//! - Tools: [`sysfs`] (what `warpqctl` reads), [`sys`] (the raw ABI).
//!
//! # Safety model
//!
//! The device touches only memory registered with the submitting
//! process's queue; any other address completes with a fault [`Status`].
//! So pushing entries is safe whatever they say, and memory safety rests
//! on registration: registered memory is owned by a [`RegisteredBuffer`] or
//! borrowed by a [`Registration`] whose [`Scope`] unregisters it before the
//! borrow ends, and `WARPQ_IOC_UNREGISTER` returns only when the device no
//! longer touches it.
//!
//! # Memory ordering
//!
//! Each ring index has one writer; the writer publishes an index with a
//! store-release after writing the entries it covers, the reader loads it
//! with a load-acquire before reading them, and a SeqCst fence separates
//! publishing the submission tail from reading the engine's need-wakeup
//! flag. The `ring` module's source comments each access.
//!
//! # Dependencies
//!
//! `libc`, and `memmap2` for buffers: [`Device::register_mmap`] registers
//! the `MmapMut` a program already has (a memfd, a shared file) and
//! [`Buffer::huge`] maps huge pages.

#![warn(missing_docs)]

#[cfg(feature = "tokio")]
mod async_queue;
mod buffer;
mod device;
mod entry;
mod error;
mod queue;
mod ring;
pub mod scope;
pub mod sys;
pub mod sysfs;

use std::path::Path;

#[cfg(feature = "tokio")]
pub use async_queue::AsyncQueue;
pub use buffer::{page_size, Access, Backing, Buffer, RegisteredBuffer, HUGE_PAGE_SIZE};
pub use device::{Device, QueueMapping};
pub use entry::{opcode, Completion, Entry, Status};
pub use error::{errno_name, Error, ErrorKind, Op, Result};
/// The mapping crate the buffers are built on ([`Device::register_mmap`] takes its `MmapMut`).
pub use memmap2;
pub use queue::Queue;
pub use ring::{CompletionQueue, PushError, SubmissionQueue, Submitter};
pub use scope::{Registration, Scope, SharedRegistration};
pub use sysfs::DeviceInfo;

/// Where the PCI core lists the devices bound to the warpq driver.
pub const SYSFS_DRIVER_DIR: &str = sysfs::DRIVER_DIR;

/// The largest command the engine takes, in bytes (4 MiB): longer ones
/// complete with [`Status::Invalid`]. (Not reported by `WARPQ_IOC_INFO`.)
pub const MAX_COMMAND_BYTES: u64 = 4 << 20;

/// The largest edu-DMA copy ([`opcode::Copy::edu_dma`]): the edu device's
/// 4 KiB buffer.
pub const MAX_EDU_DMA_BYTES: u64 = 4096;

/// Lists the devices bound to the warpq driver, sorted by PCI address.
///
/// Returns an empty list when the driver is not loaded.
pub fn devices() -> Result<Vec<DeviceInfo>> {
    sysfs::Sysfs::system().devices()
}

/// Lists the devices in a driver directory laid out as sysfs does.
pub fn devices_in(driver_dir: &Path) -> Result<Vec<DeviceInfo>> {
    sysfs::devices_in(driver_dir)
}

/// CRC-32C (Castagnoli) as the device computes it for `WARPQ_OP_CRC32C`
/// with `seed` as the seed (0 for the standard checksum). Chains:
/// `crc32c(crc32c(0, a), b) == crc32c(0, a ‖ b)`.
pub fn crc32c(seed: u32, data: &[u8]) -> u32 {
    let mut crc = !seed;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0x82f6_3b78 } else { crc >> 1 };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opening_a_file_that_is_not_a_warpq_device_says_so() {
        let err = Device::open("/dev/null").unwrap_err();
        assert_eq!(err.errno(), Some(libc::ENOTTY));
        assert_eq!(err.kind(), ErrorKind::NotWarpq);
        assert!(err.to_string().contains("/dev/null: not a warpq device"), "{err}");
    }

    #[test]
    fn opening_a_missing_device_points_at_the_driver() {
        let err = Device::open("/nonexistent/warpq9").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert!(err.to_string().contains("is warpq.ko loaded"), "{err}");
    }

    #[test]
    fn crc32c_check_value_and_chaining() {
        // The standard check value of CRC-32C.
        assert_eq!(crc32c(0, b"123456789"), 0xe306_9283);
        assert_eq!(crc32c(0, b""), 0);
        assert_eq!(crc32c(crc32c(0, b"1234"), b"56789"), 0xe306_9283);
    }

    #[test]
    fn the_public_types_can_cross_threads_where_they_should() {
        fn send<T: Send>() {}
        fn sync<T: Sync>() {}
        send::<Device>();
        sync::<Device>();
        send::<Queue<'static>>();
        send::<Buffer>();
        sync::<Buffer>();
        send::<Registration<'static>>();
        send::<Error>();
        sync::<Error>();
    }
}

/// The README's example compiles (`cargo test --doc`).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
