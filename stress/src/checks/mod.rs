//! The functional checks the VM suites run (`vm/test.sh`), one module per
//! program. Each check that passes is an `ok` line of the [`Report`]; the
//! first failure ends the run (later checks build on earlier ones) and is
//! its `FAIL` line, under the name of the section it happened in.

pub mod accounting;
pub mod copy;
pub mod mapped;
pub mod queue;
pub mod queue_limit;
pub mod queues;
pub mod user;
pub mod writeback;

use std::process::ExitCode;

use crate::report::Report;

/// The failure that ended a check program's run.
#[derive(Debug)]
pub struct Failure {
    /// The section of the program it happened in (the `FAIL` line's name).
    pub section: &'static str,
    /// What went wrong.
    pub detail: String,
}

/// Names the section an error happened in.
pub trait Section<T> {
    /// The error, as a [`Failure`] of `section`.
    fn section(self, section: &'static str) -> Result<T, Failure>;
}

impl<T> Section<T> for Result<T, String> {
    fn section(self, section: &'static str) -> Result<T, Failure> {
        self.map_err(|detail| Failure { section, detail })
    }
}

/// Ends a check program: its failure, if any, as a `FAIL` line, then the
/// `N passed, N failed` summary and the exit status.
pub fn conclude(mut r: Report, result: Result<(), Failure>) -> ExitCode {
    if let Err(f) = result {
        r.fail(f.section, &f.detail);
    }
    r.finish()
}
