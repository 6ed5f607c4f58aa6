//! Running the guest's own tools (busybox `mount`, `mkswap`, `mke2fs`...)
//! from a check, with the command line in the error.

/// Runs `args[0]` with the rest as its arguments; `Err` says which command
/// failed, and how.
pub fn sh(args: &[&str]) -> Result<(), String> {
    let ok = std::process::Command::new(args[0])
        .args(&args[1..])
        .status()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?
        .success();
    if ok {
        Ok(())
    } else {
        Err(format!("{} failed", args.join(" ")))
    }
}
