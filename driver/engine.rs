// SPDX-License-Identifier: GPL-2.0

//! The software command engine: executes one submission entry the way a
//! device would. Every byte it touches is reached through the queue's device
//! translation (user address → registered region → DMA address of the page)
//! and then the DMA translation the hardware would use (the IOMMU domain, or
//! dma-direct). An address that does not translate completes the command
//! with a fault status and touches nothing.

use crate::device::DeviceCore;
use crate::edu::{EduError, EDU_BUFFER_BYTES, EDU_TRANSFER_MAX};
use crate::mapping::DmaMapping;
use crate::protocol::context::EngineGuard;
use crate::protocol::overtake::Footprints;
use crate::protocol::platform::Waiter;
use crate::protocol::region::{Access, Footprint, Translation, XlateFault};
use crate::ring::Sqe;
use crate::shim::{self, DeviceRaw};
use crate::uapi;

/// Longest COPY, FILL or CRC32C: bounds how long one command keeps an
/// invalidation waiting.
pub(crate) const MAX_COMMAND_BYTES: u64 = 4 << 20;

const PAGE_SIZE: u64 = kernel::page::PAGE_SIZE as u64;

/// How a command ended: a `WARPQ_STATUS_*` and the result field.
pub(crate) struct Outcome {
    pub(crate) status: u32,
    pub(crate) result: u64,
}

impl Outcome {
    fn ok(result: u64) -> Self {
        Self { status: uapi::WARPQ_STATUS_OK, result }
    }
    fn fail(status: u32) -> Self {
        Self { status, result: 0 }
    }
}

/// How [`execute`] ended.
pub(crate) enum Execution {
    /// The command ran (or failed): complete it with this.
    Done(Outcome),
    /// A chunk the command needs is unmapped: it was not run and stays
    /// queued; the engine asks for a rebuild of the unmapped chunks of
    /// `touched` (`EngineGuard::request_rebuild`).
    NeedsRebuild {
        /// The chunks the access touches.
        touched: Footprint,
    },
}

fn fault_status(fault: XlateFault) -> u32 {
    match fault {
        XlateFault::NotRegistered => uapi::WARPQ_STATUS_FAULT_UNREGISTERED,
        XlateFault::CrossesEnd => uapi::WARPQ_STATUS_FAULT_BOUNDS,
        XlateFault::AccessDenied => uapi::WARPQ_STATUS_FAULT_ACCESS,
        // `NeedsRebuild` is handled by `execute` before it gets here.
        XlateFault::NoMemory => uapi::WARPQ_STATUS_FAULT_NOMEM,
        XlateFault::NotMapped | XlateFault::Dead | XlateFault::Refused | XlateFault::NeedsRebuild { .. } => {
            uapi::WARPQ_STATUS_FAULT_UNMAPPED
        }
    }
}

/// A byte range of one region as the device reaches it.
struct DeviceRange<'a> {
    dev: *mut DeviceRaw,
    /// The translation: its chunks' mappings and the range's offset in the
    /// region.
    t: Translation<'a, DmaMapping>,
}

impl DeviceRange<'_> {
    /// Offset of the first byte in the region.
    fn offset(&self) -> u64 {
        self.t.offset
    }

    /// Bus address of byte `at` of the range (its page is in one chunk).
    fn dma_of(&self, at: u64) -> Option<(u64, u64)> {
        let pos = self.t.offset.checked_add(at)?;
        let (mapping, in_chunk) = self.t.locate(pos)?;
        let page = usize::try_from(in_chunk / PAGE_SIZE).ok()?;
        let in_page = pos % PAGE_SIZE;
        Some((*mapping.dma_addresses().get(page)? + in_page, in_page))
    }

    /// Bus address of byte `at` of the range, and how many bytes follow it
    /// in the same page (for a real device's DMA).
    fn bus_chunk(&self, at: u64) -> Option<(u64, u64)> {
        let (dma, in_page) = self.dma_of(at)?;
        Some((dma, PAGE_SIZE - in_page))
    }

    /// Kernel pointer to byte `at` of the range, and how many bytes follow
    /// it in the same page; `None` if the DMA address does not translate.
    fn chunk(&self, at: u64) -> Option<(*mut u8, u64)> {
        let (dma, in_page) = self.dma_of(at)?;
        // SAFETY: `dev` is the bound device (its `DeviceCore` outlives the
        // queue); asking the DMA layer what an address maps to has no other
        // precondition.
        let ptr = unsafe { shim::warpq_dma_to_kernel(self.dev, dma) };
        if ptr.is_null() {
            None
        } else {
            Some((ptr, PAGE_SIZE - in_page))
        }
    }
}

/// The chunks `sqe` would touch (`overtake.rs`), without running it: for a
/// COPY its source and destination, for FILL and CRC32C their one range.
pub(crate) fn footprints<W: Waiter + ?Sized, const N: usize>(
    guard: &EngineGuard<'_, DmaMapping, N, W>,
    sqe: &Sqe,
) -> Footprints {
    match sqe.opcode {
        uapi::WARPQ_OP_COPY => Footprints::of(guard.footprint(sqe.src, sqe.len), guard.footprint(sqe.dst, sqe.len)),
        uapi::WARPQ_OP_FILL => Footprints::of(guard.footprint(sqe.dst, sqe.len), None),
        uapi::WARPQ_OP_CRC32C => Footprints::of(guard.footprint(sqe.src, sqe.len), None),
        _ => Footprints::NONE,
    }
}

/// Executes `sqe`; the caller is inside the gate (`guard`) for the whole call.
pub(crate) fn execute<W: Waiter + ?Sized, const N: usize>(
    guard: &EngineGuard<'_, DmaMapping, N, W>,
    device: &DeviceCore,
    sqe: &Sqe,
) -> Execution {
    let needs_rebuild = core::cell::Cell::new(None);
    let outcome = run(guard, device, sqe, &needs_rebuild);
    match needs_rebuild.get() {
        Some(touched) => Execution::NeedsRebuild { touched },
        None => Execution::Done(outcome),
    }
}

/// [`execute`]'s work; a translation that needs a rebuild is left in
/// `needs_rebuild` (the outcome is then meaningless: nothing ran).
fn run<W: Waiter + ?Sized, const N: usize>(
    guard: &EngineGuard<'_, DmaMapping, N, W>,
    device: &DeviceCore,
    sqe: &Sqe,
    needs_rebuild: &core::cell::Cell<Option<Footprint>>,
) -> Outcome {
    let dev = device.pdev.as_dev();
    let flagged_edu = sqe.flags & uapi::WARPQ_SQE_EDU_DMA != 0;
    let unknown_flags = sqe.flags & !(uapi::WARPQ_SQE_EDU_DMA | uapi::WARPQ_SQE_UNORDERED) != 0;
    if sqe.reserved || unknown_flags || (flagged_edu && sqe.opcode != uapi::WARPQ_OP_COPY) {
        return Outcome::fail(uapi::WARPQ_STATUS_INVALID);
    }
    if flagged_edu && sqe.len > EDU_BUFFER_BYTES {
        return Outcome::fail(uapi::WARPQ_STATUS_INVALID);
    }
    // `engine=edu` sends every COPY the edu device can take to it.
    let edu_dma =
        flagged_edu || (sqe.opcode == uapi::WARPQ_OP_COPY && sqe.len <= EDU_BUFFER_BYTES && edu_engine_selected());
    if sqe.opcode == uapi::WARPQ_OP_NOP {
        return Outcome::ok(0);
    }
    if sqe.len == 0 || sqe.len > MAX_COMMAND_BYTES {
        return Outcome::fail(uapi::WARPQ_STATUS_INVALID);
    }
    let range = |va: u64, access: Access| -> Result<DeviceRange<'_>, u32> {
        match guard.translate(va, sqe.len, access) {
            Ok(t) => Ok(DeviceRange { dev, t }),
            Err(XlateFault::NeedsRebuild { touched }) => {
                needs_rebuild.set(Some(touched));
                Err(uapi::WARPQ_STATUS_FAULT_UNMAPPED)
            }
            Err(fault) => Err(fault_status(fault)),
        }
    };
    let result = match sqe.opcode {
        uapi::WARPQ_OP_COPY if edu_dma => range(sqe.src, Access::READ)
            .and_then(|src| Ok((src, range(sqe.dst, Access::WRITE)?)))
            .and_then(|(src, dst)| copy_with_edu(guard, device, &src, &dst, sqe.len)),
        uapi::WARPQ_OP_COPY => range(sqe.src, Access::READ)
            .and_then(|src| Ok((src, range(sqe.dst, Access::WRITE)?)))
            .and_then(|(src, dst)| copy(guard, &src, &dst, sqe.len)),
        uapi::WARPQ_OP_FILL => {
            range(sqe.dst, Access::WRITE).and_then(|dst| fill(guard, &dst, sqe.len, sqe.value as u8))
        }
        uapi::WARPQ_OP_CRC32C => {
            range(sqe.src, Access::READ).and_then(|src| crc32c(guard, &src, sqe.len, sqe.value as u32))
        }
        _ => Err(uapi::WARPQ_STATUS_INVALID),
    };
    match result {
        Ok(r) => Outcome::ok(r),
        Err(status) => Outcome::fail(status),
    }
}

/// The `engine` module parameter says `edu`.
fn edu_engine_selected() -> bool {
    // SAFETY: reads a module parameter; no precondition.
    unsafe { shim::warpq_param_engine_edu() }
}

/// Stops a long command early once a reset abandoned it.
fn abandoned<W: Waiter + ?Sized, const N: usize>(guard: &EngineGuard<'_, DmaMapping, N, W>) -> Result<(), u32> {
    // Long commands yield the CPU between pages (the guest kernel does not
    // preempt kernel threads).
    // SAFETY: no precondition; the engine holds no lock.
    unsafe { shim::warpq_cond_resched() };
    if guard.is_abandoned() {
        Err(uapi::WARPQ_STATUS_ABORTED)
    } else {
        Ok(())
    }
}

/// The pieces `(at, n)` of a COPY of `len` bytes: none crosses a page of
/// either side or is longer than the engine's largest transfer. COPY has
/// memmove semantics: when the destination overlaps the source from above
/// (in one region), the pieces go from the end backwards, so that no piece
/// reads bytes an earlier one overwrote. Each piece must then be copied as
/// one unit (`ptr::copy`, or one edu transfer in and one out): split further,
/// and forwards, it would break that order.
struct CopyPieces {
    src_offset: u64,
    dst_offset: u64,
    max_piece: u64,
    backwards: bool,
    /// Forwards: bytes done from the start; backwards: the end of what is
    /// left to do.
    cursor: u64,
    len: u64,
}

impl CopyPieces {
    fn new(src: &DeviceRange<'_>, dst: &DeviceRange<'_>, len: u64, max_piece: u64) -> Self {
        let same_region = src.t.region == dst.t.region;
        let (src_offset, dst_offset) = (src.offset(), dst.offset());
        let backwards = same_region && dst_offset > src_offset && dst_offset - src_offset < len;
        CopyPieces { src_offset, dst_offset, max_piece, backwards, cursor: if backwards { len } else { 0 }, len }
    }
}

impl Iterator for CopyPieces {
    type Item = (u64, u64);

    fn next(&mut self) -> Option<(u64, u64)> {
        if self.backwards {
            let end = self.cursor;
            if end == 0 {
                return None;
            }
            // Bytes of the last page before `end`, on each side.
            let before = |offset: u64| (offset + end - 1) % PAGE_SIZE + 1;
            let n = end.min(before(self.src_offset)).min(before(self.dst_offset)).min(self.max_piece);
            self.cursor = end - n;
            Some((end - n, n))
        } else {
            let at = self.cursor;
            if at >= self.len {
                return None;
            }
            let after = |offset: u64| PAGE_SIZE - (offset + at) % PAGE_SIZE;
            let n = (self.len - at).min(after(self.src_offset)).min(after(self.dst_offset)).min(self.max_piece);
            self.cursor = at + n;
            Some((at, n))
        }
    }
}

fn copy<W: Waiter + ?Sized, const N: usize>(
    guard: &EngineGuard<'_, DmaMapping, N, W>,
    src: &DeviceRange<'_>,
    dst: &DeviceRange<'_>,
    len: u64,
) -> Result<u64, u32> {
    for (at, n) in CopyPieces::new(src, dst, len, PAGE_SIZE) {
        abandoned(guard)?;
        let (s, _) = src.chunk(at).ok_or(uapi::WARPQ_STATUS_FAULT_IOMMU)?;
        let (d, _) = dst.chunk(at).ok_or(uapi::WARPQ_STATUS_FAULT_IOMMU)?;
        // The ranges may overlap (same buffer): `copy`, not `copy_nonoverlapping`.
        // SAFETY: both pointers address `n` bytes inside one page each,
        // pinned and DMA-mapped for this region (the guard keeps them so).
        unsafe { core::ptr::copy(s, d, n as usize) };
    }
    Ok(len)
}

/// COPY by the edu device's own DMA engine, piece by piece so that no
/// piece crosses a page of either side (bus addresses are per page), in
/// the same memmove order as [`copy`].
fn copy_with_edu<W: Waiter + ?Sized, const N: usize>(
    guard: &EngineGuard<'_, DmaMapping, N, W>,
    device: &DeviceCore,
    src: &DeviceRange<'_>,
    dst: &DeviceRange<'_>,
    len: u64,
) -> Result<u64, u32> {
    for (at, n) in CopyPieces::new(src, dst, len, EDU_TRANSFER_MAX) {
        abandoned(guard)?;
        let (s, _) = src.bus_chunk(at).ok_or(uapi::WARPQ_STATUS_FAULT_IOMMU)?;
        let (d, _) = dst.bus_chunk(at).ok_or(uapi::WARPQ_STATUS_FAULT_IOMMU)?;
        device.recover_edu();
        device.edu.copy(s, d, n, &|| guard.is_abandoned()).map_err(|e| match e {
            EduError::Unreachable => uapi::WARPQ_STATUS_FAULT_IOMMU,
            EduError::Stuck | EduError::Gone => uapi::WARPQ_STATUS_DEVICE_ERROR,
            EduError::Abandoned => uapi::WARPQ_STATUS_ABORTED,
        })?;
    }
    Ok(len)
}

fn fill<W: Waiter + ?Sized, const N: usize>(
    guard: &EngineGuard<'_, DmaMapping, N, W>,
    dst: &DeviceRange<'_>,
    len: u64,
    byte: u8,
) -> Result<u64, u32> {
    let mut done = 0;
    while done < len {
        abandoned(guard)?;
        let (d, d_left) = dst.chunk(done).ok_or(uapi::WARPQ_STATUS_FAULT_IOMMU)?;
        let n = (len - done).min(d_left);
        // SAFETY: `d` addresses `n` bytes of a page pinned and mapped for
        // device writes (the guard keeps it so).
        unsafe { core::ptr::write_bytes(d, byte, n as usize) };
        done += n;
    }
    Ok(len)
}

fn crc32c<W: Waiter + ?Sized, const N: usize>(
    guard: &EngineGuard<'_, DmaMapping, N, W>,
    src: &DeviceRange<'_>,
    len: u64,
    seed: u32,
) -> Result<u64, u32> {
    let mut crc = !seed;
    let mut done = 0;
    while done < len {
        abandoned(guard)?;
        let (s, s_left) = src.chunk(done).ok_or(uapi::WARPQ_STATUS_FAULT_IOMMU)?;
        let n = (len - done).min(s_left) as usize;
        for i in 0..n {
            // SAFETY: `s` addresses `n` readable bytes of a pinned, mapped
            // page; a volatile read copes with user space writing it.
            let b = unsafe { core::ptr::read_volatile(s.add(i)) };
            crc = CRC32C_TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
        }
        done += n as u64;
    }
    Ok(u64::from(!crc))
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82f63b78), one byte a step.
static CRC32C_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { (c >> 1) ^ 0x82f6_3b78 } else { c >> 1 };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};
