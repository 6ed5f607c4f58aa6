//! Guest-side helpers shared by warpq's checks, stress and benchmark programs.

#![warn(missing_docs)]

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

    /// Reads the live counters.
    pub fn read() -> std::io::Result<Self> {
        let text = std::fs::read_to_string("/proc/vmstat")?;
        Self::parse(&text).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "/proc/vmstat has no nr_foll_pin_* counters")
        })
    }

    /// Pages pinned now and not yet released.
    pub fn outstanding(&self) -> i128 {
        i128::from(self.acquired) - i128::from(self.released)
    }
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
