// SPDX-License-Identifier: GPL-2.0

//! Delta debugging (ddmin) over a list of operations: the same algorithm
//! as the guest fuzzer's (`stress/src/fuzz/shrink.rs`), which runs each
//! candidate in a child process; here a candidate is a function call.

/// A sublist of `items` (order kept) for which `fails` still holds, found
/// by removing chunks of decreasing size down to single items;
/// `fails(items)` is assumed true.
pub(crate) fn ddmin<T: Clone>(items: Vec<T>, fails: &mut dyn FnMut(&[T]) -> bool) -> Vec<T> {
    let mut cur = items;
    let mut n = 2usize;
    while !cur.is_empty() {
        let chunk = cur.len().div_ceil(n);
        let mut removed = false;
        let mut start = 0;
        while start < cur.len() {
            let end = (start + chunk).min(cur.len());
            let mut cand = cur[..start].to_vec();
            cand.extend_from_slice(&cur[end..]);
            if fails(&cand) {
                cur = cand;
                removed = true;
            } else {
                start = end;
            }
        }
        if removed {
            n = n.saturating_sub(1).max(2);
        } else if chunk == 1 {
            break;
        } else {
            n = (2 * n).min(cur.len());
        }
    }
    cur
}
