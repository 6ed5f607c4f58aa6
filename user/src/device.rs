//! An open warpq device: the ioctls, the queue mapping, registrations.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::buffer::{page_size, Access, Buffer, RegisteredBuffer};
use crate::error::{Error, ErrorKind, Op, Result};
use crate::ring::Kernel;
use crate::scope::{self, Scope};
use crate::{sys, Queue};

/// An open warpq device (`/dev/warpqN`).
///
/// Each process that uses it gets its own queue (per open file and address
/// space): [`Device::queue`] maps it. Buffers the device may touch are
/// registered with that queue: owned ones with [`Device::register_buffer`]
/// or [`Device::alloc`], borrowed ones in a [`Device::scope`].
#[derive(Debug)]
pub struct Device {
    file: File,
    /// The pid of the process holding this file's [`Queue`] (0: none). A
    /// forked child inherits the parent's pid here, which is not its own.
    queue_holder: AtomicU32,
}

impl Device {
    /// Adopts an already open warpq file (for example one received over a
    /// UNIX socket with `SCM_RIGHTS`) and checks that it speaks this crate's
    /// ABI. This process gets its own queue on that file; registrations of
    /// other processes sharing the file are not reachable from it.
    pub fn from_fd(fd: std::os::fd::OwnedFd) -> Result<Self> {
        let dev = Self { file: File::from(fd), queue_holder: AtomicU32::new(0) };
        let info = dev.info()?;
        if info.version != sys::WARPQ_UAPI_VERSION {
            return Err(Error::new(
                Op::Info,
                ErrorKind::AbiVersion,
                None,
                format!(
                    "the file speaks warpq ABI version {}, this crate version {}",
                    info.version,
                    sys::WARPQ_UAPI_VERSION
                ),
            ));
        }
        Ok(dev)
    }

    /// Opens a warpq device and checks that it speaks this crate's ABI.
    ///
    /// A file that is not a warpq device fails with [`ErrorKind::NotWarpq`]
    /// (it does not answer `WARPQ_IOC_INFO`).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = OpenOptions::new().read(true).write(true).open(path).map_err(|e| {
            let err = Error::from_io(Op::Open, &e);
            let hint = format!("{}: {}", path.display(), err.hint());
            err.with_hint(hint)
        })?;
        let dev = Self { file, queue_holder: AtomicU32::new(0) };
        let info = dev.info().map_err(|e| {
            let hint = format!("{}: {}", path.display(), e.hint());
            e.with_hint(hint)
        })?;
        if info.version != sys::WARPQ_UAPI_VERSION {
            return Err(Error::new(
                Op::Info,
                ErrorKind::AbiVersion,
                None,
                format!(
                    "{} speaks warpq ABI version {}, this crate version {}: use matching driver and crate",
                    path.display(),
                    info.version,
                    sys::WARPQ_UAPI_VERSION
                ),
            ));
        }
        Ok(dev)
    }

    /// What the device and driver offer.
    pub fn info(&self) -> Result<sys::warpq_info> {
        let mut info = sys::warpq_info { size: std::mem::size_of::<sys::warpq_info>() as u32, ..Default::default() };
        self.ioctl(Op::Info, sys::WARPQ_IOC_INFO, &mut info)?;
        Ok(info)
    }

    /// Maps this process's queue ring (`WARPQ_RING_SIZE` bytes, shared) for
    /// raw access; [`Device::queue`] wraps it in the ring API.
    pub fn map_queue(&self) -> Result<QueueMapping> {
        // SAFETY: a fresh mapping at an address the kernel picks; nothing
        // else refers to it yet.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                sys::WARPQ_RING_SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                self.file.as_raw_fd(),
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(Error::last_os(Op::MapQueue));
        }
        let base = NonNull::new(addr.cast::<u8>())
            .ok_or_else(|| Error::new(Op::MapQueue, ErrorKind::Other, None, "mmap returned null"))?;
        Ok(QueueMapping { base })
    }

    /// Maps this process's queue and returns its ring API. After `fork`,
    /// call this again in the child: it gets a queue of its own.
    ///
    /// One `Queue` per process and device file at a time: two would both
    /// drive the same ring with separate indices. A second call fails with
    /// [`ErrorKind::InUse`] until the first `Queue` is dropped (move the
    /// `Queue` between threads instead; it is `Send`).
    pub fn queue(&self) -> Result<Queue<'_>> {
        let me = std::process::id();
        let held = self.queue_holder.load(Ordering::Acquire);
        if held == me || self.queue_holder.compare_exchange(held, me, Ordering::AcqRel, Ordering::Acquire).is_err() {
            return Err(Error::new(
                Op::MapQueue,
                ErrorKind::InUse,
                None,
                "this process already has a Queue on this device file: use that one (a Queue can move between \
                 threads), or drop it first",
            ));
        }
        match self.map_queue() {
            Ok(map) => Ok(Queue::new(self, map)),
            Err(e) => {
                self.release_queue();
                Err(e)
            }
        }
    }

    /// A `Queue` of this process is gone.
    pub(crate) fn release_queue(&self) {
        let _ = self.queue_holder.compare_exchange(std::process::id(), 0, Ordering::AcqRel, Ordering::Relaxed);
    }

    /// Registers an owned buffer for the device; see [`RegisteredBuffer`].
    pub fn register_buffer(&self, buf: Buffer, access: Access) -> Result<RegisteredBuffer<'_>> {
        RegisteredBuffer::new(self, buf, access)
    }

    /// Allocates `len` zeroed, page-aligned bytes and registers them.
    pub fn alloc(&self, len: usize, access: Access) -> Result<RegisteredBuffer<'_>> {
        self.register_buffer(Buffer::new(len)?, access)
    }

    /// Registers a mapping the caller already has (a [`memmap2::MmapMut`]:
    /// anonymous, a `MAP_SHARED` file or memfd, a private copy-on-write file
    /// mapping). The registration owns it until
    /// [`unregister`](RegisteredBuffer::unregister) gives it back (as a
    /// [`Buffer`]: [`Buffer::into_mmap`]). See [`Buffer::from_mmap`] for
    /// which files a backing can register.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::io::Write;
    /// let dev = warpq::Device::open("/dev/warpq0")?;
    /// let mut file = std::fs::File::options().read(true).write(true).create(true).open("/dev/shm/data")?;
    /// file.write_all(&[7; 8192])?;
    /// // SAFETY: memmap2's contract: no other process truncates the file meanwhile.
    /// let map = unsafe { memmap2::MmapOptions::new().map_mut(&file)? };
    /// let buf = dev.register_mmap(map, warpq::Access::ReadWrite)?;
    /// assert_eq!(buf.to_vec()[..2], [7, 7]);
    /// let map = buf.unregister()?.into_mmap();
    /// # drop(map);
    /// # Ok(())
    /// # }
    /// ```
    pub fn register_mmap(&self, map: memmap2::MmapMut, access: Access) -> Result<RegisteredBuffer<'_>> {
        self.register_buffer(Buffer::from_mmap(map)?, access)
    }

    /// Runs `f` with a [`Scope`] in which borrowed memory can be registered
    /// for the device. Everything registered in it is unregistered by the
    /// time this returns (even if `f` panics or forgot a registration), so
    /// the memory is safe to use, free or reuse afterwards. See the
    /// [`scope`] module for an example.
    pub fn scope<'env, F, T>(&'env self, f: F) -> T
    where
        F: for<'scope> FnOnce(&'scope Scope<'scope, 'env>) -> T,
    {
        scope::scope(self, f)
    }

    /// Registers `len` bytes at `addr` for device access (`sys::WARPQ_ACCESS_*`
    /// bits, see [`Access::bits`]); returns the handle for
    /// [`Device::unregister`]. The escape hatch under the safe forms above.
    ///
    /// # Safety
    ///
    /// The device may read (and, with `WARPQ_ACCESS_WRITE`, write) this
    /// memory at any moment until [`Device::unregister`] returns: it must
    /// stay mapped and unused by anything that assumes it does not change
    /// (no Rust references to it) until then.
    pub unsafe fn register_raw(&self, addr: *mut u8, len: usize, access: u32) -> Result<u64> {
        let mut req = sys::warpq_register {
            size: std::mem::size_of::<sys::warpq_register>() as u32,
            access,
            addr: addr as u64,
            len: len as u64,
            handle: 0,
        };
        match self.ioctl(Op::Register, sys::WARPQ_IOC_REGISTER, &mut req) {
            Ok(()) => Ok(req.handle),
            Err(e) => Err(self.explain_register(e, addr as u64, len as u64, access)),
        }
    }

    /// Says what was wrong with a refused registration, from its arguments.
    fn explain_register(&self, e: Error, addr: u64, len: u64, access: u32) -> Error {
        let page = page_size() as u64;
        match e.errno() {
            Some(libc::EINVAL) if len == 0 => e.with(ErrorKind::Empty, "cannot register zero bytes"),
            Some(libc::EINVAL) if !addr.is_multiple_of(page) || !len.is_multiple_of(page) => e.with(
                ErrorKind::Unaligned,
                format!(
                    "{len} bytes at {addr:#x} are not whole pages: registered memory must start and end on a \
                     {page}-byte page boundary (allocate it with warpq::Buffer)"
                ),
            ),
            Some(libc::EINVAL) if access & !(sys::WARPQ_ACCESS_READ | sys::WARPQ_ACCESS_WRITE) != 0 || access == 0 => {
                e.with_hint(format!("access bits {access:#x}: give WARPQ_ACCESS_READ and/or WARPQ_ACCESS_WRITE"))
            }
            // E2BIG from drivers with the max_region_mb parameter, EINVAL before.
            Some(libc::E2BIG | libc::EINVAL) => match self.info() {
                Ok(info) if len > info.max_region_bytes => e.with(
                    ErrorKind::TooLarge,
                    format!(
                        "{len} bytes: the device takes at most {} bytes per registered buffer (module parameter \
                         max_region_mb); register it in pieces",
                        info.max_region_bytes
                    ),
                ),
                _ => e,
            },
            Some(libc::EFAULT | libc::ENOMEM) if access & sys::WARPQ_ACCESS_WRITE != 0 => e.with_hint(format!(
                "{len} bytes at {addr:#x} could not be pinned for the device to write: not mapped, or read-only \
                 (register read-only memory with read access only)"
            )),
            Some(libc::EFAULT | libc::ENOMEM) => {
                e.with_hint(format!("{len} bytes at {addr:#x} could not be pinned: the range is not mapped"))
            }
            _ => e,
        }
    }

    /// Unregisters a buffer: when this returns the device no longer touches it.
    pub fn unregister(&self, handle: u64) -> Result<()> {
        let mut req =
            sys::warpq_unregister { size: std::mem::size_of::<sys::warpq_unregister>() as u32, rsvd: 0, handle };
        self.ioctl(Op::Unregister, sys::WARPQ_IOC_UNREGISTER, &mut req)
    }

    /// The raw system-call path: queues `sqes` through `WARPQ_IOC_SUBMIT`
    /// (one call for the batch) and wakes the engine; returns how many
    /// were queued. Prefer [`Queue::submit_batch`], which keeps a `Queue`'s
    /// view of the ring in step; this one must not be mixed with pushes
    /// through a `Queue`.
    pub fn submit_batch(&self, sqes: &[sys::warpq_sqe]) -> Result<u32> {
        let count = u32::try_from(sqes.len())
            .map_err(|_| Error::new(Op::Submit, ErrorKind::TooLarge, Some(libc::EINVAL), "more than 2^32 entries"))?;
        let mut req = sys::warpq_submit {
            size: std::mem::size_of::<sys::warpq_submit>() as u32,
            count,
            sqes: sqes.as_ptr() as u64,
            submitted: 0,
            rsvd: 0,
        };
        self.ioctl(Op::Submit, sys::WARPQ_IOC_SUBMIT, &mut req)?;
        Ok(req.submitted)
    }

    /// Waits for completions on this process's queue; see [`Queue::wait`].
    pub fn wait(&self, min_ready: u32, timeout: Option<Duration>) -> Result<u32> {
        let mut req = sys::warpq_wait {
            size: std::mem::size_of::<sys::warpq_wait>() as u32,
            rsvd: 0,
            min_ready,
            ready: 0,
            timeout_ns: timeout.map_or(-1, |t| t.as_nanos().min(i64::MAX as u128) as i64),
        };
        self.ioctl(Op::Wait, sys::WARPQ_IOC_WAIT, &mut req)?;
        Ok(req.ready)
    }

    /// This process's queue counters.
    pub fn stats(&self) -> Result<sys::warpq_stats> {
        let mut st = sys::warpq_stats { size: std::mem::size_of::<sys::warpq_stats>() as u32, ..Default::default() };
        self.ioctl(Op::Stats, sys::WARPQ_IOC_STATS, &mut st)?;
        Ok(st)
    }

    /// This process's queue's latency histograms (from STATS), named as the
    /// device's are in debugfs (`invalidate_ns`, `drain_ns`, ... see
    /// [`crate::sysfs::HIST_NAMES`]); empty ones included.
    pub fn histograms(&self) -> Result<Vec<crate::sysfs::Histogram>> {
        let st = self.stats()?;
        if (st.size as usize) < std::mem::size_of::<sys::warpq_stats>() {
            return Err(Error::new(
                Op::Stats,
                ErrorKind::AbiVersion,
                None,
                "the driver's STATS has no per-queue histograms",
            ));
        }
        Ok(crate::sysfs::HIST_NAMES
            .iter()
            .zip(st.hist.iter())
            .map(|(name, row)| crate::sysfs::Histogram {
                name: (*name).to_string(),
                buckets: row.iter().enumerate().filter(|(_, &n)| n > 0).map(|(b, &n)| (b as u32, n)).collect(),
            })
            .collect())
    }

    /// Wakes this process's engine (needed only when the ring says
    /// need-wakeup; [`Queue::submit`] does it for you).
    pub fn wake(&self) -> Result<()> {
        let mut req = sys::warpq_wake { size: std::mem::size_of::<sys::warpq_wake>() as u32, rsvd: 0 };
        self.ioctl(Op::Wake, sys::WARPQ_IOC_WAKE, &mut req)
    }

    /// Has this process's queue on the device signal `eventfd` (add 1 to
    /// it) once per batch of completions it publishes, for an event loop
    /// that already waits on eventfds; replaces an earlier one. The driver
    /// keeps its own reference, so closing `eventfd` later does not stop
    /// the signals: [`unregister_eventfd`](Self::unregister_eventfd) does.
    /// Needs `WARPQ_CAP_EVENTFD`.
    pub fn register_eventfd(&self, eventfd: std::os::fd::BorrowedFd<'_>) -> Result<()> {
        self.set_eventfd(eventfd.as_raw_fd())
    }

    /// Stops signalling the eventfd set by
    /// [`register_eventfd`](Self::register_eventfd) (nothing if none is).
    pub fn unregister_eventfd(&self) -> Result<()> {
        self.set_eventfd(-1)
    }

    fn set_eventfd(&self, fd: i32) -> Result<()> {
        let mut req = sys::warpq_eventfd { size: std::mem::size_of::<sys::warpq_eventfd>() as u32, fd };
        self.ioctl(Op::EventFd, sys::WARPQ_IOC_EVENTFD, &mut req)
    }

    fn ioctl<T>(&self, op: Op, request: libc::c_ulong, arg: &mut T) -> Result<()> {
        // SAFETY: every warpq ioctl reads and writes exactly one `T`, which
        // `arg` is, with its size field filled in by the caller.
        let ret = unsafe { libc::ioctl(self.file.as_raw_fd(), request, arg as *mut T) };
        if ret < 0 {
            Err(Error::last_os(op))
        } else {
            Ok(())
        }
    }

    /// The underlying file.
    pub fn as_file(&self) -> &File {
        &self.file
    }
}

impl Kernel for Device {
    fn wake(&self) -> Result<()> {
        Device::wake(self)
    }
    fn wait(&self, min_ready: u32, timeout: Option<Duration>) -> Result<u32> {
        Device::wait(self, min_ready, timeout)
    }
    fn submit_raw(&self, sqes: &[sys::warpq_sqe]) -> Result<u32> {
        Device::submit_batch(self, sqes)
    }
}

/// A mapped queue ring. Unmapped on drop.
#[derive(Debug)]
pub struct QueueMapping {
    base: NonNull<u8>,
}

// SAFETY: a shared mapping of the process's own queue; moving the owner to
// another thread of the same process changes nothing.
unsafe impl Send for QueueMapping {}

// SAFETY: `base` is our mapping of WARPQ_RING_SIZE bytes, page aligned,
// stable until drop; the kernel accesses it by the ring protocol.
unsafe impl crate::ring::RingMemory for QueueMapping {
    fn base(&self) -> NonNull<u8> {
        self.base
    }
}

impl QueueMapping {
    /// The ring's header as it is now (a racy snapshot of the kernel-written
    /// fields, good for identification and statistics).
    pub fn header(&self) -> sys::warpq_ring_header {
        // SAFETY: the mapping is at least a header long, page aligned, and
        // lives as long as `self`; a volatile read copes with the kernel
        // changing it.
        unsafe { std::ptr::read_volatile(self.base.as_ptr().cast::<sys::warpq_ring_header>()) }
    }

    /// The first byte of the mapping.
    pub fn as_ptr(&self) -> *mut u8 {
        self.base.as_ptr()
    }
}

impl Drop for QueueMapping {
    fn drop(&mut self) {
        // SAFETY: `base` is our mapping of WARPQ_RING_SIZE bytes.
        unsafe { libc::munmap(self.base.as_ptr().cast(), sys::WARPQ_RING_SIZE) };
    }
}
