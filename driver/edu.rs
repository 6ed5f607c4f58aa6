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
use core::sync::atomic::{AtomicBool, Ordering};

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
/// One transfer takes 100 ms of virtual time; give up after this many.
const TRANSFER_TIMEOUT_MS: u32 = 10_000;
const POLL_MS: u32 = 5;

/// The edu DMA engine of one device: one transfer at a time.
pub(crate) struct EduDma {
    /// BAR 0 until unbind releases it ([`EduDma::release`]); only touched
    /// by the holder of `busy`.
    bar: UnsafeCell<Option<Bar0>>,
    /// One transfer at a time, and the right to touch `bar`. A flag, not a
    /// lock: a queue's engine waits for it inside its gate and must notice
    /// when a reset abandons its command instead of sleeping behind other
    /// queues' transfers.
    busy: AtomicBool,
    /// Unbind released BAR 0: no transfer starts any more.
    gone: AtomicBool,
}

// SAFETY: `bar` is only accessed by the thread that holds `busy` (acquired
// with Acquire, released with Release), so accesses never overlap; the rest
// is atomics.
unsafe impl Sync for EduDma {}

/// Why an edu transfer failed.
pub(crate) enum EduError {
    /// A bus address beyond the device's 28 bits (possible without an IOMMU).
    Unreachable,
    /// The transfer did not complete in time.
    Timeout,
    /// A reset abandoned the command while it waited for the device.
    Abandoned,
    /// The device was unbound.
    Gone,
}

impl EduDma {
    pub(crate) fn new(bar: Bar0) -> Self {
        Self { bar: UnsafeCell::new(Some(bar)), busy: AtomicBool::new(false), gone: AtomicBool::new(false) }
    }

    /// The identification register (`0x010000ed` for edu 1.0), at probe.
    pub(crate) fn id(&self) -> u32 {
        // SAFETY: probe runs before any queue exists, so nobody holds `busy`
        // and nobody touches `bar` concurrently.
        unsafe { &*self.bar.get() }.as_ref().map_or(0, |bar| bar.read32(REG_ID))
    }

    /// Unbind: waits for the transfer in progress (if any) to end, then
    /// unmaps and releases BAR 0, so the device can be bound again while
    /// files of this binding are still open. Transfers fail with
    /// [`EduError::Gone`] from now on.
    pub(crate) fn release(&self) {
        self.gone.store(true, Ordering::SeqCst);
        while self.busy.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
            // SAFETY: sleeping is allowed here (unbind runs in process context).
            unsafe { bindings::msleep(POLL_MS) };
        }
        // SAFETY: we hold `busy`, and keep it for good: nobody else touches
        // `bar` again.
        drop(unsafe { &mut *self.bar.get() }.take());
    }

    /// Copies `len` (at most [`EDU_TRANSFER_MAX`]) bytes from bus address
    /// `src` to bus address `dst` through the device's buffer, as one
    /// transfer in and one out. Sleeps. While another transfer holds the
    /// device, polls `abandoned` and gives up if it says so.
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
            if self.gone.load(Ordering::Relaxed) {
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
        let result =
            transfer(bar, src, EDU_BUFFER, len, 0).and_then(|()| transfer(bar, EDU_BUFFER, dst, len, CMD_TO_RAM));
        self.busy.store(false, Ordering::Release);
        result
    }
}

/// One DMA transfer of the device, waited for.
fn transfer(bar: &Bar0, src: u64, dst: u64, len: u64, direction: u32) -> core::result::Result<(), EduError> {
    bar.write64(REG_DMA_SRC, src);
    bar.write64(REG_DMA_DST, dst);
    bar.write64(REG_DMA_COUNT, len);
    bar.write32(REG_DMA_CMD, CMD_START | direction);
    let mut waited = 0;
    while bar.read32(REG_DMA_CMD) & CMD_START != 0 {
        if waited >= TRANSFER_TIMEOUT_MS {
            return Err(EduError::Timeout);
        }
        // SAFETY: sleeping is allowed here (process context, no spinlock).
        unsafe { bindings::msleep(POLL_MS) };
        waited += POLL_MS;
    }
    Ok(())
}
