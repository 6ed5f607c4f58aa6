//! Module parameters the tests turn for a while.

/// Sets `/sys/module/warpq/parameters/NAME` and puts the old value back
/// when dropped.
pub struct ParamGuard {
    path: String,
    old: String,
}

impl ParamGuard {
    /// Writes `value` to the parameter `name`, remembering the old value.
    pub fn set(name: &str, value: &str) -> Result<Self, String> {
        let path = format!("/sys/module/warpq/parameters/{name}");
        let old = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
        std::fs::write(&path, value).map_err(|e| format!("{path} = {value}: {e}"))?;
        Ok(Self { path, old: old.trim_end().to_string() })
    }
}

impl Drop for ParamGuard {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.path, &self.old);
    }
}

/// The chunk size new queues cut regions into, in bytes: the `chunk_kb`
/// parameter as the driver reads it (at least 64 KiB, rounded up to a
/// power of two). A region has this size of chunks unless it would have
/// more than 65536 of them.
pub fn chunk_bytes() -> Result<usize, String> {
    let path = "/sys/module/warpq/parameters/chunk_kb";
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let kb = text.trim().parse::<usize>().map_err(|e| format!("{path} {text:?}: {e}"))?;
    Ok((kb.max(64) << 10).next_power_of_two())
}
