//! `warpq-user-check`: the `warpq` crate's API on the real driver — bad use
//! gives a clear error and does no damage, safe registrations end when they
//! must, and the typed statuses come back as the driver says. Each check is
//! an `ok` line of the [`Report`] (with the error text where one is
//! expected).
//!
//! [`unbind`] unbinds the device (sysfs) while a queue and a registration
//! are open, prints what each call then returns, and binds it again. Not
//! part of [`run`]: the driver does not support unbinding with open files
//! yet (docs/driver.md).

use std::time::{Duration, Instant};

use warpq::sys::*;
use warpq::{opcode, Access, Buffer, Device, Entry, ErrorKind, PushError, Queue, Status};

use super::{Failure, Section};
use crate::harness;
use crate::report::Report;
use crate::stream::{push_all, reap, sqe};
use crate::Anon;

const PAGE: usize = 4096;

macro_rules! ensure {
    ($cond:expr, $($msg:tt)*) => {
        if !$cond {
            return Err(format!($($msg)*));
        }
    };
}

/// Runs one entry and returns its status.
fn run1(q: &mut Queue<'_>, e: Entry) -> Result<Status, String> {
    q.submission().push(&e.user_data(0xabc)).map_err(|e| e.to_string())?;
    q.submit_and_wait(1).map_err(|e| e.to_string())?;
    let c = q.completion().next().ok_or("no completion")?;
    ensure!(c.user_data() == 0xabc, "completion for {}", c.user_data());
    Ok(c.status())
}

/// `res` must be an error of `kind`: an `ok` line `what` with the error's text.
fn expect_err<T: std::fmt::Debug>(
    r: &mut Report,
    what: &str,
    kind: ErrorKind,
    res: warpq::Result<T>,
) -> Result<(), String> {
    match res {
        Err(e) if e.kind() == kind => {
            r.ok(what, &e.to_string());
            Ok(())
        }
        Err(e) => Err(format!("{what}: expected {kind:?}, got {:?}: {e}", e.kind())),
        Ok(v) => Err(format!("{what}: accepted ({v:?})")),
    }
}

fn map(len: usize, prot: i32) -> *mut u8 {
    // SAFETY: a fresh private anonymous mapping.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0) };
    assert_ne!(p, libc::MAP_FAILED);
    p.cast()
}

fn opening(r: &mut Report) -> Result<(), String> {
    expect_err(r, "open /dev/null", ErrorKind::NotWarpq, Device::open("/dev/null"))?;
    expect_err(r, "open a missing device", ErrorKind::NotFound, Device::open("/dev/warpq99"))?;
    Ok(())
}

fn registering(r: &mut Report, dev: &Device) -> Result<(), String> {
    let info = dev.info().map_err(|e| e.to_string())?;
    let buf = Anon::new(16 * PAGE);
    // Every register_raw below: only raw pointers refer to these mappings,
    // which outlive the calls; a successful registration is undone at once.
    // SAFETY: as just said.
    expect_err(r, "register unaligned", ErrorKind::Unaligned, unsafe { dev.register_raw(buf.ptr().add(8), PAGE, 3) })?;
    // SAFETY: as above: raw pointers only, to memory that outlives the call.
    expect_err(r, "register a partial page", ErrorKind::Unaligned, unsafe {
        dev.register_raw(buf.ptr(), PAGE + 1, 3)
    })?;
    // SAFETY: as above: raw pointers only, to memory that outlives the call.
    expect_err(r, "register zero bytes", ErrorKind::Empty, unsafe { dev.register_raw(buf.ptr(), 0, 3) })?;
    // SAFETY: as above: raw pointers only, to memory that outlives the call.
    expect_err(r, "register with no access bits", ErrorKind::InvalidArgument, unsafe {
        dev.register_raw(buf.ptr(), PAGE, 0)
    })?;
    let gone = map(4 * PAGE, libc::PROT_READ | libc::PROT_WRITE);
    // SAFETY: our mapping.
    unsafe { libc::munmap(gone.cast(), 4 * PAGE) };
    // SAFETY: as above: raw pointers only, to memory that outlives the call.
    expect_err(r, "register unmapped memory", ErrorKind::BadMemory, unsafe { dev.register_raw(gone, 4 * PAGE, 3) })?;
    let ro = map(4 * PAGE, libc::PROT_READ);
    // SAFETY: as above: raw pointers only, to memory that outlives the call.
    expect_err(r, "register read-only memory for the device to write", ErrorKind::BadMemory, unsafe {
        dev.register_raw(ro, 4 * PAGE, Access::Write.bits())
    })?;
    // SAFETY: as above: raw pointers only, to memory that outlives the call.
    let h = unsafe { dev.register_raw(ro, 4 * PAGE, Access::Read.bits()) }
        .map_err(|e| format!("read-only for reading: {e}"))?;
    dev.unregister(h).map_err(|e| e.to_string())?;
    r.ok("register read-only memory for the device to read", "accepted");
    let big = info.max_region_bytes as usize + PAGE;
    let huge = map(big, libc::PROT_READ | libc::PROT_WRITE);
    // SAFETY: as above: raw pointers only, to memory that outlives the call.
    expect_err(r, "register more than max_region_bytes", ErrorKind::TooLarge, unsafe {
        dev.register_raw(huge, big, 3)
    })?;
    // SAFETY: our mappings, no longer registered.
    unsafe { libc::munmap(huge.cast(), big) };
    // SAFETY: as above: raw pointers only, to memory that outlives the call.
    let h = unsafe { dev.register_raw(buf.ptr(), 8 * PAGE, 3) }.map_err(|e| e.to_string())?;
    // SAFETY: as above: raw pointers only, to memory that outlives the call.
    expect_err(r, "register an overlapping range", ErrorKind::Overlap, unsafe {
        dev.register_raw(buf.ptr().add(4 * PAGE), 8 * PAGE, 3)
    })?;
    dev.unregister(h).map_err(|e| e.to_string())?;
    expect_err(r, "unregister twice", ErrorKind::NoSuchRegion, dev.unregister(h))?;
    // SAFETY: our mapping.
    unsafe { libc::munmap(ro.cast(), 4 * PAGE) };
    // The safe forms check before asking the kernel.
    let mut b = Buffer::new(2 * PAGE).map_err(|e| e.to_string())?;
    dev.scope(|s| {
        expect_err(
            r,
            "scope: register a sub-page slice",
            ErrorKind::Unaligned,
            s.register(&mut b[8..PAGE + 8], Access::Write),
        )
    })?;
    dev.scope(|s| {
        expect_err(r, "scope: register an empty slice", ErrorKind::Empty, s.register(&mut b[..0], Access::Write))
    })?;
    expect_err(r, "alloc zero bytes", ErrorKind::Empty, dev.alloc(0, Access::Read))?;
    Ok(())
}

/// The region table: `max_regions` one-page regions with a page of gap
/// between them (1024 by default), one more refused; a FILL into every
/// region, verified; every seventh page dropped (its region's notifier
/// fires), all filled again and verified; then all unregistered.
fn many_regions(r: &mut Report, dev: &Device, q: &mut Queue<'_>) -> Result<(), String> {
    let info = dev.info().map_err(|e| e.to_string())?;
    let n = info.max_regions as usize;
    let many = Anon::new(2 * n * PAGE + PAGE);
    let page = |i: usize| 2 * i * PAGE;
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        // SAFETY: as above: raw pointers only, to memory that outlives the call.
        let h = unsafe { dev.register_raw(many.ptr().add(page(i)), PAGE, 3) };
        handles.push(h.map_err(|e| format!("region {i}: {e}"))?);
    }
    // SAFETY: as above: raw pointers only, to memory that outlives the call.
    let last = unsafe { dev.register_raw(many.ptr().add(page(n)), PAGE, 3) };
    if last.is_err() {
        expect_err(r, &format!("register a region past max_regions ({n})"), ErrorKind::TooManyRegions, last)?;
    } else {
        return Err(format!("register a region past max_regions ({n}): accepted"));
    }
    // One FILL per region, in batches the rings hold; then every byte of
    // every region's page checked.
    let fill_all = |q: &mut Queue<'_>, round: u8| -> Result<(), String> {
        let value = |i: usize| (i % 251) as u64 + 1 + u64::from(round);
        for batch in (0..n).collect::<Vec<_>>().chunks(64) {
            let sqes: Vec<_> = batch
                .iter()
                .map(|&i| sqe(WARPQ_OP_FILL, i as u64, 0, many.addr(page(i) + 64 * (i % 63)), 64, value(i)))
                .collect();
            push_all(q, &sqes)?;
            for _ in batch {
                let c = reap(q)?;
                ensure!(c.status == WARPQ_STATUS_OK, "FILL of region {}: status {}", c.user_data, c.status);
            }
        }
        for i in 0..n {
            // SAFETY: our mapping, no command in flight.
            let bytes = unsafe { std::slice::from_raw_parts(many.ptr().add(page(i)), PAGE) };
            let at = 64 * (i % 63);
            for (off, &b) in bytes.iter().enumerate() {
                let want = if (at..at + 64).contains(&off) { value(i) as u8 } else { 0 };
                ensure!(b == want, "region {i} byte {off}: {b:#x}, want {want:#x} (round {round})");
            }
        }
        Ok(())
    };
    fill_all(q, 0)?;
    let mut dropped = 0;
    for i in (0..n).step_by(7) {
        // SAFETY: a page of our own mapping.
        if unsafe { libc::madvise(many.ptr().add(page(i)).cast(), PAGE, libc::MADV_DONTNEED) } != 0 {
            return Err(format!("madvise: {}", std::io::Error::last_os_error()));
        }
        dropped += 1;
    }
    fill_all(q, 1)?;
    for h in handles {
        dev.unregister(h).map_err(|e| e.to_string())?;
    }
    r.ok(
        &format!("{n} regions in one queue"),
        &format!("{} FILLs verified, {dropped} regions' pages dropped and refilled", 2 * n),
    );
    Ok(())
}

fn statuses(r: &mut Report, dev: &Device, q: &mut Queue<'_>) -> Result<(), String> {
    let rw = dev.alloc(4 * PAGE, Access::ReadWrite).map_err(|e| e.to_string())?;
    let ro = dev.alloc(PAGE, Access::Read).map_err(|e| e.to_string())?;
    let cases = [
        (
            "FILL crossing the buffer's end",
            opcode::Fill::new(rw.addr_at(4 * PAGE - 8), 16, 1).build(),
            Status::FaultBounds,
        ),
        ("FILL of a read-only buffer", opcode::Fill::new(ro.addr(), 16, 1).build(), Status::FaultAccess),
        ("FILL of zero bytes", opcode::Fill::new(rw.addr(), 0, 1).build(), Status::Invalid),
        ("FILL over 4 MiB", opcode::Fill::new(rw.addr(), warpq::MAX_COMMAND_BYTES + 1, 1).build(), Status::Invalid),
        ("unknown opcode 42", Entry::from_raw(warpq_sqe { opcode: 42, len: 1, ..Default::default() }), Status::Invalid),
        (
            "edu-DMA COPY of 8 KiB",
            opcode::Copy::new(rw.addr(), rw.addr_at(PAGE), 2 * PAGE as u64).edu_dma(true).build(),
            Status::Invalid,
        ),
        ("NOP", opcode::Nop::new().build(), Status::Ok),
    ];
    for (what, e, want) in cases {
        let got = run1(q, e)?;
        ensure!(got == want, "{what}: {got} (expected {want})");
        r.ok(what, &format!("completes as {got:?}: {got}"));
    }
    ensure!(rw.to_vec().iter().all(|&b| b == 0), "a refused command changed memory");
    // A registration ends with its value: the address is unreachable after.
    let addr = ro.addr();
    drop(ro);
    let got = run1(q, opcode::Crc32c::new(addr, 64).build())?;
    ensure!(got == Status::FaultUnregistered, "after dropping a RegisteredBuffer: {got}");
    r.ok("drop a RegisteredBuffer", "unregistered");
    // unregister() gives the buffer back.
    let plain = rw.unregister().map_err(|e| e.to_string())?;
    let got = run1(q, opcode::Fill::new(plain.addr(), 64, 7).build())?;
    ensure!(got == Status::FaultUnregistered && plain[0] == 0, "after unregister(): {got}");
    r.ok("RegisteredBuffer::unregister", "gives a plain Buffer back, unreachable by the device");
    Ok(())
}

fn scopes(r: &mut Report, dev: &Device, q: &mut Queue<'_>) -> Result<(), String> {
    let mut mem = Buffer::new(8 * PAGE).map_err(|e| e.to_string())?;
    let addr = mem.addr();
    let slice: &mut [u8] = &mut mem;
    // A forgotten registration is unregistered at the scope's end.
    dev.scope(|s| -> Result<(), String> {
        let (a, b) = slice.split_at_mut(4 * PAGE);
        let ra = s.register(a, Access::Write).map_err(|e| e.to_string())?;
        let rb = s.register(b, Access::ReadWrite).map_err(|e| e.to_string())?;
        ensure!(run1(q, opcode::Fill::new(ra.addr(), 4 * PAGE as u64, 0x5a).build())? == Status::Ok, "fill a");
        ensure!(run1(q, opcode::Copy::new(rb.addr(), ra.addr(), 64).build())? == Status::Ok, "copy b->a");
        let mut got = [0u8; 65];
        ra.read_at(0, &mut got);
        ensure!(got[..64].iter().all(|&x| x == 0) && got[64] == 0x5a, "read_at sees the device's writes");
        std::mem::forget(ra);
        drop(rb);
        Ok(())
    })?;
    ensure!(slice[..64].iter().all(|&x| x == 0) && slice[64..4 * PAGE].iter().all(|&x| x == 0x5a), "after the scope");
    let got = run1(q, opcode::Fill::new(addr, 64, 1).build())?;
    ensure!(got == Status::FaultUnregistered, "a forgotten registration outlived its scope: {got}");
    ensure!(slice[0] == 0, "the device wrote after the scope");
    r.ok("scope: forget a registration", "unregistered when its scope ends");
    // A shared registration: the device reads, the program reads too.
    let want = warpq::crc32c(0, &slice[..4 * PAGE]);
    let crc = dev.scope(|s| -> Result<u64, String> {
        let r = s.register_shared(&slice[..4 * PAGE]).map_err(|e| e.to_string())?;
        let _still_readable = slice[0];
        q.submission().push(&opcode::Crc32c::new(r.addr(), r.len() as u64).build()).map_err(|e| e.to_string())?;
        q.submit_and_wait(1).map_err(|e| e.to_string())?;
        let c = q.completion().next().ok_or("no completion")?;
        c.into_result().map_err(|s| s.to_string())
    })?;
    ensure!(crc == u64::from(want), "shared registration CRC {crc:#x} != {want:#x}");
    r.ok("scope: a shared registration", "lets the device read");
    // Unwinding out of a scope also unregisters.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        dev.scope(|s| {
            let reg = s.register(&mut slice[..PAGE], Access::Write).expect("register");
            std::mem::forget(reg);
            panic!("deliberate");
        })
    }));
    std::panic::set_hook(hook);
    ensure!(unwound.is_err(), "the scope did not panic");
    let got = run1(q, opcode::Fill::new(addr, 64, 1).build())?;
    ensure!(got == Status::FaultUnregistered, "a registration outlived a panicking scope: {got}");
    r.ok("scope: panic", "a panicking scope unregisters what it registered");
    Ok(())
}

fn full_ring(r: &mut Report, dev: &Device, q: &mut Queue<'_>) -> Result<(), String> {
    let buf = dev.alloc(PAGE, Access::Write).map_err(|e| e.to_string())?;
    let e = opcode::Fill::new(buf.addr(), 64, 3).build();
    let mut sq = q.submission();
    let mut pushed = 0;
    while sq.push(&e.user_data(pushed)).is_ok() {
        pushed += 1;
    }
    ensure!(pushed == u64::from(WARPQ_SQ_ENTRIES), "pushed {pushed} before full");
    ensure!(sq.push(&e) == Err(PushError::Full), "not full");
    drop(sq);
    r.ok("push to a full ring", &PushError::Full.to_string());
    // The ioctl path takes only what fits: the engine may have made room
    // meanwhile (its idle poll), so how many is not fixed, but no entry it
    // has not consumed yet may be overwritten: each of the pushed and the
    // queued entries completes exactly once.
    let extra: Vec<Entry> = (0..64).map(|i| e.user_data(1000 + i)).collect();
    let n = q.submit_batch(&extra).map_err(|e| e.to_string())?;
    ensure!(n <= 64, "WARPQ_IOC_SUBMIT queued {n} of 64");
    let total = pushed + n as u64;
    let mut seen = std::collections::BTreeSet::new();
    while (seen.len() as u64) < total {
        q.submit_and_wait(1).map_err(|e| e.to_string())?;
        for c in q.completion() {
            ensure!(c.status() == Status::Ok, "{c:?}");
            ensure!(seen.insert(c.user_data()), "entry {} completed twice", c.user_data());
        }
    }
    let want: std::collections::BTreeSet<u64> = (0..pushed).chain(1000..1000 + n as u64).collect();
    ensure!(seen == want, "completed {:?}, not the entries pushed and queued", seen.symmetric_difference(&want));
    ensure!(q.in_flight() == 0, "{} in flight", q.in_flight());
    r.ok("WARPQ_IOC_SUBMIT into a full ring", &format!("queued {n} of 64; all {total} completed"));
    Ok(())
}

/// How long the forked child may take.
const CHILD_LIMIT: Duration = Duration::from_secs(60);

fn fork(r: &mut Report, dev: &Device, q: &mut Queue<'_>) -> Result<(), String> {
    let owner = q.owner_id();
    // The child checks its copies and reports.
    let child = harness::run_case(CHILD_LIMIT, || {
        let start = Instant::now();
        match (q.submit(), q.wait(1, None), q.submit_and_wait(1), q.submit_batch(&[opcode::Nop::new().build()])) {
            (Err(a), Err(b), Err(c), Err(d))
                if [a.kind(), b.kind(), c.kind(), d.kind()].iter().all(|&k| k == ErrorKind::Forked) =>
            {
                match dev.queue() {
                    Ok(mut mine) if mine.owner_id() != owner => {
                        let nop = run1(&mut mine, opcode::Nop::new().build());
                        ensure!(
                            nop == Ok(Status::Ok) && start.elapsed() < Duration::from_secs(5),
                            "child: a NOP on its own queue: {nop:?} after {:?}",
                            start.elapsed()
                        );
                        Ok(format!("the parent's Queue refuses: {a}"))
                    }
                    Ok(_) => Err("child: its own queue has the parent's owner id".into()),
                    Err(e) => Err(format!("child: its own queue: {e}")),
                }
            }
            other => Err(format!("child: {other:?}")),
        }
    });
    r.ok("fork: child", &child.result?);
    ensure!(run1(q, opcode::Nop::new().build())? == Status::Ok, "the parent's queue after fork");
    r.ok("fork", "the child's inherited Queue says what to do, the child's own queue works, the parent's too");
    Ok(())
}

/// `unbind`: what a process still holding the device sees when the device
/// is unbound from the driver (sysfs), then rebinding. Prints what each call
/// returns; fails only on a hang (every wait is bounded) or if the device
/// does not come back.
pub fn unbind(r: &mut Report, path: &str) -> Result<(), String> {
    let dev = Device::open(path).map_err(|e| e.to_string())?;
    let mut q = dev.queue().map_err(|e| e.to_string())?;
    let buf = dev.alloc(4 * PAGE, Access::ReadWrite).map_err(|e| e.to_string())?;
    ensure!(run1(&mut q, opcode::Fill::new(buf.addr(), 64, 1).build())? == Status::Ok, "before unbind");
    let name = path.trim_start_matches("/dev/");
    let pci = warpq::devices()
        .map_err(|e| e.to_string())?
        .into_iter()
        .find(|d| d.name.as_deref() == Some(name))
        .ok_or(format!("{name} not bound"))?
        .pci_address;
    std::fs::write(format!("{}/unbind", warpq::SYSFS_DRIVER_DIR), &pci).map_err(|e| format!("unbind: {e}"))?;
    println!("unbind: {pci} unbound with the file, a queue and a registration open");
    println!("unbind: devices now: {:?}", warpq::devices().map(|d| d.len()));
    println!("unbind: open again: {:?}", Device::open(path).map(|_| ()).map_err(|e| e.to_string()));
    println!("unbind: INFO: {:?}", dev.info().map(|i| i.version).map_err(|e| e.to_string()));
    let pushed = q.submission().push(&opcode::Fill::new(buf.addr(), 64, 2).build().user_data(1));
    println!("unbind: push: {pushed:?}");
    println!("unbind: submit: {:?}", q.submit().map_err(|e| e.to_string()));
    println!("unbind: wait (2 s): {:?}", q.wait(1, Some(Duration::from_secs(2))).map_err(|e| e.to_string()));
    println!("unbind: completion: {:?}", q.completion().next());
    println!("unbind: alloc+register: {:?}", dev.alloc(PAGE, Access::Read).map(|_| ()).map_err(|e| e.to_string()));
    println!("unbind: ring flags: {:#x}", q.header().flags);
    println!("unbind: unregister: {:?}", buf.unregister().map(|_| ()).map_err(|e| e.to_string()));
    drop(q);
    drop(dev);
    std::fs::write(format!("{}/bind", warpq::SYSFS_DRIVER_DIR), &pci).map_err(|e| format!("bind: {e}"))?;
    // The device comes back, possibly under another name.
    let start = Instant::now();
    let (again, new_path) = loop {
        let found = warpq::devices()
            .ok()
            .and_then(|ds| ds.into_iter().find(|d| d.pci_address == pci))
            .and_then(|d| d.dev_path());
        if let Some(p) = found {
            if let Ok(d) = Device::open(&p) {
                break (d, p);
            }
        }
        ensure!(start.elapsed() < Duration::from_secs(10), "{pci} did not come back after bind");
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut q = again.queue().map_err(|e| e.to_string())?;
    ensure!(run1(&mut q, opcode::Nop::new().build())? == Status::Ok, "after rebind");
    r.ok("unbind", &format!("rebound as {}, a fresh open works", new_path.display()));
    Ok(())
}

/// Waiting without WAIT: `Queue::poll_completions` times out with nothing
/// in flight and returns once a FILL completed; an eventfd registered with
/// `Device::register_eventfd` counts the batch; a descriptor that is not an
/// eventfd is refused with `InvalidArgument`; after `unregister_eventfd`
/// nothing more is counted.
fn waiting(r: &mut Report, dev: &Device, q: &mut Queue<'_>) -> Result<(), String> {
    use std::os::fd::{AsFd, BorrowedFd};
    let t = Instant::now();
    let n = q.poll_completions(Some(Duration::from_millis(50))).map_err(|e| e.to_string())?;
    ensure!(n == 0 && t.elapsed() >= Duration::from_millis(45), "poll_completions with nothing in flight: {n}");
    expect_err(r, "register_eventfd of the device itself", ErrorKind::InvalidArgument, {
        dev.register_eventfd(dev.as_file().as_fd())
    })?;
    // SAFETY: no pointer arguments; the descriptor is checked and closed below.
    let efd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    ensure!(efd >= 0, "eventfd: {}", std::io::Error::last_os_error());
    // SAFETY: `efd` is open until the close at the end.
    let eventfd = unsafe { BorrowedFd::borrow_raw(efd) };
    let take = || {
        let mut v = 0u64;
        // SAFETY: reads 8 bytes into `v`.
        let n = unsafe { libc::read(efd, (&mut v as *mut u64).cast(), 8) };
        if n == 8 {
            v
        } else {
            0
        }
    };
    let result = (|| {
        dev.register_eventfd(eventfd).map_err(|e| format!("register_eventfd: {e}"))?;
        let buf = dev.alloc(4096, Access::ReadWrite).map_err(|e| e.to_string())?;
        q.submission()
            .push(&opcode::Fill::new(buf.addr(), 4096, 0x5e).build().user_data(77))
            .map_err(|e| e.to_string())?;
        q.submit().map_err(|e| e.to_string())?;
        let n = q.poll_completions(None).map_err(|e| e.to_string())?;
        ensure!(n >= 1, "poll_completions returned {n}");
        let c = q.completion().next().ok_or("no completion after poll_completions")?;
        ensure!(c.user_data() == 77 && c.status() == Status::Ok, "completion {c:?}");
        ensure!(buf.to_vec().iter().all(|&b| b == 0x5e), "the FILL did not land");
        // The engine publishes a batch, then signals the eventfd: a poller
        // of the ring can see the completion first. Wait for the signal
        // (up to 1 s) before counting it.
        let mut pfd = libc::pollfd { fd: efd, events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd for the duration of the call.
        unsafe { libc::poll(&mut pfd, 1, 1000) };
        let signals = take();
        ensure!(signals >= 1, "the eventfd counted {signals} after a completion");
        dev.unregister_eventfd().map_err(|e| format!("unregister_eventfd: {e}"))?;
        q.submission().push(&opcode::Nop::new().build().user_data(78)).map_err(|e| e.to_string())?;
        q.submit().map_err(|e| e.to_string())?;
        q.poll_completions(None).map_err(|e| e.to_string())?;
        let _ = q.completion().count();
        ensure!(take() == 0, "the eventfd counted after unregister_eventfd");
        Ok(signals)
    })();
    // SAFETY: our descriptor, closed once.
    unsafe { libc::close(efd) };
    let signals = result?;
    r.ok(
        "poll_completions and register_eventfd",
        &format!(
            "nothing in flight: 0 after 50 ms; a FILL: returned with it ready, eventfd counted {signals}; after \
             unregister_eventfd: 0"
        ),
    );
    Ok(())
}

/// The queue's own latency histograms (STATS, `Device::histograms`) see its
/// invalidations, rebuilds and stale time, and agree with its counters.
fn histograms(r: &mut Report, dev: &Device, q: &mut Queue<'_>) -> Result<(), String> {
    let before = dev.histograms().map_err(|e| format!("histograms: {e}"))?;
    let buf = Anon::new(16 * PAGE);
    // SAFETY: only raw pointers refer to the buffer while it is registered.
    let h = unsafe { dev.register_raw(buf.ptr(), buf.len(), WARPQ_ACCESS_READ | WARPQ_ACCESS_WRITE) }
        .map_err(|e| e.to_string())?;
    let st0 = dev.stats().map_err(|e| e.to_string())?;
    for round in 0..3u8 {
        // Dropping a registered page tears the buffer down (under either
        // policy); the next command's touch of the ring rebuilds it.
        // SAFETY: our own mapping.
        unsafe { libc::madvise(buf.ptr().add(PAGE).cast(), PAGE, libc::MADV_DONTNEED) };
        push_all(q, &[sqe(WARPQ_OP_FILL, u64::from(round), 0, buf.addr(0), PAGE as u64, u64::from(0x40 + round))])?;
        let c = reap(q)?;
        ensure!(c.status == 0 && buf.bytes()[0] == 0x40 + round, "FILL after teardown {round}: status {}", c.status);
    }
    let st = dev.stats().map_err(|e| e.to_string())?;
    let after = dev.histograms().map_err(|e| format!("histograms: {e}"))?;
    dev.unregister(h).map_err(|e| e.to_string())?;
    let added = |name: &str| {
        let total = |v: &[warpq::sysfs::Histogram]| v.iter().find(|h| h.name == name).map_or(0, |h| h.total());
        total(&after) - total(&before)
    };
    let teardowns = st.teardowns - st0.teardowns;
    ensure!(teardowns >= 3, "3 DONTNEEDs of a registered page made {teardowns} teardowns");
    let invalidations = (st.invalidations - st.ignored_by_policy) - (st0.invalidations - st0.ignored_by_policy);
    ensure!(
        added("invalidate_ns") == invalidations,
        "invalidate_ns got {} samples for {invalidations} invalidations",
        added("invalidate_ns")
    );
    for name in ["drain_ns", "unmap_ns", "unpin_ns", "paused_ns"] {
        ensure!(added(name) == teardowns, "{name} got {} samples for {teardowns} teardowns", added(name));
    }
    for name in ["rebuild_ns", "pin_ns", "map_ns"] {
        ensure!(added(name) >= teardowns, "{name} got {} samples for {teardowns} rebuilds", added(name));
    }
    let paused = after.iter().find(|h| h.name == "paused_ns").and_then(|h| h.quantile_upper_bound(0.99)).unwrap_or(0);
    r.ok(
        "per-queue histograms (STATS)",
        &format!(
            "{} invalidations, {teardowns} teardowns with as many drain/unmap/unpin/paused samples, {} rebuilds; paused p99 < {paused} ns",
            added("invalidate_ns"),
            added("rebuild_ns")
        ),
    );
    Ok(())
}

/// Every check but `unbind`, on the device at `path`, each an `ok` line of
/// `r`; the first failure ends the run.
pub fn run(r: &mut Report, path: &str) -> Result<(), Failure> {
    opening(r).section("open")?;
    let dev = Device::open(path).map_err(|e| e.to_string()).section("open")?;
    {
        let first = dev.queue().map_err(|e| e.to_string()).section("queue")?;
        expect_err(r, "a second Queue in one process", ErrorKind::InUse, dev.queue()).section("queue")?;
        drop(first);
    }
    let mut q = dev.queue().map_err(|e| format!("a Queue after the first was dropped: {e}")).section("queue")?;
    registering(r, &dev).section("register")?;
    many_regions(r, &dev, &mut q).section("region table")?;
    statuses(r, &dev, &mut q).section("status")?;
    scopes(r, &dev, &mut q).section("scope")?;
    full_ring(r, &dev, &mut q).section("full ring")?;
    histograms(r, &dev, &mut q).section("histograms")?;
    waiting(r, &dev, &mut q).section("waiting")?;
    fork(r, &dev, &mut q).section("fork")?;
    super::mapped::run(r, &dev, &mut q).section("mappings")?;
    Ok(())
}
