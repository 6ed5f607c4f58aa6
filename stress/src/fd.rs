//! Passing file descriptors between processes (`SCM_RIGHTS`).

/// A message of the one data byte in `iov`, with `cmsg` (64 aligned bytes)
/// as its control buffer; the caller sets `msg_controllen`. Both must
/// outlive the message's use.
fn one_byte_message(iov: &mut libc::iovec, cmsg: &mut [u64; 8]) -> libc::msghdr {
    // SAFETY: a zeroed msghdr is valid (null pointers, zero lengths).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.as_mut_ptr().cast();
    msg
}

/// Sends `fd` over the UNIX socket `sock` with `SCM_RIGHTS` (and one data
/// byte); whether it went.
pub fn send_fd(sock: i32, fd: i32) -> bool {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec { iov_base: byte.as_mut_ptr().cast(), iov_len: 1 };
    let mut cmsg = [0u64; 8];
    let mut msg = one_byte_message(&mut iov, &mut cmsg);
    // SAFETY: CMSG_SPACE is a pure computation.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(4) } as _;
    // SAFETY: the control buffer (64 bytes, aligned) holds one header and an fd.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(4) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<i32>(), fd);
    }
    // SAFETY: a valid message on our socket.
    unsafe { libc::sendmsg(sock, &msg, 0) == 1 }
}

/// Receives a descriptor sent by [`send_fd`] on `sock`.
pub fn recv_fd(sock: i32) -> Option<i32> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec { iov_base: byte.as_mut_ptr().cast(), iov_len: 1 };
    let mut cmsg = [0u64; 8];
    let mut msg = one_byte_message(&mut iov, &mut cmsg);
    msg.msg_controllen = std::mem::size_of_val(&cmsg) as _;
    // SAFETY: a valid message buffer on our socket.
    if unsafe { libc::recvmsg(sock, &mut msg, 0) } != 1 {
        return None;
    }
    // SAFETY: recvmsg filled the control buffer; CMSG_* walk it.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        if c.is_null() || (*c).cmsg_type != libc::SCM_RIGHTS {
            return None;
        }
        Some(std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<i32>()))
    }
}
