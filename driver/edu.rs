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
    bar: Bar0,
    /// One transfer at a time. A flag, not a lock: a queue's engine waits
    /// for it inside its gate and must notice when a reset abandons its
    /// command instead of sleeping behind other queues' transfers.
    busy: AtomicBool,
}

/// Why an edu transfer failed.
pub(crate) enum EduError {
    /// A bus address beyond the device's 28 bits (possible without an IOMMU).
    Unreachable,
    /// The transfer did not complete in time.
    Timeout,
    /// A reset abandoned the command while it waited for the device.
    Abandoned,
}

impl EduDma {
    pub(crate) fn new(bar: Bar0) -> Self {
        Self { bar, busy: AtomicBool::new(false) }
    }

    /// The identification register (`0x010000ed` for edu 1.0).
    pub(crate) fn id(&self) -> u32 {
        self.bar.read32(REG_ID)
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
            if abandoned() {
                return Err(EduError::Abandoned);
            }
            // SAFETY: sleeping is allowed here (process context, no spinlock).
            unsafe { bindings::msleep(1) };
        }
        // One piece, in then out: the caller orders the pieces (memmove).
        let result =
            self.transfer(src, EDU_BUFFER, len, 0).and_then(|()| self.transfer(EDU_BUFFER, dst, len, CMD_TO_RAM));
        self.busy.store(false, Ordering::Release);
        result
    }

    fn transfer(&self, src: u64, dst: u64, len: u64, direction: u32) -> core::result::Result<(), EduError> {
        self.bar.write64(REG_DMA_SRC, src);
        self.bar.write64(REG_DMA_DST, dst);
        self.bar.write64(REG_DMA_COUNT, len);
        self.bar.write32(REG_DMA_CMD, CMD_START | direction);
        let mut waited = 0;
        while self.bar.read32(REG_DMA_CMD) & CMD_START != 0 {
            if waited >= TRANSFER_TIMEOUT_MS {
                return Err(EduError::Timeout);
            }
            // SAFETY: sleeping is allowed here (process context, no spinlock).
            unsafe { bindings::msleep(POLL_MS) };
            waited += POLL_MS;
        }
        Ok(())
    }
}
