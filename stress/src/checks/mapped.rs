//! `warpq-user-check`, section `mappings`: buffers over mappings a program
//! already has, through the crate's `memmap2` API — a memfd and a tmpfs file
//! (`MAP_SHARED`, so the device's writes are the file's contents), and huge
//! pages (THP and hugetlb) with commands across a 2 MiB boundary and an
//! invalidation between them.

use std::fs::File;
use std::os::fd::FromRawFd;
use std::os::unix::fs::FileExt;

use warpq::memmap2::MmapOptions;
use warpq::{opcode, Access, Backing, Buffer, Device, Entry, Queue, Status, HUGE_PAGE_SIZE};

use crate::report::Report;

macro_rules! ensure {
    ($cond:expr, $($msg:tt)*) => {
        if !$cond {
            return Err(format!($($msg)*));
        }
    };
}

/// Runs one entry; its status and result.
fn run1(q: &mut Queue<'_>, e: Entry) -> Result<(Status, u64), String> {
    q.submission().push(&e.user_data(0x3a9)).map_err(|e| e.to_string())?;
    q.submit_and_wait(1).map_err(|e| e.to_string())?;
    let c = q.completion().next().ok_or("no completion")?;
    ensure!(c.user_data() == 0x3a9, "completion for {}", c.user_data());
    Ok((c.status(), c.result()))
}

fn ok(q: &mut Queue<'_>, what: &str, e: Entry) -> Result<u64, String> {
    let (status, result) = run1(q, e)?;
    ensure!(status == Status::Ok, "{what}: {status}");
    Ok(result)
}

/// Bytes that differ from page to page and within a page.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed).wrapping_add((i >> 12) as u8)).collect()
}

/// A `MAP_SHARED` file mapping of `len` bytes holding `pattern(len / 2)` in
/// its first half, registered read/write; the device copies the first half
/// to the second, fills a page and checksums the first half; the file (read
/// with `pread`, not through the mapping) must hold the device's writes, and
/// the mapping comes back from `unregister`.
fn shared_file(r: &mut Report, dev: &Device, q: &mut Queue<'_>, file: &File, what: &str) -> Result<(), String> {
    const LEN: usize = 256 << 10;
    let half = LEN / 2;
    let data = pattern(half, 0x17);
    file.set_len(LEN as u64).map_err(|e| format!("{what}: set_len: {e}"))?;
    file.write_all_at(&data, 0).map_err(|e| format!("{what}: write: {e}"))?;
    // SAFETY: memmap2's contract: the file is ours and nobody truncates it
    // while it is mapped.
    let map = unsafe { MmapOptions::new().map_mut(file) }.map_err(|e| format!("{what}: mmap: {e}"))?;
    let buf = dev.register_mmap(map, Access::ReadWrite).map_err(|e| format!("{what}: register_mmap: {e}"))?;
    ok(q, "COPY", opcode::Copy::new(buf.addr_at(0), buf.addr_at(half), half as u64).build())?;
    ok(q, "FILL", opcode::Fill::new(buf.addr_at(LEN - 4096), 4096, 0xe1).build())?;
    let crc = ok(q, "CRC32C", opcode::Crc32c::new(buf.addr_at(0), half as u64).build())?;
    ensure!(crc == u64::from(warpq::crc32c(0, &data)), "{what}: CRC32C {crc:#x} of the file's first half");
    let mut on_file = vec![0u8; LEN];
    file.read_exact_at(&mut on_file, 0).map_err(|e| format!("{what}: pread: {e}"))?;
    ensure!(on_file[half..LEN - 4096] == data[..half - 4096], "{what}: the file does not hold the device's COPY");
    ensure!(on_file[LEN - 4096..].iter().all(|&b| b == 0xe1), "{what}: the file does not hold the device's FILL");
    let map = buf.unregister().map_err(|e| format!("{what}: unregister: {e}"))?.into_mmap();
    ensure!(map[..] == on_file[..], "{what}: the mapping given back differs from the file");
    r.ok(
        &format!("register_mmap: a {what}"),
        &format!(
            "{} KiB MAP_SHARED: COPY, FILL, CRC32C through the device, the file holds its writes, unregister gives the \
             MmapMut back",
            LEN >> 10
        ),
    );
    Ok(())
}

/// A memfd, then a regular file on tmpfs.
fn files(r: &mut Report, dev: &Device, q: &mut Queue<'_>) -> Result<(), String> {
    // SAFETY: a plain system call; the fd is checked and owned by the File.
    let fd = unsafe { libc::memfd_create(c"warpq-user-check".as_ptr(), libc::MFD_CLOEXEC) };
    ensure!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: a fresh fd nothing else owns.
    let memfd = unsafe { File::from_raw_fd(fd) };
    shared_file(r, dev, q, &memfd, "memfd")?;
    let path = "/tmp/warpq-user-check.data";
    let file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|e| format!("{path}: {e}"))?;
    let res = shared_file(r, dev, q, &file, "regular file on tmpfs");
    let _ = std::fs::remove_file(path);
    res?;
    // A file the program may only read: a private copy-on-write mapping
    // (`map_copy`, an MmapMut), registered for the device to read.
    let ro = File::open("/bin/busybox").map_err(|e| format!("/bin/busybox: {e}"))?;
    // SAFETY: memmap2's contract: nobody truncates busybox meanwhile.
    let copy = unsafe { MmapOptions::new().len(8192).map_copy(&ro) }.map_err(|e| format!("map_copy busybox: {e}"))?;
    let buf =
        dev.register_mmap(copy, Access::Read).map_err(|e| format!("register a private file mapping read-only: {e}"))?;
    let crc = ok(q, "CRC32C of busybox's first 8 KiB", opcode::Crc32c::new(buf.addr(), 8192).build())?;
    let mut head = vec![0u8; 8192];
    ro.read_exact_at(&mut head, 0).map_err(|e| format!("pread busybox: {e}"))?;
    ensure!(crc == u64::from(warpq::crc32c(0, &head)), "CRC32C of a private file mapping: {crc:#x}");
    drop(buf);
    r.ok("register_mmap: a private file mapping, read only", "CRC32C of /bin/busybox's first 8 KiB, no copy");
    Ok(())
}

/// A 6 MiB buffer on huge pages: COPY of 1 MiB across the 2 MiB boundary,
/// a `MADV_DONTNEED` of 4 KiB inside the first huge page, then COPY back
/// across the boundary and a FILL into the dropped page; then 8 COPYs across
/// the boundary into the third huge page with a `MADV_DONTNEED` of their
/// destination (4 KiB of the THP; the whole hugetlb page) while they are in
/// flight, and one more after it: all complete OK, all verified.
fn huge(r: &mut Report, dev: &Device, q: &mut Queue<'_>, backing: Backing) -> Result<(), String> {
    const LEN: usize = 3 * HUGE_PAGE_SIZE;
    if backing == Backing::Hugetlb {
        crate::mem::reserve_huge_pages(3)?;
    }
    let mut buf = match Buffer::huge(LEN, backing) {
        Ok(b) => b,
        Err(e) if backing == Backing::Hugetlb => {
            return Err(format!("Buffer::huge(Hugetlb) (the suite reserves /proc/sys/vm/nr_hugepages): {e}"))
        }
        Err(e) => return Err(format!("Buffer::huge({backing:?}): {e}")),
    };
    ensure!(
        (buf.addr() as usize).is_multiple_of(HUGE_PAGE_SIZE),
        "{backing:?} buffer at {:#x} is not 2 MiB aligned",
        buf.addr()
    );
    let data = pattern(LEN, 0x42);
    buf.copy_from_slice(&data);
    let thp_kb = anon_huge_kb(buf.addr());
    let b = dev.register_buffer(buf, Access::ReadWrite).map_err(|e| format!("register {backing:?}: {e}"))?;
    let (mib, at) = (1 << 20, HUGE_PAGE_SIZE - (512 << 10));
    // 1 MiB from [1.5 MiB, 2.5 MiB) to [3 MiB, 4 MiB).
    ok(q, "COPY across 2 MiB", opcode::Copy::new(b.addr_at(at), b.addr_at(3 * mib), mib as u64).build())?;
    let mut got = vec![0u8; mib];
    b.read_at(3 * mib, &mut got);
    ensure!(got == data[at..at + mib], "{backing:?}: COPY across the 2 MiB boundary");
    // Drop 4 KiB inside the first huge page (hugetlb: the whole huge page,
    // its smallest unit); the registration survives, the chunk is rebuilt.
    let (drop_at, drop_len) = if backing == Backing::Hugetlb { (0, HUGE_PAGE_SIZE) } else { (64 << 10, 4096) };
    // SAFETY: inside our registered buffer; no Rust reference into it.
    let rc =
        unsafe { libc::madvise((b.addr() as usize + drop_at) as *mut libc::c_void, drop_len, libc::MADV_DONTNEED) };
    ensure!(rc == 0, "madvise(MADV_DONTNEED): {}", std::io::Error::last_os_error());
    ok(q, "COPY back across 2 MiB", opcode::Copy::new(b.addr_at(3 * mib), b.addr_at(at), mib as u64).build())?;
    ok(q, "FILL the dropped page", opcode::Fill::new(b.addr_at(drop_at), 4096, 0x99).build())?;
    let all = b.to_vec();
    ensure!(all[at..at + mib] == data[at..at + mib], "{backing:?}: COPY back after the invalidation");
    ensure!(all[drop_at..drop_at + 4096].iter().all(|&x| x == 0x99), "{backing:?}: FILL into the dropped page");
    let rest_zero = all[drop_at + 4096..(drop_at + drop_len).min(at)].iter().all(|&x| x == 0);
    ensure!(rest_zero, "{backing:?}: the dropped range reads back as zeroes past the FILL");
    // The invalidation in flight.
    let dst = 4 * mib + mib / 2;
    let copies: Vec<Entry> = (0..8)
        .map(|i| opcode::Copy::new(b.addr_at(at), b.addr_at(dst), mib as u64).build().user_data(700 + i))
        .collect();
    q.submission().push_multiple(&copies).map_err(|_| "ring full".to_string())?;
    q.submit().map_err(|e| e.to_string())?;
    let (drop_at, drop_len) =
        if backing == Backing::Hugetlb { (2 * HUGE_PAGE_SIZE, HUGE_PAGE_SIZE) } else { (dst + (64 << 10), 4096) };
    // SAFETY: as above.
    let rc =
        unsafe { libc::madvise((b.addr() as usize + drop_at) as *mut libc::c_void, drop_len, libc::MADV_DONTNEED) };
    ensure!(rc == 0, "madvise(MADV_DONTNEED) in flight: {}", std::io::Error::last_os_error());
    let in_flight = q.in_flight();
    q.submission()
        .push(&opcode::Copy::new(b.addr_at(at), b.addr_at(dst), mib as u64).build().user_data(708))
        .map_err(|_| "ring full".to_string())?;
    q.submit_and_wait(9).map_err(|e| e.to_string())?;
    let mut done = 0;
    while done < 9 {
        let Some(c) = q.completion().next() else {
            q.submit_and_wait(1).map_err(|e| e.to_string())?;
            continue;
        };
        ensure!(c.user_data() == 700 + done, "completion {} where {} was expected", c.user_data(), 700 + done);
        ensure!(c.status() == Status::Ok, "{backing:?}: COPY {done} with the invalidation in flight: {}", c.status());
        done += 1;
    }
    b.read_at(dst, &mut got);
    ensure!(got == data[at..at + mib], "{backing:?}: the COPYs with the invalidation in flight");
    let buf = b.unregister().map_err(|e| e.to_string())?;
    ensure!(buf.backing() == backing, "backing {:?}", buf.backing());
    let how = match backing {
        Backing::Hugetlb => "MAP_HUGETLB; a whole huge page dropped".to_string(),
        _ => format!("MADV_HUGEPAGE, {thp_kb} KiB of THP before registration; 4 KiB dropped"),
    };
    r.ok(
        &format!("Buffer::huge({backing:?})"),
        &format!(
            "6 MiB, 2 MiB aligned ({how}): 1 MiB COPY across the 2 MiB boundary, then back after the invalidation; \
             9 COPYs across it with their destination dropped while {in_flight} were in flight: all OK, verified"
        ),
    );
    Ok(())
}

/// `AnonHugePages` of the mapping at `addr` in /proc/self/smaps, in KiB.
fn anon_huge_kb(addr: u64) -> u64 {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
    let mut inside = false;
    for line in smaps.lines() {
        if let Some((range, _)) = line.split_once(' ') {
            if let Some((lo, hi)) = range.split_once('-') {
                if let (Ok(lo), Ok(hi)) = (u64::from_str_radix(lo, 16), u64::from_str_radix(hi, 16)) {
                    inside = lo <= addr && addr < hi;
                    continue;
                }
            }
        }
        if inside {
            if let Some(kb) = line.strip_prefix("AnonHugePages:") {
                return kb.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
            }
        }
    }
    0
}

/// The section's checks, each an `ok` line of `r`.
pub fn run(r: &mut Report, dev: &Device, q: &mut Queue<'_>) -> Result<(), String> {
    files(r, dev, q)?;
    huge(r, dev, q, Backing::TransparentHuge)?;
    huge(r, dev, q, Backing::Hugetlb)?;
    Ok(())
}
