//! `warpq-user-check writeback-file`: a `MAP_SHARED` mapping of a file on a
//! file system that writes back (ext2 on a zram disk added for the run),
//! under the loaded backing.
//!
//! - `pin`: since 6.5 the kernel refuses a writable long-term pin of such a
//!   file (`writable_file_mapping_allowed`: the file system must see every
//!   write through `page_mkwrite`, and a pinned page is written behind its
//!   back). A read/write registration fails with `ErrorKind::BadMemory`,
//!   `EFAULT` and the crate's hint that says why; a read-only one works.
//! - `mirror`: nothing is pinned, so it registers read/write. The device
//!   fills a page and `fsync` writes it back, which write-protects the page
//!   (`folio_mkclean`: a PROTECTION_PAGE invalidation that must take the
//!   device's write access away). The device fills the page again and
//!   `fsync` runs again: the disk (read past the page cache, registration
//!   still live) holds the second fill, and so does the file after
//!   unregistration, an unmount and a mount. Had the device kept write
//!   access, the second fill would have landed in a clean page that the
//!   second `fsync` skips, and the disk would hold the first.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};

use warpq::memmap2::MmapOptions;
use warpq::{opcode, Access, Device, Entry, ErrorKind, Queue, Status};

use crate::cmd::sh;
use crate::report::Report;
use crate::Anon;

macro_rules! ensure {
    ($cond:expr, $($msg:tt)*) => {
        if !$cond {
            return Err(format!($($msg)*));
        }
    };
}

const MOUNT: &str = "/mnt/warpq-ext2";
const LEN: usize = 64 << 10;
const PAGE: usize = 4096;

/// An ext2 file system on a zram disk of its own, mounted at [`MOUNT`];
/// unmounted and the disk removed on drop.
struct Ext2Disk {
    id: String,
    mounted: bool,
}

impl Ext2Disk {
    fn new() -> Result<Self, String> {
        let id = std::fs::read_to_string("/sys/class/zram-control/hot_add")
            .map_err(|e| format!("zram hot_add: {e}"))?
            .trim()
            .to_string();
        let mut disk = Ext2Disk { id, mounted: false };
        std::fs::write(format!("/sys/block/zram{}/disksize", disk.id), "16M")
            .map_err(|e| format!("zram{} disksize: {e}", disk.id))?;
        // zram's logical blocks are 4 KiB: an ext2 block may not be smaller.
        sh(&["mke2fs", "-q", "-b", "4096", &disk.dev()])?;
        std::fs::create_dir_all(MOUNT).map_err(|e| format!("mkdir {MOUNT}: {e}"))?;
        disk.mount()?;
        Ok(disk)
    }

    fn dev(&self) -> String {
        format!("/dev/zram{}", self.id)
    }

    fn mount(&mut self) -> Result<(), String> {
        sh(&["mount", "-t", "ext2", &self.dev(), MOUNT])?;
        self.mounted = true;
        Ok(())
    }

    /// File block `index` (a 4 KiB page of the file) as it is on the disk:
    /// its block number from `FIBMAP`, read from the disk with `O_DIRECT`,
    /// past every page cache.
    fn read_file_block(&self, file: &File, index: usize) -> Result<Vec<u8>, String> {
        const FIBMAP: libc::c_ulong = 1;
        let mut block = index as libc::c_int;
        // SAFETY: FIBMAP reads and writes one int we own.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), FIBMAP, &mut block) };
        ensure!(rc == 0 && block > 0, "FIBMAP of block {index}: {} (block {block})", std::io::Error::last_os_error());
        let disk = File::options()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(self.dev())
            .map_err(|e| format!("{}: {e}", self.dev()))?;
        // O_DIRECT wants an aligned buffer: a page of its own.
        let page = Anon::new(PAGE);
        // SAFETY: `page` is PAGE writable bytes we own; the kernel writes them.
        let n = unsafe { libc::pread(disk.as_raw_fd(), page.ptr().cast(), PAGE, block as i64 * PAGE as i64) };
        ensure!(n == PAGE as isize, "read block {block} of {}: {}", self.dev(), std::io::Error::last_os_error());
        Ok(page.bytes())
    }

    /// Unmounts: every dirty page is written to the disk and the page cache
    /// of the file system is gone; a later read comes from the disk.
    fn unmount(&mut self) -> Result<(), String> {
        sh(&["umount", MOUNT])?;
        self.mounted = false;
        Ok(())
    }
}

impl Drop for Ext2Disk {
    fn drop(&mut self) {
        if self.mounted {
            let _ = sh(&["umount", MOUNT]);
        }
        let _ = std::fs::write("/sys/class/zram-control/hot_remove", &self.id);
    }
}

fn run1(q: &mut Queue<'_>, what: &str, e: Entry) -> Result<u64, String> {
    q.submission().push(&e.user_data(0x5b)).map_err(|e| e.to_string())?;
    q.submit_and_wait(1).map_err(|e| e.to_string())?;
    let c = q.completion().next().ok_or("no completion")?;
    ensure!(c.status() == Status::Ok, "{what}: {}", c.status());
    Ok(c.result())
}

fn loaded_backing() -> Result<String, String> {
    let path = "/sys/module/warpq/parameters/backing";
    Ok(std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?.trim().to_string())
}

/// The run, under whichever backing warpq.ko was loaded with.
pub fn writeback_file(r: &mut Report, path: &str) -> Result<(), String> {
    let backing = loaded_backing()?;
    let dev = Device::open(path).map_err(|e| e.to_string())?;
    let mut q = dev.queue().map_err(|e| e.to_string())?;
    let mut disk = Ext2Disk::new()?;
    let name = format!("{MOUNT}/data");
    let open = || File::options().read(true).write(true).open(&name).map_err(|e| format!("{name}: {e}"));
    let data: Vec<u8> = (0..LEN).map(|i| (i as u8).wrapping_mul(13).wrapping_add((i >> 12) as u8)).collect();
    {
        let file = File::create(&name).map_err(|e| format!("{name}: {e}"))?;
        file.write_all_at(&data, 0).map_err(|e| format!("{name}: write: {e}"))?;
        file.sync_all().map_err(|e| format!("{name}: fsync: {e}"))?;
    }
    let file = open()?;
    // SAFETY: memmap2's contract: the file is ours and nobody truncates it
    // while it is mapped.
    let map = |f: &File| unsafe { MmapOptions::new().len(LEN).map_mut(f) }.map_err(|e| format!("mmap {name}: {e}"));
    if backing == "pin" {
        match dev.register_mmap(map(&file)?, Access::ReadWrite) {
            Ok(_) => return Err("pin: a read/write registration of an ext2 file mapping was accepted".into()),
            Err(e) => {
                ensure!(
                    e.kind() == ErrorKind::BadMemory && e.errno() == Some(libc::EFAULT),
                    "pin: read/write registration of an ext2 file refused with {:?} {:?}, not BadMemory EFAULT: {e}",
                    e.kind(),
                    e.errno()
                );
                ensure!(e.hint().contains("write back"), "pin: the refusal does not say why: {e}");
                r.ok("writeback file, pin: read/write refused", &e.to_string());
            }
        }
        let buf = dev.register_mmap(map(&file)?, Access::Read).map_err(|e| format!("pin: read-only: {e}"))?;
        let crc = run1(&mut q, "CRC32C of the file", opcode::Crc32c::new(buf.addr(), LEN as u64).build())?;
        ensure!(crc == u64::from(warpq::crc32c(0, &data)), "pin: CRC32C {crc:#x} of the ext2 file");
        drop(buf);
        r.ok("writeback file, pin: read-only", &format!("registered; CRC32C of its {} KiB matches", LEN >> 10));
        return Ok(());
    }
    let buf = dev.register_mmap(map(&file)?, Access::ReadWrite).map_err(|e| format!("{backing}: read/write: {e}"))?;
    let target = buf.addr_at(PAGE);
    run1(&mut q, "first FILL", opcode::Fill::new(target, PAGE as u64, 0xa1).build())?;
    file.sync_all().map_err(|e| format!("fsync 1: {e}"))?;
    run1(&mut q, "second FILL", opcode::Fill::new(target, PAGE as u64, 0xb2).build())?;
    run1(&mut q, "COPY", opcode::Copy::new(buf.addr_at(0), buf.addr_at(2 * PAGE), PAGE as u64).build())?;
    file.sync_all().map_err(|e| format!("fsync 2: {e}"))?;
    // The disk itself, still registered: a teardown at unregistration
    // dirties the pages again, which would hide a device write writeback
    // missed; what the second fsync wrote must already be there.
    for (page, want) in [(1, vec![0xb2; PAGE]), (2, data[..PAGE].to_vec())] {
        let got = disk.read_file_block(&file, page)?;
        if page == 1 && got == vec![0xa1; PAGE] {
            return Err(format!(
                "{backing}: fsync wrote the first FILL, not the second: the second landed on a page writeback had \
                 cleaned (device write access survived mkclean)"
            ));
        }
        ensure!(got == want, "{backing}: after fsync, block {page} on the disk does not hold the device's write");
    }
    let map = buf.unregister().map_err(|e| format!("unregister: {e}"))?.into_mmap();
    drop(map);
    drop(file);
    disk.unmount()?;
    disk.mount()?;
    let mut on_disk = vec![0u8; LEN];
    open()?.read_exact_at(&mut on_disk, 0).map_err(|e| format!("{name}: read after mount: {e}"))?;
    let page = |i: usize| &on_disk[i * PAGE..(i + 1) * PAGE];
    ensure!(
        !page(1).iter().all(|&b| b == 0xa1),
        "{backing}: the disk holds the first FILL: the second landed on a page writeback had cleaned (device write access survived mkclean)"
    );
    ensure!(page(1).iter().all(|&b| b == 0xb2), "{backing}: the disk does not hold the second FILL");
    ensure!(page(2) == &data[..PAGE], "{backing}: the disk does not hold the COPY");
    ensure!(on_disk[3 * PAGE..] == data[3 * PAGE..], "{backing}: the disk changed where the device did not write");
    r.ok(
        &format!("writeback file, {backing}: read/write"),
        "FILL, fsync (mkclean), FILL again, COPY, fsync: after unmount and mount the disk holds the second FILL and the COPY",
    );
    Ok(())
}
