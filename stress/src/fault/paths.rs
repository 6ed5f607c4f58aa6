//! The driver's paths under the fail-nth sweep: `open`, `map-ring` (mmap +
//! first touch, which creates the queue), `register`, `rebuild` (the
//! WAIT-driven rebuild of a chunk a command waits for after an
//! invalidation), `child-queue` (a forked
//! child's first registration, which creates its queue) and `unregister`
//! (which must not allocate at all: a teardown path that can fail is a leak
//! waiting). Each is a [`PathRun`](super::PathRun): one armed run, then a
//! check that the device works at once.

use std::time::Duration;

use warpq::sys::*;
use warpq::Device;

use super::{armed, armed_in_child, FailNth, Outcome};
use crate::stream::{push_all, reap, sqe};
use crate::Anon;

const PAGE: usize = 4096;
const DEVICE: &str = "/dev/warpq0";

/// One verified FILL through the ring of `dev`'s queue: the device works.
fn device_works(dev: &Device, buf: &Anon, value: u8) -> Result<(), String> {
    let mut q = dev.queue().map_err(|e| format!("map queue: {e}"))?;
    push_all(&mut q, &[sqe(WARPQ_OP_FILL, 7, 0, buf.addr(0), PAGE as u64, u64::from(value))])?;
    let c = reap(&mut q)?;
    if c.status != WARPQ_STATUS_OK || buf.bytes()[..PAGE].iter().any(|&b| b != value) {
        return Err(format!("the device does not work after the injection: status {}", c.status));
    }
    Ok(())
}

fn register_rw(dev: &Device, buf: &Anon) -> Result<u64, warpq::Error> {
    // SAFETY: only raw pointers refer to `buf`, which outlives the
    // registration (or the device file).
    unsafe { dev.register_raw(buf.ptr(), buf.len(), WARPQ_ACCESS_READ | WARPQ_ACCESS_WRITE) }
}

/// Opening the device.
pub fn open(fail: &mut FailNth, n: u32) -> Result<(Outcome, bool), String> {
    let (_, r, injected) = armed(fail, n, || Ok(()), |_| Device::open(DEVICE))?;
    let outcome = Outcome::of(&r);
    drop(r);
    let dev = Device::open(DEVICE).map_err(|e| format!("open after: {e}"))?;
    let buf = Anon::new(4 * PAGE);
    register_rw(&dev, &buf).map_err(|e| format!("register after: {e}"))?;
    device_works(&dev, &buf, n as u8)?;
    Ok((outcome, injected))
}

/// mmap and first touch of the ring, in a child: the touch may raise SIGBUS.
pub fn map_ring(_fail: &mut FailNth, n: u32) -> Result<(Outcome, bool), String> {
    let dev = Device::open(DEVICE).map_err(|e| format!("open: {e}"))?;
    let (outcome, injected) = armed_in_child(|fail| {
        let (_, r, injected) = armed(
            fail,
            n,
            || Ok(()),
            |_| {
                dev.map_queue().map(|m| {
                    // SAFETY: the mapping is WARPQ_RING_SIZE bytes; a volatile
                    // read of the header's magic faults the queue in.
                    unsafe { std::ptr::read_volatile(m.as_ptr() as *const u32) }
                })
            },
        )?;
        match r {
            Ok(WARPQ_RING_MAGIC) => Ok((Outcome::Ok, injected)),
            Ok(magic) => Err(format!("ring magic {magic:#x}")),
            Err(e) => Ok((Outcome::of::<()>(&Err(e)), injected)),
        }
    })?;
    if outcome == Outcome::Sigbus {
        return Ok((outcome, injected));
    }
    let buf = Anon::new(4 * PAGE);
    register_rw(&dev, &buf).map_err(|e| format!("register after: {e}"))?;
    device_works(&dev, &buf, n as u8)?;
    Ok((outcome, injected))
}

/// REGISTER of a buffer.
pub fn register(fail: &mut FailNth, n: u32) -> Result<(Outcome, bool), String> {
    let dev = Device::open(DEVICE).map_err(|e| format!("open: {e}"))?;
    let buf = Anon::new(16 * PAGE);
    let (_, r, injected) = armed(fail, n, || Ok(()), |_| register_rw(&dev, &buf))?;
    let outcome = Outcome::of(&r);
    if let Ok(h) = r {
        dev.unregister(h).map_err(|e| format!("unregister: {e}"))?;
    }
    register_rw(&dev, &buf).map_err(|e| format!("register after: {e}"))?;
    device_works(&dev, &buf, n as u8)?;
    Ok((outcome, injected))
}

/// An invalidation tears a chunk of the buffer down, a FILL on it makes the
/// engine ask for a rebuild, and the armed WAIT ioctl rebuilds.
pub fn rebuild(fail: &mut FailNth, n: u32) -> Result<(Outcome, bool), String> {
    // The rebuild worker would do the rebuild in a kernel thread, out of
    // this task's fail-nth reach: off while this path runs.
    let _worker_off = crate::param::ParamGuard::set("rebuild_worker", "N")?;
    let dev = Device::open(DEVICE).map_err(|e| format!("open: {e}"))?;
    let buf = Anon::new(16 * PAGE);
    register_rw(&dev, &buf).map_err(|e| format!("register: {e}"))?;
    device_works(&dev, &buf, 1)?;
    let (_, r, injected) = armed(
        fail,
        n,
        || {
            // SAFETY: our own mapping; the registration survives (its chunk
            // is torn down and rebuilt on the next use).
            if unsafe { libc::madvise(buf.ptr().add(8 * PAGE).cast(), PAGE, libc::MADV_DONTNEED) } != 0 {
                return Err("madvise".to_string());
            }
            // The FILL needs the torn-down chunk: the engine asks for a
            // rebuild (the queue goes stale) instead of running it.
            dev.submit_batch(&[sqe(WARPQ_OP_FILL, 1, 0, buf.addr(0), PAGE as u64, 0x33)])
                .map_err(|e| format!("submit: {e}"))?;
            std::thread::sleep(Duration::from_millis(200));
            Ok(())
        },
        |_| dev.wait(1, Some(Duration::from_secs(10))),
    )?;
    let outcome = Outcome::of(&r);
    // Whatever the armed WAIT said, the FILL completes once a rebuild
    // succeeds (this WAIT is not armed). The ioctl path queued it through
    // the ring's SQ behind the Queue's back: drain its completion before
    // using a Queue.
    dev.wait(1, Some(Duration::from_secs(10))).map_err(|e| format!("wait: {e}"))?;
    {
        let mut q = dev.queue().map_err(|e| format!("map queue: {e}"))?;
        let c = reap(&mut q)?;
        if c.status != WARPQ_STATUS_OK || buf.bytes()[0] != 0x33 {
            return Err(format!("FILL after the armed rebuild: status {}", c.status));
        }
    }
    device_works(&dev, &buf, n as u8)?;
    Ok((outcome, injected))
}

/// A forked child's first registration creates its queue.
pub fn child_queue(_fail: &mut FailNth, n: u32) -> Result<(Outcome, bool), String> {
    let dev = Device::open(DEVICE).map_err(|e| format!("open: {e}"))?;
    let buf = Anon::new(4 * PAGE);
    register_rw(&dev, &buf).map_err(|e| format!("register: {e}"))?;
    device_works(&dev, &buf, 1)?;
    let result = armed_in_child(|fail| {
        let (mine, r, injected) = armed(fail, n, || Ok(Anon::new(4 * PAGE)), |mine| register_rw(&dev, mine))?;
        let outcome = Outcome::of(&r);
        if r.is_err() {
            register_rw(&dev, &mine).map_err(|e| format!("child register after: {e}"))?;
        }
        device_works(&dev, &mine, 9)?;
        Ok((outcome, injected))
    })?;
    device_works(&dev, &buf, n as u8)?;
    Ok(result)
}

/// UNREGISTER, which must not allocate.
pub fn unregister(fail: &mut FailNth, n: u32) -> Result<(Outcome, bool), String> {
    let dev = Device::open(DEVICE).map_err(|e| format!("open: {e}"))?;
    let buf = Anon::new(16 * PAGE);
    let h = register_rw(&dev, &buf).map_err(|e| format!("register: {e}"))?;
    let (_, r, injected) = armed(fail, n, || Ok(()), |_| dev.unregister(h))?;
    let outcome = Outcome::of(&r);
    if r.is_err() {
        dev.unregister(h).map_err(|e| format!("unregister after: {e}"))?;
    }
    register_rw(&dev, &buf).map_err(|e| format!("register after: {e}"))?;
    device_works(&dev, &buf, n as u8)?;
    Ok((outcome, injected))
}
