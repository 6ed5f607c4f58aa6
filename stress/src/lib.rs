//! Guest-side helpers shared by warpq's checks, stress and benchmark programs.

#![warn(missing_docs)]

pub mod stream;

/// Pin accounting from `/proc/vmstat`: every `pin_user_pages*()` adds to
/// `nr_foll_pin_acquired`, every unpin to `nr_foll_pin_released`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinCounts {
    /// `nr_foll_pin_acquired`.
    pub acquired: u64,
    /// `nr_foll_pin_released`.
    pub released: u64,
}

impl PinCounts {
    /// Parses the text of `/proc/vmstat`; `None` if either counter is absent.
    pub fn parse(vmstat: &str) -> Option<Self> {
        let mut acquired = None;
        let mut released = None;
        for line in vmstat.lines() {
            let mut it = line.split_ascii_whitespace();
            match (it.next(), it.next().and_then(|v| v.parse::<u64>().ok())) {
                (Some("nr_foll_pin_acquired"), Some(v)) => acquired = Some(v),
                (Some("nr_foll_pin_released"), Some(v)) => released = Some(v),
                _ => {}
            }
        }
        Some(Self { acquired: acquired?, released: released? })
    }

    /// Reads the live counters, exact: `/proc/vmstat` alone lags the per-CPU
    /// counters by a few pages (even below zero outstanding) until they are
    /// folded, so the reading first asks the kernel to fold them
    /// (`/proc/sys/vm/stat_refresh`, root only; skipped if refused).
    pub fn read() -> std::io::Result<Self> {
        let _ = std::fs::write("/proc/sys/vm/stat_refresh", "1");
        let text = std::fs::read_to_string("/proc/vmstat")?;
        Self::parse(&text).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "/proc/vmstat has no nr_foll_pin_* counters")
        })
    }

    /// Waits up to `timeout` until every pin is released
    /// (`nr_foll_pin_acquired == nr_foll_pin_released`; nothing but warpq
    /// pins pages in the guest).
    pub fn wait_balanced(timeout: std::time::Duration) -> Result<std::time::Duration, String> {
        PinCounts { acquired: 0, released: 0 }.wait_back(timeout)
    }

    /// Pages pinned now and not yet released.
    pub fn outstanding(&self) -> i128 {
        i128::from(self.acquired) - i128::from(self.released)
    }

    /// Waits up to `timeout` for the pages pinned and not released to come
    /// back to what they were at `self` (engines and the deferred release of
    /// exited processes' queues unpin asynchronously); returns how long that
    /// took, or how many pages are still pinned.
    pub fn wait_back(&self, timeout: std::time::Duration) -> Result<std::time::Duration, String> {
        let start = std::time::Instant::now();
        loop {
            let now = Self::read().map_err(|e| e.to_string())?;
            if now.outstanding() == self.outstanding() {
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                return Err(format!("{} pages still pinned after {timeout:?}", now.outstanding() - self.outstanding()));
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// A private anonymous mapping, unmapped on drop (unless [`Anon::unmap`]
/// was called first).
pub struct Anon {
    ptr: *mut u8,
    len: usize,
    mapped: bool,
}

impl Anon {
    /// Maps `len` bytes, read/write, zero-filled.
    pub fn new(len: usize) -> Anon {
        // SAFETY: a fresh private anonymous mapping.
        let p = unsafe {
            libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
        };
        assert_ne!(p, libc::MAP_FAILED, "mmap {len} bytes");
        Anon { ptr: p.cast(), len, mapped: true }
    }

    /// A view of memory owned elsewhere (never unmapped by this value).
    pub fn borrowed(ptr: *mut u8, len: usize) -> Anon {
        Anon { ptr, len, mapped: false }
    }

    /// The first byte.
    pub fn ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never empty (for clippy's `len_without_is_empty`).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The user address of byte `off`.
    pub fn addr(&self, off: usize) -> u64 {
        self.ptr as u64 + off as u64
    }

    /// A copy of the contents (take it while the device does not write).
    pub fn bytes(&self) -> Vec<u8> {
        // SAFETY: `len` readable bytes while mapped.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }.to_vec()
    }

    /// Overwrites the start of the mapping with `data`.
    pub fn write(&self, data: &[u8]) {
        assert!(data.len() <= self.len);
        // SAFETY: in bounds while mapped.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr, data.len()) };
    }

    /// munmap now (the address range is then free).
    pub fn unmap(&mut self) {
        if self.mapped {
            // SAFETY: our mapping.
            unsafe { libc::munmap(self.ptr.cast(), self.len) };
            self.mapped = false;
        }
    }
}

impl Drop for Anon {
    fn drop(&mut self) {
        self.unmap();
    }
}

/// xorshift64*: reproducible pseudo-random numbers without a dependency.
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform-ish in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// A message of the one data byte in `iov`, with `cmsg` (64 aligned bytes)
/// as its control buffer; the caller sets `msg_controllen`. Both must
/// outlive the message's use.
fn one_byte_message(iov: &mut libc::iovec, cmsg: &mut [u64; 8]) -> libc::msghdr {
    // SAFETY: a zeroed msghdr is valid (null pointers, zero lengths).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.as_mut_ptr().cast();
    msg
}

/// Sends `fd` over the UNIX socket `sock` with `SCM_RIGHTS` (and one data
/// byte); whether it went.
pub fn send_fd(sock: i32, fd: i32) -> bool {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec { iov_base: byte.as_mut_ptr().cast(), iov_len: 1 };
    let mut cmsg = [0u64; 8];
    let mut msg = one_byte_message(&mut iov, &mut cmsg);
    // SAFETY: CMSG_SPACE is a pure computation.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(4) } as _;
    // SAFETY: the control buffer (64 bytes, aligned) holds one header and an fd.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(4) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<i32>(), fd);
    }
    // SAFETY: a valid message on our socket.
    unsafe { libc::sendmsg(sock, &msg, 0) == 1 }
}

/// Receives a descriptor sent by [`send_fd`] on `sock`.
pub fn recv_fd(sock: i32) -> Option<i32> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec { iov_base: byte.as_mut_ptr().cast(), iov_len: 1 };
    let mut cmsg = [0u64; 8];
    let mut msg = one_byte_message(&mut iov, &mut cmsg);
    msg.msg_controllen = std::mem::size_of_val(&cmsg) as _;
    // SAFETY: a valid message buffer on our socket.
    if unsafe { libc::recvmsg(sock, &mut msg, 0) } != 1 {
        return None;
    }
    // SAFETY: recvmsg filled the control buffer; CMSG_* walk it.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        if c.is_null() || (*c).cmsg_type != libc::SCM_RIGHTS {
            return None;
        }
        Some(std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<i32>()))
    }
}

/// The kernel log from a point on: `/dev/kmsg` read without blocking.
pub struct KernelLog(std::fs::File);

impl KernelLog {
    /// Opens `/dev/kmsg` at its end: only what is logged from now on is read.
    pub fn from_now() -> std::io::Result<KernelLog> {
        use std::io::Seek;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open("/dev/kmsg")?;
        f.seek(std::io::SeekFrom::End(0))?;
        Ok(KernelLog(f))
    }

    /// The messages (first line of each record) logged since the last call.
    pub fn read_new(&mut self) -> Vec<String> {
        use std::io::Read;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 8192];
        loop {
            match self.0.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let record = String::from_utf8_lossy(&buf[..n]);
                    if let Some((_, msg)) = record.split_once(';') {
                        out.push(msg.lines().next().unwrap_or("").to_string());
                    }
                }
                // EPIPE: records were overwritten before they were read.
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
                Err(_) => break,
            }
        }
        out
    }

    /// The splats (see [`is_splat`]) logged since the last call.
    pub fn new_splats(&mut self) -> Vec<String> {
        self.read_new().into_iter().filter(|l| is_splat(l)).collect()
    }
}

/// Whether a kernel log message is one of the reports `vm/run.sh` fails a
/// run for (BUG, WARNING, lockdep, KASAN, RCU stalls, leaks, IOMMU faults).
pub fn is_splat(line: &str) -> bool {
    const PATTERNS: &[&str] = &[
        "BUG: ",
        "WARNING: CPU: ",
        "WARNING: possible",
        "WARNING: suspicious",
        "WARNING: inconsistent",
        "WARNING: bad unlock",
        "WARNING: lock held",
        "WARNING: held lock",
        "WARNING: nested lock",
        "still has locks held",
        "blocked for more than",
        "INFO: possible recursive locking",
        "INFO: trying to register non-static key",
        "======================================================",
        "general protection fault",
        "Oops: ",
        "Kernel panic",
        "kernel BUG at",
        "detected stalls",
        "self-detected stall",
        "soft lockup",
        "UBSAN: ",
        "new suspected memory leaks",
        "unreferenced object 0x",
        "DMAR: [DMA",
        "DMAR: DRHD: handling fault",
    ];
    PATTERNS.iter().any(|p| line.contains(p)) && !line.contains("lockdep is turned off")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pin_counters() {
        let text = "nr_free_pages 100\nnr_foll_pin_acquired 42\nnr_foll_pin_released 40\npgfault 9\n";
        let c = PinCounts::parse(text).unwrap();
        assert_eq!(c, PinCounts { acquired: 42, released: 40 });
        assert_eq!(c.outstanding(), 2);
    }

    #[test]
    fn missing_counter_is_none() {
        assert_eq!(PinCounts::parse("nr_foll_pin_acquired 1\n"), None);
        assert_eq!(PinCounts::parse("nr_foll_pin_acquired x\nnr_foll_pin_released 1\n"), None);
    }
}
