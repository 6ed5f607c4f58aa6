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
    P("stats.by_status", offsetof(struct warpq_stats, commands_by_status));
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
    assert_eq!(c("ring_size"), WARPQ_RING_SIZE as u64);
    assert_eq!(c("sq_offset"), WARPQ_RING_SQ_OFFSET as u64);
    assert_eq!(c("cq_offset"), WARPQ_RING_CQ_OFFSET as u64);
    assert_eq!(c("hdr_size"), size_of::<warpq_ring_header>() as u64);
    assert_eq!(c("hdr.owner_id"), offset_of!(warpq_ring_header, owner_id) as u64);
    assert_eq!(c("hdr.sq_head"), offset_of!(warpq_ring_header, sq_head) as u64);
    assert_eq!(c("hdr.sq_tail"), offset_of!(warpq_ring_header, sq_tail) as u64);
    assert_eq!(c("hdr.cq_head"), offset_of!(warpq_ring_header, cq_head) as u64);
    assert_eq!(c("hdr.cq_tail"), offset_of!(warpq_ring_header, cq_tail) as u64);
    assert_eq!(c("hdr.flags"), offset_of!(warpq_ring_header, flags) as u64);
    assert_eq!(c("hdr.sq_invalid"), offset_of!(warpq_ring_header, sq_invalid) as u64);
    assert_eq!(c("info_size"), size_of::<warpq_info>() as u64);
    assert_eq!(c("info.max_region_bytes"), offset_of!(warpq_info, max_region_bytes) as u64);
    assert_eq!(c("info.dma_translation"), offset_of!(warpq_info, dma_translation) as u64);
    assert_eq!(c("ioc_info"), WARPQ_IOC_INFO as u64);
    assert_eq!(c("ioc_register"), WARPQ_IOC_REGISTER as u64);
    assert_eq!(c("ioc_unregister"), WARPQ_IOC_UNREGISTER as u64);
    assert_eq!(c("ioc_wait"), WARPQ_IOC_WAIT as u64);
    assert_eq!(c("ioc_wake"), WARPQ_IOC_WAKE as u64);
    assert_eq!(c("ioc_stats"), WARPQ_IOC_STATS as u64);
    assert_eq!(c("ioc_submit"), WARPQ_IOC_SUBMIT as u64);
    assert_eq!(c("sqe_size"), size_of::<warpq_sqe>() as u64);
    assert_eq!(c("cqe_size"), size_of::<warpq_cqe>() as u64);
    assert_eq!(c("sqe.user_data"), offset_of!(warpq_sqe, user_data) as u64);
    assert_eq!(c("sqe.value"), offset_of!(warpq_sqe, value) as u64);
    assert_eq!(c("cqe.status"), offset_of!(warpq_cqe, status) as u64);
    assert_eq!(c("cqe.result"), offset_of!(warpq_cqe, result) as u64);
    assert_eq!(c("stats_size"), size_of::<warpq_stats>() as u64);
    assert_eq!(c("stats.zaps"), offset_of!(warpq_stats, zaps) as u64);
    assert_eq!(c("stats.by_status"), offset_of!(warpq_stats, commands_by_status) as u64);
    assert_eq!(c("stats.hist"), offset_of!(warpq_stats, hist) as u64);
    assert_eq!(c("hist_kinds"), WARPQ_HIST_KINDS as u64);
    assert_eq!(c("hist_buckets"), WARPQ_HIST_BUCKETS as u64);
    assert_eq!(c("hist_paused"), WARPQ_HIST_PAUSED as u64);
    assert_eq!(c("policy_strict"), u64::from(WARPQ_POLICY_STRICT));
    assert_eq!(c("policy_filtered"), u64::from(WARPQ_POLICY_FILTERED));
    assert_eq!(c("wait.timeout_ns"), offset_of!(warpq_wait, timeout_ns) as u64);
    assert_eq!(c("register.handle"), offset_of!(warpq_register, handle) as u64);
}
