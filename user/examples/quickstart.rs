//! The crate's first example (also its front-page documentation): a COPY
//! and a CRC32C through the ring, then the results checked.
//!
//! `quickstart [DEVICE]` (default `/dev/warpq0`); exit status 1 on a
//! mismatch.

use warpq::{opcode, Access, Device};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).unwrap_or_else(|| "/dev/warpq0".into());
    let dev = Device::open(path)?; // or warpq::devices()
    let mut q = dev.queue()?; // this process's ring
    let mut src = dev.alloc(1 << 20, Access::Read)?; // owned, registered memory
    let dst = dev.alloc(1 << 20, Access::Write)?;
    src.write_at(0, b"hello, device");

    let copy = opcode::Copy::new(src.addr(), dst.addr(), 1 << 20).build().user_data(1);
    let crc = opcode::Crc32c::new(src.addr(), 13).build().user_data(2);
    q.submission().push_multiple(&[copy, crc]).map_err(|_| "ring full")?;
    q.submit_and_wait(2)?; // one system call at most
    let mut results = [None, None];
    for c in q.completion() {
        let result = c.into_result().map_err(|status| format!("command {}: {status}", c.user_data()))?;
        println!("{} -> {result:#x}", c.user_data());
        results[c.user_data() as usize - 1] = Some(result);
    }
    assert_eq!(&dst.to_vec()[..13], b"hello, device");
    assert_eq!(results[1], Some(u64::from(warpq::crc32c(0, b"hello, device"))));
    println!("quickstart: ok: the copy and the CRC32C are right");
    Ok(())
}
