//! Pin accounting: the system's `pin_user_pages*()` counters and the
//! driver's own `pages_pinned`.

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

/// Pages the driver counts as pinned now, summed over every warpq device in
/// sysfs (`pages_pinned` in each device's `stats`); 0 with no device bound.
pub fn driver_pages_pinned() -> Result<u64, String> {
    let sysfs = warpq::sysfs::Sysfs::system();
    let devices = sysfs.devices().map_err(|e| format!("warpq devices: {e}"))?;
    let mut total = 0;
    for name in devices.iter().filter_map(|d| d.name.as_deref()) {
        let stats = sysfs.stats(name).map_err(|e| format!("{name} stats: {e}"))?;
        let pinned = stats.iter().find(|(k, _)| k == "pages_pinned").map(|(_, v)| *v);
        total += pinned.ok_or_else(|| format!("{name} stats have no pages_pinned"))?;
    }
    Ok(total)
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
