//! Shrinking: delta debugging over a list of operations.
//!
//! [`ddmin`] removes chunks (halves, quarters, ... down to single items),
//! keeping every removal after which the list still fails the same way;
//! [`shrink_case`] applies it to a run's operations, then inside each fork
//! and each operation's list of entries. The predicate decides what "the
//! same way" means; the fuzzer runs every candidate in a child process and
//! compares its failure signature (see `run.rs`).

use std::time::Instant;

use super::op::{Case, Op};

/// Stops asking the predicate after the deadline (what was kept stays).
pub struct Budget {
    /// When to stop.
    pub deadline: Instant,
    /// Candidates tried.
    pub tries: u64,
}

impl Budget {
    /// A budget that ends at `deadline`.
    pub fn until(deadline: Instant) -> Budget {
        Budget { deadline, tries: 0 }
    }
    fn left(&self) -> bool {
        Instant::now() < self.deadline
    }
}

/// A sublist of `items` (order kept) for which `fails` still holds, found by
/// removing chunks of decreasing size; `fails(items)` is assumed true.
pub fn ddmin<T: Clone>(items: Vec<T>, budget: &mut Budget, fails: &mut dyn FnMut(&[T]) -> bool) -> Vec<T> {
    let mut cur = items;
    let mut n = 2usize;
    while !cur.is_empty() && budget.left() {
        let chunk = cur.len().div_ceil(n);
        let mut removed = false;
        let mut start = 0;
        while start < cur.len() && budget.left() {
            let end = (start + chunk).min(cur.len());
            let mut cand = cur[..start].to_vec();
            cand.extend_from_slice(&cur[end..]);
            budget.tries += 1;
            if fails(&cand) {
                cur = cand;
                removed = true;
                // The same start now names the next chunk.
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

/// Shrinks `case` (which fails as `fails` says): the operations, then the
/// operations of every fork and the entries of every submission.
pub fn shrink_case(case: &Case, budget: &mut Budget, fails: &mut dyn FnMut(&Case) -> bool) -> Case {
    let tag = case.tag;
    let ops = ddmin(case.ops.clone(), budget, &mut |ops| fails(&Case { tag, ops: ops.to_vec() }));
    let mut best = Case { tag, ops };
    let mut i = 0;
    while i < best.ops.len() && budget.left() {
        let lists = match &best.ops[i] {
            Op::Fork { ops, .. } => Some(ops.len()),
            Op::Submit { sqes, .. } | Op::RingSubmit { sqes, .. } => Some(sqes.len()),
            _ => None,
        };
        if lists.is_some_and(|n| n > 1) {
            best = shrink_nested(best, i, budget, fails);
        }
        i += 1;
    }
    best
}

/// Shrinks the nested list of operation `i`.
fn shrink_nested(case: Case, i: usize, budget: &mut Budget, fails: &mut dyn FnMut(&Case) -> bool) -> Case {
    let with = |case: &Case, op: Op| {
        let mut c = case.clone();
        c.ops[i] = op;
        c
    };
    match case.ops[i].clone() {
        Op::Fork { tag, end, ops } => {
            let kept = ddmin(ops, budget, &mut |k| fails(&with(&case, Op::Fork { tag, end, ops: k.to_vec() })));
            with(&case, Op::Fork { tag, end, ops: kept })
        }
        Op::Submit { file, fd, sqes, at, arg } => {
            let kept =
                ddmin(sqes, budget, &mut |k| fails(&with(&case, Op::Submit { file, fd, sqes: k.to_vec(), at, arg })));
            with(&case, Op::Submit { file, fd, sqes: kept, at, arg })
        }
        Op::RingSubmit { file, fd, sqes, wake, resync, start, tail } => {
            let op = |k: &[super::op::Sqe]| Op::RingSubmit { file, fd, sqes: k.to_vec(), wake, resync, start, tail };
            let kept = ddmin(sqes, budget, &mut |k| fails(&with(&case, op(k))));
            with(&case, op(&kept))
        }
        _ => case,
    }
}

#[cfg(test)]
mod tests {
    use super::super::gen::generate;
    use super::*;
    use std::time::Duration;

    fn budget() -> Budget {
        Budget::until(Instant::now() + Duration::from_secs(60))
    }

    #[test]
    fn ddmin_finds_the_two_items_that_matter() {
        // Fails when 17 comes somewhere before 42 (an order-dependent bug).
        let items: Vec<u32> = (0..300).map(|i| (i * 7919) % 1000).chain([17, 5, 42, 9]).collect();
        let mut fails = |l: &[u32]| {
            let a = l.iter().position(|&x| x == 17);
            let b = l.iter().rposition(|&x| x == 42);
            matches!((a, b), (Some(a), Some(b)) if a < b)
        };
        assert!(fails(&items));
        let mut b = budget();
        let min = ddmin(items, &mut b, &mut fails);
        assert_eq!(min, vec![17, 42]);
        assert!(b.tries < 200, "{} tries", b.tries);
    }

    #[test]
    fn ddmin_keeps_a_list_that_needs_everything() {
        let mut b = budget();
        let min = ddmin(vec![1, 2, 3], &mut b, &mut |l: &[i32]| l.len() == 3);
        assert_eq!(min, vec![1, 2, 3]);
    }

    #[test]
    fn a_planted_failure_shrinks_to_its_operations() {
        // A synthetic failure: a fork whose child has a cpu-verify, after
        // at least three REGISTERs.
        let mut case = generate(3, 300);
        let fork_at = case.ops.iter().position(|o| matches!(o, Op::Fork { .. }));
        let fork_at = fork_at.unwrap_or_else(|| {
            case.ops.insert(150, Op::Fork { tag: 0x8000_0001, end: super::super::op::ChildEnd::Drain, ops: vec![] });
            150
        });
        if let Op::Fork { ops, .. } = &mut case.ops[fork_at] {
            ops.push(Op::CpuVerify { buf: 1 });
        }
        let failing = |c: &Case| {
            let mut regs = 0;
            for o in &c.ops {
                match o {
                    Op::Register { .. } => regs += 1,
                    Op::Fork { ops, .. } if regs >= 3 && ops.iter().any(|k| matches!(k, Op::CpuVerify { .. })) => {
                        return true
                    }
                    _ => {}
                }
            }
            false
        };
        assert!(failing(&case));
        let before = Op::count(&case.ops);
        let mut b = budget();
        let min = shrink_case(&case, &mut b, &mut |c| failing(c));
        assert!(failing(&min));
        assert_eq!(Op::count(&min.ops), 5, "{min:?}");
        assert!(matches!(&min.ops[3], Op::Fork { ops, .. } if ops.len() == 1));
        assert!(before > 300);
    }

    #[test]
    fn the_budget_stops_shrinking() {
        let mut b = Budget::until(Instant::now());
        let min = ddmin((0..100).collect::<Vec<_>>(), &mut b, &mut |_| true);
        assert_eq!(min.len(), 100);
        assert_eq!(b.tries, 0);
    }
}
