//! What the backing (module parameter `backing=pin|mirror`, shown by
//! `WARPQ_CAP_MIRROR`) promises, row by row, under whichever one the module
//! was loaded with: whose RLIMIT_MEMLOCK budget a pin is charged to, that
//! `mirror` holds no pin at all, that the kernel may migrate mirrored pages
//! and not pinned ones, and that device writes are seen by soft-dirty
//! tracking.

use std::time::Duration;

use warpq::sys::*;

use super::register::drop_ipc_lock;
use super::*;
use crate::raw::{mmap, register, unregister, Map};
use crate::PinCounts;

const P: u64 = PAGE as u64;

/// The rows of this file.
pub fn cases() -> Vec<Case> {
    vec![
        story(
            "backing-memlock-per-user",
            "without CAP_IPC_LOCK and with RLIMIT_MEMLOCK 64 KiB: the parent registers 48 KiB, a forked child \
             registers 32 KiB on its own file (pin: ENOMEM, the user's budget is shared; mirror: accepted, nothing \
             charged), then 32 KiB again after the parent unregistered (accepted)",
            Expect::Ok,
            memlock_per_user,
        ),
        story(
            "backing-unprivileged-64mib",
            "as uid 65534 with RLIMIT_MEMLOCK 64 KiB and no capability: REGISTER 64 MiB read/write (pin: ENOMEM; \
             mirror: accepted, FILL and CRC32C across it verified, nr_foll_pin_acquired unchanged)",
            Expect::Ok,
            unprivileged_64mib,
        ),
        story(
            "backing-memlock-lowered",
            "without CAP_IPC_LOCK, RLIMIT_MEMLOCK 1 MiB: A (256 KiB) and C (64 KiB) registered and used; the limit \
             lowered to 128 KiB, a 4 KiB REGISTER records it, a page of A dropped: the next FILL on A completes \
             FAULT_NOMEM (pin; OK under mirror), twice, while FILLs on C and D complete OK and land; no errno, no \
             SIGBUS, the queue runs",
            Expect::Ok,
            memlock_lowered,
        ),
        story(
            "backing-compaction",
            "16 MiB registered and used by the device, then /proc/sys/vm/compact_memory and MADV_COLLAPSE of an \
             aligned 2 MiB of it: pin: no registered page moves (the collapse fails); mirror: the collapse moves \
             all 512 pages (compaction moves whatever its scanner meets; the count is reported); either way the \
             device's CRC32C of the buffer and its FILLs are right afterwards",
            Expect::Ok,
            compaction,
        ),
        story(
            "backing-huge-pages",
            "a 4 MiB THP buffer (MADV_HUGEPAGE) and a 4 MiB hugetlb buffer (MAP_HUGETLB), each registered \
             read/write: a COPY across the 2 MiB boundary, then 64 FILLs in flight while 4 KiB inside the THP \
             (and a whole huge page of the hugetlb buffer) is dropped with MADV_DONTNEED; every FILL completes OK \
             and the device's CRC32C of each buffer matches the CPU's afterwards",
            Expect::Ok,
            huge_pages,
        ),
        story(
            "backing-soft-dirty",
            "clear_refs 4 (SOFT_DIRTY) on a registered read/write buffer, then a device FILL of a page the process \
             never wrote since: the page is soft-dirty afterwards and holds the FILL's bytes",
            Expect::Ok,
            soft_dirty,
        ),
        story(
            "backing-soft-dirty-shared",
            "the same on a memfd mapping (MAP_SHARED), where clear_refs 4 write-protects the shared PTEs: a device \
             FILL after it makes the page soft-dirty and lands in the file's page",
            Expect::Ok,
            soft_dirty_shared,
        ),
    ]
}

fn is_mirror(env: &Env) -> bool {
    env.info.capabilities & WARPQ_CAP_MIRROR != 0
}

fn set_memlock(bytes: u64) -> Result<(), String> {
    let limit = libc::rlimit { rlim_cur: bytes, rlim_max: bytes };
    // SAFETY: a valid rlimit for this process.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) } != 0 {
        return Err(format!("setrlimit: {}", Errno::last()));
    }
    Ok(())
}

/// Runs `f` in a forked child and returns its `Err` text, if any (exit code
/// 0 is success; the child prints its reason before leaving with 1).
fn in_child(what: &str, f: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
    let child = harness::spawn(|| match f() {
        Ok(()) => 0,
        Err(e) => {
            println!("    child: {e}");
            1
        }
    })
    .map_err(|e| format!("fork: {e}"))?;
    match child.wait(Duration::from_secs(60)) {
        Exit::Code(0) => Ok(()),
        other => Err(format!("{what}: the child ended with {other:?} (its reason is printed above)")),
    }
}

fn memlock_per_user(env: &Env) -> Result<Got, String> {
    drop_ipc_lock()?;
    set_memlock(16 * P)?;
    let mirror = is_mirror(env);
    let (mine, theirs) = (Anon::new(12 * PAGE), Anon::new(8 * PAGE));
    // The child is forked before the parent registers: a fork after it would
    // unpin the parent's read/write region (fork's PROTECTION_PAGE revokes
    // device writes) and so hand its budget back until the next rebuild.
    let (go_read, go_write) = pipe()?;
    let (done_read, done_write) = pipe()?;
    let child = harness::spawn(|| {
        let step = |want_ok_now: bool| -> Result<(), String> {
            let dev = open(env)?;
            let r = register(fd_of(&dev), theirs.addr(0), theirs.len() as u64, RW);
            match (&r, want_ok_now) {
                (Ok(_), true) | (Err(Errno(libc::ENOMEM)), false) => Ok(()),
                _ => Err(format!(
                    "the child's REGISTER of 32 KiB (wanted {}): {}",
                    ok_or_enomem(want_ok_now),
                    raw::show(&r)
                )),
            }
        };
        let result = wait_byte(go_read)
            .and_then(|()| step(mirror))
            .and_then(|()| send_byte(done_write))
            .and_then(|()| wait_byte(go_read))
            .and_then(|()| step(true));
        match result {
            Ok(()) => 0,
            Err(e) => {
                println!("    child: {e}");
                1
            }
        }
    })
    .map_err(|e| format!("fork: {e}"))?;
    let dev = open(env)?;
    let fd = fd_of(&dev);
    let h = want_ok("48 KiB within the limit", register(fd, mine.addr(0), mine.len() as u64, RW))?;
    // While the parent holds 48 KiB: pin says ENOMEM to the child.
    send_byte(go_write)?;
    let _ = wait_byte(done_read);
    want_ok("UNREGISTER", unregister(fd, h))?;
    // Now the budget is free again.
    let _ = send_byte(go_write);
    match child.wait(Duration::from_secs(60)) {
        Exit::Code(0) => {}
        other => return Err(format!("the child ended with {other:?} (its reason is printed above)")),
    }
    Ok(Got::ok(if mirror {
        "mirror: nothing is charged, both processes registered"
    } else {
        "pin: the child got ENOMEM while the parent held 48 KiB of the user's 64 KiB, and 32 KiB once it let go"
    }))
}

fn ok_or_enomem(ok: bool) -> &'static str {
    if ok {
        "success"
    } else {
        "ENOMEM"
    }
}

fn pipe() -> Result<(i32, i32), String> {
    let mut fds = [0; 2];
    // SAFETY: pipe(2) writes two descriptors into `fds`.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(format!("pipe: {}", Errno::last()));
    }
    Ok((fds[0], fds[1]))
}

fn send_byte(fd: i32) -> Result<(), String> {
    // SAFETY: writes one byte from a local.
    if unsafe { libc::write(fd, [1u8].as_ptr().cast(), 1) } != 1 {
        return Err(format!("pipe write: {}", Errno::last()));
    }
    Ok(())
}

fn wait_byte(fd: i32) -> Result<(), String> {
    let mut b = [0u8];
    // SAFETY: reads one byte into a local.
    if unsafe { libc::read(fd, b.as_mut_ptr().cast(), 1) } != 1 {
        return Err(format!("pipe read: {}", Errno::last()));
    }
    Ok(())
}

fn unprivileged_64mib(env: &Env) -> Result<Got, String> {
    let mirror = is_mirror(env);
    let before = PinCounts::read().map_err(|e| format!("/proc/vmstat: {e}"))?;
    let len = 64usize << 20;
    in_child("64 MiB as uid 65534", || {
        set_memlock(16 * P)?;
        let dev = open(env)?;
        // SAFETY: plain system calls on this process's credentials.
        let dropped = unsafe { libc::setresgid(65534, 65534, 65534) == 0 && libc::setresuid(65534, 65534, 65534) == 0 };
        ensure!(dropped, "setresuid: {}", Errno::last());
        let fd = fd_of(&dev);
        let buf = Anon::new(len);
        let r = register(fd, buf.addr(0), len as u64, RW);
        if !mirror {
            ensure!(matches!(r, Err(Errno(libc::ENOMEM))), "pin: REGISTER of 64 MiB gave {}", raw::show(&r));
            return Ok(());
        }
        let h = want_ok("mirror: REGISTER of 64 MiB", r)?;
        let ring = map_ring(fd)?;
        for (i, off) in [0, len / 3, len / 2 + 12345 * 8, len - 2 * PAGE].into_iter().enumerate() {
            let value = 0x31 + i as u8;
            let c = ring.run(op::Fill::new(buf.addr(off), 2 * P, value))?;
            ensure!(c.status == WARPQ_STATUS_OK, "FILL at {off:#x}: {}", st(c.status));
            // SAFETY: inside our mapping.
            let got = unsafe { std::slice::from_raw_parts(buf.ptr().add(off), 2 * PAGE) };
            ensure!(got.iter().all(|&b| b == value), "FILL at {off:#x}: the bytes differ");
            let c = ring.run(op::Crc32c::new(buf.addr(off), 2 * P))?;
            ensure!(c.status == WARPQ_STATUS_OK, "CRC32C at {off:#x}: {}", st(c.status));
            ensure!(c.result == u64::from(warpq::crc32c(0, got)), "CRC32C at {off:#x}: {:#x}", c.result);
        }
        want_ok("UNREGISTER", unregister(fd, h))?;
        Ok(())
    })?;
    let after = PinCounts::read().map_err(|e| format!("/proc/vmstat: {e}"))?;
    if mirror {
        ensure!(
            after.acquired == before.acquired,
            "nr_foll_pin_acquired moved {} -> {} under mirror",
            before.acquired,
            after.acquired
        );
    }
    Ok(Got::ok(if mirror {
        format!("mirror: 64 MiB registered and used by uid 65534; nr_foll_pin_acquired stayed {}", after.acquired)
    } else {
        "pin: ENOMEM for uid 65534 over RLIMIT_MEMLOCK".into()
    }))
}

fn memlock_lowered(env: &Env) -> Result<Got, String> {
    let mirror = is_mirror(env);
    in_child("RLIMIT_MEMLOCK lowered under registered memory", || {
        drop_ipc_lock()?;
        set_memlock(256 * P)?;
        let dev = open(env)?;
        let fd = fd_of(&dev);
        let (a, c, d) = (Anon::new(64 * PAGE), Anon::new(16 * PAGE), Anon::new(PAGE));
        let ha = want_ok("REGISTER of A, 256 KiB", register(fd, a.addr(0), a.len() as u64, RW))?;
        let hc = want_ok("REGISTER of C, 64 KiB", register(fd, c.addr(0), c.len() as u64, RW))?;
        let ring = map_ring(fd)?;
        for (buf, what) in [(&a, "A"), (&c, "C")] {
            let s = ring.run(op::Fill::new(buf.addr(0), P, 0x11))?.status;
            ensure!(s == WARPQ_STATUS_OK, "FILL on {what} within the limit: {}", st(s));
        }
        // Below what is registered; REGISTER records the limit pins are
        // charged against (it evicts chunks to fit D).
        set_memlock(32 * P)?;
        let hd = want_ok("REGISTER of D, 4 KiB, under the lowered limit", register(fd, d.addr(0), P, RW))?;
        // D's REGISTER may have evicted A's chunk already; if not, this
        // tears it down. Either way the next FILL on A needs a rebuild of
        // its one chunk (256 KiB: the buffer is one chunk whatever
        // chunk_kb says past that), more than the whole 128 KiB limit.
        // SAFETY: our own mapping; the registration survives the drop.
        unsafe { libc::madvise(a.ptr().add(PAGE).cast(), PAGE, libc::MADV_DONTNEED) };
        let want_a = if mirror { WARPQ_STATUS_OK } else { WARPQ_STATUS_FAULT_NOMEM };
        for round in 0..2 {
            let s = ring.run(op::Fill::new(a.addr(0), P, 0x33))?.status;
            ensure!(s == want_a, "FILL {round} on A (256 KiB over a 128 KiB limit): {}, want {}", st(s), st(want_a));
            for (buf, what, value) in [(&c, "C", 0x44u8), (&d, "D", 0x55)] {
                let s = ring.run(op::Fill::new(buf.addr(0), P, value))?.status;
                ensure!(s == WARPQ_STATUS_OK, "FILL {round} on {what} (within the limit): {}", st(s));
                // SAFETY: inside our mapping; the FILL completed.
                let page = unsafe { std::slice::from_raw_parts(buf.ptr(), PAGE) };
                ensure!(page.iter().all(|&b| b == value), "FILL {round} on {what}: the bytes differ");
            }
        }
        for (h, what) in [(ha, "A"), (hc, "C"), (hd, "D")] {
            want_ok(&format!("UNREGISTER of {what}"), unregister(fd, h))?;
        }
        Ok(())
    })?;
    Ok(Got::ok(if mirror {
        "mirror: nothing charged; every FILL OK after the limit was lowered".to_string()
    } else {
        "pin: FILL on A completed FAULT_NOMEM twice, FILLs on C and D OK and verified, after RLIMIT_MEMLOCK was \
         lowered below what was registered"
            .to_string()
    }))
}

/// The PFN of each page of `[addr, addr + pages * PAGE)`, from
/// `/proc/self/pagemap` (root only; 0 for a page not present).
fn pfns(addr: u64, pages: usize) -> Result<Vec<u64>, String> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open("/proc/self/pagemap").map_err(|e| format!("pagemap: {e}"))?;
    let mut raw = vec![0u8; pages * 8];
    f.read_exact_at(&mut raw, addr / P * 8).map_err(|e| format!("pagemap read: {e}"))?;
    Ok(raw
        .chunks_exact(8)
        .map(|w| u64::from_le_bytes(w.try_into().unwrap()))
        .map(|e| if e >> 63 & 1 == 1 { e & ((1 << 55) - 1) } else { 0 })
        .collect())
}

/// Whether the page at `addr` is soft-dirty (`/proc/self/pagemap` bit 55).
fn soft_dirty_bit(addr: u64) -> Result<bool, String> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open("/proc/self/pagemap").map_err(|e| format!("pagemap: {e}"))?;
    let mut raw = [0u8; 8];
    f.read_exact_at(&mut raw, addr / P * 8).map_err(|e| format!("pagemap read: {e}"))?;
    Ok(u64::from_le_bytes(raw) >> 55 & 1 == 1)
}

/// `MADV_COLLAPSE` (Linux 6.1; not in every libc crate yet).
const MADV_COLLAPSE: i32 = 25;

fn compaction(env: &Env) -> Result<Got, String> {
    const HUGE: usize = 2 << 20;
    let mirror = is_mirror(env);
    let pages = 4096;
    let (dev, ring, buf, h) = setup(env, pages)?;
    let fd = fd_of(&dev);
    buf.write(&pattern(buf.len(), 7));
    let c = ring.run(op::Fill::new(buf.addr(0), P, 0x5c))?;
    ensure!(c.status == WARPQ_STATUS_OK, "FILL before: {}", st(c.status));
    let before = pfns(buf.addr(0), pages)?;
    ensure!(before.iter().all(|&p| p != 0), "not every registered page is present (or pagemap hides PFNs)");
    // Compaction moves what its migration scanner meets: whether that is
    // any of these pages depends on where they sit in the zone, so the
    // count is reported, and for pin it must be 0.
    std::fs::write("/proc/sys/vm/compact_memory", "1").map_err(|e| format!("compact_memory: {e}"))?;
    let after = pfns(buf.addr(0), pages)?;
    let compacted = before.iter().zip(&after).filter(|(a, b)| a != b).count();
    // MADV_COLLAPSE always copies an aligned 2 MiB of small pages into a
    // new huge page, unless a page is pinned: the migration every time.
    let at = buf.addr(0).next_multiple_of(HUGE as u64);
    let first = ((at - buf.addr(0)) / P) as usize;
    let before_collapse = pfns(at, HUGE / PAGE)?;
    // SAFETY: advice on a 2 MiB-aligned range inside our buffer.
    let collapse = unsafe { libc::madvise(at as *mut libc::c_void, HUGE, MADV_COLLAPSE) };
    let collapse_err = Errno::last();
    let after_collapse = pfns(at, HUGE / PAGE)?;
    let collapsed = before_collapse.iter().zip(&after_collapse).filter(|(a, b)| a != b).count();
    // The device sees the process's bytes wherever they are now: a CRC32C
    // of the whole buffer, 1 MiB per command, chained.
    let crc = device_crc(&ring, buf.addr(0), buf.len())?;
    let want = warpq::crc32c(0, &buf.bytes());
    ensure!(crc == want, "CRC32C after the moves: {crc:#x}, the CPU says {want:#x}");
    for page in [1, first + 3, pages / 2, pages - 1] {
        let c = ring.run(op::Fill::new(buf.addr(page * PAGE), P, 0xa5))?;
        ensure!(c.status == WARPQ_STATUS_OK, "FILL after the moves: {}", st(c.status));
        // SAFETY: inside our mapping.
        let got = unsafe { std::slice::from_raw_parts(buf.ptr().add(page * PAGE), PAGE) };
        ensure!(got.iter().all(|&b| b == 0xa5), "FILL of page {page} after the moves did not land in the page");
    }
    want_ok("UNREGISTER", unregister(fd, h))?;
    if mirror {
        ensure!(collapse == 0, "mirror: MADV_COLLAPSE of a registered 2 MiB failed: {collapse_err}");
        ensure!(collapsed == HUGE / PAGE, "mirror: MADV_COLLAPSE moved {collapsed} of the {} pages", HUGE / PAGE);
    } else {
        ensure!(compacted == 0, "pin: compaction moved {compacted} pinned pages");
        ensure!(
            collapse != 0 && collapsed == 0,
            "pin: MADV_COLLAPSE moved {collapsed} pinned pages (result {collapse})"
        );
    }
    Ok(Got::ok(format!(
        "compaction moved {compacted} of {pages} registered pages; MADV_COLLAPSE of 2 MiB moved {collapsed} of {}{}; \
         the device's CRC32C and FILLs were right after",
        HUGE / PAGE,
        if collapse == 0 { String::new() } else { format!(" ({collapse_err})") }
    )))
}

/// `len` bytes of anonymous memory aligned to 2 MiB (`MAP_HUGETLB` if
/// `hugetlb`, else THP-eligible with `MADV_HUGEPAGE`), written with a
/// pattern: the mapping and the buffer's address in it.
fn huge_buffer(len: usize, hugetlb: bool) -> Result<(Map, u64), String> {
    const HUGE: usize = 2 << 20;
    let (map, at) = if hugetlb {
        // Huge pages for the pool: enough for this row's 2 (and 2 spare).
        std::fs::write("/proc/sys/vm/nr_hugepages", "4").map_err(|e| format!("nr_hugepages: {e}"))?;
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_HUGETLB;
        let map = want_ok("mmap MAP_HUGETLB (hugetlbfs)", mmap(len, PROT_RW, flags, -1, 0))?;
        let at = map.addr(0);
        (map, at)
    } else {
        // Over-allocate and use the 2 MiB-aligned part.
        let map = want_ok("mmap", mmap(len + HUGE, PROT_RW, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0))?;
        let at = map.addr(0).next_multiple_of(HUGE as u64);
        // SAFETY: advice on our own mapping (`at + len` lies inside it).
        ensure!(
            unsafe { libc::madvise(at as *mut libc::c_void, len, libc::MADV_HUGEPAGE) } == 0,
            "MADV_HUGEPAGE: {}",
            Errno::last()
        );
        (map, at)
    };
    let data = pattern(len, if hugetlb { 5 } else { 9 });
    // SAFETY: `[at, at + len)` is inside our fresh mapping.
    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), at as *mut u8, len) };
    Ok((map, at))
}

/// The device's CRC32C of `[addr, addr + len)`, 1 MiB per command, chained.
fn device_crc(ring: &RawRing, addr: u64, len: usize) -> Result<u32, String> {
    let mut crc = 0u32;
    for off in (0..len).step_by(1 << 20) {
        let piece = (len - off).min(1 << 20) as u64;
        let c = ring.run(op::Crc32c::new(addr + off as u64, piece).seed(crc))?;
        ensure!(c.status == WARPQ_STATUS_OK, "CRC32C: {}", st(c.status));
        crc = c.result as u32;
    }
    Ok(crc)
}

fn huge_pages(env: &Env) -> Result<Got, String> {
    const LEN: usize = 4 << 20;
    let dev = open(env)?;
    let fd = fd_of(&dev);
    let ring = map_ring(fd)?;
    let mut said = Vec::new();
    for hugetlb in [false, true] {
        let kind = if hugetlb { "hugetlb" } else { "THP" };
        let (_map, at) = huge_buffer(LEN, hugetlb)?;
        let buf = Anon::borrowed(at as *mut u8, LEN);
        let h = want_ok(&format!("REGISTER the {kind} buffer"), register(fd, buf.addr(0), LEN as u64, RW))?;
        let thp_kb = anon_huge_kb();
        // A COPY whose source and destination both cross the 2 MiB boundary.
        let (src, dst) = ((2 << 20) - 8192, (3 << 20) - 4096);
        let c = ring.run(op::Copy::new(buf.addr(src), buf.addr(dst), 16384))?;
        ensure!(c.status == WARPQ_STATUS_OK, "{kind}: COPY across 2 MiB: {}", st(c.status));
        // SAFETY: inside our mapping.
        let (a, b) = unsafe {
            (
                std::slice::from_raw_parts(buf.ptr().add(src), 16384),
                std::slice::from_raw_parts(buf.ptr().add(dst), 16384),
            )
        };
        ensure!(a == b, "{kind}: the COPY across 2 MiB did not copy the bytes");
        // 64 FILLs in flight, and a drop under them.
        for i in 0..64u64 {
            let off = (i as usize * 61 * PAGE) % (LEN - 16 * PAGE);
            ring.push(op::Fill::new(buf.addr(off), 16 * P, 0x40 + i as u8).build().user_data(100 + i))?;
        }
        ring.kick()?;
        let (drop_at, drop_len) = if hugetlb { (2 << 20, 2 << 20) } else { ((2 << 20) + 12 * PAGE, PAGE) };
        // SAFETY: drops pages of our own mapping under the device (the point).
        ensure!(
            unsafe { libc::madvise(buf.ptr().add(drop_at).cast(), drop_len, libc::MADV_DONTNEED) } == 0,
            "{kind}: MADV_DONTNEED: {}",
            Errno::last()
        );
        for i in 0..64u64 {
            let c = ring.reap(Duration::from_secs(30))?;
            ensure!(c.user_data == 100 + i, "{kind}: completion {} where {} was due", c.user_data, 100 + i);
            ensure!(c.status == WARPQ_STATUS_OK, "{kind}: FILL {i} beside the drop: {}", st(c.status));
        }
        let crc = device_crc(&ring, buf.addr(0), LEN)?;
        // SAFETY: our mapping of LEN bytes.
        let want = warpq::crc32c(0, unsafe { std::slice::from_raw_parts(buf.ptr(), LEN) });
        ensure!(crc == want, "{kind}: the device's CRC32C {crc:#x} after the drop, the CPU's {want:#x}");
        want_ok("UNREGISTER", unregister(fd, h))?;
        let backed = if hugetlb { String::new() } else { format!(" ({thp_kb} KiB of THP while registered)") };
        said.push(format!("{kind}{backed}: COPY across 2 MiB, 64 FILLs OK around the drop, CRC32C matches"));
    }
    Ok(Got::ok(said.join("; ")))
}

/// `AnonHugePages` of this process in KiB (`/proc/self/smaps_rollup`; 0 if
/// unreadable).
fn anon_huge_kb() -> u64 {
    let text = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("AnonHugePages:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn soft_dirty(env: &Env) -> Result<Got, String> {
    let (dev, ring, buf, h) = setup(env, 4)?;
    buf.write(&[1u8; 4 * PAGE]);
    soft_dirty_after_clear_refs(&ring, buf.ptr())?;
    want_ok("UNREGISTER", unregister(fd_of(&dev), h))?;
    Ok(Got::ok("the device's write made the page soft-dirty, and its bytes are in the page"))
}

fn soft_dirty_shared(env: &Env) -> Result<Got, String> {
    let dev = open(env)?;
    let fd = fd_of(&dev);
    let ring = map_ring(fd)?;
    let (mfd, m) = memfd_mapped(4 * PAGE, 1)?;
    let h = want_ok("REGISTER the memfd mapping", register(fd, m.addr(0), 4 * P, RW))?;
    soft_dirty_after_clear_refs(&ring, m.ptr())?;
    let mut page = vec![0u8; PAGE];
    use std::os::unix::fs::FileExt;
    std::fs::File::from(mfd).read_exact_at(&mut page, 2 * P).map_err(|e| format!("pread the memfd: {e}"))?;
    ensure!(page.iter().all(|&b| b == 0x77), "the file's page does not hold the FILL");
    want_ok("UNREGISTER", unregister(fd, h))?;
    Ok(Got::ok("shared: the device's write made the page soft-dirty, and the file holds its bytes"))
}

/// A FILL, `clear_refs 4`, then a device FILL of the third page of the
/// 4-page registered buffer at `base`: it must be soft-dirty and hold it.
fn soft_dirty_after_clear_refs(ring: &RawRing, base: *mut u8) -> Result<(), String> {
    let addr = base as u64;
    let c = ring.run(op::Fill::new(addr, P, 0x11))?;
    ensure!(c.status == WARPQ_STATUS_OK, "FILL before: {}", st(c.status));
    std::fs::write("/proc/self/clear_refs", "4").map_err(|e| format!("clear_refs: {e}"))?;
    let target = addr + 2 * P;
    ensure!(!soft_dirty_bit(target)?, "the page is soft-dirty right after clear_refs");
    let c = ring.run(op::Fill::new(target, P, 0x77))?;
    ensure!(c.status == WARPQ_STATUS_OK, "FILL after clear_refs: {}", st(c.status));
    let dirty = soft_dirty_bit(target)?;
    // SAFETY: inside the caller's 4-page mapping.
    let got = unsafe { std::slice::from_raw_parts(base.add(2 * PAGE), PAGE) };
    ensure!(got.iter().all(|&b| b == 0x77), "the FILL after clear_refs did not land in the page");
    ensure!(dirty, "a device write after clear_refs left the page clean: soft-dirty tracking missed it");
    Ok(())
}
