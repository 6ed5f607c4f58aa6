//! `sys.rs` must agree with `driver/uapi/warpq.h`: compile a C program
//! against the header that prints every size, offset and ioctl number, and
//! compare with the Rust mirror.

// The ioctl numbers are `c_ulong`: `u64` here, `u32` on 32-bit targets.
#![allow(clippy::unnecessary_cast)]

use std::mem::{offset_of, size_of};
use std::process::Command;
use warpq::sys::*;

#[test]
fn rust_mirror_matches_the_c_header() {
    let dir = std::env::temp_dir().join(format!("warpq-uapi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("layout.c");
    let exe = dir.join("layout");
    std::fs::write(
        &src,
        r#"
#include <stdio.h>
#include <stddef.h>
#include "warpq.h"
#define P(name, val) printf("%s=%llu\n", name, (unsigned long long)(val))
int main(void) {
    P("ring_size", WARPQ_RING_SIZE); P("sq_offset", WARPQ_RING_SQ_OFFSET); P("cq_offset", WARPQ_RING_CQ_OFFSET);
    P("hdr_size", sizeof(struct warpq_ring_header));
    P("hdr.owner_id", offsetof(struct warpq_ring_header, owner_id));
    P("hdr.sq_head", offsetof(struct warpq_ring_header, sq_head));
    P("hdr.sq_tail", offsetof(struct warpq_ring_header, sq_tail));
    P("hdr.cq_head", offsetof(struct warpq_ring_header, cq_head));
    P("hdr.cq_tail", offsetof(struct warpq_ring_header, cq_tail));
    P("hdr.flags", offsetof(struct warpq_ring_header, flags));
    P("hdr.sq_invalid", offsetof(struct warpq_ring_header, sq_invalid));
    P("info_size", sizeof(struct warpq_info));
    P("info.max_region_bytes", offsetof(struct warpq_info, max_region_bytes));
    P("info.dma_translation", offsetof(struct warpq_info, dma_translation));
    P("ioc_info", WARPQ_IOC_INFO); P("ioc_register", WARPQ_IOC_REGISTER); P("ioc_unregister", WARPQ_IOC_UNREGISTER);
    P("ioc_wait", WARPQ_IOC_WAIT); P("ioc_wake", WARPQ_IOC_WAKE); P("ioc_stats", WARPQ_IOC_STATS); P("ioc_submit", WARPQ_IOC_SUBMIT);
    P("sqe_size", sizeof(struct warpq_sqe)); P("cqe_size", sizeof(struct warpq_cqe));
    P("sqe.user_data", offsetof(struct warpq_sqe, user_data)); P("sqe.value", offsetof(struct warpq_sqe, value));
    P("cqe.status", offsetof(struct warpq_cqe, status)); P("cqe.result", offsetof(struct warpq_cqe, result));
    P("stats_size", sizeof(struct warpq_stats)); P("stats.zaps", offsetof(struct warpq_stats, zaps));
    P("stats.commands_by_status", offsetof(struct warpq_stats, commands_by_status));
    P("stats.hist", offsetof(struct warpq_stats, hist)); P("hist_kinds", WARPQ_HIST_KINDS); P("hist_buckets", WARPQ_HIST_BUCKETS);
    P("hist_paused", WARPQ_HIST_PAUSED);
    P("policy_strict", WARPQ_POLICY_STRICT); P("policy_filtered", WARPQ_POLICY_FILTERED);
    P("wait.timeout_ns", offsetof(struct warpq_wait, timeout_ns)); P("register.handle", offsetof(struct warpq_register, handle));
    return 0;
}
"#,
    )
    .unwrap();
    let header_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../driver/uapi");
    let status = Command::new("cc").arg("-I").arg(header_dir).arg(&src).arg("-o").arg(&exe).status().unwrap();
    assert!(status.success(), "the C header does not compile");
    let out = Command::new(&exe).output().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let c = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{name} missing"))
            .parse()
            .unwrap()
    };
    // Every offset, named `prefix.field` by the C program; one line a struct.
    macro_rules! offsets {
        ($prefix:literal, $ty:ident: $($field:ident),+) => {$(
            let name = concat!($prefix, ".", stringify!($field));
            assert_eq!(c(name), offset_of!($ty, $field) as u64, "{name}");
        )+};
    }
    offsets!("hdr", warpq_ring_header: owner_id, sq_head, sq_tail, cq_head, cq_tail, flags, sq_invalid);
    offsets!("info", warpq_info: max_region_bytes, dma_translation);
    offsets!("sqe", warpq_sqe: user_data, value);
    offsets!("cqe", warpq_cqe: status, result);
    offsets!("stats", warpq_stats: zaps, commands_by_status, hist);
    offsets!("wait", warpq_wait: timeout_ns);
    offsets!("register", warpq_register: handle);
    // Every size and constant, as the C program names it.
    let values = [
        ("ring_size", WARPQ_RING_SIZE as u64),
        ("sq_offset", WARPQ_RING_SQ_OFFSET as u64),
        ("cq_offset", WARPQ_RING_CQ_OFFSET as u64),
        ("hdr_size", size_of::<warpq_ring_header>() as u64),
        ("info_size", size_of::<warpq_info>() as u64),
        ("sqe_size", size_of::<warpq_sqe>() as u64),
        ("cqe_size", size_of::<warpq_cqe>() as u64),
        ("stats_size", size_of::<warpq_stats>() as u64),
        ("ioc_info", WARPQ_IOC_INFO as u64),
        ("ioc_register", WARPQ_IOC_REGISTER as u64),
        ("ioc_unregister", WARPQ_IOC_UNREGISTER as u64),
        ("ioc_wait", WARPQ_IOC_WAIT as u64),
        ("ioc_wake", WARPQ_IOC_WAKE as u64),
        ("ioc_stats", WARPQ_IOC_STATS as u64),
        ("ioc_submit", WARPQ_IOC_SUBMIT as u64),
        ("hist_kinds", WARPQ_HIST_KINDS as u64),
        ("hist_buckets", WARPQ_HIST_BUCKETS as u64),
        ("hist_paused", WARPQ_HIST_PAUSED as u64),
        ("policy_strict", u64::from(WARPQ_POLICY_STRICT)),
        ("policy_filtered", u64::from(WARPQ_POLICY_FILTERED)),
    ];
    for (name, rust) in values {
        assert_eq!(c(name), rust, "{name}");
    }
}
