//! The one report format of the stress programs: a line per case,
//!
//! ```text
//! ok   <name>: <detail>
//! FAIL <name>: <detail>
//! ```
//!
//! and a last line `N passed, N failed` (what `vm/test.sh` and the stress
//! suite print too). A detail spanning several lines is printed on one.

use std::process::ExitCode;

/// Counts and prints case results.
#[derive(Debug, Default)]
pub struct Report {
    passed: usize,
    failed: usize,
}

impl Report {
    /// An empty report.
    pub fn new() -> Report {
        Report::default()
    }

    /// Prints `ok   <name>: <detail>`.
    pub fn ok(&mut self, name: &str, detail: &str) {
        self.passed += 1;
        println!("{}", line("ok  ", name, detail));
    }

    /// Prints `FAIL <name>: <detail>`.
    pub fn fail(&mut self, name: &str, detail: &str) {
        self.failed += 1;
        println!("{}", line("FAIL", name, detail));
    }

    /// Prints `result` as [`Report::ok`] or [`Report::fail`]; whether it
    /// passed.
    pub fn record(&mut self, name: &str, result: &Result<String, String>) -> bool {
        match result {
            Ok(detail) => self.ok(name, detail),
            Err(detail) => self.fail(name, detail),
        }
        result.is_ok()
    }

    /// Cases passed so far.
    pub fn passed(&self) -> usize {
        self.passed
    }

    /// Cases failed so far.
    pub fn failed(&self) -> usize {
        self.failed
    }

    /// Prints `N passed, N failed`; success if nothing failed and something
    /// passed.
    pub fn finish(self) -> ExitCode {
        println!("{} passed, {} failed", self.passed, self.failed);
        if self.failed == 0 && self.passed > 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }
}

/// One report line, the detail's lines joined with ` | `.
fn line(verdict: &str, name: &str, detail: &str) -> String {
    let detail: Vec<&str> = detail.lines().map(str::trim_end).filter(|l| !l.is_empty()).collect();
    format!("{verdict} {name}: {}", detail.join(" | "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        assert_eq!(line("ok  ", "a", "fine"), "ok   a: fine");
        assert_eq!(line("FAIL", "b", "one\ntwo\n"), "FAIL b: one | two");
    }
}
