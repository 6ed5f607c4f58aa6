//! warpq: drive a warpq accelerator queue from user space.
//!
//! This crate grows with the driver; today it finds the devices the driver
//! has bound.

#![warn(missing_docs)]

use std::io;
use std::path::{Path, PathBuf};

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
}
