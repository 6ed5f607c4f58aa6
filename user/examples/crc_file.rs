//! CRC-32C of a file through the device, checked against the CPU.
//!
//! `crc_file FILE [DEVICE]` (default device `/dev/warpq0`): reads FILE into
//! a registered buffer piece by piece (4 MiB, the largest command) and has
//! the device checksum each piece, seeding it with the CRC so far; then
//! compares with `warpq::crc32c` over the whole file. Exit status 1 if they
//! differ.

use std::io::Read;
use std::process::ExitCode;

use warpq::{opcode, Access, Device};

fn main_() -> Result<String, String> {
    let mut args = std::env::args().skip(1);
    let file = args.next().ok_or("usage: crc_file FILE [DEVICE]")?;
    let path = args.next().unwrap_or_else(|| "/dev/warpq0".into());
    let dev = Device::open(&path).map_err(|e| e.to_string())?;
    let mut q = dev.queue().map_err(|e| e.to_string())?;
    let piece = warpq::MAX_COMMAND_BYTES as usize;
    let mut buf = dev.alloc(piece, Access::Read).map_err(|e| e.to_string())?;

    let mut f = std::fs::File::open(&file).map_err(|e| format!("{file}: {e}"))?;
    let mut chunk = vec![0u8; piece];
    let (mut device_crc, mut cpu_crc, mut total, mut commands) = (0u32, 0u32, 0u64, 0u64);
    loop {
        // Fill a piece (read() may return less than asked).
        let mut n = 0;
        while n < piece {
            match f.read(&mut chunk[n..]).map_err(|e| format!("{file}: {e}"))? {
                0 => break,
                k => n += k,
            }
        }
        if n == 0 {
            break;
        }
        // No command is in flight: the copy into the buffer is stable.
        buf.write_at(0, &chunk[..n]);
        let e = opcode::Crc32c::new(buf.addr(), n as u64).seed(device_crc).build().user_data(commands);
        q.submission().push(&e).map_err(|e| e.to_string())?;
        q.submit_and_wait(1).map_err(|e| e.to_string())?;
        let c = q.completion().next().ok_or("no completion after submit_and_wait(1)")?;
        if c.user_data() != commands {
            return Err(format!("completion for command {} where {commands} was expected", c.user_data()));
        }
        device_crc = c.into_result().map_err(|s| format!("CRC32C command {commands}: {s}"))? as u32;
        cpu_crc = warpq::crc32c(cpu_crc, &chunk[..n]);
        total += n as u64;
        commands += 1;
    }
    println!("{device_crc:08x}  {file}  ({total} bytes, {commands} device commands)");
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
