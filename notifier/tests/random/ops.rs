// SPDX-License-Identifier: GPL-2.0

//! The operations of the random protocol test, and their generation.
//!
//! An operation holds every choice its step makes. Objects are named by
//! picks reduced modulo what exists when the operation is applied (live
//! processes, armed regions, released contexts), so any subsequence of a
//! run is a valid run: that is what shrinking needs. The printed form
//! (`Debug`) is Rust: a failing sequence pastes into a `#[test]` that calls
//! `replay(&[...])` with `use Op::*` and friends in scope.

use warpq_notifier::policy::Event;

use super::common::Rng;

/// An index reduced modulo the number of candidates when applied.
pub(crate) type Pick = u32;

/// A registration's access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Acc {
    R,
    W,
    RW,
}

/// The range an invalidation covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Range {
    /// From `off % len` into an armed region to `extra % 2 pages` past its
    /// end (nothing if the context has no armed region).
    InRegion { region: Pick, off: u64, extra: u64 },
    /// `pages` pages from page `start`.
    Pages { start: u64, pages: u64 },
}

/// One step of the protocol test.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// The register ioctl of `mm`'s context (created at fault time if
    /// needed): `pages` pages from page `page` (misaligned start or short
    /// length when asked), armed and pinned now or left pending.
    Register { mm: Pick, page: u64, misalign: bool, pages: u64, short: bool, access: Acc, arm_now: bool },
    /// The rest of a register ioctl: arm the last pending region, pin.
    Arm { mm: Pick },
    /// The unregister ioctl of an armed (or a pending) region.
    Unregister { mm: Pick, armed: bool, region: Pick },
    /// A fault: rebuild with `collisions` injected sequence collisions and a
    /// transient pin failure when asked, then the ring page is mapped.
    Fault { mm: Pick, collisions: u32, transient: bool },
    /// The kernel invalidates a range of `mm` with `event`; `rolls` decide,
    /// per affected region in turn, whether its pages go away (Unmap, < 40)
    /// or its write right (ProtectionVma, < 30).
    Invalidate { mm: Pick, range: Range, event: Event, blockable: bool, rolls: [u8; 4] },
    /// A command on `mm`'s ring: inside a region of its own context (or of
    /// `other`'s: a fork child using its parent's addresses), or anywhere.
    Submit { mm: Pick, other: Option<Pick>, region: Option<Pick>, off: u64, len: u64, access: Acc, keep_access: bool },
    /// The engine runs `mm`'s ring until it is empty or the gate is shut.
    Engine { mm: Pick },
    /// The zap worker runs for `mm`'s context.
    Zap { mm: Pick },
    /// fork: PROTECTION_PAGE over the parent's whole range; a new mm.
    Fork { mm: Pick },
    /// exit_mmap of a process: RELEASE, the context's release (twice when
    /// `again`: a racing file close).
    Exit { mm: Pick, again: bool },
    /// A released context is reaped (its mm may be reused).
    Reap { slot: Pick },
    /// A new process (reusing a freed mm when `reuse` and one is free).
    NewProcess { reuse: bool },
    /// The policy for what follows.
    SetPolicy { strict: bool },
}

/// The pages of the simulated address space.
pub(crate) const VA_PAGES: u64 = 48;

/// `steps` operations from `seed`, with the weights the test always had.
pub(crate) fn generate(seed: u64, steps: u64) -> Vec<Op> {
    let mut rng = Rng::new(seed);
    let mut ops = Vec::with_capacity(steps as usize * 2);
    for _ in 0..steps {
        let mm = rng.below(1 << 16) as Pick;
        let roll = rng.below(100);
        match roll {
            0..=11 => ops.push(Op::Register {
                mm,
                page: rng.below(VA_PAGES),
                misalign: rng.chance(10),
                pages: 1 + rng.below(4),
                short: rng.chance(10),
                access: access(&mut rng),
                arm_now: rng.chance(80),
            }),
            12..=14 => ops.push(Op::Arm { mm }),
            15..=19 => ops.push(Op::Unregister { mm, armed: rng.chance(80), region: rng.below(1 << 16) as Pick }),
            20..=33 => {
                let collisions = if rng.chance(20) { 1 + rng.below(5) as u32 } else { 0 };
                ops.push(Op::Fault { mm, collisions, transient: rng.chance(5) });
            }
            34..=49 => {
                let range = if rng.chance(70) {
                    Range::InRegion { region: rng.below(1 << 16) as Pick, off: rng.next_u64(), extra: rng.next_u64() }
                } else {
                    Range::Pages { start: rng.below(VA_PAGES), pages: 1 + rng.below(8) }
                };
                let events = [
                    Event::Unmap,
                    Event::Clear,
                    Event::ProtectionVma,
                    Event::ProtectionPage,
                    Event::SoftDirty,
                    Event::Migrate,
                    Event::Exclusive,
                ];
                let event = events[rng.below(events.len() as u64) as usize];
                let blockable = !rng.chance(15);
                let rolls = std::array::from_fn(|_| rng.below(100) as u8);
                ops.push(Op::Invalidate { mm, range, event, blockable, rolls });
            }
            70..=77 => ops.push(Op::Zap { mm }),
            78..=81 => ops.push(Op::Fork { mm }),
            82..=84 => ops.push(Op::Exit { mm, again: rng.chance(50) }),
            85..=87 => ops.push(Op::Reap { slot: rng.below(1 << 16) as Pick }),
            88..=89 => ops.push(Op::NewProcess { reuse: rng.chance(50) }),
            90..=94 => ops.push(Op::SetPolicy { strict: rng.chance(50) }),
            // 50..=69 and 95..=99: up to three commands, then the engine.
            _ => {
                for _ in 0..rng.below(4) {
                    let other = rng.chance(25).then(|| rng.below(1 << 16) as Pick);
                    let inside = rng.chance(85);
                    let region = inside.then(|| rng.below(1 << 16) as Pick);
                    let keep_access = rng.chance(70);
                    ops.push(Op::Submit {
                        mm,
                        other,
                        region,
                        off: rng.next_u64(),
                        len: rng.next_u64(),
                        access: access(&mut rng),
                        keep_access,
                    });
                }
                ops.push(Op::Engine { mm });
            }
        }
    }
    ops
}

fn access(rng: &mut Rng) -> Acc {
    [Acc::R, Acc::W, Acc::RW][rng.below(3) as usize]
}
