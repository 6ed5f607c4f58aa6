// SPDX-License-Identifier: GPL-2.0

//! warpq's invalidation protocol core.
//!
//! The driver pins the pages of registered buffers ("regions") and DMA-maps
//! them so a queue engine can execute commands from user space without a
//! system call per command. mmu interval notifiers tell it when the address
//! space changes. This crate owns the protocol that keeps that correct:
//!
//! - [`gate`]: the queue gate between the engine and everything that changes
//!   what the engine may touch (pause, drain, stale, reset);
//! - [`region`]: the region table of one mm context;
//! - [`policy`]: which invalidation events tear a region down;
//! - [`context`]: one mm context, and the directory of contexts by mm;
//! - [`teardown`]: the invalidate callback;
//! - [`overtake`]: commands set aside for a rebuild, and which later ones
//!   may overtake them;
//! - [`rebuild`]: the fault-side rebuild with the collision-retry rule;
//! - [`pool`]: the engine pool's sleep protocol and queue claims;
//! - [`platform`]: what the kernel provides (GUP, DMA, notifier sequences,
//!   sleeping, the zap worker);
//! - [`sync`]: atomics and cells, loom's under `cfg(loom)`.
//!
//! It allocates nothing. The kernel module compiles the module files
//! directly (`#[path = "../notifier/src"] pub mod protocol { ... }`), so
//! this file holds only attributes and module declarations, and the other
//! files refer to each other as `super::...`. `docs/protocol.md` describes
//! the state machines, invariants and loom models; the lock order, `L`'s
//! place in it included, is the table at the top of `driver/queue.rs`.

#![cfg_attr(not(any(test, feature = "std")), no_std)]

pub mod context;
pub mod gate;
pub mod overtake;
pub mod platform;
pub mod policy;
pub mod pool;
pub mod rebuild;
pub mod region;
pub mod sync;
pub mod teardown;
