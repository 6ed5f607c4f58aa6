//! Process death with work in flight, and the device fd passed to another
//! process.

use std::time::Duration;

use warpq::sys::*;
use warpq::Device;

use super::{CHILD_LIMIT, PAGE};
use crate::harness::{self, Exit};
use crate::report::Report;
use crate::stream::{push_all, reap, sqe};
use crate::{recv_fd, send_fd, Anon};

/// Process death with work in flight: a child with registered buffers and a
/// full ring of long FILLs is SIGKILLed mid-way; another thread's close of
/// the fd while a thread blocks in WAIT. The driver must release every pin
/// (checked afterwards by `warpq-check pins`), leak nothing and not splat.
pub fn death(dev: &Device) -> Result<String, String> {
    // The child only uses its own copies and is killed.
    let child = harness::spawn(|| {
        let run = || -> Result<(), String> {
            let mut q = dev.queue().map_err(|e| format!("child map: {e}"))?;
            let buf = Anon::new(4 << 20);
            let rw = WARPQ_ACCESS_READ | WARPQ_ACCESS_WRITE;
            // SAFETY: as elsewhere; the process dies with it registered.
            unsafe { dev.register_raw(buf.ptr(), buf.len(), rw) }.map_err(|e| format!("child register: {e}"))?;
            let cmds: Vec<_> = (0..200).map(|i| sqe(WARPQ_OP_FILL, i, 0, buf.addr(0), buf.len() as u64, i)).collect();
            push_all(&mut q, &cmds)?;
            loop {
                std::hint::spin_loop();
            }
        };
        if let Err(e) = run() {
            Report::new().fail("death", &format!("child: {e}"));
        }
        1
    })
    .map_err(|e| format!("fork: {e}"))?;
    std::thread::sleep(Duration::from_millis(1500));
    child.kill(libc::SIGKILL).map_err(|e| format!("kill: {e}"))?;
    let exit = child.wait(CHILD_LIMIT);
    if !matches!(exit, Exit::Signal(_)) {
        return Err(format!("child was not killed ({exit})"));
    }
    // Close from one thread while another blocks in WAIT on the same file.
    let file = std::fs::OpenOptions::new().read(true).write(true).open("/dev/warpq0").map_err(|e| e.to_string())?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
    let waiter = std::thread::spawn(move || {
        let mut req = warpq_wait {
            size: std::mem::size_of::<warpq_wait>() as u32,
            min_ready: 1,
            timeout_ns: 2_000_000_000,
            ..Default::default()
        };
        // SAFETY: WAIT reads and writes one warpq_wait.
        let r = unsafe { libc::ioctl(fd, WARPQ_IOC_WAIT, &mut req) };
        (r, req.ready)
    });
    std::thread::sleep(Duration::from_millis(300));
    drop(file);
    let (r, ready) = waiter.join().map_err(|_| "waiter panicked")?;
    if r != 0 || ready != 0 {
        return Err(format!("WAIT after a concurrent close returned {r} with {ready} ready"));
    }
    Ok("SIGKILL with 200 long commands in flight; close while another thread waits: WAIT timed out cleanly".into())
}

/// The fd passed to another process with SCM_RIGHTS: that process gets a
/// queue of its own on the same open file and cannot reach the first one's
/// buffers through the device.
pub fn scm_rights(dev: &Device) -> Result<String, String> {
    let mut q = dev.queue().map_err(|e| format!("map queue: {e}"))?;
    let buf = Anon::new(4 * PAGE);
    buf.write(&[0x11u8; 4 * PAGE]);
    let rw = WARPQ_ACCESS_READ | WARPQ_ACCESS_WRITE;
    // SAFETY: only raw pointers refer to the buffer while registered.
    let h = unsafe { dev.register_raw(buf.ptr(), buf.len(), rw) }.map_err(|e| format!("register: {e}"))?;
    push_all(&mut q, &[sqe(WARPQ_OP_FILL, 1, 0, buf.addr(0), 64, 0x22)])?;
    if reap(&mut q)?.status != WARPQ_STATUS_OK {
        return Err("the owner's FILL failed".into());
    }
    let mut sv = [0; 2];
    // SAFETY: a socketpair for passing the fd.
    if unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, sv.as_mut_ptr()) } != 0 {
        return Err("socketpair failed".into());
    }
    let fd = std::os::fd::AsRawFd::as_raw_fd(dev.as_file());
    // The child only uses the received fd and its own memory.
    let child = harness::spawn(|| {
        // The receiver: drop the inherited fd so the only way in is the
        // one received over the socket.
        // SAFETY: closing our copy of the inherited descriptor.
        unsafe { libc::close(fd) };
        let code = (|| -> Result<(), String> {
            let received = recv_fd(sv[1]).ok_or("no fd received")?;
            // SAFETY: `received` is a descriptor the kernel just installed
            // for us; nothing else owns it.
            let owned = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(received) };
            let dev2 = Device::from_fd(owned).map_err(|e| format!("received fd: {e}"))?;
            let mut q2 = dev2.queue().map_err(|e| format!("receiver queue: {e}"))?;
            for (id, s) in [
                (1, sqe(WARPQ_OP_FILL, 1, 0, buf.addr(0), 64, 0x33)),
                (2, sqe(WARPQ_OP_CRC32C, 2, buf.addr(0), 0, 64, 0)),
            ] {
                push_all(&mut q2, &[s])?;
                let c = reap(&mut q2)?;
                if c.user_data != id || c.status != WARPQ_STATUS_FAULT_UNREGISTERED {
                    return Err(format!("receiver reached the owner's buffer (status {})", c.status));
                }
            }
            Ok(())
        })();
        match code {
            Ok(()) => 0,
            Err(e) => {
                Report::new().fail("scm", &e);
                1
            }
        }
    })
    .map_err(|e| format!("fork: {e}"))?;
    if !send_fd(sv[0], fd) {
        let _ = child.kill(libc::SIGKILL);
        child.wait(CHILD_LIMIT);
        return Err("sendmsg SCM_RIGHTS failed".into());
    }
    let exit = child.wait(CHILD_LIMIT);
    // SAFETY: our sockets.
    unsafe {
        libc::close(sv[0]);
        libc::close(sv[1]);
    }
    if !exit.success() {
        return Err(format!("receiver failed ({exit})"));
    }
    if buf.bytes()[..64].iter().any(|&b| b != 0x22) {
        return Err("the owner's buffer changed".into());
    }
    dev.unregister(h).map_err(|e| format!("unregister: {e}"))?;
    Ok("fd passed with SCM_RIGHTS: the receiver's FILL and CRC at the owner's buffer complete FAULT_UNREGISTERED; the buffer is unchanged".into())
}
