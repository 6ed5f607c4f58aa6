//! The kernel log (`/dev/kmsg`) and the splat patterns shared with
//! `vm/run.sh`.

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

/// The splat patterns, shared with `vm/run.sh`: one quoted fixed substring a
/// line, `!`-prefixed ones exclude (the file's header says more).
const SPLAT_PATTERNS: &str = include_str!("../../vm/splat-patterns.txt");

/// The quoted patterns of [`SPLAT_PATTERNS`] that start with `prefix`.
fn splat_patterns(prefix: &'static str) -> impl Iterator<Item = &'static str> {
    SPLAT_PATTERNS.lines().filter_map(move |l| l.strip_prefix(prefix)?.strip_prefix('"')?.strip_suffix('"'))
}

/// Whether a kernel log message is one of the reports `vm/run.sh` fails a
/// run for (BUG, WARNING, lockdep, KASAN, RCU stalls, leaks, IOMMU faults):
/// the patterns of `vm/splat-patterns.txt`.
pub fn is_splat(line: &str) -> bool {
    splat_patterns("").any(|p| line.contains(p)) && !splat_patterns("!").any(|p| line.contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splat_patterns_come_from_the_shared_file() {
        assert!(splat_patterns("").count() >= 20);
        assert!(is_splat("BUG: KASAN: slab-use-after-free in foo"));
        assert!(is_splat("WARNING: CPU: 1 PID: 7 at mm/gup.c:1 bar"));
        assert!(!is_splat("INFO: lockdep is turned off."));
        assert!(!is_splat("RCU lockdep checking is enabled."));
        assert!(!is_splat("KernelAddressSanitizer initialized"));
    }
}
