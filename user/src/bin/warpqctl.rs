//! warpqctl: inspect the warpq driver.

use std::process::ExitCode;

fn usage() -> ExitCode {
    eprintln!("usage: warpqctl list");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("list") => match warpq::devices() {
            Ok(devices) if devices.is_empty() => {
                eprintln!("warpqctl: no device is bound to the warpq driver (is warpq.ko loaded?)");
                ExitCode::FAILURE
            }
            Ok(devices) => {
                for d in devices {
                    println!("{}\t{}", d.pci_address, d.sysfs_path.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("warpqctl: cannot read {}: {e}", warpq::SYSFS_DRIVER_DIR);
                ExitCode::FAILURE
            }
        },
        _ => usage(),
    }
}
