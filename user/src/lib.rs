//! warpq: drive a warpq accelerator queue from user space.
//!
//! This crate grows with the driver. Today: finding the devices the driver
//! bound ([`devices`]), opening one ([`Device::open`]), asking what it offers
//! ([`Device::info`]) and mapping its queue ([`Device::map_queue`]).

#![warn(missing_docs)]

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

mod queue;
pub mod sys;

pub use queue::{PushError, Queue};

/// Where the PCI core lists the devices bound to the warpq driver.
pub const SYSFS_DRIVER_DIR: &str = "/sys/bus/pci/drivers/warpq";

/// A PCI device bound to the warpq driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The PCI address, e.g. `0000:00:03.0`.
    pub pci_address: String,
    /// The device's sysfs directory.
    pub sysfs_path: PathBuf,
}

/// Lists the devices bound to the warpq driver, sorted by PCI address.
///
/// Returns an empty list when the driver is not loaded.
pub fn devices() -> io::Result<Vec<DeviceInfo>> {
    match devices_in(Path::new(SYSFS_DRIVER_DIR)) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        other => other,
    }
}

/// Lists the devices in a driver directory laid out as sysfs does (one entry
/// per bound device, named by its PCI address, beside `bind`, `unbind`, ...).
pub fn devices_in(driver_dir: &Path) -> io::Result<Vec<DeviceInfo>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(driver_dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_pci_address(&name) {
            found.push(DeviceInfo { sysfs_path: entry.path(), pci_address: name });
        }
    }
    found.sort_by(|a, b| a.pci_address.cmp(&b.pci_address));
    Ok(found)
}

/// `dddd:bb:dd.f`, all hex: what the PCI core names a device.
fn is_pci_address(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() == 12
        && b[4] == b':'
        && b[7] == b':'
        && b[10] == b'.'
        && b.iter().enumerate().all(|(i, c)| matches!(i, 4 | 7 | 10) || c.is_ascii_hexdigit())
}

/// An open warpq device (`/dev/warpqN`).
#[derive(Debug)]
pub struct Device {
    file: File,
}

impl Device {
    /// Opens a warpq device and checks that it speaks this crate's ABI.
    ///
    /// Opening a file that is not a warpq device fails with `ENOTTY`
    /// (it does not answer `WARPQ_IOC_INFO`).
    pub fn open(path: impl AsRef<Path>) -> io::Result<Self> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let dev = Self { file };
        let info = dev.info()?;
        if info.version != sys::WARPQ_UAPI_VERSION {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("warpq ABI version {} (this crate speaks {})", info.version, sys::WARPQ_UAPI_VERSION),
            ));
        }
        Ok(dev)
    }

    /// What the device and driver offer.
    pub fn info(&self) -> io::Result<sys::warpq_info> {
        let mut info = sys::warpq_info { size: std::mem::size_of::<sys::warpq_info>() as u32, ..Default::default() };
        self.ioctl(sys::WARPQ_IOC_INFO, &mut info)?;
        Ok(info)
    }

    /// Maps this process's queue ring (`WARPQ_RING_SIZE` bytes, shared).
    pub fn map_queue(&self) -> io::Result<QueueMapping> {
        // SAFETY: a fresh mapping at an address the kernel picks; nothing
        // else refers to it yet.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                sys::WARPQ_RING_SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                self.file.as_raw_fd(),
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(addr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(QueueMapping { base })
    }

    /// Maps this process's queue and returns its ring API.
    pub fn queue(&self) -> io::Result<Queue<'_>> {
        Ok(Queue::new(self, self.map_queue()?))
    }

    /// Registers `len` bytes at `addr` for device access (`sys::WARPQ_ACCESS_*`).
    ///
    /// # Safety
    ///
    /// The device may read (and, with `WARPQ_ACCESS_WRITE`, write) this
    /// memory asynchronously until [`Device::unregister`]: it must stay valid
    /// and must not be memory that Rust code holds references to.
    pub unsafe fn register_raw(&self, addr: *mut u8, len: usize, access: u32) -> io::Result<u64> {
        let mut req = sys::warpq_register {
            size: std::mem::size_of::<sys::warpq_register>() as u32,
            access,
            addr: addr as u64,
            len: len as u64,
            handle: 0,
        };
        self.ioctl(sys::WARPQ_IOC_REGISTER, &mut req)?;
        Ok(req.handle)
    }

    /// Unregisters a buffer: when this returns the device no longer touches it.
    pub fn unregister(&self, handle: u64) -> io::Result<()> {
        let mut req = sys::warpq_unregister {
            size: std::mem::size_of::<sys::warpq_unregister>() as u32,
            rsvd: 0,
            handle,
        };
        self.ioctl(sys::WARPQ_IOC_UNREGISTER, &mut req)
    }

    /// The system-call path: queues `sqes` through `WARPQ_IOC_SUBMIT` (one
    /// call for the whole batch) and wakes the engine. Returns how many were
    /// queued. Do not also push through a [`Queue`] at the same time.
    pub fn submit_batch(&self, sqes: &[sys::warpq_sqe]) -> io::Result<u32> {
        let mut req = sys::warpq_submit {
            size: std::mem::size_of::<sys::warpq_submit>() as u32,
            count: u32::try_from(sqes.len()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?,
            sqes: sqes.as_ptr() as u64,
            submitted: 0,
            rsvd: 0,
        };
        self.ioctl(sys::WARPQ_IOC_SUBMIT, &mut req)?;
        Ok(req.submitted)
    }

    /// Waits for completions on this process's queue; see [`Queue::wait`].
    pub fn wait(&self, min_ready: u32, timeout: Option<std::time::Duration>) -> io::Result<u32> {
        let mut req = sys::warpq_wait {
            size: std::mem::size_of::<sys::warpq_wait>() as u32,
            rsvd: 0,
            min_ready,
            ready: 0,
            timeout_ns: timeout.map_or(-1, |t| t.as_nanos().min(i64::MAX as u128) as i64),
        };
        self.ioctl(sys::WARPQ_IOC_WAIT, &mut req)?;
        Ok(req.ready)
    }

    /// This process's queue counters.
    pub fn stats(&self) -> io::Result<sys::warpq_stats> {
        let mut st = sys::warpq_stats { size: std::mem::size_of::<sys::warpq_stats>() as u32, ..Default::default() };
        self.ioctl(sys::WARPQ_IOC_STATS, &mut st)?;
        Ok(st)
    }

    /// Wakes this process's engine (needed only when the ring says need-wakeup).
    pub fn wake(&self) -> io::Result<()> {
        let mut req = sys::warpq_wake { size: std::mem::size_of::<sys::warpq_wake>() as u32, rsvd: 0 };
        self.ioctl(sys::WARPQ_IOC_WAKE, &mut req)
    }

    fn ioctl<T>(&self, request: libc::c_ulong, arg: &mut T) -> io::Result<()> {
        // SAFETY: every warpq ioctl reads and writes exactly one `T`, which
        // `arg` is, with its size field filled in by the caller.
        let ret = unsafe { libc::ioctl(self.file.as_raw_fd(), request, arg as *mut T) };
        if ret < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// The underlying file.
    pub fn as_file(&self) -> &File {
        &self.file
    }
}

/// A mapped queue ring. Unmapped on drop.
#[derive(Debug)]
pub struct QueueMapping {
    base: NonNull<u8>,
}

impl QueueMapping {
    /// The ring's header as it is now (a racy snapshot of the kernel-written
    /// fields, good for identification and statistics).
    pub fn header(&self) -> sys::warpq_ring_header {
        // SAFETY: the mapping is at least a header long, page aligned, and
        // lives as long as `self`; a volatile read copes with the kernel
        // changing it.
        unsafe { std::ptr::read_volatile(self.base.as_ptr().cast::<sys::warpq_ring_header>()) }
    }

    /// The first byte of the mapping.
    pub fn as_ptr(&self) -> *mut u8 {
        self.base.as_ptr()
    }
}

impl Drop for QueueMapping {
    fn drop(&mut self) {
        // SAFETY: `base` is our mapping of WARPQ_RING_SIZE bytes.
        unsafe { libc::munmap(self.base.as_ptr().cast(), sys::WARPQ_RING_SIZE) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pci_addresses_are_recognised() {
        assert!(is_pci_address("0000:00:03.0"));
        assert!(is_pci_address("0000:af:1f.7"));
        assert!(!is_pci_address("bind"));
        assert!(!is_pci_address("module"));
        assert!(!is_pci_address("0000:00:03"));
        assert!(!is_pci_address("0000-00:03.0"));
    }

    #[test]
    fn devices_in_lists_only_bound_devices_sorted() {
        let dir = std::env::temp_dir().join(format!("warpq-sysfs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for name in ["0000:00:04.0", "bind", "0000:00:03.0", "new_id"] {
            std::fs::write(dir.join(name), b"").unwrap();
        }
        let found = devices_in(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let names: Vec<_> = found.iter().map(|d| d.pci_address.as_str()).collect();
        assert_eq!(names, ["0000:00:03.0", "0000:00:04.0"]);
    }

    #[test]
    fn missing_driver_dir_is_an_error_for_devices_in() {
        let err = devices_in(Path::new("/nonexistent/warpq")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn opening_a_file_that_is_not_a_warpq_device_says_so() {
        let err = Device::open("/dev/null").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOTTY));
    }
}

/// CRC-32C (Castagnoli) as the device computes it for `WARPQ_OP_CRC32C`
/// with `value` as the seed (0 for the standard checksum).
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
mod crc_tests {
    #[test]
    fn crc32c_check_value() {
        // The standard check value of CRC-32C.
        assert_eq!(super::crc32c(0, b"123456789"), 0xe306_9283);
        assert_eq!(super::crc32c(0, b""), 0);
    }
}
