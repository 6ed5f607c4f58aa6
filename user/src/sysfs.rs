//! The driver's files in sysfs and debugfs (what `warpqctl` reads and
//! writes), with their formats.
//!
//! | file | format |
//! |---|---|
//! | `/sys/bus/pci/drivers/warpq/<pci-address>` | one entry per bound device; its `misc/` directory names `warpqN` |
//! | `/sys/class/misc/warpqN/stats` | `<name> <value>` lines, `u64` decimal values: the device's counters, summed over its queues |
//! | `/sys/class/misc/warpqN/dma_translation` | one word: how device addresses translate |
//! | `/sys/module/warpq/parameters/policy` | `strict` or `filtered`: the invalidation policy of queues created from now on |
//! | `/sys/kernel/debug/warpq/warpqN/hist` | latency histograms, format below |
//! | `/sys/kernel/debug/warpq/warpqN/queues` | every live queue and its regions (root only), format below |
//! | `/sys/class/misc/warpqN/reset` | write-only: writing `1` zeroes the device's counters and histograms |
//!
//! ## The histogram file
//!
//! `/sys/kernel/debug/warpq/warpqN/hist` is text, one bucket per line:
//!
//! ```text
//! <histogram> <log2-bucket> <count>
//! ```
//!
//! - `<histogram>`: the histogram's name, `[a-z0-9_]+`, ending in its unit
//!   (`_ns` for nanoseconds), e.g. `submit_to_complete_ns`, `invalidate_ns`;
//! - `<log2-bucket>`: `b` in `0..=63`: the bucket counts samples `v` with
//!   `2^b <= v < 2^(b+1)` (bucket 0 also counts `v = 0`);
//! - `<count>`: samples in that bucket, `u64` decimal.
//!
//! Buckets with no samples may be left out; lines may come in any order;
//! blank lines and lines starting with `#` are ignored. A histogram with no
//! line has no samples. See [`parse_hist`].
//!
//! The driver also writes `# sum_ns <histogram> <sum>` lines: the sum of a
//! histogram's samples in ns, for exact means where the buckets only bound
//! a quantile within a factor of two. A reader of the buckets ignores them
//! (they are comments); [`parse_hist_sums`] reads them.
//!
//! ## The queues file
//!
//! `/sys/kernel/debug/warpq/warpqN/queues` is text, a `queue` line per live
//! queue, each followed by a `region` line per registered region. A line is
//! its kind and id, then `<key> <value>` pairs:
//!
//! ```text
//! queue <owner_id> pid <pid> comm <comm> backing pin|mirror policy strict|filtered
//!     state running|stale|exited|dead region_count <n> registered_bytes <n> mapped_bytes <n>
//!     pinned_bytes <n> commands_ok <n> commands_failed <n> invalidations <n>
//!     teardowns <n> rebuilds <n> faults <n> zaps <n>
//! region <handle> queue <owner_id> addr 0x<hex> len <n> access r|w|rw chunk_bytes <n>
//!     chunks <n> mapped_chunks <n> dead_chunks <n> mapped_bytes <n>
//!     state pending|unmapped|partial|mapped|dead
//! ```
//!
//! (one line each, wrapped here). `<owner_id>` is the ring header's
//! `owner_id`; `pid` the creating process (initial PID namespace) and
//! `comm` its name then, with space, `\` and non-printing bytes as `\xNN`;
//! `mapped_bytes` is what the device can reach now (chunks mapped);
//! `pinned_bytes` the part of it pinned (`pin` backing; 0 under `mirror`,
//! which holds no page). `exited`: the process is gone and the queue waits
//! to be reaped; `stale`: a command waits for a rebuild; `dead`: revoked or
//! released. Keys not known to a reader are to be skipped (new ones may
//! come). See [`parse_queues`].

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::{Error, ErrorKind, Op, Result};

/// The histograms' names, in `WARPQ_HIST_*` order (debugfs uses the same).
pub const HIST_NAMES: [&str; crate::sys::WARPQ_HIST_KINDS] =
    ["invalidate_ns", "drain_ns", "unmap_ns", "unpin_ns", "rebuild_ns", "pin_ns", "map_ns", "paused_ns"];

/// Where the PCI core lists the devices bound to the warpq driver.
pub const DRIVER_DIR: &str = "/sys/bus/pci/drivers/warpq";

/// The driver's files under a root directory: `/` on a real system, a fake
/// tree in tests (`warpqctl` takes it from `WARPQCTL_ROOT`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sysfs {
    root: PathBuf,
}

impl Default for Sysfs {
    fn default() -> Self {
        Self::system()
    }
}

impl Sysfs {
    /// The running system's files.
    pub fn system() -> Self {
        Self { root: PathBuf::from("/") }
    }

    /// The same files under `root` instead of `/`.
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn path(&self, abs: &str) -> PathBuf {
        self.root.join(abs.trim_start_matches('/'))
    }

    /// The driver's PCI directory.
    pub fn driver_dir(&self) -> PathBuf {
        self.path(DRIVER_DIR)
    }

    /// `/sys/class/misc/<name>` (`name`: `warpqN`).
    pub fn class_dir(&self, name: &str) -> PathBuf {
        self.path("/sys/class/misc").join(name)
    }

    /// The device's counters.
    pub fn stats_path(&self, name: &str) -> PathBuf {
        self.class_dir(name).join("stats")
    }

    /// The device's reset attribute.
    pub fn reset_path(&self, name: &str) -> PathBuf {
        self.class_dir(name).join("reset")
    }

    /// The device's histograms (debugfs).
    pub fn hist_path(&self, name: &str) -> PathBuf {
        self.path("/sys/kernel/debug/warpq").join(name).join("hist")
    }

    /// The device's queue list (debugfs, root only).
    pub fn queues_path(&self, name: &str) -> PathBuf {
        self.path("/sys/kernel/debug/warpq").join(name).join("queues")
    }

    /// The device's live queues and their regions. [`ErrorKind::Unsupported`]
    /// when the driver has no such file.
    pub fn queues(&self, name: &str) -> Result<Vec<QueueEntry>> {
        let path = self.queues_path(name);
        match std::fs::read_to_string(&path) {
            Ok(text) => parse_queues(&text).map_err(|e| invalid(&path, e)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Error::new(
                Op::Sysfs,
                ErrorKind::Unsupported,
                Some(libc::ENOENT),
                format!(
                    "{} does not exist: debugfs is not mounted (mount -t debugfs debugfs /sys/kernel/debug), \
                     or this warpq.ko has no queue list",
                    path.display()
                ),
            )),
            Err(e) => Err(io_error(&path, &e)),
        }
    }

    /// The policy module parameter.
    pub fn policy_path(&self) -> PathBuf {
        self.path("/sys/module/warpq/parameters/policy")
    }

    /// The devices bound to the driver, sorted by PCI address; empty when
    /// the driver is not loaded.
    pub fn devices(&self) -> Result<Vec<DeviceInfo>> {
        match devices_in(&self.driver_dir()) {
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(Vec::new()),
            other => other,
        }
    }

    /// The device's counters, in the file's order.
    pub fn stats(&self, name: &str) -> Result<Vec<(String, u64)>> {
        let path = self.stats_path(name);
        let text = read(&path)?;
        parse_stats(&text).map_err(|e| invalid(&path, e))
    }

    /// How the device's addresses translate (`dma_translation`).
    pub fn dma_translation(&self, name: &str) -> Result<String> {
        Ok(read(&self.class_dir(name).join("dma_translation"))?.trim().to_string())
    }

    /// The sums of the driver's histograms (`# sum_ns` lines), by
    /// histogram name: see [`parse_hist_sums`]. Empty from a driver that
    /// writes none.
    pub fn hist_sums(&self, name: &str) -> Result<BTreeMap<String, u64>> {
        let path = self.hist_path(name);
        parse_hist_sums(&read(&path)?).map_err(|e| invalid(&path, e))
    }

    /// The device's latency histograms. [`ErrorKind::Unsupported`] with a
    /// hint saying so when the driver has none (the file is absent).
    pub fn hist(&self, name: &str) -> Result<Vec<Histogram>> {
        let path = self.hist_path(name);
        match std::fs::read_to_string(&path) {
            Ok(text) => parse_hist(&text).map_err(|e| invalid(&path, e)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let debugfs = self.path("/sys/kernel/debug");
                let mounted = std::fs::read_dir(&debugfs).is_ok_and(|mut d| d.next().is_some());
                let hint = if mounted {
                    format!(
                        "this driver has no histograms: {} does not exist (a warpq.ko from before the \
                         histograms? the file format is in the warpq crate's sysfs module and docs/tracing.md)",
                        path.display()
                    )
                } else {
                    format!(
                        "{} does not exist: debugfs is not mounted (mount -t debugfs debugfs {}); \
                         or this driver has no histograms",
                        path.display(),
                        debugfs.display()
                    )
                };
                Err(Error::new(Op::Sysfs, ErrorKind::Unsupported, Some(libc::ENOENT), hint))
            }
            Err(e) => Err(io_error(&path, &e)),
        }
    }

    /// Zeroes the device's counters and histograms (writes `1` to its
    /// `reset` attribute). [`ErrorKind::Unsupported`] when the driver has
    /// no such attribute.
    pub fn reset(&self, name: &str) -> Result<()> {
        let path = self.reset_path(name);
        if !path.exists() {
            return Err(Error::new(
                Op::Sysfs,
                ErrorKind::Unsupported,
                Some(libc::ENOENT),
                format!(
                    "this driver has no reset attribute: {} does not exist (a warpq.ko from before it? \
                     writing 1 there zeroes the device's counters and histograms)",
                    path.display()
                ),
            ));
        }
        std::fs::write(&path, "1\n").map_err(|e| io_error(&path, &e))
    }

    /// The invalidation policy new queues get.
    pub fn policy(&self) -> Result<Policy> {
        let path = self.policy_path();
        let text = read(&path)?;
        text.trim().parse().map_err(|e: String| invalid(&path, e))
    }

    /// Sets the invalidation policy for queues created from now on
    /// (existing queues keep theirs). Needs root.
    pub fn set_policy(&self, policy: Policy) -> Result<()> {
        let path = self.policy_path();
        std::fs::write(&path, format!("{policy}\n")).map_err(|e| io_error(&path, &e))
    }
}

/// How invalidations are handled (the `policy` module parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Policy {
    /// Every overlapping invalidation tears the mapping down.
    Strict,
    /// Only events that can change the pages or shrink the device's rights.
    Filtered,
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Policy::Strict => "strict",
            Policy::Filtered => "filtered",
        })
    }
}

impl FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "strict" => Ok(Policy::Strict),
            "filtered" => Ok(Policy::Filtered),
            other => Err(format!("unknown policy {other:?} (strict or filtered)")),
        }
    }
}

/// A PCI device bound to the warpq driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The PCI address, e.g. `0000:00:03.0`.
    pub pci_address: String,
    /// The device's sysfs directory.
    pub sysfs_path: PathBuf,
    /// Its misc device name (`warpqN`), if it has registered one.
    pub name: Option<String>,
}

impl DeviceInfo {
    /// `/dev/warpqN`, if the device has a name.
    pub fn dev_path(&self) -> Option<PathBuf> {
        self.name.as_ref().map(|n| Path::new("/dev").join(n))
    }
}

/// Lists the devices in a driver directory laid out as sysfs does (one entry
/// per bound device, named by its PCI address, beside `bind`, `unbind`,
/// ...; each with a `misc/warpqN` directory).
pub fn devices_in(driver_dir: &Path) -> Result<Vec<DeviceInfo>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(driver_dir).map_err(|e| io_error(driver_dir, &e))? {
        let entry = entry.map_err(|e| io_error(driver_dir, &e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_pci_address(&name) {
            let misc = std::fs::read_dir(entry.path().join("misc")).ok().and_then(|d| {
                let mut names: Vec<String> = d
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with("warpq"))
                    .collect();
                names.sort();
                names.into_iter().next()
            });
            found.push(DeviceInfo { sysfs_path: entry.path(), pci_address: name, name: misc });
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

/// Parses a `stats` file: `<name> <value>` per line.
pub fn parse_stats(text: &str) -> std::result::Result<Vec<(String, u64)>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let mut it = line.split_ascii_whitespace();
        let (Some(name), Some(value), None) = (it.next(), it.next(), it.next()) else {
            return Err(format!("line {}: {line:?} is not `<name> <value>`", i + 1));
        };
        let value = value.parse().map_err(|_| format!("line {}: {value:?} is not a number", i + 1))?;
        out.push((name.to_string(), value));
    }
    Ok(out)
}

/// A `queue` line of the queues file, with its regions.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QueueEntry {
    /// The ring header's `owner_id`.
    pub id: u64,
    /// The creating process.
    pub pid: i32,
    /// Its name (unescaped).
    pub comm: String,
    /// The line's words: `backing`, `policy`, `state`.
    pub words: BTreeMap<String, String>,
    /// Its numbers, in the line's order (`region_count`, `registered_bytes`,
    /// `mapped_bytes`, `pinned_bytes`, counters...).
    pub numbers: Vec<(String, u64)>,
    /// Its `region` lines.
    pub regions: Vec<RegionEntry>,
}

/// A `region` line of the queues file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RegionEntry {
    /// The registration handle (what REGISTER returned).
    pub handle: u64,
    /// First byte.
    pub addr: u64,
    /// The line's words: `access`, `state`.
    pub words: BTreeMap<String, String>,
    /// Its numbers, in the line's order (`len`, `chunk_bytes`, `chunks`...).
    pub numbers: Vec<(String, u64)>,
}

impl QueueEntry {
    /// The number `key` of the queue line.
    pub fn number(&self, key: &str) -> Option<u64> {
        self.numbers.iter().find(|(k, _)| k == key).map(|&(_, v)| v)
    }

    /// The word `key` of the queue line.
    pub fn word(&self, key: &str) -> Option<&str> {
        self.words.get(key).map(String::as_str)
    }
}

impl RegionEntry {
    /// The number `key` of the region line.
    pub fn number(&self, key: &str) -> Option<u64> {
        self.numbers.iter().find(|(k, _)| k == key).map(|&(_, v)| v)
    }

    /// The word `key` of the region line.
    pub fn word(&self, key: &str) -> Option<&str> {
        self.words.get(key).map(String::as_str)
    }
}

/// Parses a `queues` file (format above): values that are words go to
/// `words`, `0x` hex and decimal ones to `numbers`.
pub fn parse_queues(text: &str) -> std::result::Result<Vec<QueueEntry>, String> {
    let mut out: Vec<QueueEntry> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |what: String| format!("line {}: {what}: {line:?}", i + 1);
        let tokens: Vec<&str> = line.split_ascii_whitespace().collect();
        if !tokens.len().is_multiple_of(2) {
            return Err(err("not `<key> <value>` pairs".into()));
        }
        let number = |v: &str| match v.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).ok(),
            None => v.parse::<u64>().ok(),
        };
        let id = number(tokens[1]).ok_or_else(|| err(format!("{:?} is not a number", tokens[1])))?;
        let mut words = BTreeMap::new();
        let mut numbers = Vec::new();
        let mut pid = None;
        let mut comm = String::new();
        for pair in tokens[2..].chunks(2) {
            let (k, v) = (pair[0], pair[1]);
            match k {
                "pid" => pid = Some(v.parse::<i32>().map_err(|_| err(format!("pid {v:?}")))?),
                "comm" => comm = unescape(v),
                _ => match number(v) {
                    Some(n) => numbers.push((k.to_string(), n)),
                    None => {
                        words.insert(k.to_string(), v.to_string());
                    }
                },
            }
        }
        match tokens[0] {
            "queue" => out.push(QueueEntry {
                id,
                pid: pid.ok_or_else(|| err("a queue line without pid".into()))?,
                comm,
                words,
                numbers,
                regions: Vec::new(),
            }),
            "region" => {
                let addr = numbers.iter().find(|(k, _)| k == "addr").map(|&(_, v)| v);
                let owner = numbers.iter().find(|(k, _)| k == "queue").map(|&(_, v)| v);
                let queue = out.last_mut().ok_or_else(|| err("a region line before any queue line".into()))?;
                if owner != Some(queue.id) {
                    return Err(err(format!("a region of queue {owner:?} under queue {}", queue.id)));
                }
                numbers.retain(|(k, _)| k != "addr" && k != "queue");
                queue.regions.push(RegionEntry {
                    handle: id,
                    addr: addr.ok_or_else(|| err("a region line without addr".into()))?,
                    words,
                    numbers,
                });
            }
            // A kind this reader does not know: skip it.
            _ => {}
        }
    }
    Ok(out)
}

/// Undoes the `\xNN` escapes of a `comm`.
fn unescape(s: &str) -> String {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1] == b'x' {
            let hex = std::str::from_utf8(&b[i + 2..i + 4]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One latency histogram: sample counts per log2 bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Histogram {
    /// Its name (ending in its unit, e.g. `_ns`).
    pub name: String,
    /// Count per bucket `b` (samples in `2^b..2^(b+1)`), non-zero ones.
    pub buckets: BTreeMap<u32, u64>,
}

impl Histogram {
    /// All samples.
    pub fn total(&self) -> u64 {
        self.buckets.values().sum()
    }

    /// The values bucket `b` counts: `lo..hi` (`hi` saturates at u64::MAX).
    pub fn bucket_range(b: u32) -> (u64, u64) {
        let lo = if b == 0 { 0 } else { 1u64 << b };
        let hi = if b >= 63 { u64::MAX } else { 1u64 << (b + 1) };
        (lo, hi)
    }

    /// The upper bound of the bucket holding the `q`-quantile (0.0..=1.0);
    /// `None` without samples.
    pub fn quantile_upper_bound(&self, q: f64) -> Option<u64> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (&b, &n) in &self.buckets {
            seen += n;
            if seen >= rank {
                return Some(Self::bucket_range(b).1);
            }
        }
        None
    }
}

/// Parses a `hist` file (format in the [module docs](self)); histograms
/// sorted by name.
pub fn parse_hist(text: &str) -> std::result::Result<Vec<Histogram>, String> {
    let mut by_name: BTreeMap<String, BTreeMap<u32, u64>> = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut it = line.split_ascii_whitespace();
        let (Some(name), Some(bucket), Some(count), None) = (it.next(), it.next(), it.next(), it.next()) else {
            return Err(format!("line {}: {line:?} is not `<histogram> <log2-bucket> <count>`", i + 1));
        };
        if !name.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_') {
            return Err(format!("line {}: histogram name {name:?} is not [a-z0-9_]+", i + 1));
        }
        let bucket: u32 = bucket
            .parse()
            .ok()
            .filter(|&b| b < 64)
            .ok_or(format!("line {}: bucket {bucket:?} is not 0..=63", i + 1))?;
        let count: u64 = count.parse().map_err(|_| format!("line {}: count {count:?} is not a number", i + 1))?;
        let h = by_name.entry(name.to_string()).or_default();
        if h.insert(bucket, count).is_some() {
            return Err(format!("line {}: bucket {bucket} of {name} appears twice", i + 1));
        }
    }
    Ok(by_name
        .into_iter()
        .map(|(name, mut buckets)| {
            buckets.retain(|_, n| *n > 0);
            Histogram { name, buckets }
        })
        .collect())
}

/// The `# sum_ns <histogram> <sum>` lines of a histogram file (see the
/// module docs), by histogram name; other lines are skipped.
pub fn parse_hist_sums(text: &str) -> std::result::Result<BTreeMap<String, u64>, String> {
    let mut sums = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let Some(rest) = line.trim().strip_prefix("# sum_ns ") else { continue };
        let mut it = rest.split_ascii_whitespace();
        let (Some(name), Some(sum), None) = (it.next(), it.next(), it.next()) else {
            return Err(format!("line {}: {line:?} is not `# sum_ns <histogram> <sum>`", i + 1));
        };
        let sum: u64 = sum.parse().map_err(|_| format!("line {}: sum {sum:?} is not a number", i + 1))?;
        if sums.insert(name.to_string(), sum).is_some() {
            return Err(format!("line {}: two sums for {name}", i + 1));
        }
    }
    Ok(sums)
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| io_error(path, &e))
}

fn io_error(path: &Path, e: &io::Error) -> Error {
    let err = Error::from_io(Op::Sysfs, e);
    let hint = format!("{}: {}", path.display(), err.hint());
    err.with_hint(hint)
}

fn invalid(path: &Path, what: String) -> Error {
    Error::new(Op::Sysfs, ErrorKind::Other, None, format!("{}: {what}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hist_sums_are_comments_to_the_buckets() {
        let text = "rebuild_ns 20 3\n# sum_ns rebuild_ns 3500000\npin_ns 19 3\n# a comment\n# sum_ns pin_ns 1700000\n";
        let sums = parse_hist_sums(text).unwrap();
        assert_eq!((sums["rebuild_ns"], sums["pin_ns"], sums.len()), (3_500_000, 1_700_000, 2));
        let hist = parse_hist(text).unwrap();
        assert_eq!(hist.iter().map(Histogram::total).sum::<u64>(), 6);
        assert!(parse_hist_sums("# sum_ns pin_ns x\n").is_err());
        assert!(parse_hist_sums("# sum_ns pin_ns 1\n# sum_ns pin_ns 2\n").is_err());
    }

    #[test]
    fn queues_file_parses_with_its_regions() {
        let text = "queue 7 pid 120 comm my\\x20prog backing pin policy filtered state running region_count 2 \
                    registered_bytes 196608 mapped_bytes 196608 pinned_bytes 196608 commands_ok 3 new_key 9\n\
                    region 65536 queue 7 addr 0x7f0000000000 len 65536 access rw chunk_bytes 65536 chunks 1 \
                    mapped_chunks 1 dead_chunks 0 mapped_bytes 65536 state mapped\n\
                    region 65537 queue 7 addr 0x7f0000100000 len 131072 access r chunk_bytes 65536 chunks 2 \
                    mapped_chunks 2 dead_chunks 0 mapped_bytes 131072 state mapped\n\
                    queue 8 pid 121 comm b backing mirror policy strict state stale region_count 0 registered_bytes 0 \
                    mapped_bytes 0 pinned_bytes 0\n";
        let q = parse_queues(text).unwrap();
        assert_eq!(q.len(), 2);
        assert_eq!((q[0].id, q[0].pid, q[0].comm.as_str()), (7, 120, "my prog"));
        assert_eq!((q[0].word("backing"), q[0].word("state")), (Some("pin"), Some("running")));
        assert_eq!((q[0].number("registered_bytes"), q[0].number("new_key")), (Some(196608), Some(9)));
        assert_eq!(q[0].regions.len(), 2);
        let r = &q[0].regions[1];
        assert_eq!(
            (r.handle, r.addr, r.number("len"), r.word("access")),
            (65537, 0x7f0000100000, Some(131072), Some("r"))
        );
        assert_eq!((q[1].word("backing"), q[1].regions.len()), (Some("mirror"), 0));
        assert!(parse_queues("region 1 queue 2 addr 0x1000\n").unwrap_err().contains("before any queue"));
        assert!(parse_queues("queue 1 pid\n").is_err());
    }

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
    fn parses_the_drivers_stats_format() {
        let s = parse_stats("commands_ok 12\ncommands_failed 0\n\nzaps 3\n").unwrap();
        assert_eq!(s, [("commands_ok".into(), 12), ("commands_failed".into(), 0), ("zaps".into(), 3)]);
        assert!(parse_stats("commands_ok twelve\n").unwrap_err().contains("line 1"));
        assert!(parse_stats("a 1 2\n").is_err());
    }

    #[test]
    fn parses_histograms() {
        let text = "# comment\nsubmit_ns 10 5\nsubmit_ns 3 1\n\ninvalidate_ns 20 2\nsubmit_ns 11 0\n";
        let h = parse_hist(text).unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].name, "invalidate_ns");
        assert_eq!(h[1].name, "submit_ns");
        assert_eq!(h[1].buckets.iter().map(|(&b, &n)| (b, n)).collect::<Vec<_>>(), [(3, 1), (10, 5)]);
        assert_eq!(h[1].total(), 6);
        assert_eq!(h[1].quantile_upper_bound(0.1), Some(16));
        assert_eq!(h[1].quantile_upper_bound(0.5), Some(2048));
        assert_eq!(h[1].quantile_upper_bound(1.0), Some(2048));
        assert_eq!(Histogram::bucket_range(0), (0, 2));
        assert_eq!(Histogram::bucket_range(63), (1 << 63, u64::MAX));
        for bad in ["x 1", "x 64 1", "x 1 y", "X 1 1", "x 1 1\nx 1 2"] {
            assert!(parse_hist(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn policy_round_trips() {
        for p in [Policy::Strict, Policy::Filtered] {
            assert_eq!(p.to_string().parse::<Policy>().unwrap(), p);
        }
        assert!("lazy".parse::<Policy>().is_err());
    }

    fn fake_tree(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("warpq-sysfs-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let drv = dir.join(DRIVER_DIR.trim_start_matches('/'));
        std::fs::create_dir_all(drv.join("0000:00:04.0/misc/warpq1")).unwrap();
        std::fs::create_dir_all(drv.join("0000:00:03.0/misc/warpq0")).unwrap();
        for name in ["bind", "new_id"] {
            std::fs::write(drv.join(name), b"").unwrap();
        }
        dir
    }

    #[test]
    fn lists_only_bound_devices_sorted_with_names() {
        let dir = fake_tree("list");
        let found = Sysfs::at(&dir).devices().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let names: Vec<_> = found.iter().map(|d| (d.pci_address.as_str(), d.name.as_deref())).collect();
        assert_eq!(names, [("0000:00:03.0", Some("warpq0")), ("0000:00:04.0", Some("warpq1"))]);
        assert_eq!(found[0].dev_path().unwrap(), Path::new("/dev/warpq0"));
    }

    #[test]
    fn no_driver_means_no_devices() {
        assert_eq!(Sysfs::at("/nonexistent/warpq").devices().unwrap(), []);
        let e = devices_in(Path::new("/nonexistent/warpq")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
    }

    #[test]
    fn missing_hist_and_reset_say_the_driver_lacks_them() {
        let dir = fake_tree("absent");
        std::fs::create_dir_all(dir.join("sys/kernel/debug/tracing")).unwrap();
        let s = Sysfs::at(&dir);
        let e = s.hist("warpq0").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported);
        assert!(e.hint().contains("this driver has no histograms"), "{e}");
        let e = s.reset("warpq0").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported);
        assert!(e.hint().contains("no reset attribute"), "{e}");
        std::fs::remove_dir_all(dir.join("sys/kernel/debug/tracing")).unwrap();
        assert!(s.hist("warpq0").unwrap_err().hint().contains("debugfs is not mounted"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
