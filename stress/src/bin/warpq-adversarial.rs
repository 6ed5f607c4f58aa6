//! warpq-adversarial: one table of adversarial cases against the real driver.
//!
//! Every row names a misuse of the ABI of `driver/uapi/warpq.h` — unknown,
//! short, long, garbage and hostile ioctl arguments; bad registrations;
//! bad submission entries; a corrupted shared ring; entries torn by another
//! thread; abuse of the ring mapping; bogus waits; closed, duplicated and
//! passed file descriptors; bad pointers on the SUBMIT path — and states the
//! outcome the driver must give. The cases run in order, each in a forked
//! child with a time limit (a hang fails its case, it does not hang the
//! run), and each prints one line:
//!
//! ```text
//! ok   <name>: <what happened>
//! FAIL <name>: expected <outcome>, got <what happened>
//! ```
//!
//! then `adversarial: N cases, N passed, N failed`. After every case, and
//! once more at the end, the pages pinned with `pin_user_pages*()` must be
//! back to what they were at the start (`/proc/vmstat`, waiting up to 10 s
//! for exiting processes and the engine to settle). The exit status is
//! non-zero if a case failed or the pins do not balance.
//!
//! Where the driver's behaviour is wrong, the row states the correct outcome
//! and fails until the driver is fixed. Where the driver defines what
//! happens to a corrupted ring (it ignores a tail more than a ring ahead,
//! stalls on a corrupt completion index, re-reads its own indices from the
//! shared page), the row asserts exactly that.
//!
//! ```text
//! warpq-adversarial [DEVICE] [CASE...]   run the cases (default /dev/warpq0, all)
//! warpq-adversarial --list               print the table
//! ```
//!
//! In the debug VM (which also fails the run on any kernel splat or leak):
//! `VM_EXTRA=/tmp/adv vm/run.sh '/extra/warpq-adversarial && warpq-check pins'`,
//! or the `adversarial` suite of `vm/test.sh`.

use std::mem::offset_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use warpq::sys::*;
use warpq::{crc32c, errno_name, Device};
use warpq_stress::stream::sqe;
use warpq_stress::{recv_fd, send_fd, Anon, PinCounts, Rng};

const PAGE: usize = 4096;
const RW: u32 = WARPQ_ACCESS_READ | WARPQ_ACCESS_WRITE;
const PROT_RW: i32 = libc::PROT_READ | libc::PROT_WRITE;
/// The start of the kernel's direct map on x86-64 (4-level paging).
const KERNEL_ADDR: u64 = 0xffff_8880_0000_0000;
/// Just above the 4-level user address space.
const ABOVE_USER: u64 = 0x0000_8000_0000_0000;
/// Not canonical under either paging mode.
const NONCANONICAL: u64 = 0x8000_0000_0000_0000;
/// The legacy vsyscall page (execute-only emulation: not readable).
const VSYSCALL: u64 = 0xffff_ffff_ff60_0000;
/// A user address none of these tests maps.
const UNMAPPED: u64 = 0x0000_1000_0000_0000;
/// How long one case may take before it counts as hung and is killed.
const CASE_LIMIT: Duration = Duration::from_secs(120);

const OK: u32 = WARPQ_STATUS_OK;
const INVALID: u32 = WARPQ_STATUS_INVALID;
const UNREG: u32 = WARPQ_STATUS_FAULT_UNREGISTERED;
const BOUNDS: u32 = WARPQ_STATUS_FAULT_BOUNDS;
const ACCESS: u32 = WARPQ_STATUS_FAULT_ACCESS;
const UNMAPPED_ST: u32 = WARPQ_STATUS_FAULT_UNMAPPED;

const NOP: u8 = WARPQ_OP_NOP;
const COPY: u8 = WARPQ_OP_COPY;
const FILL: u8 = WARPQ_OP_FILL;
const CRC: u8 = WARPQ_OP_CRC32C;

const SQ_HEAD: usize = offset_of!(warpq_ring_header, sq_head);
const SQ_TAIL: usize = offset_of!(warpq_ring_header, sq_tail);
const CQ_HEAD: usize = offset_of!(warpq_ring_header, cq_head);
const CQ_TAIL: usize = offset_of!(warpq_ring_header, cq_tail);
const FLAGS: usize = offset_of!(warpq_ring_header, flags);
const SQ_INVALID: usize = offset_of!(warpq_ring_header, sq_invalid);

// ---- the table ---------------------------------------------------------------

/// One row: what a case does, what the driver must answer, and the code.
struct Case {
    name: &'static str,
    does: &'static str,
    expect: &'static str,
    run: fn(&Env) -> Result<String, String>,
}

macro_rules! case {
    ($name:literal, $run:ident, $does:literal, $expect:literal) => {
        Case {
            name: $name,
            does: $does,
            expect: $expect,
            run: $run,
        }
    };
}

const CASES: &[Case] = &[
    // The ioctl layer.
    case!("ioctl-unknown", ioctl_unknown,
        "unknown numbers, another type byte, INFO/REGISTER/WAKE with the wrong direction bits, TCGETS",
        "ENOTTY for each"),
    case!("ioctl-size-bits", ioctl_size_bits,
        "REGISTER, UNREGISTER and INFO under ioctl numbers whose size bits are 0, 0x3fff and 4096",
        "dispatch on type and number only: each succeeds"),
    case!("ioctl-short-struct", ioctl_short_struct,
        "every ioctl with size 0, 4 and its v1 size - 1 (otherwise valid contents)",
        "EINVAL for each; nothing registered or queued"),
    case!("ioctl-long-struct", ioctl_long_struct,
        "REGISTER, UNREGISTER, INFO, STATS, WAIT, WAKE with larger sizes (up to 0xffffffff) and nonzero trailing bytes",
        "each succeeds; the kernel writes only the structure it knows (STATS: its histograms only when the size covers them) and reports that size; trailing bytes untouched"),
    case!("ioctl-garbage-struct", ioctl_garbage_struct,
        "400 ioctls with random structure contents (WAIT timeouts bounded), then 64 random entries through SUBMIT",
        "only success, EINVAL, EFAULT, ENOENT or E2BIG; nothing pinned; every random entry completes INVALID"),
    case!("ioctl-null-arg", ioctl_null_arg,
        "every ioctl with a null argument pointer",
        "EFAULT for each"),
    case!("ioctl-kernel-arg", ioctl_kernel_arg,
        "every ioctl with a kernel, a non-canonical and a wrapping argument pointer",
        "EFAULT for each"),
    case!("ioctl-readonly-arg-register", ioctl_readonly_arg_register,
        "REGISTER whose argument lies in a read-only page (the handle cannot be written back)",
        "EFAULT and no registration left behind (nothing pinned, the range registers again)"),
    case!("ioctl-readonly-arg-submit", ioctl_readonly_arg_submit,
        "SUBMIT of one NOP whose argument lies in a read-only page (`submitted` cannot be written back)",
        "EFAULT and nothing queued (sq_tail unchanged, no completion)"),
    // Registrations.
    case!("reg-null-addr", reg_null_addr,
        "REGISTER of address 0 (READ, WRITE, READ|WRITE)",
        "EFAULT; nothing pinned"),
    case!("reg-kernel-addr", reg_kernel_addr,
        "REGISTER of the direct map, the vsyscall page, just above user space, a non-canonical address",
        "EFAULT; nothing pinned"),
    case!("reg-wrapping", reg_wrapping,
        "REGISTER of ranges whose end wraps past 2^64",
        "EINVAL"),
    case!("reg-unaligned", reg_unaligned,
        "REGISTER with an unaligned address, unaligned lengths",
        "EINVAL"),
    case!("reg-zero-len", reg_zero_len,
        "REGISTER of 0 bytes (mapped, null and kernel addresses)",
        "EINVAL"),
    case!("reg-access-bits", reg_access_bits,
        "REGISTER with access 0, 4, 8, 3|4, 0x80000000, 0xffffffff",
        "EINVAL; READ alone and WRITE alone are accepted"),
    case!("reg-too-large", reg_too_large,
        "REGISTER of max_region_bytes + 4 KiB, 1 TiB, 2^64 - 4 KiB bytes",
        "E2BIG"),
    case!("reg-max-size", reg_max_size,
        "REGISTER of exactly max_region_bytes",
        "accepted, every page pinned, all released by UNREGISTER"),
    case!("reg-overlap", reg_overlap,
        "REGISTER of ranges overlapping a registered one (front, back, around, inside, first and last page)",
        "EEXIST; adjacent ranges are accepted"),
    case!("reg-duplicate", reg_duplicate,
        "REGISTER of a registered range again (same and other access), after UNREGISTER once more",
        "EEXIST while registered; then accepted with a new handle"),
    case!("reg-too-many", reg_too_many,
        "max_regions registrations, then one more, then one more after freeing a slot",
        "ENOSPC for the extra one; accepted once a slot is free"),
    case!("reg-bad-memory", reg_bad_memory,
        "REGISTER of unmapped memory, PROT_NONE, read-only memory for writing, a range with a hole, a range whose last page is read-only",
        "EFAULT; partial pins released; read-only memory registers for reading"),
    case!("reg-the-ring", reg_the_ring,
        "REGISTER of the ring mapping, its first page, anonymous pages followed by the ring, another file's ring; FILL aimed at the ring",
        "EFAULT for each (the anonymous pages alone register); the FILL completes FAULT_UNREGISTERED"),
    case!("reg-memlock", reg_memlock,
        "without CAP_IPC_LOCK and with RLIMIT_MEMLOCK 64 KiB: REGISTER of 16 KiB, then of 256 KiB",
        "the first accepted, the second ENOMEM (the limit, as io_uring and VFIO say)"),
    case!("reg-race", reg_race,
        "4 threads register/unregister overlapping ranges, a 5th unregisters their fresh handles first, while FILLs run into the range",
        "only success, EEXIST, ENOENT (and ENOSPC/EBUSY/EAGAIN); each handle unregistered exactly once; statuses OK/UNREGISTERED/BOUNDS/UNMAPPED; nothing pinned"),
    case!("unreg-in-flight", unreg_in_flight,
        "UNREGISTER of a 4 MiB buffer with 200 FILLs of 1 MiB into it queued and running",
        "UNREGISTER succeeds; completions are OK then FAULT_UNREGISTERED (in that order), all 200 arrive; no byte written after it returned"),
    case!("unreg-twice-unknown", unreg_twice_unknown,
        "UNREGISTER twice, and of handles 0, 0xffff, 2^64-1, slot 16, slot 0xffff, an empty slot, a stale generation",
        "ENOENT for a well-formed unknown handle, EINVAL for malformed ones"),
    case!("mprotect-registered", mprotect_registered,
        "mprotect of a registered read/write buffer to read-only with 200 FILLs into it queued and running",
        "OK then FAULT_UNMAPPED (in that order), all 200 arrive; no byte written after mprotect returned; UNREGISTER succeeds"),
    case!("ring-over-buffer", ring_over_buffer,
        "the ring mapped MAP_FIXED over a registered buffer, then FILL/CRC32C into that buffer",
        "FAULT_UNMAPPED (the ring is never pinned for the device); the ring intact; UNREGISTER succeeds"),
    case!("memfd-truncate", memfd_truncate,
        "register a shared memfd mapping, truncate the memfd to 0, FILL and CRC32C into it, UNREGISTER",
        "FAULT_UNMAPPED for both; UNREGISTER succeeds; pins released"),
    // Submission entries.
    case!("sqe-unregistered", sqe_unregistered,
        "FILL/COPY/CRC32C at unmapped, unregistered, null, kernel, non-canonical, vsyscall addresses, the ring, one past the end",
        "FAULT_UNREGISTERED for each; no memory changed"),
    case!("sqe-bounds", sqe_bounds,
        "commands whose range crosses the end of their buffer, and one ending exactly at it",
        "FAULT_BOUNDS for each crossing one; OK at the exact end"),
    case!("sqe-two-regions", sqe_two_regions,
        "commands spanning two adjacent registered buffers",
        "FAULT_BOUNDS (a command stays in one buffer); OK inside each"),
    case!("sqe-opcode", sqe_opcode,
        "opcodes 4, 5, 0x7f, 0x80, 0xff",
        "INVALID; no memory changed"),
    case!("sqe-flags", sqe_flags,
        "flags 0x02, 0x04, 0x80, 0xff; EDU_DMA on FILL, CRC32C, NOP; EDU_DMA COPY of 4097 bytes; EDU_DMA COPY of 64 bytes",
        "INVALID for each; the 64-byte edu COPY is OK (or FAULT_IOMMU without an IOMMU)"),
    case!("sqe-reserved", sqe_reserved,
        "nonzero rsvd0, rsvd1, rsvd2[0], rsvd2[1] on FILL and NOP; a NOP with garbage addresses",
        "INVALID for each reserved field; the garbage NOP is OK"),
    case!("sqe-zero-len", sqe_zero_len,
        "FILL, COPY, CRC32C of 0 bytes; NOP of 0 bytes",
        "INVALID; the NOP is OK"),
    case!("sqe-huge-len", sqe_huge_len,
        "lengths 4 MiB + 1, 2^40, 2^63, 2^64 - 1; 4 MiB exactly into a 64 KiB buffer",
        "INVALID; 4 MiB exactly is FAULT_BOUNDS"),
    case!("sqe-access", sqe_access,
        "FILL/COPY into a READ-only registration, CRC32C/COPY from a WRITE-only one",
        "FAULT_ACCESS; nothing changed; COPY READ-only -> WRITE-only and CRC32C of READ-only are OK"),
    case!("sqe-copy-overlap-page", sqe_copy_overlap_page,
        "COPY with overlapping source and destination inside one page, both directions, and src == dst",
        "OK with memmove semantics"),
    case!("sqe-copy-overlap-edu", sqe_copy_overlap_edu,
        "COPY through the edu DMA engine (WARPQ_SQE_EDU_DMA) with overlapping source and destination, 3000 bytes within a page and a whole page across two, both directions",
        "OK with memmove semantics, as the CPU engine"),
    case!("sqe-copy-overlap-pages", sqe_copy_overlap_pages,
        "COPY of 12 KiB with overlapping source and destination across pages, dst < src and dst > src",
        "OK with memmove semantics in both directions"),
    case!("ring-sq-invalid", ring_sq_invalid,
        "3 entries that complete INVALID",
        "the header's sq_invalid grows by 3 (uapi: entries completed with WARPQ_STATUS_INVALID)"),
    // A corrupted ring.
    case!("ring-tail-ahead", ring_tail_ahead,
        "sq_tail written 257 and 2^31 entries ahead of sq_head; SUBMIT and WAIT meanwhile; then restored",
        "ignored: nothing taken or completed, SUBMIT queues 0, WAIT times out with 0; after restoring, the entry runs"),
    case!("ring-tail-backwards", ring_tail_backwards,
        "sq_tail written 1 and 256 entries behind sq_head, then restored",
        "ignored (a tail behind the head is more than a ring ahead); after restoring, work runs"),
    case!("ring-sq-head", ring_sq_head,
        "the kernel-owned sq_head moved back by 2, then 5 past sq_tail",
        "back: the 2 old slots run again (the kernel re-reads sq_head); past the tail: ignored until restored"),
    case!("ring-cq-tail", ring_cq_tail,
        "the kernel-owned cq_tail moved 600 past cq_head, a NOP queued, then cq_tail restored",
        "the engine stalls (no free completion slot), WAIT returns at once with 512 ready; after restoring, the NOP completes"),
    case!("ring-cq-head", ring_cq_head,
        "cq_head moved 1 past cq_tail and 600 behind it, a NOP queued, then restored",
        "the engine stalls, WAIT returns at once with 512 ready; after restoring, the NOP completes"),
    case!("ring-header-scribble", ring_header_scribble,
        "magic, version, geometry, offsets, owner_id and flags overwritten with garbage; NOPs through the ring and SUBMIT",
        "ignored: all complete OK; the kernel rewrites none of these fields (only its own flag bits)"),
    case!("ring-cq-overflow", ring_cq_overflow,
        "768 NOPs published, none reaped, then all reaped",
        "exactly 512 complete while the CQ is full (none overwritten), the rest wait; all 768 arrive in order"),
    case!("exit-hostile-ring", exit_hostile_ring,
        "a process with 256 FILLs of 1 MiB queued and a thread resetting sq_head and cq_head forever (endless replay) is SIGKILLed",
        "it dies within 30 s; every pin is released"),
    case!("ring-torn-entries", ring_torn_entries,
        "1500 valid entries through the ring while another thread rewrites random SQE words",
        "every completion arrives with a valid status (0..=8) and zero reserved fields; no hang"),
    // The ring mapping.
    case!("mmap-private", mmap_private,
        "mmap of the ring MAP_PRIVATE (read/write and read-only)",
        "EINVAL"),
    case!("mmap-exec", mmap_exec,
        "mmap with PROT_EXEC; mprotect of the ring to add PROT_EXEC",
        "mmap EPERM, mprotect EACCES; the ring keeps working"),
    case!("mmap-offset", mmap_offset,
        "mmap at offsets 4096, WARPQ_RING_SIZE, 2^40",
        "EINVAL"),
    case!("mmap-size", mmap_size,
        "mmap of 0, 4096, WARPQ_RING_SIZE - 4096, + 4096, 2 * WARPQ_RING_SIZE bytes",
        "EINVAL"),
    case!("mremap-ring", mremap_ring,
        "mremap of the ring: grow in place, grow maymove, shrink, move, duplicate (old_len 0), DONTUNMAP",
        "EFAULT (grow, duplicate), EINVAL (shrink, move, DONTUNMAP); the ring stays where it was and works"),
    case!("mprotect-ring", mprotect_ring,
        "mprotect of the ring read-only (the engine completes meanwhile), PROT_NONE, back; of its first page only",
        "whole: allowed and the engine is unaffected; one page: EINVAL (no split)"),
    case!("munmap-partial", munmap_partial,
        "munmap of the first, a middle and the last page of the ring; then all of it and a new mapping",
        "EINVAL for parts; the whole unmaps; the new mapping shows the same queue"),
    case!("madvise-ring", madvise_ring,
        "MADV_DONTNEED of the ring, MADV_FREE, MADV_WIPEONFORK, MADV_DONTFORK of part and all, mlock",
        "DONTNEED: 0 and the ring's contents survive; FREE, WIPEONFORK, partial DONTFORK: EINVAL; whole DONTFORK and mlock: 0"),
    case!("mmap-many", mmap_many,
        "the ring mapped 6 times at once",
        "all show one queue: same owner_id, a write through one seen through another, work through any"),
    case!("mmap-readonly-fd", mmap_readonly_fd,
        "the device opened O_RDONLY: ring mapped writable, read-only, then mprotect to writable",
        "EACCES for writable; the read-only mapping shows the header"),
    // WAIT.
    case!("wait-bogus", wait_bogus,
        "WAIT with timeout 0, i64::MIN (min_ready 0), i64::MAX (min_ready 0), min_ready 2^32-1 for 50 ms, nonzero rsvd",
        "each returns without error and in bounded time with the ready count; min_ready is capped at the CQ size"),
    case!("wait-signal", wait_signal,
        "WAIT with no timeout and min_ready 2^32-1 in a thread, then SIGUSR1 (handler without SA_RESTART)",
        "blocks, then returns EINTR"),
    // File descriptors.
    case!("fd-closed", fd_closed,
        "ioctl and mmap on a closed descriptor and on -1",
        "EBADF"),
    case!("fd-dup", fd_dup,
        "a dup'ed descriptor: ring via each, REGISTER via one, UNREGISTER via the other, close the original",
        "one queue (same owner_id); both work; the dup keeps working after the close"),
    case!("fd-scm-rights", fd_scm_rights,
        "the fd passed to another process with SCM_RIGHTS; it FILLs, CRCs and UNREGISTERs the owner's buffer",
        "its own queue (new owner_id); FAULT_UNREGISTERED, ENOENT; the owner's buffer unchanged"),
    // The SUBMIT path.
    case!("submit-bad-ptr", submit_bad_ptr,
        "SUBMIT of 1 entry at null, kernel, non-canonical, PROT_NONE and wrapping pointers; 0 entries at null",
        "EFAULT (0 entries: success, 0 submitted); nothing queued"),
    case!("submit-partial-fault", submit_partial_fault,
        "SUBMIT of 40 entries whose last 8 lie in a PROT_NONE page",
        "EFAULT with nothing queued, or success with 32 submitted"),
    case!("submit-concurrent", submit_concurrent,
        "4 threads SUBMIT 1600 NOPs with distinct user_data concurrently (retrying what does not fit) while the main thread reaps",
        "every entry completes OK exactly once"),
    case!("submit-huge-count", submit_huge_count,
        "SUBMIT with count 2^32-1 over 1024 valid NOPs followed by a PROT_NONE page",
        "success with 256..=768 submitted (as many as fit); exactly those complete"),
];

// ---- small helpers -----------------------------------------------------------

macro_rules! ensure {
    ($cond:expr, $($msg:tt)*) => {
        if !$cond {
            return Err(format!($($msg)*));
        }
    };
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn ename(e: i32) -> String {
    errno_name(e).map_or_else(|| format!("errno {e}"), str::to_string)
}

fn show<T: std::fmt::Debug>(r: &Result<T, i32>) -> String {
    match r {
        Ok(v) => format!("success ({v:?})"),
        Err(e) => ename(*e),
    }
}

/// `r` must be the error `want`.
fn want_err<T: std::fmt::Debug>(what: &str, r: Result<T, i32>, want: i32) -> Result<(), String> {
    match r {
        Err(e) if e == want => Ok(()),
        other => Err(format!("{what}: {}", show(&other))),
    }
}

/// `r` must succeed.
fn want_ok<T>(what: &str, r: Result<T, i32>) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {}", ename(e)))
}

fn st(status: u32) -> String {
    match status {
        0 => "OK".into(),
        1 => "INVALID".into(),
        2 => "FAULT_UNREGISTERED".into(),
        3 => "FAULT_BOUNDS".into(),
        4 => "FAULT_ACCESS".into(),
        5 => "FAULT_UNMAPPED".into(),
        6 => "FAULT_IOMMU".into(),
        7 => "ABORTED".into(),
        8 => "DEVICE_ERROR".into(),
        s => format!("status {s}"),
    }
}

fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

/// An entry with its reserved fields set as given.
fn with_rsvd(mut e: warpq_sqe, rsvd0: u16, rsvd1: u32, rsvd2: [u64; 2]) -> warpq_sqe {
    e.rsvd0 = rsvd0;
    e.rsvd1 = rsvd1;
    e.rsvd2 = rsvd2;
    e
}

/// An entry with its flags set.
fn with_flags(mut e: warpq_sqe, flags: u8) -> warpq_sqe {
    e.flags = flags;
    e
}

/// The eight little-endian words of an entry, as the ring holds them.
fn sqe_words(e: &warpq_sqe) -> [u64; 8] {
    [
        u64::from(e.opcode)
            | (u64::from(e.flags) << 8)
            | (u64::from(e.rsvd0) << 16)
            | (u64::from(e.rsvd1) << 32),
        e.user_data,
        e.src,
        e.dst,
        e.len,
        e.value,
        e.rsvd2[0],
        e.rsvd2[1],
    ]
}

/// A deterministic byte pattern.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

/// What the cases need to know, read once by the parent.
struct Env {
    path: String,
    info: warpq_info,
}

fn open(env: &Env) -> Result<Device, String> {
    Device::open(&env.path).map_err(|e| format!("open {}: {e}", env.path))
}

fn fd_of(dev: &Device) -> i32 {
    dev.as_file().as_raw_fd()
}

// ---- raw ioctls --------------------------------------------------------------

const fn ioc(dir: u32, ty: u32, nr: u32, size: u32) -> libc::c_ulong {
    ((dir << 30) | (size << 16) | (ty << 8) | nr) as libc::c_ulong
}

/// Every warpq ioctl with the size of its version-1 structure.
const IOCTLS: [(&str, libc::c_ulong, usize); 7] = [
    ("INFO", WARPQ_IOC_INFO, std::mem::size_of::<warpq_info>()),
    (
        "REGISTER",
        WARPQ_IOC_REGISTER,
        std::mem::size_of::<warpq_register>(),
    ),
    (
        "UNREGISTER",
        WARPQ_IOC_UNREGISTER,
        std::mem::size_of::<warpq_unregister>(),
    ),
    (
        "SUBMIT",
        WARPQ_IOC_SUBMIT,
        std::mem::size_of::<warpq_submit>(),
    ),
    ("WAIT", WARPQ_IOC_WAIT, std::mem::size_of::<warpq_wait>()),
    ("WAKE", WARPQ_IOC_WAKE, std::mem::size_of::<warpq_wake>()),
    // STATS: its version-1 size (the histograms came later).
    ("STATS", WARPQ_IOC_STATS, std::mem::offset_of!(warpq_stats, hist)),
];

/// One ioctl with a raw argument; the errno if it failed.
fn ioctl_raw(fd: i32, req: libc::c_ulong, arg: u64) -> Result<(), i32> {
    // The cases pass null, kernel, unmapped or protected addresses (which the
    // kernel must refuse), or pointers to live memory of ours.
    // SAFETY: the kernel checks every user pointer; ours are unaliased here.
    let r = unsafe { libc::ioctl(fd, req, arg as usize as *mut libc::c_void) };
    if r < 0 {
        Err(errno())
    } else {
        Ok(())
    }
}

fn ioctl_on<T>(fd: i32, req: libc::c_ulong, arg: &mut T) -> Result<(), i32> {
    ioctl_raw(fd, req, arg as *mut T as u64)
}

fn register(fd: i32, addr: u64, len: u64, access: u32) -> Result<u64, i32> {
    let mut r = warpq_register {
        size: 32,
        access,
        addr,
        len,
        handle: 0,
    };
    ioctl_on(fd, WARPQ_IOC_REGISTER, &mut r).map(|()| r.handle)
}

fn unregister(fd: i32, handle: u64) -> Result<(), i32> {
    let mut r = warpq_unregister {
        size: 16,
        rsvd: 0,
        handle,
    };
    ioctl_on(fd, WARPQ_IOC_UNREGISTER, &mut r)
}

fn wait(fd: i32, min_ready: u32, timeout_ns: i64) -> Result<u32, i32> {
    let mut r = warpq_wait {
        size: 24,
        rsvd: 0,
        min_ready,
        ready: 0,
        timeout_ns,
    };
    ioctl_on(fd, WARPQ_IOC_WAIT, &mut r).map(|()| r.ready)
}

fn wake(fd: i32) -> Result<(), i32> {
    let mut r = warpq_wake { size: 8, rsvd: 0 };
    ioctl_on(fd, WARPQ_IOC_WAKE, &mut r)
}

fn submit(fd: i32, sqes: u64, count: u32) -> Result<u32, i32> {
    let mut r = warpq_submit {
        size: 24,
        count,
        sqes,
        submitted: 0,
        rsvd: 0,
    };
    ioctl_on(fd, WARPQ_IOC_SUBMIT, &mut r).map(|()| r.submitted)
}

fn stats(fd: i32) -> Result<warpq_stats, String> {
    let mut s = warpq_stats {
        size: std::mem::size_of::<warpq_stats>() as u32,
        ..Default::default()
    };
    want_ok("STATS", ioctl_on(fd, WARPQ_IOC_STATS, &mut s)).map(|()| s)
}

/// Pages this process's queue on `fd` has pinned now.
fn pinned(fd: i32) -> Result<u64, String> {
    stats(fd).map(|s| s.pages_pinned)
}

/// Pins outstanding system-wide.
fn pins_now() -> Result<i128, String> {
    PinCounts::read()
        .map(|c| c.outstanding())
        .map_err(|e| format!("/proc/vmstat: {e}"))
}

// ---- raw mappings ------------------------------------------------------------

/// A mapping made here, unmapped on drop.
struct Map {
    ptr: *mut u8,
    len: usize,
}

impl Map {
    fn addr(&self, off: usize) -> u64 {
        self.ptr as u64 + off as u64
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: our mapping (or what is left of it: munmap of a range
        // with holes is fine).
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// mmap with these arguments (`at` for MAP_FIXED); the errno if refused.
fn mmap_at(at: u64, len: usize, prot: i32, flags: i32, fd: i32, off: i64) -> Result<Map, i32> {
    // SAFETY: a fresh mapping at an address the kernel picks, or (MAP_FIXED)
    // over a reservation of ours that nothing references.
    let p = unsafe { libc::mmap(at as usize as *mut libc::c_void, len, prot, flags, fd, off) };
    if p == libc::MAP_FAILED {
        Err(errno())
    } else {
        Ok(Map { ptr: p.cast(), len })
    }
}

fn mmap_dev(fd: i32, len: usize, prot: i32, flags: i32, off: i64) -> Result<Map, i32> {
    mmap_at(0, len, prot, flags, fd, off)
}

fn mprotect(addr: u64, len: usize, prot: i32) -> Result<(), i32> {
    // SAFETY: changes the protection of a mapping of ours that no Rust
    // reference points into.
    if unsafe { libc::mprotect(addr as usize as *mut libc::c_void, len, prot) } == 0 {
        Ok(())
    } else {
        Err(errno())
    }
}

// ---- the ring, driven by hand ------------------------------------------------

/// A mapping of this process's queue ring with no cached indices, so that
/// cases can drive it normally or corrupt it at will.
struct Ring {
    map: Map,
    fd: i32,
}

impl Ring {
    fn map(fd: i32) -> Result<Ring, String> {
        let map = mmap_dev(fd, WARPQ_RING_SIZE, PROT_RW, libc::MAP_SHARED, 0)
            .map_err(|e| format!("mmap of the ring: {}", ename(e)))?;
        Ok(Ring { map, fd })
    }

    fn base(&self) -> u64 {
        self.map.addr(0)
    }

    fn u32_at(&self, off: usize) -> &AtomicU32 {
        // SAFETY: `off` is a 4-aligned offset inside our ring mapping, which
        // lives as long as `self`; the kernel accesses it atomically too.
        unsafe { AtomicU32::from_ptr(self.map.ptr.add(off).cast()) }
    }

    fn u64_at(&self, off: usize) -> &AtomicU64 {
        // SAFETY: as in `u32_at`, 8-aligned.
        unsafe { AtomicU64::from_ptr(self.map.ptr.add(off).cast()) }
    }

    fn get(&self, off: usize) -> u32 {
        self.u32_at(off).load(Ordering::Acquire)
    }

    fn set(&self, off: usize, v: u32) {
        self.u32_at(off).store(v, Ordering::Release);
    }

    fn sq_invalid(&self) -> u64 {
        self.u64_at(SQ_INVALID).load(Ordering::Acquire)
    }

    fn write_sqe(&self, index: u32, e: &warpq_sqe) {
        let slot = WARPQ_RING_SQ_OFFSET + (index & (WARPQ_SQ_ENTRIES - 1)) as usize * 64;
        for (i, w) in sqe_words(e).iter().enumerate() {
            self.u64_at(slot + i * 8).store(*w, Ordering::Relaxed);
        }
    }

    fn read_cqe(&self, index: u32) -> warpq_cqe {
        let slot = WARPQ_RING_CQ_OFFSET + (index & (WARPQ_CQ_ENTRIES - 1)) as usize * 32;
        let w: [u64; 4] =
            std::array::from_fn(|i| self.u64_at(slot + i * 8).load(Ordering::Relaxed));
        warpq_cqe {
            user_data: w[0],
            status: w[1] as u32,
            rsvd: (w[1] >> 32) as u32,
            result: w[2],
            rsvd2: w[3],
        }
    }

    /// Writes `e` at the tail and publishes it (store-release of sq_tail).
    fn push(&self, e: &warpq_sqe) -> Result<(), String> {
        let tail = self.get(SQ_TAIL);
        ensure!(
            tail.wrapping_sub(self.get(SQ_HEAD)) < WARPQ_SQ_ENTRIES,
            "the submission ring is full"
        );
        self.write_sqe(tail, e);
        self.set(SQ_TAIL, tail.wrapping_add(1));
        Ok(())
    }

    fn kick(&self) -> Result<(), String> {
        want_ok("WAKE", wake(self.fd))
    }

    fn pop(&self) -> Option<warpq_cqe> {
        let head = self.get(CQ_HEAD);
        if self.get(CQ_TAIL) == head {
            return None;
        }
        let c = self.read_cqe(head);
        self.set(CQ_HEAD, head.wrapping_add(1));
        Some(c)
    }

    /// The next completion, waiting at most `limit` (in WAIT, which also
    /// lets the driver rebuild).
    fn reap(&self, limit: Duration) -> Result<warpq_cqe, String> {
        let start = Instant::now();
        loop {
            if let Some(c) = self.pop() {
                return Ok(c);
            }
            let left = limit.saturating_sub(start.elapsed());
            ensure!(!left.is_zero(), "no completion within {limit:?}");
            want_ok(
                "WAIT",
                wait(
                    self.fd,
                    1,
                    left.min(Duration::from_millis(100)).as_nanos() as i64,
                ),
            )?;
        }
    }

    /// Runs `entries` (at most a ring's worth) and returns their
    /// completions; `user_data` becomes the index + 1.
    fn run_batch(&self, entries: &[warpq_sqe]) -> Result<Vec<warpq_cqe>, String> {
        for (i, e) in entries.iter().enumerate() {
            self.push(&warpq_sqe {
                user_data: i as u64 + 1,
                ..*e
            })?;
        }
        self.kick()?;
        let mut out = Vec::with_capacity(entries.len());
        for i in 0..entries.len() {
            let c = self.reap(Duration::from_secs(30))?;
            ensure!(
                c.user_data == i as u64 + 1,
                "completion for entry {} where {} was due",
                c.user_data,
                i + 1
            );
            out.push(c);
        }
        Ok(out)
    }

    fn run(&self, e: warpq_sqe) -> Result<warpq_cqe, String> {
        Ok(self.run_batch(&[e])?[0])
    }

    /// Waits until the engine has taken everything published.
    fn settle(&self) -> Result<(), String> {
        let start = Instant::now();
        while self.get(SQ_HEAD) != self.get(SQ_TAIL) {
            ensure!(
                start.elapsed() < Duration::from_secs(10),
                "the engine did not drain the ring in 10 s"
            );
            sleep_ms(1);
        }
        Ok(())
    }

    /// Kicks the engine and checks that for `ms` it takes no submission and
    /// posts no completion.
    fn stays_quiet(&self, ms: u64) -> Result<(), String> {
        let before = (self.get(SQ_HEAD), self.get(CQ_TAIL));
        self.kick()?;
        sleep_ms(ms);
        let after = (self.get(SQ_HEAD), self.get(CQ_TAIL));
        ensure!(
            before == after,
            "the engine moved: (sq_head, cq_tail) {before:?} -> {after:?}"
        );
        Ok(())
    }
}

/// Runs each `(what, entry, status)` row and checks its status; returns a
/// summary of the statuses seen.
fn check_rows(ring: &Ring, rows: &[(&str, warpq_sqe, u32)]) -> Result<String, String> {
    let entries: Vec<_> = rows.iter().map(|r| r.1).collect();
    let done = ring.run_batch(&entries)?;
    let mut seen: Vec<(u32, usize)> = Vec::new();
    for ((what, _, want), c) in rows.iter().zip(&done) {
        ensure!(
            c.status == *want,
            "{what}: {} (result {:#x})",
            st(c.status),
            c.result
        );
        ensure!(
            c.status == OK || c.result == 0,
            "{what}: {} with result {:#x}",
            st(c.status),
            c.result
        );
        match seen.iter_mut().find(|(s, _)| s == want) {
            Some((_, n)) => *n += 1,
            None => seen.push((*want, 1)),
        }
    }
    let parts: Vec<String> = seen
        .iter()
        .map(|(s, n)| format!("{n} {}", st(*s)))
        .collect();
    Ok(format!(
        "{} entries as stated: {}",
        rows.len(),
        parts.join(", ")
    ))
}

/// A fresh device file, its ring, and a zeroed read/write buffer of `pages`
/// pages registered on it (with its handle).
fn setup(env: &Env, pages: usize) -> Result<(Device, Ring, Anon, u64), String> {
    let dev = open(env)?;
    let ring = Ring::map(fd_of(&dev))?;
    let buf = Anon::new(pages * PAGE);
    let h = want_ok(
        "REGISTER the buffer",
        register(fd_of(&dev), buf.addr(0), buf.len() as u64, RW),
    )?;
    Ok((dev, ring, buf, h))
}

// ---- the cases: ioctls -------------------------------------------------------

fn ioctl_unknown(env: &Env) -> Result<String, String> {
    let dev = open(env)?;
    let mut buf = [0u64; 64];
    buf[0] = 512;
    let reqs = [
        ("number 0x07", ioc(3, 0xb7, 0x07, 8)),
        ("number 0xff", ioc(3, 0xb7, 0xff, 8)),
        ("type 0xb8 with INFO's number", ioc(3, 0xb8, 0x00, 48)),
        ("request 0", ioc(0, 0, 0, 0)),
        ("INFO as _IOR", ioc(2, 0xb7, 0x00, 48)),
        ("REGISTER as _IOW", ioc(1, 0xb7, 0x01, 32)),
        ("WAKE as _IO", ioc(0, 0xb7, 0x05, 0)),
        ("TCGETS", libc::TCGETS),
    ];
    for (what, req) in reqs {
        want_err(
            what,
            ioctl_raw(fd_of(&dev), req, buf.as_mut_ptr() as u64),
            libc::ENOTTY,
        )?;
    }
    Ok(format!("{} requests refused with ENOTTY", reqs.len()))
}

fn ioctl_size_bits(env: &Env) -> Result<String, String> {
    let dev = open(env)?;
    let fd = fd_of(&dev);
    let buf = Anon::new(4 * PAGE);
    let mut r = warpq_register {
        size: 32,
        access: RW,
        addr: buf.addr(0),
        len: buf.len() as u64,
        handle: 0,
    };
    want_ok(
        "REGISTER numbered with size bits 0",
        ioctl_on(fd, ioc(3, 0xb7, 0x01, 0), &mut r),
    )?;
    ensure!(
        pinned(fd)? == 4,
        "REGISTER numbered with size bits 0 pinned {} pages",
        pinned(fd)?
    );
    let mut u = warpq_unregister {
        size: 16,
        rsvd: 0,
        handle: r.handle,
    };
    want_ok(
        "UNREGISTER numbered with size bits 0x3fff",
        ioctl_on(fd, ioc(3, 0xb7, 0x02, 0x3fff), &mut u),
    )?;
    let mut i = warpq_info {
        size: 48,
        ..Default::default()
    };
    want_ok(
        "INFO numbered with size 4096",
        ioctl_on(fd, ioc(3, 0xb7, 0x00, 4096), &mut i),
    )?;
    ensure!(
        i.version == WARPQ_UAPI_VERSION,
        "INFO numbered with size 4096: version {}",
        i.version
    );
    ensure!(pinned(fd)? == 0, "{} pages still pinned", pinned(fd)?);
    Ok("REGISTER, UNREGISTER and INFO dispatched by type and number whatever the size bits".into())
}

/// An otherwise valid argument for `name`: if the kernel ignored the size,
/// it would register `buf`, queue the NOP at `nop`, and so on.
fn plausible_arg(name: &str, size: u32, buf: &Anon, nop: u64) -> [u64; 64] {
    let mut a = [0u64; 64];
    a[0] = u64::from(size);
    match name {
        "REGISTER" => {
            a[0] |= u64::from(RW) << 32;
            a[1] = buf.addr(0);
            a[2] = buf.len() as u64;
        }
        "UNREGISTER" => a[1] = 1 << 16,
        "SUBMIT" => {
            a[0] |= 1 << 32;
            a[1] = nop;
        }
        _ => {}
    }
    a
}

fn ioctl_short_struct(env: &Env) -> Result<String, String> {
    let dev = open(env)?;
    let fd = fd_of(&dev);
    let ring = Ring::map(fd)?;
    let buf = Anon::new(4 * PAGE);
    let nop = [sqe(NOP, 0x5e, 0, 0, 0, 0)];
    let mut n = 0;
    for (name, req, size) in IOCTLS {
        for short in [0, 4, size as u32 - 1] {
            let mut arg = plausible_arg(name, short, &buf, nop.as_ptr() as u64);
            want_err(
                &format!("{name} with size {short}"),
                ioctl_raw(fd, req, arg.as_mut_ptr() as u64),
                libc::EINVAL,
            )?;
            n += 1;
        }
    }
    ensure!(
        pinned(fd)? == 0,
        "{} pages pinned by short REGISTERs",
        pinned(fd)?
    );
    ensure!(
        ring.get(SQ_TAIL) == 0,
        "short SUBMITs queued {} entries",
        ring.get(SQ_TAIL)
    );
    Ok(format!(
        "{n} short structures refused with EINVAL; nothing registered or queued"
    ))
}

fn ioctl_long_struct(env: &Env) -> Result<String, String> {
    let dev = open(env)?;
    let fd = fd_of(&dev);
    let buf = Anon::new(8 * PAGE);
    let tail = 0xa5a5_a5a5_a5a5_a5a5u64;
    // REGISTER, 64 bytes: 32 trailing bytes of 0xa5.
    let mut r = [tail; 8];
    r[0] = 64 | (u64::from(RW) << 32);
    r[1] = buf.addr(0);
    r[2] = 4 * PAGE as u64;
    r[3] = 0;
    want_ok(
        "REGISTER with size 64",
        ioctl_raw(fd, WARPQ_IOC_REGISTER, r.as_mut_ptr() as u64),
    )?;
    ensure!(
        r[3] != 0 && r[4..].iter().all(|&w| w == tail),
        "REGISTER with size 64: handle {:#x}, trailing {:x?}",
        r[3],
        &r[4..]
    );
    // REGISTER claiming 4 GiB - 1 bytes: only 32 exist, and the kernel
    // must read no more.
    let mut r2 = [0u64; 4];
    r2[0] = 0xffff_ffff | (u64::from(RW) << 32);
    r2[1] = buf.addr(4 * PAGE);
    r2[2] = 4 * PAGE as u64;
    want_ok(
        "REGISTER with size 0xffffffff",
        ioctl_raw(fd, WARPQ_IOC_REGISTER, r2.as_mut_ptr() as u64),
    )?;
    ensure!(
        pinned(fd)? == 8,
        "{} pages pinned after the two registrations",
        pinned(fd)?
    );
    // INFO, 256 bytes.
    let mut i = [0x5a5a_5a5a_5a5a_5a5au64; 32];
    i[0] = 256 | (0x5a5a_5a5a << 32);
    want_ok(
        "INFO with size 256",
        ioctl_raw(fd, WARPQ_IOC_INFO, i.as_mut_ptr() as u64),
    )?;
    ensure!(
        i[0] & 0xffff_ffff == 48 && i[0] >> 32 == u64::from(WARPQ_UAPI_VERSION),
        "INFO wrote size/version {:#x}",
        i[0]
    );
    ensure!(
        i[6..].iter().all(|&w| w == 0x5a5a_5a5a_5a5a_5a5a),
        "INFO wrote past its 48 bytes"
    );
    // STATS, 1024 bytes: more than the counters, less than the counters and
    // histograms: the kernel writes (and reports) the counters only.
    let v1 = std::mem::offset_of!(warpq_stats, hist) / 8;
    let mut s = [tail; 128];
    s[0] = 1024;
    want_ok("STATS with size 1024", ioctl_raw(fd, WARPQ_IOC_STATS, s.as_mut_ptr() as u64))?;
    ensure!(s[0] & 0xffff_ffff == (v1 * 8) as u64, "STATS with size 1024 reported size {}", s[0] & 0xffff_ffff);
    ensure!(s[v1..].iter().all(|&w| w == tail), "STATS with size 1024 wrote past its {} bytes", v1 * 8);
    // STATS, 4096 bytes: the whole structure, histograms included, no more.
    let whole = std::mem::size_of::<warpq_stats>() / 8;
    let mut s = [tail; 512];
    s[0] = 4096;
    want_ok("STATS with size 4096", ioctl_raw(fd, WARPQ_IOC_STATS, s.as_mut_ptr() as u64))?;
    ensure!(s[0] & 0xffff_ffff == (whole * 8) as u64, "STATS with size 4096 reported size {}", s[0] & 0xffff_ffff);
    ensure!(s[whole..].iter().all(|&w| w == tail), "STATS with size 4096 wrote past its {} bytes", whole * 8);
    // WAIT, 64 bytes: min_ready 0, timeout 0.
    let mut w = [tail; 8];
    w[0] = 64;
    w[1] = 0;
    w[2] = 0;
    want_ok(
        "WAIT with size 64",
        ioctl_raw(fd, WARPQ_IOC_WAIT, w.as_mut_ptr() as u64),
    )?;
    ensure!(
        w[3..].iter().all(|&x| x == tail),
        "WAIT wrote past its 24 bytes"
    );
    // WAKE, 4096 bytes claimed.
    let mut k = [tail; 4];
    k[0] = 4096;
    want_ok(
        "WAKE with size 4096",
        ioctl_raw(fd, WARPQ_IOC_WAKE, k.as_mut_ptr() as u64),
    )?;
    // UNREGISTER both with 40-byte structures.
    for h in [r[3], r2[3]] {
        let mut u = [tail; 5];
        u[0] = 40;
        u[1] = h;
        want_ok(
            "UNREGISTER with size 40",
            ioctl_raw(fd, WARPQ_IOC_UNREGISTER, u.as_mut_ptr() as u64),
        )?;
        ensure!(
            u[2..].iter().all(|&x| x == tail),
            "UNREGISTER wrote past its 16 bytes"
        );
    }
    ensure!(pinned(fd)? == 0, "{} pages still pinned", pinned(fd)?);
    Ok("sizes 40..0xffffffff accepted by all six; trailing bytes neither read as fields nor written".into())
}

fn ioctl_garbage_struct(env: &Env) -> Result<String, String> {
    let dev = open(env)?;
    let fd = fd_of(&dev);
    let ring = Ring::map(fd)?;
    let mut rng = Rng(0x6a7b_a6e5_eed5_0001);
    let mut tally: Vec<(i32, usize)> = Vec::new();
    for _ in 0..400 {
        let (name, req, size) = IOCTLS[rng.below(IOCTLS.len() as u64) as usize];
        let mut a: [u64; 64] = std::array::from_fn(|_| rng.next_u64());
        let size = match rng.below(3) {
            0 => size as u64,
            1 => a[0] & 0xffff_ffff,
            _ => rng.below(size as u64),
        };
        a[0] = (a[0] & !0xffff_ffff) | size;
        if name == "WAIT" {
            // A garbage timeout is usually negative, i.e. "forever".
            a[2] = rng.below(1_000_000);
        }
        let r = ioctl_raw(fd, req, a.as_mut_ptr() as u64);
        let code = r.err().unwrap_or(0);
        ensure!(
            [0, libc::EINVAL, libc::EFAULT, libc::ENOENT, libc::E2BIG].contains(&code),
            "{name} with garbage (size {size}): {}",
            ename(code)
        );
        match tally.iter_mut().find(|(c, _)| *c == code) {
            Some((_, n)) => *n += 1,
            None => tally.push((code, 1)),
        }
    }
    ensure!(
        pinned(fd)? == 0,
        "garbage left {} pages pinned",
        pinned(fd)?
    );
    // Garbage entries through the ioctl path.
    let garbage: Vec<[u64; 8]> = (0..64)
        .map(|_| std::array::from_fn(|_| rng.next_u64()))
        .collect();
    let n = want_ok(
        "SUBMIT of 64 garbage entries",
        submit(fd, garbage.as_ptr() as u64, 64),
    )?;
    ensure!(n == 64, "SUBMIT of 64 garbage entries queued {n}");
    ring.kick()?;
    for (i, g) in garbage.iter().enumerate() {
        let c = ring.reap(Duration::from_secs(30))?;
        ensure!(
            c.user_data == g[1] && c.status == INVALID,
            "garbage entry {i}: user_data {:#x}, {}",
            c.user_data,
            st(c.status)
        );
    }
    let c = ring.run(sqe(NOP, 0, 0, 0, 0, 0))?;
    ensure!(c.status == OK, "a NOP after the garbage: {}", st(c.status));
    tally.sort_unstable();
    let parts: Vec<String> = tally
        .iter()
        .map(|(c, n)| format!("{n} {}", if *c == 0 { "success".into() } else { ename(*c) }))
        .collect();
    Ok(format!(
        "400 garbage ioctls: {}; 64 garbage entries completed INVALID; the queue works",
        parts.join(", ")
    ))
}

fn ioctl_null_arg(env: &Env) -> Result<String, String> {
    let dev = open(env)?;
    for (name, req, _) in IOCTLS {
        want_err(
            &format!("{name} at null"),
            ioctl_raw(fd_of(&dev), req, 0),
            libc::EFAULT,
        )?;
    }
    Ok("all 7 ioctls refused a null argument with EFAULT".into())
}

fn ioctl_kernel_arg(env: &Env) -> Result<String, String> {
    let dev = open(env)?;
    for (name, req, _) in IOCTLS {
        for (what, at) in [
            ("a kernel address", KERNEL_ADDR),
            ("a non-canonical address", NONCANONICAL),
            ("2^64 - 4", u64::MAX - 3),
        ] {
            want_err(
                &format!("{name} at {what}"),
                ioctl_raw(fd_of(&dev), req, at),
                libc::EFAULT,
            )?;
        }
    }
    Ok(
        "21 ioctls with kernel, non-canonical and wrapping argument pointers refused with EFAULT"
            .into(),
    )
}

/// `value`'s bytes in a page of their own, then made read-only.
fn readonly_copy<T: Copy>(value: &T) -> Result<Anon, String> {
    let page = Anon::new(PAGE);
    // SAFETY: `page` is a fresh mapping of PAGE >= size_of::<T>() bytes.
    unsafe { std::ptr::write_unaligned(page.ptr().cast::<T>(), *value) };
    want_ok(
        "mprotect read-only",
        mprotect(page.addr(0), PAGE, libc::PROT_READ),
    )?;
    Ok(page)
}

fn ioctl_readonly_arg_register(env: &Env) -> Result<String, String> {
    let dev = open(env)?;
    let fd = fd_of(&dev);
    let buf = Anon::new(4 * PAGE);
    let arg = readonly_copy(&warpq_register {
        size: 32,
        access: RW,
        addr: buf.addr(0),
        len: 4 * PAGE as u64,
        handle: 0,
    })?;
    let r = ioctl_raw(fd, WARPQ_IOC_REGISTER, arg.addr(0));
    let left = pinned(fd)?;
    let again = register(fd, buf.addr(0), 4 * PAGE as u64, RW);
    if let Ok(h) = again {
        let _ = unregister(fd, h);
    }
    ensure!(
        r == Err(libc::EFAULT) && left == 0 && again.is_ok(),
        "{}, and the registration stayed: {left} pages pinned, registering the range again gives {} \
         (its handle was never returned: it cannot be unregistered until the file is closed)",
        show(&r),
        show(&again)
    );
    Ok("EFAULT; nothing left registered or pinned".into())
}

fn ioctl_readonly_arg_submit(env: &Env) -> Result<String, String> {
    let dev = open(env)?;
    let fd = fd_of(&dev);
    let ring = Ring::map(fd)?;
    let nop = [sqe(NOP, 0x5b, 0, 0, 0, 0)];
    let arg = readonly_copy(&warpq_submit {
        size: 24,
        count: 1,
        sqes: nop.as_ptr() as u64,
        submitted: 0,
        rsvd: 0,
    })?;
    let r = ioctl_raw(fd, WARPQ_IOC_SUBMIT, arg.addr(0));
    let queued = ring.get(SQ_TAIL);
    ring.kick()?;
    sleep_ms(200);
    let completed = ring.get(CQ_TAIL);
    ensure!(
        r == Err(libc::EFAULT) && queued == 0 && completed == 0,
        "{}, with {queued} entry queued and {completed} completed (the caller was told the call failed)",
        show(&r)
    );
    Ok("EFAULT; nothing queued".into())
}

// ---- the cases: registrations ------------------------------------------------

fn reg_null_addr(env: &Env) -> Result<String, String> {
    let dev = open(env)?;
    let fd = fd_of(&dev);
    for access in [WARPQ_ACCESS_READ, WARPQ_ACCESS_WRITE, RW] {
        want_err(
            &format!("address 0, access {access}"),
            register(fd, 0, PAGE as u64, access),
            libc::EFAULT,
        )?;
    }
    ensure!(pinned(fd)? == 0, "{} pages pinned", pinned(fd)?);
    Ok("address 0 refused with EFAULT for every access".into())
}

fn reg_kernel_addr(env: &Env) -> Result<String, String> {
    let dev = open(env)?;
    let fd = fd_of(&dev);
    let before = pins_now()?;
    for (what, addr) in [
        ("the direct map", KERNEL_ADDR),
        ("the vsyscall page", VSYSCALL),
        ("just above user space", ABOVE_USER),
        ("a non-canonical address", NONCANONICAL),
    ] {
        for access in [WARPQ_ACCESS_READ, RW] {
            want_err(
                &format!("{what} ({addr:#x}), access {access}"),
                register(fd, addr, PAGE as u64, access),
                libc::EFAULT,
            )?;
        }
    }
    ensure!(
        pinned(fd)? == 0 && pins_now()? == before,
        "pins moved: queue {}, system {} -> {}",
        pinned(fd)?,
        before,
        pins_now()?
    );
    Ok("direct map, vsyscall page, above user space, non-canonical: EFAULT, nothing pinned".into())
}

fn reg_wrapping(env: &Env) -> Result<String, String> {
    let dev = open(env)?;
    let fd = fd_of(&dev);
    for (addr, len) in [
        (0xffff_ffff_ffff_f000, 2 * PAGE as u64),
        (1 << 63, 1 << 63),
        (KERNEL_ADDR, 0x0000_7780_0000_0000),
    ] {
        want_err(
            &format!("{len:#x} bytes at {addr:#x}"),
            register(fd, addr, len, RW),
            libc::EINVAL,
        )?;
    }
    Ok("3 wrapping ranges refused with EINVAL".into())
}

fn reg_unaligned(env: &Env) -> Result<String, String> {
    let dev = open(env)?;
    let fd = fd_of(&dev);
    let buf = Anon::new(4 * PAGE);
    for (what, addr, len) in [
        ("address + 8", buf.addr(8), PAGE),
        ("address + 4095, 1 byte", buf.addr(PAGE - 1), 1),
        ("length 4097", buf.addr(0), PAGE + 1),
        ("length 512", buf.addr(0), 512),
        ("length 3 pages - 1", buf.addr(0), 3 * PAGE - 1),
    ] {
        want_err(what, register(fd, addr, len as u64, RW), libc::EINVAL)?;
    }
    ensure!(pinned(fd)? == 0, "{} pages pinned", pinned(fd)?);
    Ok("5 unaligned ranges refused with EINVAL".into())
}

fn reg_zero_len(env: &Env) -> Result<String, String> {
    let dev = open(env)?;
    let fd = fd_of(&dev);
    let buf = Anon::new(PAGE);
    for (what, addr) in [
        ("mapped", buf.addr(0)),
        ("null", 0),
        ("kernel", KERNEL_ADDR),
    ] {
        want_err(
            &format!("0 bytes at a {what} address"),
            register(fd, addr, 0, RW),
            libc::EINVAL,
        )?;
    }
    Ok("0 bytes refused with EINVAL at mapped, null and kernel addresses".into())
}

fn reg_access_bits(env: &Env) -> Result<String, String> {
    let dev = open(env)?;
    let fd = fd_of(&dev);
    let buf = Anon::new(PAGE);
    for access in [0, 4, 8, RW | 4, 0x8000_0000, u32::MAX] {
        want_err(
            &format!("access {access:#x}"),
            register(fd, buf.addr(0), PAGE as u64, access),
            libc::EINVAL,
        )?;
    }
    for access in [WARPQ_ACCESS_READ, WARPQ_ACCESS_WRITE] {
        let h = want_ok(
            &format!("access {access}"),
            register(fd, buf.addr(0), PAGE as u64, access),
        )?;
        want_ok("UNREGISTER", unregister(fd, h))?;
    }
    Ok("6 invalid access masks refused with EINVAL; READ and WRITE alone accepted".into())
}

fn reg_too_large(env: &Env) -> Result<String, String> {
    let dev = open(env)?;
    let fd = fd_of(&dev);
    let max = env.info.max_region_bytes;
    for len in [max + PAGE as u64, 1 << 40, 0xffff_ffff_ffff_f000] {
        want_err(
            &format!("{len:#x} bytes"),
            register(fd, 0, len, RW),
            libc::E2BIG,
        )?;
    }
    Ok(format!(
        "lengths above max_region_bytes ({max:#x}) refused with E2BIG"
    ))
}

fn reg_max_size(env: &Env) -> Result<String, String> {
    let dev = open(env)?;
    let fd = fd_of(&dev);
    let len = env.info.max_region_bytes as usize;
    let buf = Anon::new(len);
    let t = Instant::now();
    let h = want_ok(
        "REGISTER of max_region_bytes",
        register(fd, buf.addr(0), len as u64, RW),
    )?;
    let took = t.elapsed();
    let n = pinned(fd)?;
    ensure!(
        n == (len / PAGE) as u64,
        "{n} pages pinned for {} pages registered",
        len / PAGE
    );
    want_ok("UNREGISTER", unregister(fd, h))?;
    ensure!(pinned(fd)? == 0, "{} pages still pinned", pinned(fd)?);
    Ok(format!(
        "{} MiB registered ({n} pages pinned in {took:.1?}) and released",
        len >> 20
    ))
}

fn reg_overlap(env: &Env) -> Result<String, String> {
    let dev = open(env)?;
    let fd = fd_of(&dev);
    let buf = Anon::new(16 * PAGE);
    let at = |p: usize| buf.addr(p * PAGE);
    let h = want_ok(
        "the first registration",
        register(fd, at(4), 8 * PAGE as u64, RW),
    )?;
    for (what, start, pages) in [
        ("front", 0, 8),
        ("back", 8, 8),
        ("around", 0, 16),
        ("inside", 6, 2),
        ("first page", 4, 1),
        ("last page", 11, 1),
    ] {
        want_err(
            &format!("overlap {what}"),
            register(fd, at(start), (pages * PAGE) as u64, WARPQ_ACCESS_READ),
            libc::EEXIST,
        )?;
    }
    let h1 = want_ok("adjacent before", register(fd, at(0), 4 * PAGE as u64, RW))?;
    let h2 = want_ok("adjacent after", register(fd, at(12), 4 * PAGE as u64, RW))?;
    for h in [h, h1, h2] {
        want_ok("UNREGISTER", unregister(fd, h))?;
    }
    ensure!(pinned(fd)? == 0, "{} pages still pinned", pinned(fd)?);
    Ok("6 overlapping ranges refused with EEXIST; adjacent ones accepted".into())
}

fn reg_duplicate(env: &Env) -> Result<String, String> {
    let dev = open(env)?;
    let fd = fd_of(&dev);
    let buf = Anon::new(4 * PAGE);
    let h = want_ok("REGISTER", register(fd, buf.addr(0), buf.len() as u64, RW))?;
    for access in [RW, WARPQ_ACCESS_READ, WARPQ_ACCESS_WRITE] {
        want_err(
            &format!("the same range again, access {access}"),
            register(fd, buf.addr(0), buf.len() as u64, access),
            libc::EEXIST,
        )?;
    }
    want_ok("UNREGISTER", unregister(fd, h))?;
    let h2 = want_ok(
        "REGISTER after UNREGISTER",
        register(fd, buf.addr(0), buf.len() as u64, RW),
    )?;
    ensure!(h2 != h, "the new registration reuses the old handle {h:#x}");
    want_ok("UNREGISTER", unregister(fd, h2))?;
    Ok(format!("duplicates refused with EEXIST; re-registered after UNREGISTER with a new handle ({h:#x} -> {h2:#x})"))
}

fn reg_too_many(env: &Env) -> Result<String, String> {
    let dev = open(env)?;
    let fd = fd_of(&dev);
    let n = env.info.max_regions as usize;
    let buf = Anon::new((n + 1) * PAGE);
    let mut handles = Vec::new();
    for i in 0..n {
        handles.push(want_ok(
            &format!("region {i}"),
            register(fd, buf.addr(i * PAGE), PAGE as u64, RW),
        )?);
    }
    want_err(
        "one past max_regions",
        register(fd, buf.addr(n * PAGE), PAGE as u64, RW),
        libc::ENOSPC,
    )?;
    want_ok("UNREGISTER", unregister(fd, handles.remove(0)))?;
    handles.push(want_ok(
        "once a slot is free",
        register(fd, buf.addr(n * PAGE), PAGE as u64, RW),
    )?);
    for h in handles {
        want_ok("UNREGISTER", unregister(fd, h))?;
    }
    ensure!(pinned(fd)? == 0, "{} pages still pinned", pinned(fd)?);
    Ok(format!(
        "{n} regions accepted, the next refused with ENOSPC, accepted once a slot was freed"
    ))
}

fn reg_bad_memory(env: &Env) -> Result<String, String> {
    let dev = open(env)?;
    let fd = fd_of(&dev);
    let before = pins_now()?;
    let mut gone = Anon::new(4 * PAGE);
    let gone_addr = gone.addr(0);
    gone.unmap();
    want_err(
        "unmapped memory",
        register(fd, gone_addr, 4 * PAGE as u64, WARPQ_ACCESS_READ),
        libc::EFAULT,
    )?;
    let none = Anon::new(4 * PAGE);
    want_ok(
        "mprotect",
        mprotect(none.addr(0), none.len(), libc::PROT_NONE),
    )?;
    want_err(
        "PROT_NONE memory",
        register(fd, none.addr(0), 4 * PAGE as u64, WARPQ_ACCESS_READ),
        libc::EFAULT,
    )?;
    let ro = Anon::new(4 * PAGE);
    ro.write(&pattern(ro.len(), 1));
    want_ok("mprotect", mprotect(ro.addr(0), ro.len(), libc::PROT_READ))?;
    want_err(
        "read-only memory for device writes",
        register(fd, ro.addr(0), 4 * PAGE as u64, WARPQ_ACCESS_WRITE),
        libc::EFAULT,
    )?;
    let h = want_ok(
        "read-only memory for device reads",
        register(fd, ro.addr(0), 4 * PAGE as u64, WARPQ_ACCESS_READ),
    )?;
    want_ok("UNREGISTER", unregister(fd, h))?;
    let holey = Anon::new(3 * PAGE);
    holey.write(&pattern(holey.len(), 2));
    // SAFETY: unmaps the middle page of our mapping; nothing refers to it.
    unsafe { libc::munmap(holey.ptr().add(PAGE).cast(), PAGE) };
    want_err(
        "a range with a hole",
        register(fd, holey.addr(0), 3 * PAGE as u64, RW),
        libc::EFAULT,
    )?;
    let mixed = Anon::new(4 * PAGE);
    mixed.write(&pattern(mixed.len(), 3));
    want_ok(
        "mprotect",
        mprotect(mixed.addr(3 * PAGE), PAGE, libc::PROT_READ),
    )?;
    want_err(
        "a range whose last page is read-only, for writes",
        register(fd, mixed.addr(0), 4 * PAGE as u64, RW),
        libc::EFAULT,
    )?;
    ensure!(
        pinned(fd)? == 0 && pins_now()? == before,
        "pins left: queue {}, system {} -> {}",
        pinned(fd)?,
        before,
        pins_now()?
    );
    Ok("unmapped, PROT_NONE, read-only for writing, holey and partly read-only ranges: EFAULT, no pin left".into())
}

fn reg_the_ring(env: &Env) -> Result<String, String> {
    let dev = open(env)?;
    let fd = fd_of(&dev);
    let before = pins_now()?;
    let ring = Ring::map(fd)?;
    want_err(
        "the ring",
        register(fd, ring.base(), WARPQ_RING_SIZE as u64, WARPQ_ACCESS_READ),
        libc::EFAULT,
    )?;
    want_err(
        "the ring's first page",
        register(fd, ring.base(), PAGE as u64, RW),
        libc::EFAULT,
    )?;
    // Four anonymous pages immediately followed by a second mapping of the ring.
    let reserve = want_ok(
        "reserve",
        mmap_dev(
            -1,
            4 * PAGE + WARPQ_RING_SIZE,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            0,
        ),
    )?;
    let anon = want_ok(
        "anonymous pages",
        mmap_at(
            reserve.addr(0),
            4 * PAGE,
            PROT_RW,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
            -1,
            0,
        ),
    )?;
    let ring2 = want_ok(
        "the ring after them",
        mmap_at(
            reserve.addr(4 * PAGE),
            WARPQ_RING_SIZE,
            PROT_RW,
            libc::MAP_SHARED | libc::MAP_FIXED,
            fd,
            0,
        ),
    )?;
    // The two mappings now cover the reservation exactly: they unmap it.
    std::mem::forget(reserve);
    want_err(
        "anonymous pages plus the ring's first page",
        register(fd, anon.addr(0), 5 * PAGE as u64, RW),
        libc::EFAULT,
    )?;
    let h = want_ok(
        "the anonymous pages alone",
        register(fd, anon.addr(0), 4 * PAGE as u64, RW),
    )?;
    want_ok("UNREGISTER", unregister(fd, h))?;
    let dev2 = open(env)?;
    let other = Ring::map(fd_of(&dev2))?;
    want_err(
        "another file's ring",
        register(fd, other.base(), WARPQ_RING_SIZE as u64, WARPQ_ACCESS_READ),
        libc::EFAULT,
    )?;
    let c = ring.run(sqe(FILL, 0, 0, ring.base(), 64, 0xee))?;
    ensure!(
        c.status == UNREG,
        "a FILL aimed at the ring: {}",
        st(c.status)
    );
    // SAFETY: the header page of our second mapping of the ring, readable.
    let magic = unsafe { std::ptr::read_volatile(ring2.ptr.cast::<u32>()) };
    ensure!(
        magic == WARPQ_RING_MAGIC,
        "the ring's magic is now {magic:#x}"
    );
    ensure!(
        pinned(fd)? == 0 && pins_now()? == before,
        "pins left: queue {}, system {} -> {}",
        pinned(fd)?,
        before,
        pins_now()?
    );
    Ok("ring ranges refused with EFAULT (the anonymous part alone registers); a FILL at the ring: FAULT_UNREGISTERED".into())
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_IPC_LOCK: u32 = 14;

/// Drops CAP_IPC_LOCK from this process's effective set.
fn drop_ipc_lock() -> Result<(), String> {
    let mut hdr = CapHeader {
        version: 0x2008_0522,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget (version 3) writes two CapData into `data`.
    if unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut hdr as *mut CapHeader,
            data.as_mut_ptr(),
        )
    } != 0
    {
        return Err(format!("capget: {}", ename(errno())));
    }
    data[0].effective &= !(1 << CAP_IPC_LOCK);
    // SAFETY: capset (version 3) reads two CapData from `data`.
    if unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut CapHeader, data.as_ptr()) } != 0 {
        return Err(format!("capset: {}", ename(errno())));
    }
    Ok(())
}

fn reg_memlock(env: &Env) -> Result<String, String> {
    drop_ipc_lock()?;
    let limit = libc::rlimit {
        rlim_cur: 16 * PAGE as u64,
        rlim_max: 16 * PAGE as u64,
    };
    // SAFETY: a valid rlimit for this process.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) } != 0 {
        return Err(format!("setrlimit: {}", ename(errno())));
    }
    let dev = open(env)?;
    let fd = fd_of(&dev);
    let small = Anon::new(4 * PAGE);
    let big = Anon::new(64 * PAGE);
    let h = want_ok(
        "16 KiB within the limit",
        register(fd, small.addr(0), small.len() as u64, RW),
    )?;
    let r = register(fd, big.addr(0), big.len() as u64, RW);
    if let Ok(h2) = r {
        let _ = unregister(fd, h2);
        return Err("256 KiB over a 64 KiB RLIMIT_MEMLOCK without CAP_IPC_LOCK: accepted".into());
    }
    ensure!(
        pinned(fd)? == 4,
        "{} pages pinned (the refused registration left pins)",
        pinned(fd)?
    );
    want_ok("UNREGISTER", unregister(fd, h))?;
    want_err("256 KiB over a 64 KiB RLIMIT_MEMLOCK", r, libc::ENOMEM)?;
    Ok("16 KiB accepted; 256 KiB over RLIMIT_MEMLOCK refused with ENOMEM".into())
}

fn reg_race(env: &Env) -> Result<String, String> {
    const ITER: u64 = 100;
    let dev = open(env)?;
    let fd = fd_of(&dev);
    let ring = Ring::map(fd)?;
    let buf = Anon::new(16 * PAGE);
    let base = buf.addr(0);
    let ranges = [(0, 4), (2, 4), (4, 4), (8, 8), (12, 4)];
    let done = AtomicUsize::new(0);
    let bad = std::sync::Mutex::new(None::<String>);
    // Registered, refused, unregistered by the thief, owner found its handle gone.
    let counts: [AtomicUsize; 4] = Default::default();
    let fresh = AtomicU64::new(0);
    let mut statuses = [0u64; 9];
    std::thread::scope(|s| -> Result<(), String> {
        for t in 0..4u64 {
            let (done, bad, counts, fresh) = (&done, &bad, &counts, &fresh);
            s.spawn(move || {
                let mut rng = Rng(0x5eed + t);
                for _ in 0..ITER {
                    let (p, n) = ranges[rng.below(ranges.len() as u64) as usize];
                    match register(fd, base + (p * PAGE) as u64, (n * PAGE) as u64, RW) {
                        Ok(h) => {
                            counts[0].fetch_add(1, Ordering::Relaxed);
                            fresh.store(h, Ordering::Release);
                            std::thread::yield_now();
                            match unregister(fd, h) {
                                Ok(()) => {}
                                Err(libc::ENOENT) => {
                                    counts[3].fetch_add(1, Ordering::Relaxed);
                                }
                                Err(e) => {
                                    *bad.lock().unwrap() =
                                        Some(format!("UNREGISTER of its own handle: {}", ename(e)))
                                }
                            }
                        }
                        Err(libc::EEXIST | libc::ENOSPC | libc::EBUSY | libc::EAGAIN) => {
                            counts[1].fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => *bad.lock().unwrap() = Some(format!("REGISTER: {}", ename(e))),
                    }
                }
                done.fetch_add(1, Ordering::Release);
            });
        }
        // The thief: unregisters the handles the others just got.
        let (done, bad, counts, fresh) = (&done, &bad, &counts, &fresh);
        s.spawn(move || {
            while done.load(Ordering::Acquire) < 4 {
                let h = fresh.swap(0, Ordering::AcqRel);
                if h == 0 {
                    std::hint::spin_loop();
                    continue;
                }
                match unregister(fd, h) {
                    Ok(()) => {
                        counts[2].fetch_add(1, Ordering::Relaxed);
                    }
                    Err(libc::ENOENT | libc::EBUSY) => {}
                    Err(e) => {
                        *bad.lock().unwrap() = Some(format!(
                            "UNREGISTER of another thread's handle: {}",
                            ename(e)
                        ))
                    }
                }
            }
            done.fetch_add(1, Ordering::Release);
        });
        // Meanwhile: FILLs into the contested range.
        let mut rng = Rng(0xf111);
        let deadline = Instant::now() + Duration::from_secs(90);
        while done.load(Ordering::Acquire) < 5 {
            ensure!(
                Instant::now() < deadline,
                "the racing threads did not finish in 90 s"
            );
            let batch: Vec<_> = (0..16)
                .map(|_| {
                    let len = 1 + rng.below(2 * PAGE as u64);
                    let off = rng.below(16 * PAGE as u64 - len);
                    sqe(FILL, 0, 0, base + off, len, rng.next_u64())
                })
                .collect();
            for c in ring.run_batch(&batch)? {
                ensure!(
                    [OK, UNREG, BOUNDS, UNMAPPED_ST].contains(&c.status),
                    "a FILL during the race: {}",
                    st(c.status)
                );
                statuses[c.status as usize] += 1;
            }
        }
        Ok(())
    })?;
    if let Some(e) = bad.into_inner().unwrap() {
        return Err(e);
    }
    ensure!(
        pinned(fd)? == 0,
        "{} pages pinned after every registration was undone",
        pinned(fd)?
    );
    let h = want_ok(
        "the whole range afterwards",
        register(fd, base, 16 * PAGE as u64, RW),
    )?;
    want_ok("UNREGISTER", unregister(fd, h))?;
    let c = |i: usize| counts[i].load(Ordering::Relaxed);
    ensure!(
        c(2) == c(3),
        "the thief unregistered {} handles but {} owners found theirs gone",
        c(2),
        c(3)
    );
    Ok(format!(
        "{} registered, {} refused (overlap), {} unregistered by the thief first (each exactly once); FILLs: {} OK, {} UNREGISTERED, {} BOUNDS, {} UNMAPPED; nothing left",
        c(0), c(1), c(2), statuses[0], statuses[2], statuses[3], statuses[5]
    ))
}

fn unreg_in_flight(env: &Env) -> Result<String, String> {
    const N: u64 = 200;
    const MIB: usize = 1 << 20;
    let (dev, ring, buf, h) = setup(env, 4 * MIB / PAGE)?;
    let fd = fd_of(&dev);
    for i in 0..N {
        ring.push(&sqe(
            FILL,
            i + 1,
            0,
            buf.addr((i as usize % 4) * MIB),
            MIB as u64,
            i,
        ))?;
    }
    ring.kick()?;
    let t = Instant::now();
    while ring.get(SQ_HEAD) < 3 {
        ensure!(
            t.elapsed() < Duration::from_secs(20),
            "the engine did not start in 20 s"
        );
        std::hint::spin_loop();
    }
    let mut tries = 0;
    loop {
        tries += 1;
        match unregister(fd, h) {
            Ok(()) => break,
            Err(libc::EBUSY) if tries < 10 => continue,
            Err(e) => {
                return Err(format!(
                    "UNREGISTER with commands in flight: {} (try {tries})",
                    ename(e)
                ))
            }
        }
    }
    let at_unregister = ring.get(SQ_HEAD);
    // From now on the device must not write the buffer.
    // SAFETY: our mapping of buf.len() bytes; no Rust reference into it.
    unsafe { std::ptr::write_bytes(buf.ptr(), 0xee, buf.len()) };
    let (mut ok, mut faulted) = (0, 0);
    for i in 0..N {
        let c = ring.reap(Duration::from_secs(60))?;
        ensure!(
            c.user_data == i + 1,
            "completion {} where {} was due",
            c.user_data,
            i + 1
        );
        match c.status {
            OK if faulted == 0 => ok += 1,
            UNREG => faulted += 1,
            s => {
                return Err(format!(
                    "FILL {i}: {} after {ok} OK and {faulted} FAULT_UNREGISTERED",
                    st(s)
                ))
            }
        }
    }
    ensure!(
        buf.bytes().iter().all(|&b| b == 0xee),
        "the device wrote the buffer after UNREGISTER returned"
    );
    ensure!(pinned(fd)? == 0, "{} pages still pinned", pinned(fd)?);
    ensure!(
        ring.run(sqe(NOP, 0, 0, 0, 0, 0))?.status == OK,
        "the queue after the UNREGISTER"
    );
    Ok(format!(
        "UNREGISTER returned with the engine at entry {at_unregister} (try {tries}); {ok} OK then {faulted} FAULT_UNREGISTERED; buffer untouched after"
    ))
}

fn mprotect_registered(env: &Env) -> Result<String, String> {
    const N: u64 = 200;
    const CHUNK: usize = 64 * 1024;
    let (dev, ring, buf, h) = setup(env, 4 * CHUNK / PAGE)?;
    let fd = fd_of(&dev);
    for i in 0..N {
        ring.push(&sqe(
            FILL,
            i + 1,
            0,
            buf.addr((i as usize % 4) * CHUNK),
            CHUNK as u64,
            i,
        ))?;
    }
    ring.kick()?;
    let t = Instant::now();
    while ring.get(SQ_HEAD) < 3 {
        ensure!(
            t.elapsed() < Duration::from_secs(20),
            "the engine did not start in 20 s"
        );
        std::hint::spin_loop();
    }
    want_ok(
        "mprotect read-only",
        mprotect(buf.addr(0), buf.len(), libc::PROT_READ),
    )?;
    let at = ring.get(SQ_HEAD);
    // From now on the device must not write the buffer.
    let snapshot = buf.bytes();
    let (mut ok, mut faulted) = (0, 0);
    for i in 0..N {
        let c = ring.reap(Duration::from_secs(60))?;
        ensure!(
            c.user_data == i + 1,
            "completion {} where {} was due",
            c.user_data,
            i + 1
        );
        match c.status {
            OK if faulted == 0 => ok += 1,
            UNMAPPED_ST => faulted += 1,
            s => {
                return Err(format!(
                    "FILL {i}: {} after {ok} OK and {faulted} FAULT_UNMAPPED",
                    st(s)
                ))
            }
        }
    }
    ensure!(
        buf.bytes() == snapshot,
        "the device wrote the buffer after it was made read-only"
    );
    want_ok(
        "mprotect read/write",
        mprotect(buf.addr(0), buf.len(), PROT_RW),
    )?;
    want_ok("UNREGISTER", unregister(fd, h))?;
    ensure!(pinned(fd)? == 0, "{} pages still pinned", pinned(fd)?);
    Ok(format!("mprotect returned with the engine at entry {at}; {ok} OK then {faulted} FAULT_UNMAPPED; no write after it"))
}

fn ring_over_buffer(env: &Env) -> Result<String, String> {
    let (dev, ring, buf, h) = setup(env, 16)?;
    let fd = fd_of(&dev);
    ensure!(
        ring.run(sqe(FILL, 0, 0, buf.addr(0), 64, 1))?.status == OK,
        "a FILL before"
    );
    let over = want_ok(
        "the ring over the buffer",
        mmap_at(
            buf.addr(0),
            WARPQ_RING_SIZE,
            PROT_RW,
            libc::MAP_SHARED | libc::MAP_FIXED,
            fd,
            0,
        ),
    )?;
    let rows = [
        (
            "FILL where the ring now is",
            sqe(FILL, 0, 0, buf.addr(0), 64, 0xee),
            UNMAPPED_ST,
        ),
        (
            "FILL into the buffer's remaining pages",
            sqe(FILL, 0, 0, buf.addr(12 * PAGE), 64, 0xee),
            UNMAPPED_ST,
        ),
        (
            "CRC32C where the ring now is",
            sqe(CRC, 0, buf.addr(PAGE), 0, 64, 0),
            UNMAPPED_ST,
        ),
    ];
    let summary = check_rows(&ring, &rows)?;
    // SAFETY: the header page of the ring mapped over the buffer.
    let magic = unsafe { std::ptr::read_volatile(over.ptr.cast::<u32>()) };
    ensure!(
        magic == WARPQ_RING_MAGIC,
        "the ring's magic is now {magic:#x}"
    );
    ensure!(
        buf.bytes()[12 * PAGE..].iter().all(|&b| b == 0),
        "the buffer's remaining pages changed"
    );
    want_ok("UNREGISTER", unregister(fd, h))?;
    ensure!(pinned(fd)? == 0, "{} pages still pinned", pinned(fd)?);
    Ok(format!("{summary}; the ring intact; UNREGISTER succeeded"))
}

fn unreg_twice_unknown(env: &Env) -> Result<String, String> {
    let dev = open(env)?;
    let fd = fd_of(&dev);
    let buf = Anon::new(PAGE);
    let h = want_ok("REGISTER", register(fd, buf.addr(0), PAGE as u64, RW))?;
    want_ok("UNREGISTER", unregister(fd, h))?;
    want_err("UNREGISTER again", unregister(fd, h), libc::ENOENT)?;
    for (what, handle, want) in [
        ("handle 0", 0, libc::EINVAL),
        ("handle 0xffff (generation 0)", 0xffff, libc::EINVAL),
        ("handle 2^64 - 1", u64::MAX, libc::EINVAL),
        ("slot 16", (1 << 16) | 16, libc::EINVAL),
        ("slot 0xffff", (1 << 16) | 0xffff, libc::EINVAL),
        ("an empty slot", (1 << 16) | 5, libc::ENOENT),
        ("a stale generation", (9 << 16) | (h & 0xffff), libc::ENOENT),
    ] {
        want_err(what, unregister(fd, handle), want)?;
    }
    Ok("twice: ENOENT; malformed handles: EINVAL; unknown well-formed ones: ENOENT".into())
}

fn memfd_truncate(env: &Env) -> Result<String, String> {
    let before = pins_now()?;
    let dev = open(env)?;
    let fd = fd_of(&dev);
    let ring = Ring::map(fd)?;
    // SAFETY: a NUL-terminated name; returns a new descriptor or -1.
    let raw = unsafe { libc::memfd_create(c"warpq-adversarial".as_ptr(), 0) };
    ensure!(raw >= 0, "memfd_create: {}", ename(errno()));
    // SAFETY: a descriptor we just created and own.
    let mfd = unsafe { OwnedFd::from_raw_fd(raw) };
    let len = 16 * PAGE;
    // SAFETY: resizes our memfd.
    ensure!(
        unsafe { libc::ftruncate(mfd.as_raw_fd(), len as i64) } == 0,
        "ftruncate: {}",
        ename(errno())
    );
    let m = want_ok(
        "mmap of the memfd",
        mmap_dev(mfd.as_raw_fd(), len, PROT_RW, libc::MAP_SHARED, 0),
    )?;
    // SAFETY: our fresh mapping of `len` bytes.
    unsafe { std::ptr::write_bytes(m.ptr, 0x11, len) };
    let h = want_ok(
        "REGISTER the memfd mapping",
        register(fd, m.addr(0), len as u64, RW),
    )?;
    let c = ring.run(sqe(FILL, 0, 0, m.addr(0), PAGE as u64, 0x77))?;
    ensure!(
        c.status == OK,
        "a FILL before the truncation: {}",
        st(c.status)
    );
    // SAFETY: truncates our memfd under the registration (the point).
    ensure!(
        unsafe { libc::ftruncate(mfd.as_raw_fd(), 0) } == 0,
        "ftruncate 0: {}",
        ename(errno())
    );
    let rows = [
        (
            "FILL after the truncation",
            sqe(FILL, 0, 0, m.addr(0), 64, 0x88),
            UNMAPPED_ST,
        ),
        (
            "CRC32C after the truncation",
            sqe(CRC, 0, m.addr(PAGE), 0, 64, 0),
            UNMAPPED_ST,
        ),
    ];
    let summary = check_rows(&ring, &rows)?;
    want_ok("UNREGISTER after the truncation", unregister(fd, h))?;
    drop(m);
    drop(ring);
    drop(dev);
    let t = Instant::now();
    while pins_now()? != before && t.elapsed() < Duration::from_secs(5) {
        sleep_ms(20);
    }
    ensure!(
        pins_now()? == before,
        "{} pins outstanding, {} before",
        pins_now()?,
        before
    );
    Ok(format!("{summary}; UNREGISTER succeeded; pins released"))
}

// ---- the cases: submission entries -------------------------------------------

fn sqe_unregistered(env: &Env) -> Result<String, String> {
    let (_dev, ring, buf, _) = setup(env, 16)?;
    let other = Anon::new(PAGE);
    let end = buf.addr(buf.len());
    let rows = [
        (
            "FILL at an unmapped address",
            sqe(FILL, 0, 0, UNMAPPED, 64, 1),
            UNREG,
        ),
        (
            "FILL at mapped, unregistered memory",
            sqe(FILL, 0, 0, other.addr(0), 64, 1),
            UNREG,
        ),
        ("FILL at address 0", sqe(FILL, 0, 0, 0, 64, 1), UNREG),
        (
            "FILL at a kernel address",
            sqe(FILL, 0, 0, KERNEL_ADDR, 64, 1),
            UNREG,
        ),
        (
            "FILL at a non-canonical address",
            sqe(FILL, 0, 0, NONCANONICAL, 64, 1),
            UNREG,
        ),
        (
            "FILL at the ring",
            sqe(FILL, 0, 0, ring.base(), 64, 1),
            UNREG,
        ),
        (
            "FILL one past the buffer's end",
            sqe(FILL, 0, 0, end, 64, 1),
            UNREG,
        ),
        (
            "FILL ending just before the buffer",
            sqe(FILL, 0, 0, buf.addr(0) - 64, 64, 1),
            UNREG,
        ),
        (
            "CRC32C of a kernel address",
            sqe(CRC, 0, KERNEL_ADDR, 0, 64, 0),
            UNREG,
        ),
        (
            "CRC32C of the vsyscall page",
            sqe(CRC, 0, VSYSCALL, 0, 64, 0),
            UNREG,
        ),
        (
            "COPY from the buffer to a kernel address",
            sqe(COPY, 0, buf.addr(0), KERNEL_ADDR, 64, 0),
            UNREG,
        ),
        (
            "COPY from unregistered memory into the buffer",
            sqe(COPY, 0, other.addr(0), buf.addr(0), 64, 0),
            UNREG,
        ),
        (
            "COPY from the ring into the buffer",
            sqe(COPY, 0, ring.base(), buf.addr(0), 64, 0),
            UNREG,
        ),
    ];
    let summary = check_rows(&ring, &rows)?;
    ensure!(
        buf.bytes().iter().all(|&b| b == 0) && other.bytes().iter().all(|&b| b == 0),
        "memory changed"
    );
    ensure!(ring.get(0) == WARPQ_RING_MAGIC, "the ring's header changed");
    Ok(summary)
}

fn sqe_bounds(env: &Env) -> Result<String, String> {
    let (_dev, ring, buf, _) = setup(env, 16)?;
    let len = buf.len() as u64;
    let end = buf.addr(buf.len());
    let rows = [
        (
            "FILL of 16 bytes 8 before the end",
            sqe(FILL, 0, 0, end - 8, 16, 1),
            BOUNDS,
        ),
        (
            "FILL of the buffer + 1 byte",
            sqe(FILL, 0, 0, buf.addr(0), len + 1, 1),
            BOUNDS,
        ),
        (
            "CRC32C of 2 bytes at the last byte",
            sqe(CRC, 0, end - 1, 0, 2, 0),
            BOUNDS,
        ),
        (
            "COPY whose source crosses the end",
            sqe(COPY, 0, end - 100, buf.addr(0), 200, 0),
            BOUNDS,
        ),
        (
            "COPY whose destination crosses the end",
            sqe(COPY, 0, buf.addr(0), end - 100, 200, 0),
            BOUNDS,
        ),
        (
            "FILL of 4 MiB into a 64 KiB buffer",
            sqe(FILL, 0, 0, buf.addr(0), 4 << 20, 1),
            BOUNDS,
        ),
        (
            "FILL of the last 8 bytes exactly",
            sqe(FILL, 0, 0, end - 8, 8, 0x42),
            OK,
        ),
    ];
    let summary = check_rows(&ring, &rows)?;
    let b = buf.bytes();
    ensure!(
        b[..b.len() - 8].iter().all(|&x| x == 0) && b[b.len() - 8..].iter().all(|&x| x == 0x42),
        "memory changed by a refused command"
    );
    Ok(summary)
}

fn sqe_two_regions(env: &Env) -> Result<String, String> {
    let dev = open(env)?;
    let fd = fd_of(&dev);
    let ring = Ring::map(fd)?;
    let buf = Anon::new(8 * PAGE);
    want_ok(
        "REGISTER the first half",
        register(fd, buf.addr(0), 4 * PAGE as u64, RW),
    )?;
    want_ok(
        "REGISTER the second half",
        register(fd, buf.addr(4 * PAGE), 4 * PAGE as u64, RW),
    )?;
    let seam = buf.addr(4 * PAGE);
    let rows = [
        (
            "FILL across the seam",
            sqe(FILL, 0, 0, seam - 100, 200, 1),
            BOUNDS,
        ),
        (
            "CRC32C across the seam",
            sqe(CRC, 0, seam - 1, 0, 2, 0),
            BOUNDS,
        ),
        (
            "COPY from across the seam",
            sqe(COPY, 0, seam - 50, buf.addr(0), 100, 0),
            BOUNDS,
        ),
        (
            "FILL of both buffers",
            sqe(FILL, 0, 0, buf.addr(0), 8 * PAGE as u64, 1),
            BOUNDS,
        ),
        (
            "FILL up to the seam",
            sqe(FILL, 0, 0, seam - 100, 100, 2),
            OK,
        ),
        ("FILL from the seam", sqe(FILL, 0, 0, seam, 100, 3), OK),
        (
            "COPY from one buffer into the other",
            sqe(COPY, 0, buf.addr(0), seam + 1000, 100, 0),
            OK,
        ),
    ];
    check_rows(&ring, &rows)
}

fn sqe_opcode(env: &Env) -> Result<String, String> {
    let (_dev, ring, buf, _) = setup(env, 4)?;
    let rows: Vec<(String, warpq_sqe)> = [4u8, 5, 0x7f, 0x80, 0xff]
        .iter()
        .map(|&op| {
            (
                format!("opcode {op:#x}"),
                sqe(op, 0, buf.addr(0), buf.addr(PAGE), 64, 0x77),
            )
        })
        .collect();
    let rows: Vec<(&str, warpq_sqe, u32)> = rows
        .iter()
        .map(|(w, e)| (w.as_str(), *e, INVALID))
        .collect();
    let summary = check_rows(&ring, &rows)?;
    ensure!(buf.bytes().iter().all(|&b| b == 0), "memory changed");
    Ok(summary)
}

fn sqe_flags(env: &Env) -> Result<String, String> {
    let (_dev, ring, buf, _) = setup(env, 4)?;
    buf.write(&pattern(PAGE, 9));
    let (a, b) = (buf.addr(0), buf.addr(2 * PAGE));
    let edu = WARPQ_SQE_EDU_DMA;
    let mut rows = Vec::new();
    for f in [0x02u8, 0x04, 0x80, 0xff] {
        rows.push((
            format!("FILL with flags {f:#x}"),
            with_flags(sqe(FILL, 0, 0, b, 64, 1), f),
            INVALID,
        ));
        rows.push((
            format!("COPY with flags {f:#x}"),
            with_flags(sqe(COPY, 0, a, b, 64, 0), f),
            INVALID,
        ));
        rows.push((
            format!("NOP with flags {f:#x}"),
            with_flags(sqe(NOP, 0, 0, 0, 0, 0), f),
            INVALID,
        ));
    }
    rows.push((
        "EDU_DMA FILL".into(),
        with_flags(sqe(FILL, 0, 0, b, 64, 1), edu),
        INVALID,
    ));
    rows.push((
        "EDU_DMA CRC32C".into(),
        with_flags(sqe(CRC, 0, a, 0, 64, 0), edu),
        INVALID,
    ));
    rows.push((
        "EDU_DMA NOP".into(),
        with_flags(sqe(NOP, 0, 0, 0, 0, 0), edu),
        INVALID,
    ));
    rows.push((
        "EDU_DMA COPY of 4097 bytes".into(),
        with_flags(sqe(COPY, 0, a, b, 4097, 0), edu),
        INVALID,
    ));
    let rows: Vec<(&str, warpq_sqe, u32)> =
        rows.iter().map(|(w, e, s)| (w.as_str(), *e, *s)).collect();
    let summary = check_rows(&ring, &rows)?;
    ensure!(
        buf.bytes()[PAGE..].iter().all(|&x| x == 0),
        "memory changed"
    );
    // The positive control: a small edu COPY is valid.
    let c = ring.run(with_flags(sqe(COPY, 0, a, b, 64, 0), edu))?;
    let copied = buf.bytes()[2 * PAGE..2 * PAGE + 64] == pattern(64, 9)[..];
    ensure!(
        (c.status == OK && copied) || c.status == WARPQ_STATUS_FAULT_IOMMU,
        "EDU_DMA COPY of 64 bytes: {} (data copied: {copied})",
        st(c.status)
    );
    Ok(format!(
        "{summary}; EDU_DMA COPY of 64 bytes: {}",
        st(c.status)
    ))
}

fn sqe_reserved(env: &Env) -> Result<String, String> {
    let (_dev, ring, buf, _) = setup(env, 4)?;
    let fill = sqe(FILL, 0, 0, buf.addr(0), 64, 1);
    let nop = sqe(NOP, 0, 0, 0, 0, 0);
    let rows = [
        (
            "FILL with rsvd0 = 1",
            with_rsvd(fill, 1, 0, [0, 0]),
            INVALID,
        ),
        (
            "FILL with rsvd0 = 0x8000",
            with_rsvd(fill, 0x8000, 0, [0, 0]),
            INVALID,
        ),
        (
            "FILL with rsvd1 = 1",
            with_rsvd(fill, 0, 1, [0, 0]),
            INVALID,
        ),
        (
            "FILL with rsvd2[0] = 1",
            with_rsvd(fill, 0, 0, [1, 0]),
            INVALID,
        ),
        (
            "FILL with rsvd2[1] = 2^63",
            with_rsvd(fill, 0, 0, [0, 1 << 63]),
            INVALID,
        ),
        (
            "NOP with rsvd1 = 0xffffffff",
            with_rsvd(nop, 0, u32::MAX, [0, 0]),
            INVALID,
        ),
        (
            "NOP with rsvd2[1] = 2^64 - 1",
            with_rsvd(nop, 0, 0, [0, u64::MAX]),
            INVALID,
        ),
        (
            "NOP with garbage addresses and length",
            sqe(NOP, 0, KERNEL_ADDR, NONCANONICAL, u64::MAX, u64::MAX),
            OK,
        ),
    ];
    let summary = check_rows(&ring, &rows)?;
    ensure!(buf.bytes().iter().all(|&b| b == 0), "memory changed");
    Ok(summary)
}

fn sqe_zero_len(env: &Env) -> Result<String, String> {
    let (_dev, ring, buf, _) = setup(env, 4)?;
    let rows = [
        (
            "FILL of 0 bytes",
            sqe(FILL, 0, 0, buf.addr(0), 0, 1),
            INVALID,
        ),
        (
            "COPY of 0 bytes",
            sqe(COPY, 0, buf.addr(0), buf.addr(PAGE), 0, 0),
            INVALID,
        ),
        (
            "CRC32C of 0 bytes",
            sqe(CRC, 0, buf.addr(0), 0, 0, 0),
            INVALID,
        ),
        (
            "FILL of 0 bytes at a kernel address",
            sqe(FILL, 0, 0, KERNEL_ADDR, 0, 1),
            INVALID,
        ),
        ("NOP of 0 bytes", sqe(NOP, 0, 0, 0, 0, 0), OK),
    ];
    check_rows(&ring, &rows)
}

fn sqe_huge_len(env: &Env) -> Result<String, String> {
    let (_dev, ring, buf, _) = setup(env, 16)?;
    let a = buf.addr(0);
    let rows = [
        (
            "FILL of 4 MiB + 1",
            sqe(FILL, 0, 0, a, (4 << 20) + 1, 1),
            INVALID,
        ),
        ("FILL of 2^40", sqe(FILL, 0, 0, a, 1 << 40, 1), INVALID),
        ("FILL of 2^63", sqe(FILL, 0, 0, a, 1 << 63, 1), INVALID),
        ("FILL of 2^64 - 1", sqe(FILL, 0, 0, a, u64::MAX, 1), INVALID),
        ("COPY of 2^64 - 1", sqe(COPY, 0, a, a, u64::MAX, 0), INVALID),
        (
            "CRC32C of 2^64 - 1 at the end",
            sqe(CRC, 0, buf.addr(buf.len() - 1), 0, u64::MAX, 0),
            INVALID,
        ),
        (
            "FILL of 4 MiB exactly",
            sqe(FILL, 0, 0, a, 4 << 20, 1),
            BOUNDS,
        ),
    ];
    let summary = check_rows(&ring, &rows)?;
    ensure!(buf.bytes().iter().all(|&b| b == 0), "memory changed");
    Ok(summary)
}

fn sqe_access(env: &Env) -> Result<String, String> {
    let dev = open(env)?;
    let fd = fd_of(&dev);
    let ring = Ring::map(fd)?;
    let (rw, ro, wo) = (
        Anon::new(4 * PAGE),
        Anon::new(4 * PAGE),
        Anon::new(4 * PAGE),
    );
    let data = pattern(ro.len(), 5);
    ro.write(&data);
    want_ok("REGISTER rw", register(fd, rw.addr(0), rw.len() as u64, RW))?;
    want_ok(
        "REGISTER read-only",
        register(fd, ro.addr(0), ro.len() as u64, WARPQ_ACCESS_READ),
    )?;
    want_ok(
        "REGISTER write-only",
        register(fd, wo.addr(0), wo.len() as u64, WARPQ_ACCESS_WRITE),
    )?;
    let rows = [
        (
            "FILL into the READ-only buffer",
            sqe(FILL, 0, 0, ro.addr(0), 64, 1),
            ACCESS,
        ),
        (
            "COPY into the READ-only buffer",
            sqe(COPY, 0, rw.addr(0), ro.addr(100), 64, 0),
            ACCESS,
        ),
        (
            "COPY within the READ-only buffer",
            sqe(COPY, 0, ro.addr(0), ro.addr(PAGE), 64, 0),
            ACCESS,
        ),
        (
            "CRC32C of the WRITE-only buffer",
            sqe(CRC, 0, wo.addr(0), 0, 64, 0),
            ACCESS,
        ),
        (
            "COPY from the WRITE-only buffer",
            sqe(COPY, 0, wo.addr(0), rw.addr(0), 64, 0),
            ACCESS,
        ),
        (
            "COPY READ-only -> WRITE-only",
            sqe(COPY, 0, ro.addr(0), wo.addr(0), 4 * PAGE as u64, 0),
            OK,
        ),
        (
            "CRC32C of the READ-only buffer",
            sqe(CRC, 0, ro.addr(0), 0, 4 * PAGE as u64, 0),
            OK,
        ),
    ];
    let summary = check_rows(&ring, &rows)?;
    ensure!(ro.bytes() == data, "the READ-only buffer changed");
    ensure!(rw.bytes().iter().all(|&b| b == 0), "the rw buffer changed");
    ensure!(
        wo.bytes() == data,
        "the WRITE-only buffer does not hold the copy"
    );
    let crc = ring.run(sqe(CRC, 0, ro.addr(0), 0, 4 * PAGE as u64, 0))?;
    ensure!(
        crc.result == u64::from(crc32c(0, &data)),
        "CRC32C of the READ-only buffer: {:#x}",
        crc.result
    );
    Ok(summary)
}

fn sqe_copy_overlap_page(env: &Env) -> Result<String, String> {
    let (_dev, ring, buf, _) = setup(env, 16)?;
    let mut model = pattern(buf.len(), 0x33);
    buf.write(&model);
    for (what, src, dst, len) in [
        ("dst 200 after src", 100usize, 300usize, 1000usize),
        ("dst 100 before src", 2000, 1900, 1500),
        ("src == dst", 5000, 5000, 2000),
    ] {
        let c = ring.run(sqe(COPY, 0, buf.addr(src), buf.addr(dst), len as u64, 0))?;
        ensure!(
            c.status == OK && c.result == len as u64,
            "COPY {what}: {} result {}",
            st(c.status),
            c.result
        );
        model.copy_within(src..src + len, dst);
        let got = buf.bytes();
        if let Some(i) = got.iter().zip(&model).position(|(a, b)| a != b) {
            return Err(format!(
                "COPY {what}: byte {i} is {:#x}, memmove gives {:#x}",
                got[i], model[i]
            ));
        }
    }
    Ok("3 overlapping COPYs within a page: OK, memmove results".into())
}

/// The edu engine moves at most 2 KiB per transfer (QEMU 7.2), so a longer
/// overlapping COPY is several transfers: their order must still give
/// memmove results.
fn sqe_copy_overlap_edu(env: &Env) -> Result<String, String> {
    let (_dev, ring, buf, _) = setup(env, 16)?;
    let mut model = pattern(buf.len(), 0x55);
    buf.write(&model);
    for (what, src, dst, len) in [
        ("dst 0x200 after src", 0x100usize, 0x300usize, 3000usize),
        ("dst 0x200 before src", 0x2300, 0x2100, 3000),
        ("dst 300 after src, a page across two", 4 * PAGE + 1000, 4 * PAGE + 1300, PAGE),
        ("dst 300 before src, a page across two", 6 * PAGE + 1300, 6 * PAGE + 1000, PAGE),
    ] {
        let mut e = sqe(COPY, 0, buf.addr(src), buf.addr(dst), len as u64, 0);
        e.flags = WARPQ_SQE_EDU_DMA;
        let c = ring.run(e)?;
        ensure!(c.status == OK && c.result == len as u64, "edu COPY {what}: {} result {}", st(c.status), c.result);
        model.copy_within(src..src + len, dst);
        let got = buf.bytes();
        if let Some(i) = got.iter().zip(&model).position(|(a, b)| a != b) {
            let wrong = got.iter().zip(&model).filter(|(a, b)| a != b).count();
            return Err(format!("edu COPY {what}: byte {i:#x} is {:#x}, memmove gives {:#x} ({wrong} bytes differ)", got[i], model[i]));
        }
    }
    Ok("4 overlapping edu COPYs (in a page, across pages, both ways): OK, memmove results".into())
}

fn sqe_copy_overlap_pages(env: &Env) -> Result<String, String> {
    let (_dev, ring, buf, _) = setup(env, 16)?;
    let mut model = pattern(buf.len(), 0x44);
    buf.write(&model);
    let mut wrong = Vec::new();
    for (what, src, dst) in [
        ("dst 100 before src", PAGE + 100, PAGE),
        ("dst 100 after src", 8 * PAGE, 8 * PAGE + 100),
    ] {
        let len = 3 * PAGE;
        let c = ring.run(sqe(COPY, 0, buf.addr(src), buf.addr(dst), len as u64, 0))?;
        ensure!(
            c.status == OK && c.result == len as u64,
            "COPY {what}: {} result {}",
            st(c.status),
            c.result
        );
        model.copy_within(src..src + len, dst);
        let got = buf.bytes();
        let bad: Vec<usize> = (0..got.len()).filter(|&i| got[i] != model[i]).collect();
        if let (Some(first), Some(last)) = (bad.first(), bad.last()) {
            wrong.push(format!(
                "COPY {what} (12 KiB): {} bytes differ from memmove (offsets {first:#x}..={last:#x}: the source was read after the \
                 destination overwrote it)",
                bad.len()
            ));
            // Continue from what the device produced.
            model = got;
        }
    }
    ensure!(wrong.is_empty(), "{}", wrong.join("; "));
    Ok("2 overlapping COPYs across pages: memmove results".into())
}

fn ring_sq_invalid(env: &Env) -> Result<String, String> {
    let (dev, ring, buf, _) = setup(env, 4)?;
    let before = (
        ring.sq_invalid(),
        stats(fd_of(&dev))?.commands_by_status[INVALID as usize],
    );
    let rows = [
        ("opcode 0xff", sqe(0xff, 0, 0, 0, 0, 0), INVALID),
        (
            "FILL of 0 bytes",
            sqe(FILL, 0, 0, buf.addr(0), 0, 0),
            INVALID,
        ),
        (
            "FILL with rsvd1",
            with_rsvd(sqe(FILL, 0, 0, buf.addr(0), 64, 0), 0, 1, [0, 0]),
            INVALID,
        ),
    ];
    check_rows(&ring, &rows)?;
    let after = (
        ring.sq_invalid(),
        stats(fd_of(&dev))?.commands_by_status[INVALID as usize],
    );
    ensure!(
        after.0 == before.0 + 3,
        "sq_invalid {} -> {} while STATS counted {} INVALID completions (the header field is never written)",
        before.0,
        after.0,
        after.1 - before.1
    );
    Ok(format!("sq_invalid {} -> {}", before.0, after.0))
}

// ---- the cases: a corrupted ring ---------------------------------------------

fn ring_tail_ahead(env: &Env) -> Result<String, String> {
    let dev = open(env)?;
    let fd = fd_of(&dev);
    let ring = Ring::map(fd)?;
    let head = ring.get(SQ_HEAD);
    ring.write_sqe(head, &sqe(NOP, 0xa0, 0, 0, 0, 0));
    let nop = [sqe(NOP, 0xa1, 0, 0, 0, 0)];
    for ahead in [WARPQ_SQ_ENTRIES + 1, 1 << 31] {
        ring.set(SQ_TAIL, head.wrapping_add(ahead));
        ring.stays_quiet(200)
            .map_err(|e| format!("sq_tail {ahead} ahead: {e}"))?;
        let n = want_ok("SUBMIT meanwhile", submit(fd, nop.as_ptr() as u64, 1))?;
        ensure!(n == 0, "SUBMIT with sq_tail {ahead} ahead queued {n}");
        ensure!(
            ring.get(SQ_TAIL) == head.wrapping_add(ahead),
            "SUBMIT rewrote the corrupt sq_tail"
        );
        let r = wait(fd, 1, 100_000_000);
        ensure!(r == Ok(0), "WAIT with sq_tail {ahead} ahead: {}", show(&r));
        ensure!(
            ring.sq_invalid() == 0,
            "sq_invalid moved to {}",
            ring.sq_invalid()
        );
    }
    ring.set(SQ_TAIL, head.wrapping_add(1));
    ring.kick()?;
    let c = ring.reap(Duration::from_secs(10))?;
    ensure!(
        c.user_data == 0xa0 && c.status == OK,
        "after restoring: {:#x} {}",
        c.user_data,
        st(c.status)
    );
    ensure!(
        ring.run(sqe(NOP, 0, 0, 0, 0, 0))?.status == OK,
        "a NOP afterwards"
    );
    Ok("tails 257 and 2^31 ahead ignored (nothing taken, SUBMIT queued 0, WAIT timed out with 0); restored: the entry ran".into())
}

fn ring_tail_backwards(env: &Env) -> Result<String, String> {
    let dev = open(env)?;
    let ring = Ring::map(fd_of(&dev))?;
    ring.run_batch(&[sqe(NOP, 0, 0, 0, 0, 0), sqe(NOP, 0, 0, 0, 0, 0)])?;
    ring.settle()?;
    let tail = ring.get(SQ_TAIL);
    for back in [1u32, WARPQ_SQ_ENTRIES] {
        ring.set(SQ_TAIL, tail.wrapping_sub(back));
        ring.stays_quiet(200)
            .map_err(|e| format!("sq_tail {back} behind: {e}"))?;
    }
    ring.set(SQ_TAIL, tail);
    let c = ring.run(sqe(NOP, 0, 0, 0, 0, 0))?;
    ensure!(c.status == OK, "a NOP after restoring: {}", st(c.status));
    Ok("tails 1 and 256 behind the head ignored; restored: work runs".into())
}

fn ring_sq_head(env: &Env) -> Result<String, String> {
    let dev = open(env)?;
    let ring = Ring::map(fd_of(&dev))?;
    ring.run_batch(&[sqe(NOP, 0, 0, 0, 0, 0), sqe(NOP, 0, 0, 0, 0, 0)])?;
    ring.settle()?;
    let tail = ring.get(SQ_TAIL);
    // Back by two: the engine takes sq_head from the shared page and runs
    // the two old slots (user_data 1 and 2) again.
    ring.set(SQ_HEAD, tail.wrapping_sub(2));
    ring.kick()?;
    for want in [1, 2] {
        let c = ring.reap(Duration::from_secs(10))?;
        ensure!(
            c.user_data == want && c.status == OK,
            "replayed slot: {:#x} {}",
            c.user_data,
            st(c.status)
        );
    }
    ring.settle()?;
    ensure!(
        ring.get(SQ_HEAD) == tail,
        "sq_head {} after the replay (tail {tail})",
        ring.get(SQ_HEAD)
    );
    // Past the tail: a tail behind the head, ignored.
    ring.set(SQ_HEAD, tail.wrapping_add(5));
    ring.stays_quiet(200)
        .map_err(|e| format!("sq_head past sq_tail: {e}"))?;
    ensure!(
        ring.get(SQ_HEAD) == tail.wrapping_add(5),
        "the kernel rewrote sq_head"
    );
    ring.set(SQ_HEAD, tail);
    let c = ring.run(sqe(NOP, 0, 0, 0, 0, 0))?;
    ensure!(c.status == OK, "a NOP after restoring: {}", st(c.status));
    Ok("sq_head moved back 2: the 2 old slots ran again; moved past the tail: ignored until restored".into())
}

/// Common to the two completion-index corruptions: with the CQ made to look
/// full or corrupt by `corrupt`, a NOP stays queued and WAIT returns at once
/// with 512 ready; `restore` makes the NOP complete.
fn cq_stall(ring: &Ring, corrupt: impl Fn(), restore: impl Fn(), what: &str) -> Result<(), String> {
    ring.settle()?;
    corrupt();
    ring.push(&sqe(NOP, 0xc1, 0, 0, 0, 0))?;
    ring.stays_quiet(200).map_err(|e| format!("{what}: {e}"))?;
    let t = Instant::now();
    let r = wait(ring.fd, 1, 1_000_000_000);
    ensure!(
        r == Ok(WARPQ_CQ_ENTRIES) && t.elapsed() < Duration::from_millis(500),
        "{what}: WAIT gave {} after {:?}",
        show(&r),
        t.elapsed()
    );
    restore();
    ring.kick()?;
    let c = ring.reap(Duration::from_secs(10))?;
    ensure!(
        c.user_data == 0xc1 && c.status == OK,
        "{what}, restored: {:#x} {}",
        c.user_data,
        st(c.status)
    );
    Ok(())
}

fn ring_cq_tail(env: &Env) -> Result<String, String> {
    let dev = open(env)?;
    let ring = Ring::map(fd_of(&dev))?;
    ring.run(sqe(NOP, 0, 0, 0, 0, 0))?;
    let head = ring.get(CQ_HEAD);
    cq_stall(
        &ring,
        || ring.set(CQ_TAIL, head.wrapping_add(600)),
        || ring.set(CQ_TAIL, head),
        "cq_tail 600 ahead",
    )?;
    Ok("cq_tail 600 ahead: the engine stalled, WAIT returned at once with 512; restored: the NOP completed".into())
}

fn ring_cq_head(env: &Env) -> Result<String, String> {
    let dev = open(env)?;
    let ring = Ring::map(fd_of(&dev))?;
    ring.run(sqe(NOP, 0, 0, 0, 0, 0))?;
    for (what, off) in [
        ("cq_head 1 past cq_tail", 1u32),
        ("cq_head 600 behind cq_tail", 600u32.wrapping_neg()),
    ] {
        let tail = ring.get(CQ_TAIL);
        cq_stall(
            &ring,
            || ring.set(CQ_HEAD, tail.wrapping_add(off)),
            || ring.set(CQ_HEAD, tail),
            what,
        )?;
    }
    Ok("cq_head past the tail, and 600 behind: the engine stalled, WAIT returned at once with 512; restored: the NOPs completed".into())
}

fn ring_header_scribble(env: &Env) -> Result<String, String> {
    let dev = open(env)?;
    let fd = fd_of(&dev);
    let ring = Ring::map(fd)?;
    let garbage: [(usize, u32); 6] = [
        (0, 0xdead_beef),
        (4, 7),
        (8, 1),
        (12, 0),
        (16, 0xffff_ffff),
        (20, 3),
    ];
    for (off, v) in garbage {
        ring.set(off, v);
    }
    ring.u64_at(offset_of!(warpq_ring_header, owner_id))
        .store(0, Ordering::Relaxed);
    ring.set(FLAGS, u32::MAX);
    let done = ring.run_batch(&[
        sqe(NOP, 0, 0, 0, 0, 0),
        sqe(NOP, 0, 0, 0, 0, 0),
        sqe(NOP, 0, 0, 0, 0, 0),
    ])?;
    ensure!(
        done.iter().all(|c| c.status == OK),
        "NOPs under a scribbled header: {:?}",
        done.iter().map(|c| st(c.status)).collect::<Vec<_>>()
    );
    let nop = [sqe(NOP, 0x5c, 0, 0, 0, 0)];
    ensure!(
        want_ok("SUBMIT", submit(fd, nop.as_ptr() as u64, 1))? == 1,
        "SUBMIT under a scribbled header queued nothing"
    );
    ring.kick()?;
    let c = ring.reap(Duration::from_secs(10))?;
    ensure!(
        c.user_data == 0x5c && c.status == OK,
        "the SUBMITted NOP: {:#x} {}",
        c.user_data,
        st(c.status)
    );
    for (off, v) in garbage {
        ensure!(
            ring.get(off) == v,
            "header word at {off} rewritten: {:#x}",
            ring.get(off)
        );
    }
    let flags = ring.get(FLAGS);
    ensure!(
        flags & !0xf == !0xf,
        "the kernel cleared foreign flag bits: {flags:#x}"
    );
    Ok(format!(
        "4 NOPs OK through a garbage header; the kernel left it as written (flags now {flags:#x})"
    ))
}

fn ring_cq_overflow(env: &Env) -> Result<String, String> {
    let dev = open(env)?;
    let ring = Ring::map(fd_of(&dev))?;
    let total = WARPQ_CQ_ENTRIES + WARPQ_SQ_ENTRIES;
    let mut pushed = 0u32;
    let t = Instant::now();
    while pushed < total {
        ensure!(
            t.elapsed() < Duration::from_secs(30),
            "only {pushed} of {total} published in 30 s"
        );
        if ring
            .push(&sqe(NOP, u64::from(pushed) + 1, 0, 0, 0, 0))
            .is_ok()
        {
            pushed += 1;
        } else {
            ring.kick()?;
            sleep_ms(1);
        }
    }
    ring.kick()?;
    sleep_ms(300);
    let (ready, pending) = (
        ring.get(CQ_TAIL).wrapping_sub(ring.get(CQ_HEAD)),
        ring.get(SQ_TAIL).wrapping_sub(ring.get(SQ_HEAD)),
    );
    ensure!(
        ready == WARPQ_CQ_ENTRIES && pending == total - WARPQ_CQ_ENTRIES,
        "with nothing reaped: {ready} completions, {pending} pending"
    );
    for i in 0..total {
        let c = ring.reap(Duration::from_secs(10))?;
        ensure!(
            c.user_data == u64::from(i) + 1 && c.status == OK,
            "completion {i}: {:#x} {}",
            c.user_data,
            st(c.status)
        );
    }
    Ok(format!(
        "{ready} completed while the CQ was full, {pending} waited; all {total} arrived in order"
    ))
}

/// The child of `exit-hostile-ring`: queues long FILLs, keeps the engine
/// replaying them forever from another thread, reports the completions
/// posted so far at `progress` (a shared page), and waits to be killed.
fn hostile_child(env: &Env, progress: usize) -> Result<(), String> {
    let (_dev, ring, buf, _) = setup(env, 256)?;
    while ring
        .push(&sqe(FILL, 0, 0, buf.addr(0), buf.len() as u64, 0x5a))
        .is_ok()
    {}
    ring.kick()?;
    let base = ring.base() as usize;
    std::thread::spawn(move || {
        let word = |off: usize| {
            // SAFETY: a header word of the ring mapping, which stays mapped
            // until this process dies (it never returns).
            unsafe { AtomicU32::from_ptr((base + off) as *mut u32) }
        };
        loop {
            word(CQ_HEAD).store(word(CQ_TAIL).load(Ordering::Acquire), Ordering::Release);
            let tail = word(SQ_TAIL).load(Ordering::Relaxed);
            word(SQ_HEAD).store(tail.wrapping_sub(WARPQ_SQ_ENTRIES), Ordering::Release);
            std::hint::spin_loop();
        }
    });
    // SAFETY: the first word of a shared page mapped before the fork, never
    // unmapped in this process.
    let posted = unsafe { AtomicU32::from_ptr(progress as *mut u32) };
    loop {
        ring.kick()?;
        posted.store(ring.get(CQ_TAIL), Ordering::Release);
        sleep_ms(50);
    }
}

fn exit_hostile_ring(env: &Env) -> Result<String, String> {
    let before = pins_now()?;
    let page = want_ok(
        "a shared page",
        mmap_dev(-1, PAGE, PROT_RW, libc::MAP_SHARED | libc::MAP_ANONYMOUS, 0),
    )?;
    // SAFETY: the child runs `hostile_child` until it is killed.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let _ = hostile_child(env, page.ptr as usize);
        // SAFETY: leave the child (only if setup failed).
        unsafe { libc::_exit(1) };
    }
    ensure!(pid > 0, "fork failed");
    // Until the engine is seen replaying (more completions than entries).
    // SAFETY: the first word of our shared page, written by the child.
    let counter = unsafe { AtomicU32::from_ptr(page.ptr.cast::<u32>()) };
    let t = Instant::now();
    let mut early = None;
    while counter.load(Ordering::Acquire) <= WARPQ_SQ_ENTRIES
        && t.elapsed() < Duration::from_secs(10)
        && early.is_none()
    {
        sleep_ms(100);
        early = wait_child(pid, Duration::ZERO);
    }
    let posted = counter.load(Ordering::Acquire);
    if let Some(s) = early {
        return Err(format!(
            "the hostile process ended by itself ({})",
            describe_status(s)
        ));
    }
    // SAFETY: our own child, not yet reaped.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let t = Instant::now();
    let status = wait_child(pid, Duration::from_secs(30));
    let took = t.elapsed();
    ensure!(
        posted > WARPQ_SQ_ENTRIES,
        "the engine was not replaying: {posted} completions for {WARPQ_SQ_ENTRIES} entries"
    );
    match status {
        Some(s) if libc::WIFSIGNALED(s) => {}
        Some(s) => {
            return Err(format!(
                "the hostile process ended with {}",
                describe_status(s)
            ))
        }
        None => return Err("the hostile process did not die within 30 s of SIGKILL".into()),
    }
    let left = pins_settle(before, Duration::from_secs(10))?;
    ensure!(
        left == before,
        "{} pins outstanding 10 s after the death, {before} before",
        left
    );
    Ok(format!("killed mid-replay ({posted} completions for {WARPQ_SQ_ENTRIES} entries): gone in {took:.1?}, every pin released"))
}

/// Rewrites random words of random SQ slots until `stop`; returns how many.
fn scribble(base: usize, stop: &AtomicBool, seed: u64, buf: u64) -> u64 {
    let mut rng = Rng(seed);
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let slot = rng.below(u64::from(WARPQ_SQ_ENTRIES)) as usize;
        let word = rng.below(8) as usize;
        let v = match (rng.below(4), word) {
            (0, _) => rng.next_u64(),
            (1, 0) => rng.below(6),
            (1, _) => buf + rng.below(80 * 1024),
            (2, _) => rng.below(16 * 1024),
            _ => 0,
        };
        let at = base + WARPQ_RING_SQ_OFFSET + slot * 64 + word * 8;
        // SAFETY: an 8-aligned word of the SQ area of the ring mapping,
        // which outlives this thread (scoped); everyone writes it atomically.
        unsafe { AtomicU64::from_ptr(at as *mut u64) }.store(v, Ordering::Relaxed);
        n += 1;
        if n % 256 == 0 {
            std::thread::yield_now();
        }
    }
    n
}

fn ring_torn_entries(env: &Env) -> Result<String, String> {
    const TOTAL: u64 = 1500;
    let (_dev, ring, buf, _) = setup(env, 16)?;
    let base = buf.addr(0);
    let stop = AtomicBool::new(false);
    let mut statuses = [0u64; 9];
    let ring_base = ring.base() as usize;
    let writes = std::thread::scope(|s| -> Result<u64, String> {
        let scribbler = s.spawn(|| scribble(ring_base, &stop, 0x70a2, base));
        let result = (|| -> Result<(), String> {
            let mut rng = Rng(0x1e57);
            let (mut sent, mut seen) = (0u64, 0u64);
            let deadline = Instant::now() + Duration::from_secs(90);
            while seen < TOTAL {
                ensure!(
                    Instant::now() < deadline,
                    "{seen} of {TOTAL} completions in 90 s ({sent} sent)"
                );
                while sent < TOTAL
                    && ring.get(SQ_TAIL).wrapping_sub(ring.get(SQ_HEAD)) < WARPQ_SQ_ENTRIES
                {
                    let len = 1 + rng.below(8 * 1024);
                    let off = rng.below(16 * PAGE as u64 - len);
                    let e = match rng.below(4) {
                        0 => sqe(FILL, sent, 0, base + off, len, rng.next_u64()),
                        1 => sqe(CRC, sent, base + off, 0, len, 0),
                        2 => sqe(
                            COPY,
                            sent,
                            base + off,
                            base + rng.below(16 * PAGE as u64 - len),
                            len,
                            0,
                        ),
                        _ => sqe(NOP, sent, 0, 0, 0, 0),
                    };
                    ring.push(&e)?;
                    sent += 1;
                }
                ring.kick()?;
                let mut any = false;
                while let Some(c) = ring.pop() {
                    any = true;
                    ensure!(
                        c.status <= WARPQ_STATUS_DEVICE_ERROR,
                        "completion {seen}: status {}",
                        c.status
                    );
                    ensure!(
                        c.rsvd == 0 && c.rsvd2 == 0,
                        "completion {seen}: reserved fields {:#x} {:#x}",
                        c.rsvd,
                        c.rsvd2
                    );
                    ensure!(
                        c.status == OK || c.result == 0,
                        "completion {seen}: {} with result {:#x}",
                        st(c.status),
                        c.result
                    );
                    statuses[c.status as usize] += 1;
                    seen += 1;
                }
                if !any {
                    want_ok("WAIT", wait(ring.fd, 1, 20_000_000))?;
                }
            }
            Ok(())
        })();
        stop.store(true, Ordering::Relaxed);
        let writes = scribbler
            .join()
            .map_err(|_| "the scribbler panicked".to_string())?;
        result.map(|()| writes)
    })?;
    let parts: Vec<String> = statuses
        .iter()
        .enumerate()
        .filter(|(_, &n)| n > 0)
        .map(|(s, n)| format!("{n} {}", st(s as u32)))
        .collect();
    Ok(format!(
        "{TOTAL} completions under {writes} random SQE writes, all valid: {}",
        parts.join(", ")
    ))
}

// ---- the cases: the ring mapping ---------------------------------------------

fn mmap_private(env: &Env) -> Result<String, String> {
    let dev = open(env)?;
    for (what, prot) in [("read/write", PROT_RW), ("read-only", libc::PROT_READ)] {
        want_err(
            &format!("MAP_PRIVATE {what}"),
            mmap_dev(fd_of(&dev), WARPQ_RING_SIZE, prot, libc::MAP_PRIVATE, 0).map(|_| ()),
            libc::EINVAL,
        )?;
    }
    Ok("MAP_PRIVATE refused with EINVAL".into())
}

fn mmap_exec(env: &Env) -> Result<String, String> {
    let dev = open(env)?;
    let fd = fd_of(&dev);
    for (what, prot) in [
        ("PROT_READ|PROT_WRITE|PROT_EXEC", PROT_RW | libc::PROT_EXEC),
        ("PROT_READ|PROT_EXEC", libc::PROT_READ | libc::PROT_EXEC),
    ] {
        want_err(
            what,
            mmap_dev(fd, WARPQ_RING_SIZE, prot, libc::MAP_SHARED, 0).map(|_| ()),
            libc::EPERM,
        )?;
    }
    let ring = Ring::map(fd)?;
    want_err(
        "mprotect adding PROT_EXEC",
        mprotect(ring.base(), WARPQ_RING_SIZE, PROT_RW | libc::PROT_EXEC),
        libc::EACCES,
    )?;
    ensure!(
        ring.run(sqe(NOP, 0, 0, 0, 0, 0))?.status == OK,
        "the ring after the refusals"
    );
    Ok("mmap with PROT_EXEC: EPERM; mprotect adding it: EACCES; the ring works".into())
}

fn mmap_offset(env: &Env) -> Result<String, String> {
    let dev = open(env)?;
    for off in [PAGE as i64, WARPQ_RING_SIZE as i64, 1 << 40] {
        want_err(
            &format!("offset {off:#x}"),
            mmap_dev(fd_of(&dev), WARPQ_RING_SIZE, PROT_RW, libc::MAP_SHARED, off).map(|_| ()),
            libc::EINVAL,
        )?;
    }
    Ok("offsets 4096, WARPQ_RING_SIZE, 2^40 refused with EINVAL".into())
}

fn mmap_size(env: &Env) -> Result<String, String> {
    let dev = open(env)?;
    for len in [
        0,
        PAGE,
        WARPQ_RING_SIZE - PAGE,
        WARPQ_RING_SIZE + PAGE,
        2 * WARPQ_RING_SIZE,
    ] {
        want_err(
            &format!("{len} bytes"),
            mmap_dev(fd_of(&dev), len, PROT_RW, libc::MAP_SHARED, 0).map(|_| ()),
            libc::EINVAL,
        )?;
    }
    Ok("sizes 0, 4096, ring - 4096, ring + 4096, 2 rings refused with EINVAL".into())
}

fn mremap_raw(old: u64, old_len: usize, new_len: usize, flags: i32, new: u64) -> Result<u64, i32> {
    // SAFETY: remaps our ring mapping (or tries to); every request here is
    // expected to fail and leave it in place, which the caller checks.
    let p = unsafe {
        libc::mremap(
            old as usize as *mut libc::c_void,
            old_len,
            new_len,
            flags,
            new as usize as *mut libc::c_void,
        )
    };
    if p == libc::MAP_FAILED {
        Err(errno())
    } else {
        Ok(p as u64)
    }
}

fn mremap_ring(env: &Env) -> Result<String, String> {
    let dev = open(env)?;
    let ring = Ring::map(fd_of(&dev))?;
    let owner = ring
        .u64_at(offset_of!(warpq_ring_header, owner_id))
        .load(Ordering::Relaxed);
    let target = want_ok(
        "a target",
        mmap_dev(
            -1,
            WARPQ_RING_SIZE,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            0,
        ),
    )?;
    let (b, n) = (ring.base(), WARPQ_RING_SIZE);
    let may = libc::MREMAP_MAYMOVE;
    want_err(
        "grow in place",
        mremap_raw(b, n, n + PAGE, 0, 0),
        libc::EFAULT,
    )?;
    want_err(
        "grow, may move",
        mremap_raw(b, n, n + PAGE, may, 0),
        libc::EFAULT,
    )?;
    want_err(
        "duplicate (old_len 0)",
        mremap_raw(b, 0, n, may, 0),
        libc::EFAULT,
    )?;
    want_err("shrink", mremap_raw(b, n, n - PAGE, 0, 0), libc::EINVAL)?;
    want_err(
        "move",
        mremap_raw(b, n, n, may | libc::MREMAP_FIXED, target.addr(0)),
        libc::EINVAL,
    )?;
    want_err(
        "DONTUNMAP",
        mremap_raw(b, n, n, may | libc::MREMAP_DONTUNMAP, 0),
        libc::EINVAL,
    )?;
    ensure!(
        ring.u64_at(offset_of!(warpq_ring_header, owner_id))
            .load(Ordering::Relaxed)
            == owner,
        "the ring changed under its address"
    );
    ensure!(
        ring.run(sqe(NOP, 0, 0, 0, 0, 0))?.status == OK,
        "the ring after the refusals"
    );
    Ok(
        "grow and duplicate: EFAULT; shrink, move, DONTUNMAP: EINVAL; the ring stayed and works"
            .into(),
    )
}

fn mprotect_ring(env: &Env) -> Result<String, String> {
    let dev = open(env)?;
    let ring = Ring::map(fd_of(&dev))?;
    ring.push(&sqe(NOP, 0x9e, 0, 0, 0, 0))?;
    want_ok(
        "mprotect read-only",
        mprotect(ring.base(), WARPQ_RING_SIZE, libc::PROT_READ),
    )?;
    ring.kick()?;
    let t = Instant::now();
    while ring.get(CQ_TAIL) == ring.get(CQ_HEAD) {
        ensure!(
            t.elapsed() < Duration::from_secs(10),
            "no completion while the mapping was read-only"
        );
        sleep_ms(1);
    }
    want_ok(
        "mprotect PROT_NONE",
        mprotect(ring.base(), WARPQ_RING_SIZE, libc::PROT_NONE),
    )?;
    want_ok(
        "mprotect read/write",
        mprotect(ring.base(), WARPQ_RING_SIZE, PROT_RW),
    )?;
    want_err(
        "mprotect of the first page",
        mprotect(ring.base(), PAGE, libc::PROT_READ),
        libc::EINVAL,
    )?;
    want_err(
        "mprotect of the last page",
        mprotect(
            ring.base() + (WARPQ_RING_SIZE - PAGE) as u64,
            PAGE,
            libc::PROT_READ,
        ),
        libc::EINVAL,
    )?;
    let c = ring.reap(Duration::from_secs(10))?;
    ensure!(
        c.user_data == 0x9e && c.status == OK,
        "the completion posted meanwhile: {:#x} {}",
        c.user_data,
        st(c.status)
    );
    ensure!(
        ring.run(sqe(NOP, 0, 0, 0, 0, 0))?.status == OK,
        "the ring afterwards"
    );
    Ok(
        "read-only, PROT_NONE and back allowed (the engine completed meanwhile); one page: EINVAL"
            .into(),
    )
}

fn munmap_partial(env: &Env) -> Result<String, String> {
    let dev = open(env)?;
    let fd = fd_of(&dev);
    let ring = Ring::map(fd)?;
    let owner = ring
        .u64_at(offset_of!(warpq_ring_header, owner_id))
        .load(Ordering::Relaxed);
    for (what, off, len) in [
        ("first page", 0, PAGE),
        ("a middle page", 3 * PAGE, PAGE),
        ("last page", WARPQ_RING_SIZE - PAGE, PAGE),
        ("1 byte", PAGE, 1),
    ] {
        // SAFETY: tries to unmap part of our ring mapping; expected to fail.
        let r = unsafe { libc::munmap(ring.map.ptr.add(off).cast(), len) };
        want_err(
            &format!("munmap of the {what}"),
            if r == 0 { Ok(()) } else { Err(errno()) },
            libc::EINVAL,
        )?;
    }
    ensure!(
        ring.run(sqe(NOP, 0, 0, 0, 0, 0))?.status == OK,
        "the ring after the refusals"
    );
    drop(ring);
    let again = Ring::map(fd)?;
    let owner2 = again
        .u64_at(offset_of!(warpq_ring_header, owner_id))
        .load(Ordering::Relaxed);
    ensure!(
        owner2 == owner,
        "a new mapping shows owner {owner2}, not {owner}"
    );
    ensure!(
        again.run(sqe(NOP, 0, 0, 0, 0, 0))?.status == OK,
        "the new mapping"
    );
    Ok("partial munmaps refused with EINVAL; the whole unmapped; a new mapping shows the same queue".into())
}

fn madvise(addr: u64, len: usize, advice: i32) -> Result<(), i32> {
    // SAFETY: advice on our ring mapping; the ring's pages belong to the
    // kernel, so discarding our PTEs loses nothing.
    if unsafe { libc::madvise(addr as usize as *mut libc::c_void, len, advice) } == 0 {
        Ok(())
    } else {
        Err(errno())
    }
}

fn madvise_ring(env: &Env) -> Result<String, String> {
    let dev = open(env)?;
    let ring = Ring::map(fd_of(&dev))?;
    ring.run_batch(&[sqe(NOP, 0, 0, 0, 0, 0); 3])?;
    ring.settle()?;
    let before = (
        ring.get(SQ_HEAD),
        ring.get(SQ_TAIL),
        ring.get(CQ_HEAD),
        ring.get(CQ_TAIL),
    );
    let (b, n) = (ring.base(), WARPQ_RING_SIZE);
    want_ok("MADV_DONTNEED", madvise(b, n, libc::MADV_DONTNEED))?;
    let after = (
        ring.get(SQ_HEAD),
        ring.get(SQ_TAIL),
        ring.get(CQ_HEAD),
        ring.get(CQ_TAIL),
    );
    ensure!(
        before == after && ring.get(0) == WARPQ_RING_MAGIC,
        "after MADV_DONTNEED the indices went {before:?} -> {after:?}"
    );
    want_err("MADV_FREE", madvise(b, n, libc::MADV_FREE), libc::EINVAL)?;
    want_err(
        "MADV_WIPEONFORK",
        madvise(b, n, libc::MADV_WIPEONFORK),
        libc::EINVAL,
    )?;
    want_err(
        "MADV_DONTFORK of one page",
        madvise(b, PAGE, libc::MADV_DONTFORK),
        libc::EINVAL,
    )?;
    want_ok("MADV_DONTFORK", madvise(b, n, libc::MADV_DONTFORK))?;
    want_ok("MADV_DOFORK", madvise(b, n, libc::MADV_DOFORK))?;
    // SAFETY: locks and unlocks our ring mapping.
    let locked = unsafe {
        (
            libc::mlock(ring.map.ptr.cast(), n),
            libc::munlock(ring.map.ptr.cast(), n),
        )
    };
    ensure!(
        locked == (0, 0),
        "mlock/munlock: {locked:?} ({})",
        ename(errno())
    );
    ensure!(
        ring.run(sqe(NOP, 0, 0, 0, 0, 0))?.status == OK,
        "the ring afterwards"
    );
    Ok("DONTNEED kept the ring's contents; FREE, WIPEONFORK, partial DONTFORK: EINVAL; DONTFORK, mlock: 0".into())
}

fn mmap_many(env: &Env) -> Result<String, String> {
    let dev = open(env)?;
    let rings = (0..6)
        .map(|_| Ring::map(fd_of(&dev)))
        .collect::<Result<Vec<_>, _>>()?;
    let owner = |r: &Ring| {
        r.u64_at(offset_of!(warpq_ring_header, owner_id))
            .load(Ordering::Relaxed)
    };
    ensure!(
        rings.iter().all(|r| owner(r) == owner(&rings[0])),
        "owner ids differ between the mappings"
    );
    rings[0]
        .u64_at(offset_of!(warpq_ring_header, pad0))
        .store(0x1234_5678, Ordering::Relaxed);
    ensure!(
        rings[5]
            .u64_at(offset_of!(warpq_ring_header, pad0))
            .load(Ordering::Relaxed)
            == 0x1234_5678,
        "a write through one mapping is not seen through another"
    );
    rings[5].push(&sqe(NOP, 0x66, 0, 0, 0, 0))?;
    rings[5].kick()?;
    let c = rings[2].reap(Duration::from_secs(10))?;
    ensure!(
        c.user_data == 0x66 && c.status == OK,
        "pushed through one, reaped through another: {:#x} {}",
        c.user_data,
        st(c.status)
    );
    Ok("6 mappings of one queue: same owner id, shared contents, work through any".into())
}

fn mmap_readonly_fd(env: &Env) -> Result<String, String> {
    let path = std::ffi::CString::new(env.path.clone()).map_err(|e| e.to_string())?;
    // SAFETY: a NUL-terminated path; returns a new descriptor or -1.
    let raw = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY) };
    ensure!(raw >= 0, "open O_RDONLY: {}", ename(errno()));
    // SAFETY: a descriptor we just opened and own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    want_err(
        "a writable mapping",
        mmap_dev(
            fd.as_raw_fd(),
            WARPQ_RING_SIZE,
            PROT_RW,
            libc::MAP_SHARED,
            0,
        )
        .map(|_| ()),
        libc::EACCES,
    )?;
    let m = want_ok(
        "a read-only mapping",
        mmap_dev(
            fd.as_raw_fd(),
            WARPQ_RING_SIZE,
            libc::PROT_READ,
            libc::MAP_SHARED,
            0,
        ),
    )?;
    // SAFETY: the header page of our read-only mapping.
    let magic = unsafe { std::ptr::read_volatile(m.ptr.cast::<u32>()) };
    ensure!(
        magic == WARPQ_RING_MAGIC,
        "the read-only mapping shows magic {magic:#x}"
    );
    want_err(
        "mprotect to writable",
        mprotect(m.addr(0), WARPQ_RING_SIZE, PROT_RW),
        libc::EACCES,
    )?;
    Ok(
        "O_RDONLY: writable mapping EACCES (mmap and mprotect); the read-only one shows the header"
            .into(),
    )
}

// ---- the cases: WAIT ---------------------------------------------------------

fn wait_bogus(env: &Env) -> Result<String, String> {
    let dev = open(env)?;
    let fd = fd_of(&dev);
    let ring = Ring::map(fd)?;
    let timed = |min_ready: u32, timeout: i64| {
        let t = Instant::now();
        (wait(fd, min_ready, timeout), t.elapsed())
    };
    let quick = Duration::from_millis(500);
    for (what, min_ready, timeout) in [
        ("timeout 0", 1, 0),
        ("min_ready 0, timeout i64::MIN", 0, i64::MIN),
        ("min_ready 0, timeout i64::MAX", 0, i64::MAX),
    ] {
        let (r, took) = timed(min_ready, timeout);
        ensure!(
            r == Ok(0) && took < quick,
            "WAIT {what}: {} after {took:?}",
            show(&r)
        );
    }
    let (r, took) = timed(u32::MAX, 50_000_000);
    ensure!(
        r == Ok(0) && took >= Duration::from_millis(40) && took < Duration::from_secs(2),
        "WAIT min_ready 2^32-1 for 50 ms: {} after {took:?}",
        show(&r)
    );
    for _ in 0..3 {
        ring.push(&sqe(NOP, 0, 0, 0, 0, 0))?;
    }
    ring.kick()?;
    let (r, took) = timed(2, 5_000_000_000);
    ensure!(
        matches!(r, Ok(2..=3)) && took < Duration::from_secs(5),
        "WAIT for 2 of 3 NOPs: {} after {took:?}",
        show(&r)
    );
    let (r, _) = timed(u32::MAX, 50_000_000);
    ensure!(
        r == Ok(3),
        "WAIT min_ready 2^32-1 with 3 ready: {}",
        show(&r)
    );
    let mut w = warpq_wait {
        size: 24,
        rsvd: 0xffff_ffff,
        min_ready: 1,
        ready: 0,
        timeout_ns: 0,
    };
    let r = ioctl_on(fd, WARPQ_IOC_WAIT, &mut w);
    ensure!(
        r.is_ok() && w.ready == 3,
        "WAIT with rsvd 0xffffffff: {} ready {}",
        show(&r),
        w.ready
    );
    Ok("timeouts 0, i64::MIN, i64::MAX (nothing wanted) returned at once; min_ready 2^32-1 waited its 50 ms; ready counts right".into())
}

extern "C" fn on_signal(_: libc::c_int) {}

fn wait_signal(env: &Env) -> Result<String, String> {
    use std::os::unix::thread::JoinHandleExt;
    let dev = open(env)?;
    let fd = fd_of(&dev);
    // SAFETY: a zeroed sigaction is valid; the handler does nothing.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
    sa.sa_flags = 0;
    // SAFETY: installs a handler for SIGUSR1 in this (forked, single-case) process.
    ensure!(
        unsafe { libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()) } == 0,
        "sigaction: {}",
        ename(errno())
    );
    let finished = std::sync::Arc::new(AtomicBool::new(false));
    let flag = finished.clone();
    let waiter = std::thread::spawn(move || {
        let t = Instant::now();
        let r = wait(fd, u32::MAX, -1);
        flag.store(true, Ordering::Release);
        (r, t.elapsed())
    });
    sleep_ms(300);
    ensure!(
        !finished.load(Ordering::Acquire),
        "WAIT with no timeout returned by itself"
    );
    let t = Instant::now();
    while !finished.load(Ordering::Acquire) {
        ensure!(
            t.elapsed() < Duration::from_secs(5),
            "WAIT did not return within 5 s of SIGUSR1"
        );
        // SAFETY: the waiter thread is alive (it has not finished).
        unsafe { libc::pthread_kill(waiter.as_pthread_t(), libc::SIGUSR1) };
        sleep_ms(50);
    }
    let (r, took) = waiter
        .join()
        .map_err(|_| "the waiter panicked".to_string())?;
    want_err("WAIT interrupted by SIGUSR1", r, libc::EINTR)?;
    Ok(format!("blocked {took:.1?}, then EINTR on SIGUSR1"))
}

// ---- the cases: file descriptors ---------------------------------------------

fn fd_closed(env: &Env) -> Result<String, String> {
    let dev = open(env)?;
    // SAFETY: duplicates our descriptor; the copy is closed just below.
    let dup = unsafe { libc::dup(fd_of(&dev)) };
    ensure!(dup >= 0, "dup: {}", ename(errno()));
    // SAFETY: closes the copy we own.
    unsafe { libc::close(dup) };
    for fd in [dup, -1] {
        for (name, req, _) in IOCTLS {
            let mut buf = [0u64; 64];
            buf[0] = 512;
            want_err(
                &format!("{name} on fd {fd}"),
                ioctl_raw(fd, req, buf.as_mut_ptr() as u64),
                libc::EBADF,
            )?;
        }
        want_err(
            &format!("mmap of fd {fd}"),
            mmap_dev(fd, WARPQ_RING_SIZE, PROT_RW, libc::MAP_SHARED, 0).map(|_| ()),
            libc::EBADF,
        )?;
    }
    Ok("7 ioctls and mmap on a closed descriptor and on -1: EBADF".into())
}

fn fd_dup(env: &Env) -> Result<String, String> {
    let path = std::ffi::CString::new(env.path.clone()).map_err(|e| e.to_string())?;
    // SAFETY: a NUL-terminated path; returns a new descriptor or -1.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR) };
    ensure!(fd >= 0, "open: {}", ename(errno()));
    // SAFETY: duplicates the descriptor we own.
    let fd2 = unsafe { libc::dup(fd) };
    ensure!(fd2 >= 0, "dup: {}", ename(errno()));
    // SAFETY: both descriptors are ours; each is closed once (fd below).
    let _own2 = unsafe { OwnedFd::from_raw_fd(fd2) };
    let (r1, r2) = (Ring::map(fd)?, Ring::map(fd2)?);
    let owner = |r: &Ring| {
        r.u64_at(offset_of!(warpq_ring_header, owner_id))
            .load(Ordering::Relaxed)
    };
    ensure!(owner(&r1) == owner(&r2), "the dup shows another queue");
    let buf = Anon::new(4 * PAGE);
    let h = want_ok(
        "REGISTER through the original",
        register(fd, buf.addr(0), buf.len() as u64, RW),
    )?;
    let c = r2.run(sqe(FILL, 0, 0, buf.addr(0), 64, 0x31))?;
    ensure!(
        c.status == OK,
        "a FILL through the dup's ring: {}",
        st(c.status)
    );
    want_ok("UNREGISTER through the dup", unregister(fd2, h))?;
    // SAFETY: closes the original, which we own.
    unsafe { libc::close(fd) };
    drop(r1);
    let h2 = want_ok(
        "REGISTER through the dup after closing the original",
        register(fd2, buf.addr(0), buf.len() as u64, RW),
    )?;
    let c = r2.run(sqe(FILL, 0, 0, buf.addr(0), 64, 0x32))?;
    ensure!(
        c.status == OK && buf.bytes()[0] == 0x32,
        "a FILL through the dup after the close: {}",
        st(c.status)
    );
    want_ok("UNREGISTER", unregister(fd2, h2))?;
    Ok("one queue through both descriptors; the dup works after the original is closed".into())
}

/// The receiving side of `fd-scm-rights`; returns the step that failed.
fn scm_receiver(sock: i32, owner: u64, buf: &Anon, owner_handle: u64) -> Result<(), &'static str> {
    let fd = recv_fd(sock).ok_or("no descriptor received")?;
    let ring = Ring::map(fd).map_err(|_| "mapping the received descriptor failed")?;
    let mine = ring
        .u64_at(offset_of!(warpq_ring_header, owner_id))
        .load(Ordering::Relaxed);
    if mine == owner || mine == 0 {
        return Err("the receiver sees the owner's queue");
    }
    let rows = [
        (
            "FILL at the owner's buffer",
            sqe(FILL, 0, 0, buf.addr(0), 64, 0x33),
            UNREG,
        ),
        (
            "CRC32C of the owner's buffer",
            sqe(CRC, 0, buf.addr(0), 0, 64, 0),
            UNREG,
        ),
        (
            "COPY out of the owner's buffer",
            sqe(COPY, 0, buf.addr(0), buf.addr(PAGE), 64, 0),
            UNREG,
        ),
    ];
    check_rows(&ring, &rows).map_err(|_| "the receiver reached the owner's buffer")?;
    if unregister(fd, owner_handle) != Err(libc::ENOENT) {
        return Err("UNREGISTER of the owner's handle did not give ENOENT");
    }
    // Its own copy of the same addresses (it is a fork) is its own business.
    let h = register(fd, buf.addr(0), buf.len() as u64, RW)
        .map_err(|_| "registering its own copy failed")?;
    let c = ring
        .run(sqe(FILL, 0, 0, buf.addr(0), 64, 0x44))
        .map_err(|_| "its own FILL did not complete")?;
    if c.status != OK || buf.bytes()[0] != 0x44 {
        return Err("its own FILL failed");
    }
    unregister(fd, h).map_err(|_| "UNREGISTER of its own copy failed")?;
    Ok(())
}

fn fd_scm_rights(env: &Env) -> Result<String, String> {
    let (dev, ring, buf, h) = setup(env, 4)?;
    let fd = fd_of(&dev);
    let c = ring.run(sqe(FILL, 0, 0, buf.addr(0), 64, 0x22))?;
    ensure!(c.status == OK, "the owner's FILL: {}", st(c.status));
    let owner = ring
        .u64_at(offset_of!(warpq_ring_header, owner_id))
        .load(Ordering::Relaxed);
    let mut sv = [0; 2];
    // SAFETY: socketpair writes two descriptors into `sv`.
    ensure!(
        unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, sv.as_mut_ptr()) } == 0,
        "socketpair: {}",
        ename(errno())
    );
    let (result_r, result_w) = {
        let mut p = [0; 2];
        // SAFETY: pipe writes two descriptors into `p`.
        ensure!(
            unsafe { libc::pipe(p.as_mut_ptr()) } == 0,
            "pipe: {}",
            ename(errno())
        );
        (p[0], p[1])
    };
    // SAFETY: the child only uses the received descriptor and its own memory, and leaves with _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: closing our copies of the owner's descriptor and the
        // owner's ends, so the received descriptor is the only way in.
        unsafe {
            libc::close(fd);
            libc::close(sv[0]);
            libc::close(result_r);
        }
        let msg = match scm_receiver(sv[1], owner, &buf, h) {
            Ok(()) => "ok".to_string(),
            Err(e) => e.to_string(),
        };
        // SAFETY: writes our result to the pipe and leaves the child.
        unsafe {
            libc::write(result_w, msg.as_ptr().cast(), msg.len());
            libc::_exit(0);
        }
    }
    // SAFETY: closing our copies of the receiver's ends.
    unsafe {
        libc::close(sv[1]);
        libc::close(result_w);
    }
    ensure!(pid > 0, "fork failed");
    let sent = send_fd(sv[0], fd);
    let status = wait_child(pid, Duration::from_secs(60));
    let mut out = [0u8; 256];
    // SAFETY: reads into our buffer; the writer has exited.
    let n = unsafe { libc::read(result_r, out.as_mut_ptr().cast(), out.len()) };
    // SAFETY: our descriptors.
    unsafe {
        libc::close(sv[0]);
        libc::close(result_r);
    }
    ensure!(sent, "sendmsg SCM_RIGHTS failed");
    let said = String::from_utf8_lossy(&out[..n.max(0) as usize]).to_string();
    ensure!(
        status == Some(0) && said == "ok",
        "the receiver: {said:?} (wait status {status:?})"
    );
    ensure!(
        buf.bytes()[..64].iter().all(|&b| b == 0x22) && buf.bytes()[64..].iter().all(|&b| b == 0),
        "the owner's buffer changed"
    );
    want_ok("the owner's UNREGISTER", unregister(fd, h))?;
    Ok("the receiver got its own queue; FILL/CRC32C/COPY at the owner's buffer: FAULT_UNREGISTERED; its UNREGISTER of the owner's handle: ENOENT; the owner's buffer unchanged".into())
}

// ---- the cases: SUBMIT -------------------------------------------------------

fn submit_bad_ptr(env: &Env) -> Result<String, String> {
    let dev = open(env)?;
    let fd = fd_of(&dev);
    let ring = Ring::map(fd)?;
    let none = Anon::new(PAGE);
    want_ok("mprotect", mprotect(none.addr(0), PAGE, libc::PROT_NONE))?;
    for (what, at) in [
        ("null", 0),
        ("a kernel address", KERNEL_ADDR),
        ("a non-canonical address", NONCANONICAL),
        ("a PROT_NONE page", none.addr(0)),
        ("2^64 - 64", u64::MAX - 63),
    ] {
        want_err(
            &format!("1 entry at {what}"),
            submit(fd, at, 1),
            libc::EFAULT,
        )?;
    }
    let r = submit(fd, 0, 0);
    ensure!(r == Ok(0), "0 entries at null: {}", show(&r));
    ensure!(
        ring.get(SQ_TAIL) == 0,
        "{} entries queued by failed SUBMITs",
        ring.get(SQ_TAIL)
    );
    ring.stays_quiet(100)?;
    Ok(
        "bad entry pointers: EFAULT, nothing queued; 0 entries at null: success, 0 submitted"
            .into(),
    )
}

fn submit_partial_fault(env: &Env) -> Result<String, String> {
    let dev = open(env)?;
    let fd = fd_of(&dev);
    let ring = Ring::map(fd)?;
    let two = Anon::new(2 * PAGE);
    want_ok("mprotect", mprotect(two.addr(PAGE), PAGE, libc::PROT_NONE))?;
    let first = PAGE - 32 * 64;
    for i in 0..32 {
        let e = sqe_words(&sqe(NOP, i + 1, 0, 0, 0, 0));
        // SAFETY: entry i lies in the first (read/write) page of `two`.
        unsafe {
            std::ptr::write_unaligned(two.ptr().add(first + i as usize * 64).cast::<[u64; 8]>(), e)
        };
    }
    let r = submit(fd, two.addr(first), 40);
    let queued = ring.get(SQ_TAIL);
    ring.kick()?;
    let mut completed = 0;
    while completed < queued {
        ring.reap(Duration::from_secs(10))?;
        completed += 1;
    }
    match r {
        Err(libc::EFAULT) if queued == 0 => Ok("EFAULT, nothing queued".into()),
        Ok(32) if queued == 32 => Ok("32 submitted, the 32 completed".into()),
        _ => Err(format!(
            "{} with {queued} entries queued (sq_tail moved) and completed afterwards: the caller is told the call failed \
             (and is not told how many went in) while {queued} commands run",
            show(&r)
        )),
    }
}

fn submit_concurrent(env: &Env) -> Result<String, String> {
    const THREADS: u64 = 4;
    const BATCHES: u64 = 50;
    const PER: u64 = 8;
    let total = THREADS * BATCHES * PER;
    let dev = open(env)?;
    let fd = fd_of(&dev);
    let ring = Ring::map(fd)?;
    let failed = std::sync::Mutex::new(None::<String>);
    let mut seen = vec![false; total as usize];
    let mut partial = AtomicUsize::new(0);
    std::thread::scope(|s| -> Result<(), String> {
        for t in 0..THREADS {
            let (failed, partial) = (&failed, &partial);
            s.spawn(move || {
                for b in 0..BATCHES {
                    let batch: Vec<_> = (0..PER)
                        .map(|k| sqe(NOP, (t * BATCHES + b) * PER + k + 1, 0, 0, 0, 0))
                        .collect();
                    let mut done = 0;
                    let start = Instant::now();
                    while done < batch.len() {
                        if start.elapsed() > Duration::from_secs(30) {
                            *failed.lock().unwrap() =
                                Some("a SUBMIT made no progress for 30 s".into());
                            return;
                        }
                        match submit(
                            fd,
                            batch[done..].as_ptr() as u64,
                            (batch.len() - done) as u32,
                        ) {
                            Ok(n) => {
                                if (n as usize) < batch.len() - done {
                                    partial.fetch_add(1, Ordering::Relaxed);
                                    std::thread::yield_now();
                                }
                                done += n as usize;
                            }
                            Err(e) => {
                                *failed.lock().unwrap() = Some(format!("SUBMIT: {}", ename(e)));
                                return;
                            }
                        }
                    }
                }
            });
        }
        for _ in 0..total {
            let c = ring.reap(Duration::from_secs(30))?;
            let i = c.user_data.wrapping_sub(1) as usize;
            ensure!(
                c.status == OK && i < seen.len() && !seen[i],
                "completion {:#x}: {} (seen before: {})",
                c.user_data,
                st(c.status),
                seen.get(i).copied().unwrap_or(false)
            );
            seen[i] = true;
        }
        Ok(())
    })?;
    if let Some(e) = failed.into_inner().unwrap() {
        return Err(e);
    }
    ring.stays_quiet(100)?;
    Ok(format!(
        "{total} NOPs from {THREADS} threads completed exactly once ({} short SUBMITs retried)",
        partial.get_mut()
    ))
}

fn submit_huge_count(env: &Env) -> Result<String, String> {
    let dev = open(env)?;
    let fd = fd_of(&dev);
    let ring = Ring::map(fd)?;
    let n = 1024;
    let mem = Anon::new(n * 64 + PAGE);
    for i in 0..n {
        let e = sqe_words(&sqe(NOP, i as u64 + 1, 0, 0, 0, 0));
        // SAFETY: entry i lies within the first n * 64 bytes of `mem`.
        unsafe { std::ptr::write_unaligned(mem.ptr().add(i * 64).cast::<[u64; 8]>(), e) };
    }
    want_ok(
        "mprotect",
        mprotect(mem.addr(n * 64), PAGE, libc::PROT_NONE),
    )?;
    let r = submit(fd, mem.addr(0), u32::MAX);
    let submitted = match r {
        Ok(k) if (WARPQ_SQ_ENTRIES..=WARPQ_SQ_ENTRIES + WARPQ_CQ_ENTRIES).contains(&k) => k,
        other => return Err(format!("SUBMIT of 2^32-1 entries: {}", show(&other))),
    };
    ring.kick()?;
    for i in 0..submitted {
        let c = ring.reap(Duration::from_secs(10))?;
        ensure!(
            c.user_data == u64::from(i) + 1 && c.status == OK,
            "completion {i}: {:#x} {}",
            c.user_data,
            st(c.status)
        );
    }
    ring.stays_quiet(100)?;
    Ok(format!(
        "{submitted} submitted (as many as fit), exactly those completed"
    ))
}

// ---- running the table -------------------------------------------------------

/// How a case's process ended (`None`: still running when we gave up).
fn wait_child(pid: i32, limit: Duration) -> Option<i32> {
    let t = Instant::now();
    loop {
        let mut status = 0;
        // SAFETY: polls our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return Some(status);
        }
        if r < 0 || t.elapsed() > limit {
            return None;
        }
        sleep_ms(10);
    }
}

fn describe_status(status: i32) -> String {
    if libc::WIFSIGNALED(status) {
        format!("killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("exit status {}", libc::WEXITSTATUS(status))
    }
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// Runs one case in a child process with a time limit.
fn run_isolated(env: &Env, case: &Case) -> Result<String, String> {
    use std::io::Write;
    let mut p = [0; 2];
    // SAFETY: pipe writes two descriptors into `p`.
    if unsafe { libc::pipe(p.as_mut_ptr()) } != 0 {
        return Err(format!("pipe: {}", ename(errno())));
    }
    let _ = std::io::stdout().flush();
    // SAFETY: the parent is single-threaded; the child runs the case and
    // leaves with _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: our copy of the read end.
        unsafe { libc::close(p[0]) };
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (case.run)(env)));
        let msg = match r {
            Ok(Ok(m)) => format!("o{m}"),
            Ok(Err(e)) => format!("f{e}"),
            Err(panic) => format!("fpanicked: {}", panic_text(&*panic)),
        }
        .replace('\n', " ");
        // SAFETY: writes our message to the pipe, then leaves the child
        // without running the parent's exit handlers.
        unsafe {
            libc::write(p[1], msg.as_ptr().cast(), msg.len());
            libc::_exit(0);
        }
    }
    // SAFETY: our copy of the write end.
    unsafe { libc::close(p[1]) };
    if pid < 0 {
        return Err(format!("fork: {}", ename(errno())));
    }
    let mut out = Vec::new();
    let mut eof = false;
    let t = Instant::now();
    let status = loop {
        if !eof {
            let mut pfd = libc::pollfd {
                fd: p[0],
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one pollfd of ours.
            if unsafe { libc::poll(&mut pfd, 1, 50) } > 0 {
                let mut chunk = [0u8; 4096];
                // SAFETY: reads into our buffer.
                let n = unsafe { libc::read(p[0], chunk.as_mut_ptr().cast(), chunk.len()) };
                if n > 0 {
                    out.extend_from_slice(&chunk[..n as usize]);
                } else {
                    eof = true;
                }
            }
        } else {
            sleep_ms(20);
        }
        let mut wstatus = 0;
        // SAFETY: polls our own child.
        if unsafe { libc::waitpid(pid, &mut wstatus, libc::WNOHANG) } == pid {
            break Some(wstatus);
        }
        if t.elapsed() > CASE_LIMIT {
            // SAFETY: our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            break wait_child(pid, Duration::from_secs(10)).map(|_| -1);
        }
    };
    // Whatever the child wrote before it exited.
    loop {
        let mut pfd = libc::pollfd {
            fd: p[0],
            events: libc::POLLIN,
            revents: 0,
        };
        let mut chunk = [0u8; 4096];
        // SAFETY: one pollfd of ours; reads into our buffer.
        let n = unsafe {
            if libc::poll(&mut pfd, 1, 0) <= 0 {
                break;
            }
            libc::read(p[0], chunk.as_mut_ptr().cast(), chunk.len())
        };
        if n <= 0 {
            break;
        }
        out.extend_from_slice(&chunk[..n as usize]);
    }
    // SAFETY: our read end.
    unsafe { libc::close(p[0]) };
    let text = String::from_utf8_lossy(&out).to_string();
    match (status, text.chars().next()) {
        (Some(-1), _) => Err(format!("no result within {CASE_LIMIT:?}: the case hung and was killed")),
        (None, _) => Err(format!("no result within {CASE_LIMIT:?}, and the process could not be killed (stuck in the kernel)")),
        (_, Some('o')) => Ok(text[1..].to_string()),
        (_, Some('f')) => Err(text[1..].to_string()),
        (Some(wstatus), _) => Err(format!("the case's process ended without a result ({})", describe_status(wstatus))),
    }
}

/// Waits up to `limit` for the system's outstanding pins to return to `want`.
fn pins_settle(want: i128, limit: Duration) -> Result<i128, String> {
    let t = Instant::now();
    loop {
        let now = pins_now()?;
        if now == want || t.elapsed() > limit {
            return Ok(now);
        }
        sleep_ms(50);
    }
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--list") {
        for c in CASES {
            println!(
                "{}\n    does:   {}\n    expect: {}",
                c.name, c.does, c.expect
            );
        }
        return ExitCode::SUCCESS;
    }
    let path = if args.first().is_some_and(|a| a.starts_with('/')) {
        args.remove(0)
    } else {
        "/dev/warpq0".into()
    };
    let unknown: Vec<&String> = args
        .iter()
        .filter(|a| !CASES.iter().any(|c| c.name == a.as_str()))
        .collect();
    if !unknown.is_empty() {
        eprintln!("warpq-adversarial: no such case: {unknown:?} (--list shows them)");
        return ExitCode::from(2);
    }
    let info = match Device::open(&path).and_then(|d| d.info()) {
        Ok(info) => info,
        Err(e) => {
            println!("FAIL setup: expected {path} to open, got {e}");
            return ExitCode::FAILURE;
        }
    };
    let env = Env { path, info };
    let start = match pins_now() {
        Ok(p) => p,
        Err(e) => {
            println!("FAIL setup: expected the pin counters, got {e}");
            return ExitCode::FAILURE;
        }
    };
    let (mut passed, mut failed) = (0, 0);
    for case in CASES
        .iter()
        .filter(|c| args.is_empty() || args.iter().any(|a| a == c.name))
    {
        let mut verdict = run_isolated(&env, case);
        match pins_settle(start, Duration::from_secs(10)) {
            Ok(now) if now == start => {}
            Ok(now) => {
                let what = verdict.unwrap_or_else(|e| e);
                verdict = Err(format!(
                    "{} pages still pinned after the case ({what})",
                    now - start
                ));
            }
            Err(e) => verdict = Err(e),
        }
        match verdict {
            Ok(msg) => {
                passed += 1;
                println!("ok   {}: {msg}", case.name);
            }
            Err(got) => {
                failed += 1;
                println!("FAIL {}: expected {}, got {got}", case.name, case.expect);
            }
        }
    }
    let pins_ok = match pins_settle(start, Duration::from_secs(10)) {
        Ok(now) if now == start => {
            println!("pins: balanced ({start} outstanding before and after)");
            true
        }
        Ok(now) => {
            println!(
                "FAIL pins: expected {start} outstanding as at the start, got {now} after 10 s"
            );
            false
        }
        Err(e) => {
            println!("FAIL pins: {e}");
            false
        }
    };
    println!(
        "adversarial: {} cases, {passed} passed, {failed} failed",
        passed + failed
    );
    if failed == 0 && pins_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
