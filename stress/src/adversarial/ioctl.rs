//! The ioctl layer: request numbers, structure sizes, argument pointers.

use warpq::sys::*;

use super::*;
use crate::raw::{ioc, ioctl, ioctl_on, IOCTLS, KERNEL_ADDR, NONCANONICAL};
use crate::Rng;

/// Where an ioctl's argument points.
#[derive(Clone, Copy)]
pub enum Arg {
    /// 512 zeroed bytes of ours, the first word saying size 512.
    Buf,
    /// This address (null, kernel, non-canonical...).
    At(u64),
}

/// Which descriptor a call uses.
#[derive(Clone, Copy)]
pub enum Fd {
    /// A fresh file of the device.
    Dev,
    /// A descriptor that was just closed.
    Closed,
    /// -1.
    MinusOne,
}

/// Requests that are no warpq ioctl.
const UNKNOWN: [(&str, &str, libc::c_ulong); 8] = [
    ("nr-0x08", "number 0x08 (the first past WARPQ_IOC_EVENTFD)", ioc(3, 0xb7, 0x08, 8)),
    ("nr-0xff", "number 0xff", ioc(3, 0xb7, 0xff, 8)),
    ("type-0xb8", "type 0xb8 with INFO's number", ioc(3, 0xb8, 0x00, 48)),
    ("request-0", "request 0", ioc(0, 0, 0, 0)),
    ("info-ior", "INFO as _IOR", ioc(2, 0xb7, 0x00, 48)),
    ("register-iow", "REGISTER as _IOW", ioc(1, 0xb7, 0x01, 32)),
    ("wake-io", "WAKE as _IO", ioc(0, 0xb7, 0x05, 0)),
    ("tcgets", "TCGETS", libc::TCGETS),
];

/// Argument pointers the kernel must refuse.
const BAD_ARGS: [(&str, &str, u64); 3] = [
    ("kernel", "a kernel address", KERNEL_ADDR),
    ("noncanonical", "a non-canonical address", NONCANONICAL),
    ("wrapping", "2^64 - 4", u64::MAX - 3),
];

pub(super) fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    for (row, what, req) in UNKNOWN {
        v.push(ioctl_case(
            format!("ioctl-unknown/{row}"),
            format!("{what} on the device"),
            Fd::Dev,
            req,
            Arg::Buf,
            libc::ENOTTY,
        ));
    }
    v.push(story(
        "ioctl-size-bits",
        "REGISTER, UNREGISTER and INFO under ioctl numbers whose size bits are 0, 0x3fff and 4096 (dispatch on type \
         and number only)",
        Expect::Ok,
        size_bits,
    ));
    for (name, req, size) in IOCTLS {
        for short in [0, 4, size as u32 - 1] {
            v.push(case(
                format!("ioctl-short-struct/{}-{short}", name.to_lowercase()),
                format!("{name} with size {short}, otherwise valid contents; nothing may be registered or queued"),
                Expect::Errno(libc::EINVAL),
                Box::new(move |env| short_struct(env, name, req, short)),
            ));
        }
    }
    v.push(story(
        "ioctl-long-struct",
        "REGISTER, UNREGISTER, INFO, STATS, WAIT, WAKE with larger sizes (up to 0xffffffff) and nonzero trailing \
         bytes: the kernel writes only the structure it knows (STATS: histograms only when the size covers them) and \
         reports its size",
        Expect::Ok,
        long_struct,
    ));
    v.push(story(
        "ioctl-garbage-struct",
        "400 ioctls with random structure contents, then 64 random entries through SUBMIT: only success, EINVAL, \
         EFAULT, ENOENT or E2BIG; nothing pinned; every random entry completes INVALID",
        Expect::Ok,
        garbage_struct,
    ));
    for (name, req, _) in IOCTLS {
        let row = name.to_lowercase();
        v.push(ioctl_case(
            format!("ioctl-null-arg/{row}"),
            format!("{name} at a null pointer"),
            Fd::Dev,
            req,
            Arg::At(0),
            libc::EFAULT,
        ));
    }
    for (name, req, _) in IOCTLS {
        for (row, what, at) in BAD_ARGS {
            v.push(ioctl_case(
                format!("ioctl-kernel-arg/{}-{row}", name.to_lowercase()),
                format!("{name} with its argument at {what}"),
                Fd::Dev,
                req,
                Arg::At(at),
                libc::EFAULT,
            ));
        }
    }
    v.push(story(
        "ioctl-readonly-arg-register",
        "REGISTER whose argument lies in a read-only page (the handle cannot be written back): no registration left \
         behind",
        Expect::Errno(libc::EFAULT),
        readonly_arg_register,
    ));
    v.push(story(
        "ioctl-readonly-arg-submit",
        "SUBMIT of one NOP whose argument lies in a read-only page (`submitted` cannot be written back): nothing \
         queued",
        Expect::Errno(libc::EFAULT),
        readonly_arg_submit,
    ));
    v
}

/// A row of one ioctl on descriptor `fd` with argument `arg`.
pub fn ioctl_case(name: String, does: String, fd: Fd, req: libc::c_ulong, arg: Arg, errno: i32) -> Case {
    case(name, does, Expect::Errno(errno), Box::new(move |env| with_fd(env, fd, |fd| call(fd, req, arg))))
}

/// Runs `f` on a descriptor of kind `fd`.
pub fn with_fd(env: &Env, fd: Fd, f: impl FnOnce(i32) -> Result<Got, String>) -> Result<Got, String> {
    let dev = open(env)?;
    match fd {
        Fd::Dev => f(fd_of(&dev)),
        Fd::MinusOne => f(-1),
        Fd::Closed => {
            // SAFETY: duplicates our descriptor; the copy is closed at once.
            let dup = unsafe { libc::dup(fd_of(&dev)) };
            ensure!(dup >= 0, "dup: {}", Errno::last());
            // SAFETY: closes the copy we own.
            unsafe { libc::close(dup) };
            f(dup)
        }
    }
}

fn call(fd: i32, req: libc::c_ulong, arg: Arg) -> Result<Got, String> {
    let mut buf = [0u64; 64];
    buf[0] = 512;
    let at = match arg {
        Arg::Buf => buf.as_mut_ptr() as u64,
        Arg::At(a) => a,
    };
    let r = ioctl(fd, req, at);
    Ok(Got::call(&r, format!("request {req:#x}, argument {at:#x}")))
}

fn size_bits(env: &Env) -> Result<Got, String> {
    let dev = open(env)?;
    let fd = fd_of(&dev);
    let buf = Anon::new(4 * PAGE);
    let mut r = warpq_register { size: 32, access: RW, addr: buf.addr(0), len: buf.len() as u64, handle: 0 };
    want_ok("REGISTER numbered with size bits 0", ioctl_on(fd, ioc(3, 0xb7, 0x01, 0), &mut r))?;
    ensure!(pinned(fd)? == 4, "REGISTER numbered with size bits 0 pinned {} pages", pinned(fd)?);
    let mut u = warpq_unregister { size: 16, rsvd: 0, handle: r.handle };
    want_ok("UNREGISTER numbered with size bits 0x3fff", ioctl_on(fd, ioc(3, 0xb7, 0x02, 0x3fff), &mut u))?;
    let mut i = warpq_info { size: 48, ..Default::default() };
    want_ok("INFO numbered with size 4096", ioctl_on(fd, ioc(3, 0xb7, 0x00, 4096), &mut i))?;
    ensure!(i.version == WARPQ_UAPI_VERSION, "INFO numbered with size 4096: version {}", i.version);
    ensure!(pinned(fd)? == 0, "{} pages still pinned", pinned(fd)?);
    Ok(Got::ok("REGISTER, UNREGISTER and INFO dispatched by type and number whatever the size bits"))
}

/// An otherwise valid argument for `name`: if the kernel ignored the size,
/// it would register `buf`, queue the NOP at `nop`, and so on.
fn plausible_arg(name: &str, size: u32, buf: &Anon, nop: u64) -> [u64; 64] {
    let mut a = [0u64; 64];
    a[0] = u64::from(size);
    match name {
        "REGISTER" => {
            a[0] |= u64::from(RW) << 32;
            a[1] = buf.addr(0);
            a[2] = buf.len() as u64;
        }
        "UNREGISTER" => a[1] = 1 << 16,
        "SUBMIT" => {
            a[0] |= 1 << 32;
            a[1] = nop;
        }
        _ => {}
    }
    a
}

fn short_struct(env: &Env, name: &str, req: libc::c_ulong, size: u32) -> Result<Got, String> {
    let dev = open(env)?;
    let fd = fd_of(&dev);
    let ring = map_ring(fd)?;
    let buf = Anon::new(4 * PAGE);
    let nop = [*nop().user_data(0x5e).as_raw()];
    let mut arg = plausible_arg(name, size, &buf, nop.as_ptr() as u64);
    let r = ioctl(fd, req, arg.as_mut_ptr() as u64);
    ensure!(pinned(fd)? == 0, "{} pages pinned by a short REGISTER", pinned(fd)?);
    ensure!(ring.get(raw::header::SQ_TAIL) == 0, "a short SUBMIT queued {} entries", ring.get(raw::header::SQ_TAIL));
    Ok(Got::call(&r, "nothing registered or queued"))
}

fn long_struct(env: &Env) -> Result<Got, String> {
    let dev = open(env)?;
    let fd = fd_of(&dev);
    let buf = Anon::new(8 * PAGE);
    let tail = 0xa5a5_a5a5_a5a5_a5a5u64;
    // REGISTER, 64 bytes: 32 trailing bytes of 0xa5.
    let mut r = [tail; 8];
    r[0] = 64 | (u64::from(RW) << 32);
    r[1] = buf.addr(0);
    r[2] = 4 * PAGE as u64;
    r[3] = 0;
    want_ok("REGISTER with size 64", ioctl(fd, WARPQ_IOC_REGISTER, r.as_mut_ptr() as u64))?;
    ensure!(
        r[3] != 0 && r[4..].iter().all(|&w| w == tail),
        "REGISTER with size 64: handle {:#x}, trailing {:x?}",
        r[3],
        &r[4..]
    );
    // REGISTER claiming 4 GiB - 1 bytes: only 32 exist, and the kernel must read no more.
    let mut r2 = [0u64; 4];
    r2[0] = 0xffff_ffff | (u64::from(RW) << 32);
    r2[1] = buf.addr(4 * PAGE);
    r2[2] = 4 * PAGE as u64;
    want_ok("REGISTER with size 0xffffffff", ioctl(fd, WARPQ_IOC_REGISTER, r2.as_mut_ptr() as u64))?;
    ensure!(pinned(fd)? == 8, "{} pages pinned after the two registrations", pinned(fd)?);
    // INFO, 256 bytes.
    let mut i = [0x5a5a_5a5a_5a5a_5a5au64; 32];
    i[0] = 256 | (0x5a5a_5a5a << 32);
    want_ok("INFO with size 256", ioctl(fd, WARPQ_IOC_INFO, i.as_mut_ptr() as u64))?;
    ensure!(
        i[0] & 0xffff_ffff == 48 && i[0] >> 32 == u64::from(WARPQ_UAPI_VERSION),
        "INFO wrote size/version {:#x}",
        i[0]
    );
    ensure!(i[6..].iter().all(|&w| w == 0x5a5a_5a5a_5a5a_5a5a), "INFO wrote past its 48 bytes");
    // STATS, 1024 bytes: more than the counters, less than the counters and
    // histograms: the kernel writes (and reports) the counters only.
    let v1 = raw::STATS_V1 / 8;
    let mut s = [tail; 128];
    s[0] = 1024;
    want_ok("STATS with size 1024", ioctl(fd, WARPQ_IOC_STATS, s.as_mut_ptr() as u64))?;
    ensure!(s[0] & 0xffff_ffff == (v1 * 8) as u64, "STATS with size 1024 reported size {}", s[0] & 0xffff_ffff);
    ensure!(s[v1..].iter().all(|&w| w == tail), "STATS with size 1024 wrote past its {} bytes", v1 * 8);
    // STATS, 4096 bytes: the whole structure, histograms included, no more.
    let whole = std::mem::size_of::<warpq_stats>() / 8;
    let mut s = [tail; 512];
    s[0] = 4096;
    want_ok("STATS with size 4096", ioctl(fd, WARPQ_IOC_STATS, s.as_mut_ptr() as u64))?;
    ensure!(s[0] & 0xffff_ffff == (whole * 8) as u64, "STATS with size 4096 reported size {}", s[0] & 0xffff_ffff);
    ensure!(s[whole..].iter().all(|&w| w == tail), "STATS with size 4096 wrote past its {} bytes", whole * 8);
    // WAIT, 64 bytes: min_ready 0, timeout 0.
    let mut w = [tail; 8];
    w[0] = 64;
    w[1] = 0;
    w[2] = 0;
    want_ok("WAIT with size 64", ioctl(fd, WARPQ_IOC_WAIT, w.as_mut_ptr() as u64))?;
    ensure!(w[3..].iter().all(|&x| x == tail), "WAIT wrote past its 24 bytes");
    // WAKE, 4096 bytes claimed.
    let mut k = [tail; 4];
    k[0] = 4096;
    want_ok("WAKE with size 4096", ioctl(fd, WARPQ_IOC_WAKE, k.as_mut_ptr() as u64))?;
    // UNREGISTER both with 40-byte structures.
    for h in [r[3], r2[3]] {
        let mut u = [tail; 5];
        u[0] = 40;
        u[1] = h;
        want_ok("UNREGISTER with size 40", ioctl(fd, WARPQ_IOC_UNREGISTER, u.as_mut_ptr() as u64))?;
        ensure!(u[2..].iter().all(|&x| x == tail), "UNREGISTER wrote past its 16 bytes");
    }
    ensure!(pinned(fd)? == 0, "{} pages still pinned", pinned(fd)?);
    Ok(Got::ok("sizes 40..0xffffffff accepted by all six; trailing bytes neither read as fields nor written"))
}

fn garbage_struct(env: &Env) -> Result<Got, String> {
    let dev = open(env)?;
    let fd = fd_of(&dev);
    let ring = map_ring(fd)?;
    let mut rng = Rng(0x6a7b_a6e5_eed5_0001);
    let mut tally: Vec<(i32, usize)> = Vec::new();
    for _ in 0..400 {
        let (name, req, size) = IOCTLS[rng.below(IOCTLS.len() as u64) as usize];
        let mut a: [u64; 64] = std::array::from_fn(|_| rng.next_u64());
        let size = match rng.below(3) {
            0 => size as u64,
            1 => a[0] & 0xffff_ffff,
            _ => rng.below(size as u64),
        };
        a[0] = (a[0] & !0xffff_ffff) | size;
        if name == "WAIT" {
            // A garbage timeout is usually negative, i.e. "forever".
            a[2] = rng.below(1_000_000);
        }
        let code = ioctl(fd, req, a.as_mut_ptr() as u64).err().map_or(0, |e| e.0);
        ensure!(
            [0, libc::EINVAL, libc::EFAULT, libc::ENOENT, libc::E2BIG].contains(&code),
            "{name} with garbage (size {size}): {}",
            Errno(code)
        );
        match tally.iter_mut().find(|(c, _)| *c == code) {
            Some((_, n)) => *n += 1,
            None => tally.push((code, 1)),
        }
    }
    ensure!(pinned(fd)? == 0, "garbage left {} pages pinned", pinned(fd)?);
    // Garbage entries through the ioctl path.
    let garbage: Vec<[u64; 8]> = (0..64).map(|_| std::array::from_fn(|_| rng.next_u64())).collect();
    let n = want_ok("SUBMIT of 64 garbage entries", raw::submit(fd, garbage.as_ptr() as u64, 64))?;
    ensure!(n == 64, "SUBMIT of 64 garbage entries queued {n}");
    ring.kick()?;
    for (i, g) in garbage.iter().enumerate() {
        let c = ring.reap(CASE_LIMIT / 4)?;
        ensure!(
            c.user_data == g[1] && c.status == WARPQ_STATUS_INVALID,
            "garbage entry {i}: user_data {:#x}, {}",
            c.user_data,
            st(c.status)
        );
    }
    let c = ring.run(nop())?;
    ensure!(c.status == WARPQ_STATUS_OK, "a NOP after the garbage: {}", st(c.status));
    tally.sort_unstable();
    let parts: Vec<String> = tally
        .iter()
        .map(|(c, n)| format!("{n} {}", if *c == 0 { "success".into() } else { Errno(*c).name() }))
        .collect();
    Ok(Got::ok(format!(
        "400 garbage ioctls: {}; 64 garbage entries completed INVALID; the queue works",
        parts.join(", ")
    )))
}

/// `value`'s bytes in a page of their own, then made read-only.
fn readonly_copy<T: Copy>(value: &T) -> Result<Anon, String> {
    let page = Anon::new(PAGE);
    // SAFETY: `page` is a fresh mapping of PAGE >= size_of::<T>() bytes.
    unsafe { std::ptr::write_unaligned(page.ptr().cast::<T>(), *value) };
    want_ok("mprotect read-only", raw::mprotect(page.addr(0), PAGE, libc::PROT_READ))?;
    Ok(page)
}

fn readonly_arg_register(env: &Env) -> Result<Got, String> {
    let dev = open(env)?;
    let fd = fd_of(&dev);
    let buf = Anon::new(4 * PAGE);
    let arg =
        readonly_copy(&warpq_register { size: 32, access: RW, addr: buf.addr(0), len: 4 * PAGE as u64, handle: 0 })?;
    let r = ioctl(fd, WARPQ_IOC_REGISTER, arg.addr(0));
    let left = pinned(fd)?;
    let again = raw::register(fd, buf.addr(0), 4 * PAGE as u64, RW);
    if let Ok(h) = again {
        let _ = raw::unregister(fd, h);
    }
    ensure!(
        left == 0 && again.is_ok(),
        "{}, and the registration stayed: {left} pages pinned, registering the range again gives {} (its handle was \
         never returned: it cannot be unregistered until the file is closed)",
        raw::show(&r),
        raw::show(&again)
    );
    Ok(Got::call(&r, "nothing left registered or pinned"))
}

fn readonly_arg_submit(env: &Env) -> Result<Got, String> {
    let dev = open(env)?;
    let fd = fd_of(&dev);
    let ring = map_ring(fd)?;
    let nop = [*nop().user_data(0x5b).as_raw()];
    let arg = readonly_copy(&warpq_submit { size: 24, count: 1, sqes: nop.as_ptr() as u64, submitted: 0, rsvd: 0 })?;
    let r = ioctl(fd, WARPQ_IOC_SUBMIT, arg.addr(0));
    let queued = ring.get(raw::header::SQ_TAIL);
    ring.kick()?;
    sleep_ms(200);
    let completed = ring.get(raw::header::CQ_TAIL);
    ensure!(
        queued == 0 && completed == 0,
        "{}, with {queued} entry queued and {completed} completed (the caller was told the call failed)",
        raw::show(&r)
    );
    Ok(Got::call(&r, "nothing queued"))
}
