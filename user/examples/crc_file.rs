//! CRC-32C of a file through the device, checked against the CPU.
//!
//! `crc_file FILE [DEVICE]` (default device `/dev/warpq0`): maps FILE (a
//! private copy-on-write mapping, `memmap2`'s `map_copy`, so a file the
//! program may only read will do) and registers the mapping itself for the
//! device to read: no copy. A file larger than the driver takes per region
//! (`WARPQ_IOC_INFO` max_region_bytes) is mapped a window at a time. The
//! device checksums each window 4 MiB (the largest command) at a time,
//! seeding each command with the CRC so far; then the CPU checksums the
//! file as read with `read`. Exit status 1 if they differ.

use std::io::Read;
use std::process::ExitCode;

use warpq::memmap2::MmapOptions;
use warpq::{opcode, Access, Device};

fn main_() -> Result<String, String> {
    let mut args = std::env::args().skip(1);
    let file = args.next().ok_or("usage: crc_file FILE [DEVICE]")?;
    let path = args.next().unwrap_or_else(|| "/dev/warpq0".into());
    let dev = Device::open(&path).map_err(|e| e.to_string())?;
    let mut q = dev.queue().map_err(|e| e.to_string())?;
    let piece = warpq::MAX_COMMAND_BYTES;
    // Windows are a whole number of pieces (and so of pages: map offsets
    // must be page aligned).
    let max_region = dev.info().map_err(|e| e.to_string())?.max_region_bytes;
    let window = (max_region / piece).max(1) * piece;

    let f = std::fs::File::open(&file).map_err(|e| format!("{file}: {e}"))?;
    let size = f.metadata().map_err(|e| format!("{file}: {e}"))?.len();
    let (mut device_crc, mut commands, mut windows) = (0u32, 0u64, 0u64);
    let mut offset = 0u64;
    while offset < size {
        let len = window.min(size - offset);
        // SAFETY: memmap2's contract: the file is not truncated while we
        // read it; if it were, the device would read zeroes, not fault.
        let map = unsafe { MmapOptions::new().offset(offset).len(len as usize).map_copy(&f) }
            .map_err(|e| format!("{file}: mmap at {offset}: {e}"))?;
        let buf = dev.register_mmap(map, Access::Read).map_err(|e| e.to_string())?;
        let mut at = 0u64;
        while at < len {
            let n = piece.min(len - at);
            let e = opcode::Crc32c::new(buf.addr() + at, n).seed(device_crc).build().user_data(commands);
            q.submission().push(&e).map_err(|e| e.to_string())?;
            q.submit_and_wait(1).map_err(|e| e.to_string())?;
            let c = q.completion().next().ok_or("no completion after submit_and_wait(1)")?;
            if c.user_data() != commands {
                return Err(format!("completion for command {} where {commands} was expected", c.user_data()));
            }
            device_crc = c.into_result().map_err(|s| format!("CRC32C command {commands}: {s}"))? as u32;
            at += n;
            commands += 1;
        }
        drop(buf);
        offset += len;
        windows += 1;
    }
    // The CPU's answer, from read(2), not from the mapping.
    let (mut cpu_crc, mut chunk) = (0u32, vec![0u8; 1 << 20]);
    let mut reader = std::fs::File::open(&file).map_err(|e| format!("{file}: {e}"))?;
    loop {
        match reader.read(&mut chunk).map_err(|e| format!("{file}: {e}"))? {
            0 => break,
            n => cpu_crc = warpq::crc32c(cpu_crc, &chunk[..n]),
        }
    }
    println!("{device_crc:08x}  {file}  ({size} bytes, {windows} mapped windows, {commands} device commands)");
    if device_crc != cpu_crc {
        return Err(format!("the device says {device_crc:08x}, the CPU {cpu_crc:08x}"));
    }
    Ok(format!("device and CPU agree: crc32c {cpu_crc:08x}"))
}

fn main() -> ExitCode {
    match main_() {
        Ok(msg) => {
            println!("crc_file: ok: {msg}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("crc_file: FAIL: {e}");
            ExitCode::FAILURE
        }
    }
}
