// SPDX-License-Identifier: GPL-2.0

//! QEMU's edu device as a real DMA engine: COPY commands flagged
//! `WARPQ_SQE_EDU_DMA` move their bytes with the device's own DMA, through
//! the IOMMU, in two transfers per piece (RAM → the device's 4 KiB buffer →
//! RAM). Slow (QEMU completes each transfer 100 ms of virtual time later),
//! but it proves the DMA mappings are what the hardware sees: a missing
//! mapping is a DMAR fault in the guest log.
//!
//! Register layout (QEMU docs/specs/edu.rst): 0x00 identification,
//! 0x80/0x88 DMA source/destination (64 bit), 0x90 count, 0x98 command
//! (bit 0 start, cleared when done; bit 1 direction: 1 = device to RAM).

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use kernel::bindings;

use crate::glue::pci::Bar0;

const REG_ID: usize = 0x00;
const REG_DMA_SRC: usize = 0x80;
const REG_DMA_DST: usize = 0x88;
const REG_DMA_COUNT: usize = 0x90;
const REG_DMA_CMD: usize = 0x98;
const CMD_START: u32 = 1 << 0;
const CMD_TO_RAM: u32 = 1 << 1;

/// Where the device's DMA buffer sits in its own address space, and its size.
const EDU_BUFFER: u64 = 0x40000;
pub(crate) const EDU_BUFFER_BYTES: u64 = 4096;
/// The largest single transfer: QEMU before 9.0 (Debian 12 has 7.2) checks
/// a transfer's end with `<` where it means `<=`, and aborts the whole VM
/// (`hw_error`) on a transfer that ends exactly at the buffer's end, as a
/// 4096-byte one does. The engine cuts COPYs into pieces of at most this.
pub(crate) const EDU_TRANSFER_MAX: u64 = EDU_BUFFER_BYTES / 2;
/// The device clamps DMA addresses to 28 bits.
const EDU_DMA_LIMIT: u64 = 1 << 28;
/// One transfer takes 100 ms of virtual time; stop waiting after this many.
const TRANSFER_TIMEOUT_MS: u32 = 10_000;
const POLL_MS: u32 = 5;
const PAGE_MASK: u64 = !(kernel::page::PAGE_SIZE as u64 - 1);

/// The edu DMA engine of one device: one transfer at a time.
///
/// # A device that stops answering
///
/// A transfer that does not complete within [`TRANSFER_TIMEOUT_MS`], or
/// whose command a drain reset abandons while the transfer is pending, may
/// still be carried out by the device at any later time. The engine stops
/// waiting (so the drain, munmap and close complete), but the device is
/// *stuck*: `busy` stays taken, so no other transfer starts, and the page
/// of RAM the pending transfer reads or writes is recorded. Until the
/// device is idle again, a teardown of a mapping that holds that page puts
/// the mapping in the device's quarantine (`DeviceCore::hold_if_reached`)
/// instead of unmapping and releasing it: the IOVA stays mapped and the
/// pages stay held. [`EduDma::idle_again`] tells when the pending transfer
/// is over (then the quarantine is released); unbind quiesces the device by
/// clearing bus mastering and then releases it. The module parameter
/// `fail_edu_stall` makes transfers never complete, to drive this path.
pub(crate) struct EduDma {
    /// BAR 0 until unbind releases it ([`EduDma::release`]); only touched
    /// by the holder of `busy` (while stuck: the holder of the device's
    /// quarantine lock, see `DeviceCore::recover_edu`).
    bar: UnsafeCell<Option<Bar0>>,
    /// One transfer at a time, and the right to touch `bar`. A flag, not a
    /// lock: a queue's engine waits for it inside its gate and must notice
    /// when a reset abandons its command instead of sleeping behind other
    /// queues' transfers. Held for as long as the device is stuck.
    busy: AtomicBool,
    /// Unbind released BAR 0: no transfer starts any more.
    gone: AtomicBool,
    /// A transfer is pending that nobody waits for (see above).
    stuck: AtomicBool,
    /// The bus address of the RAM page the pending transfer reaches.
    stuck_page: AtomicU64,
}

// SAFETY: `bar` is only accessed by the thread that holds `busy` (acquired
// with Acquire, released with Release), or while stuck under the device's
// quarantine lock, so accesses never overlap; the rest is atomics.
unsafe impl Sync for EduDma {}

/// Why an edu transfer failed.
pub(crate) enum EduError {
    /// A bus address beyond the device's 28 bits (possible without an IOMMU).
    Unreachable,
    /// The transfer did not complete in time, or its command was abandoned
    /// while it was pending: the device is stuck from now on.
    Stuck,
    /// A reset abandoned the command while it waited for the device.
    Abandoned,
    /// The device was unbound, or is stuck with an earlier transfer.
    Gone,
}

impl EduDma {
    pub(crate) fn new(bar: Bar0) -> Self {
        Self {
            bar: UnsafeCell::new(Some(bar)),
            busy: AtomicBool::new(false),
            gone: AtomicBool::new(false),
            stuck: AtomicBool::new(false),
            stuck_page: AtomicU64::new(0),
        }
    }

    /// The identification register (`0x010000ed` for edu 1.0), at probe.
    pub(crate) fn id(&self) -> u32 {
        // SAFETY: probe runs before any queue exists, so nobody holds `busy`
        // and nobody touches `bar` concurrently.
        unsafe { &*self.bar.get() }.as_ref().map_or(0, |bar| bar.read32(REG_ID))
    }

    /// Whether a transfer is pending that nobody waits for.
    pub(crate) fn is_stuck(&self) -> bool {
        self.stuck.load(Ordering::SeqCst)
    }

    /// While stuck: whether a page of `bus_addrs` is the one the pending
    /// transfer reaches.
    pub(crate) fn reaches(&self, bus_addrs: &[u64]) -> bool {
        let page = self.stuck_page.load(Ordering::SeqCst);
        self.is_stuck() && bus_addrs.iter().any(|&a| a & PAGE_MASK == page)
    }

    /// While stuck: whether the pending transfer is over (the stall knob is
    /// off and the device shows no transfer in progress). If so the device
    /// is usable again: `busy` is given back.
    ///
    /// # Safety
    ///
    /// Callers are serialised (the device's quarantine lock), and none runs
    /// after [`EduDma::release`].
    pub(crate) unsafe fn idle_again(&self) -> bool {
        if !self.is_stuck() {
            return true;
        }
        // SAFETY: while stuck nobody else touches `bar` (`busy` is kept, and
        // our callers are serialised).
        let Some(bar) = (unsafe { &*self.bar.get() }).as_ref() else {
            return false;
        };
        if !transfer_done(bar) {
            return false;
        }
        self.stuck.store(false, Ordering::SeqCst);
        self.busy.store(false, Ordering::Release);
        true
    }

    /// Unbind: waits for the transfer in progress (if any) to end or get
    /// stuck, then unmaps and releases BAR 0, so the device can be bound
    /// again while files of this binding are still open. Transfers fail
    /// with [`EduError::Gone`] from now on. A stuck device is left to the
    /// caller, which quiesces it (bus mastering off) before it releases the
    /// quarantine.
    pub(crate) fn release(&self) {
        self.gone.store(true, Ordering::SeqCst);
        while !self.is_stuck() && self.busy.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_err()
        {
            // SAFETY: sleeping is allowed here (unbind runs in process context).
            unsafe { bindings::msleep(POLL_MS) };
        }
        self.busy.store(true, Ordering::SeqCst);
        // SAFETY: we hold `busy` (or the device is stuck and its recovery no
        // longer runs: `gone` is set, see `DeviceCore::recover_edu`), and
        // keep it for good: nobody else touches `bar` again.
        drop(unsafe { &mut *self.bar.get() }.take());
    }

    /// Copies `len` (at most [`EDU_TRANSFER_MAX`]) bytes from bus address
    /// `src` to bus address `dst` through the device's buffer, as one
    /// transfer in and one out. Sleeps. While another transfer holds the
    /// device, or while its own is pending, polls `abandoned` and gives up
    /// if it says so.
    pub(crate) fn copy(
        &self,
        src: u64,
        dst: u64,
        len: u64,
        abandoned: &dyn Fn() -> bool,
    ) -> core::result::Result<(), EduError> {
        if len > EDU_TRANSFER_MAX || src.saturating_add(len) > EDU_DMA_LIMIT || dst.saturating_add(len) > EDU_DMA_LIMIT
        {
            return Err(EduError::Unreachable);
        }
        while self.busy.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
            if self.gone.load(Ordering::Relaxed) || self.is_stuck() {
                return Err(EduError::Gone);
            }
            if abandoned() {
                return Err(EduError::Abandoned);
            }
            // SAFETY: sleeping is allowed here (process context, no spinlock).
            unsafe { bindings::msleep(1) };
        }
        // SAFETY: we hold `busy`, which gives the right to touch `bar`.
        let Some(bar) = (unsafe { &*self.bar.get() }).as_ref() else {
            // Released by unbind, which keeps `busy`: not reached, but
            // harmless.
            return Err(EduError::Gone);
        };
        // One piece, in then out: the caller orders the pieces (memmove).
        // A transfer left pending makes the device stuck, with `busy` kept;
        // the record is made before the engine can leave its gate (the
        // caller returns through it), so a teardown after the drain sees it.
        for (ram, from, to, direction) in [(src, src, EDU_BUFFER, 0), (dst, EDU_BUFFER, dst, CMD_TO_RAM)] {
            if !transfer(bar, from, to, len, direction, abandoned) {
                self.stuck_page.store(ram & PAGE_MASK, Ordering::SeqCst);
                self.stuck.store(true, Ordering::SeqCst);
                return Err(EduError::Stuck);
            }
        }
        self.busy.store(false, Ordering::Release);
        Ok(())
    }
}

/// The device shows no transfer in progress, and the stall knob is off.
fn transfer_done(bar: &Bar0) -> bool {
    // SAFETY: reads a module parameter; no precondition.
    let stalled = unsafe { crate::shim::warpq_param_fail_edu_stall() };
    bar.read32(REG_DMA_CMD) & CMD_START == 0 && !stalled
}

/// Starts one DMA transfer of the device and waits for it: false if it is
/// still pending after [`TRANSFER_TIMEOUT_MS`] or when `abandoned` says so.
fn transfer(bar: &Bar0, src: u64, dst: u64, len: u64, direction: u32, abandoned: &dyn Fn() -> bool) -> bool {
    bar.write64(REG_DMA_SRC, src);
    bar.write64(REG_DMA_DST, dst);
    bar.write64(REG_DMA_COUNT, len);
    bar.write32(REG_DMA_CMD, CMD_START | direction);
    let mut waited = 0;
    while !transfer_done(bar) {
        if waited >= TRANSFER_TIMEOUT_MS || abandoned() {
            return false;
        }
        // SAFETY: sleeping is allowed here (process context, no spinlock).
        unsafe { bindings::msleep(POLL_MS) };
        waited += POLL_MS;
    }
    true
}
