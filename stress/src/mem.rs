//! Anonymous memory for the programs' buffers.

/// A private anonymous mapping, unmapped on drop (unless [`Anon::unmap`]
/// was called first).
pub struct Anon {
    ptr: *mut u8,
    len: usize,
    mapped: bool,
}

impl Anon {
    /// Maps `len` bytes, read/write, zero-filled.
    pub fn new(len: usize) -> Anon {
        // SAFETY: a fresh private anonymous mapping.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED, "mmap {len} bytes");
        Anon { ptr: p.cast(), len, mapped: true }
    }

    /// A view of memory owned elsewhere (never unmapped by this value).
    pub fn borrowed(ptr: *mut u8, len: usize) -> Anon {
        Anon { ptr, len, mapped: false }
    }

    /// The first byte.
    pub fn ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never empty (for clippy's `len_without_is_empty`).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The user address of byte `off`.
    pub fn addr(&self, off: usize) -> u64 {
        self.ptr as u64 + off as u64
    }

    /// A copy of the contents (take it while the device does not write).
    pub fn bytes(&self) -> Vec<u8> {
        // SAFETY: `len` readable bytes while mapped.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }.to_vec()
    }

    /// Overwrites the start of the mapping with `data`.
    pub fn write(&self, data: &[u8]) {
        assert!(data.len() <= self.len);
        // SAFETY: in bounds while mapped.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr, data.len()) };
    }

    /// munmap now (the address range is then free).
    pub fn unmap(&mut self) {
        if self.mapped {
            // SAFETY: our mapping.
            unsafe { libc::munmap(self.ptr.cast(), self.len) };
            self.mapped = false;
        }
    }
}

impl Drop for Anon {
    fn drop(&mut self) {
        self.unmap();
    }
}

/// A `T` in a fresh shared anonymous page, never unmapped: what a process
/// and the children it forks count in together.
///
/// # Safety
///
/// An all-zero `T` is valid (atomics, say), and `T` fits in a 4 KiB page
/// with page alignment enough.
pub unsafe fn shared_zeroed<T: Sync>() -> &'static T {
    assert!(std::mem::size_of::<T>() <= 4096 && std::mem::align_of::<T>() <= 4096);
    // SAFETY: a fresh shared anonymous mapping, never unmapped.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED, "mmap a shared page");
    // SAFETY: zeroed, page-aligned memory that lives as long as the process
    // is a valid `T` (this function's contract).
    unsafe { &*p.cast::<T>() }
}

/// At least `n` free pages in the hugetlb pool (grows it if needed: the
/// guest runs as root).
pub fn reserve_huge_pages(n: u64) -> Result<(), String> {
    let meminfo = |key: &str| -> u64 {
        let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    let free = meminfo("HugePages_Free:");
    if free < n {
        let total = meminfo("HugePages_Total:") + n - free;
        std::fs::write("/proc/sys/vm/nr_hugepages", total.to_string())
            .map_err(|e| format!("/proc/sys/vm/nr_hugepages = {total}: {e}"))?;
    }
    if meminfo("HugePages_Free:") < n {
        return Err(format!("the hugetlb pool has fewer than {n} free pages"));
    }
    Ok(())
}
