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
