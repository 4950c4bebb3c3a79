//! Memory: anonymous and memfd mappings (unmapped on drop), madvise,
//! memfd_create, process_vm_readv and vmsplice.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use syscalls::{Sysno, syscall};

use super::fd::own;
use super::{Pid, SysResult};

/// The page size crest assumes for probes (4 KiB on x86_64; aarch64 kernels
/// may use 16 or 64 KiB, which [`page_size`] reports).
pub const PAGE_SIZE_4K: usize = 4096;
/// `PROT_READ | PROT_WRITE`.
pub const PROT_RW: u32 = 0x1 | 0x2;
/// `MAP_SHARED`.
pub const MAP_SHARED: u32 = 0x01;
/// `MAP_PRIVATE`.
pub const MAP_PRIVATE: u32 = 0x02;
/// `MAP_ANONYMOUS`.
pub const MAP_ANONYMOUS: u32 = 0x20;
/// `MADV_NOHUGEPAGE`: keeps probe regions at base-page granularity.
pub const MADV_NOHUGEPAGE: u32 = 15;
/// `MFD_CLOEXEC`.
pub const MFD_CLOEXEC: u32 = 1;

/// The system page size, from the auxiliary vector.
pub fn page_size() -> usize {
    // SAFETY: getauxval only reads the process's auxv.
    let v = unsafe { libc::getauxval(libc::AT_PAGESZ) } as usize;
    if v == 0 { PAGE_SIZE_4K } else { v }
}

/// A mapping owned by crest, unmapped on drop.
#[derive(Debug)]
pub struct Mapping {
    addr: usize,
    len: usize,
}

impl Mapping {
    /// mmap(2) of `len` bytes of private anonymous read-write memory.
    pub fn anonymous(len: usize) -> SysResult<Mapping> {
        Self::map(len, MAP_PRIVATE | MAP_ANONYMOUS, None)
    }

    /// mmap(2) of `len` bytes of shared anonymous read-write memory (a
    /// shmem object of its own, which /proc/self/map_files can reopen).
    pub fn shared_anonymous(len: usize) -> SysResult<Mapping> {
        Self::map(len, MAP_SHARED | MAP_ANONYMOUS, None)
    }

    /// mmap(2) of `len` bytes of `fd` shared and read-write from offset 0.
    pub fn shared(fd: BorrowedFd<'_>, len: usize) -> SysResult<Mapping> {
        Self::map(len, MAP_SHARED, Some(fd))
    }

    /// mmap(2) of `len` bytes of `fd`, shared, readable, writable and
    /// executable, exactly at `addr` (MAP_FIXED_NOREPLACE: EEXIST when
    /// something is there already). For the restorer, which runs from it.
    pub fn shared_exec_at(fd: BorrowedFd<'_>, addr: usize, len: usize) -> SysResult<Mapping> {
        const MAP_FIXED_NOREPLACE: u32 = 0x10_0000;
        const PROT_RWX: u32 = PROT_RW | 0x4;
        let (raw, flags) = (fd.as_raw_fd(), MAP_SHARED | MAP_FIXED_NOREPLACE);
        // SAFETY: NOREPLACE never replaces an existing mapping, so no Rust
        // object is affected.
        let got = unsafe { syscall!(Sysno::mmap, addr, len, PROT_RWX, flags, raw, 0) }?;
        let m = Mapping { addr: got, len };
        // Kernels before 4.17 ignore the flag and treat addr as a hint.
        if got != addr {
            return Err(super::Errno::EEXIST);
        }
        Ok(m)
    }

    /// Copies `bytes` into the mapping at `off`.
    pub fn write_bytes(&self, off: usize, bytes: &[u8]) {
        assert!(
            off + bytes.len() <= self.len,
            "write past the end of a mapping"
        );
        // SAFETY: the range is inside the mapping, which is writable and
        // alive; no Rust reference points into it.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), (self.addr + off) as *mut u8, bytes.len())
        }
    }

    /// Copies the plain-data value `v` (a `#[repr(C)]` struct of integers)
    /// into the mapping at `off`.
    pub fn write_value<T: Copy>(&self, off: usize, v: &T) {
        assert!(
            off + size_of::<T>() <= self.len,
            "write past the end of a mapping"
        );
        // SAFETY: in bounds (checked), unaligned write of a Copy value.
        unsafe { ((self.addr + off) as *mut T).write_unaligned(*v) }
    }

    /// Reads the u32 at `off` (4-aligned), volatile: another process may
    /// write it through its own view of shared memory.
    pub fn read_u32(&self, off: usize) -> u32 {
        assert!(
            off + 4 <= self.len && off % 4 == 0,
            "bad u32 offset in a mapping"
        );
        // SAFETY: in bounds and aligned (checked); any bits are a valid u32.
        unsafe { ((self.addr + off) as *const u32).read_volatile() }
    }

    /// Atomically adds `v` to the u32 at `off` (4-aligned); returns the old
    /// value. Other processes mapping the same memory see it (sequentially
    /// consistent).
    pub fn fetch_add_u32(&self, off: usize, v: u32) -> u32 {
        assert!(
            off + 4 <= self.len && off % 4 == 0,
            "bad u32 offset in a mapping"
        );
        // SAFETY: in bounds and aligned (checked); the word is only ever
        // accessed atomically or volatile, never through a Rust reference.
        let word = unsafe { std::sync::atomic::AtomicU32::from_ptr((self.addr + off) as *mut u32) };
        word.fetch_add(v, std::sync::atomic::Ordering::SeqCst)
    }

    fn map(len: usize, flags: u32, fd: Option<BorrowedFd<'_>>) -> SysResult<Mapping> {
        let raw = fd.map_or(-1, |f| f.as_raw_fd());
        // SAFETY: a NULL hint lets the kernel pick fresh address space, so no
        // existing Rust object is replaced.
        let addr = unsafe { syscall!(Sysno::mmap, 0, len, PROT_RW, flags, raw, 0) }?;
        Ok(Mapping { addr, len })
    }

    /// The start address.
    pub fn addr(&self) -> usize {
        self.addr
    }

    /// The length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty (never: mmap refuses length 0).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Writes one byte at `off` (volatile, so the page fault really happens).
    pub fn write_byte(&self, off: usize, val: u8) {
        assert!(off < self.len, "write past the end of a mapping");
        // SAFETY: `off` is inside the mapping, which is read-write and alive.
        unsafe { ((self.addr + off) as *mut u8).write_volatile(val) }
    }

    /// Reads one byte at `off` (volatile, so the access really happens).
    pub fn read_byte(&self, off: usize) -> u8 {
        assert!(off < self.len, "read past the end of a mapping");
        // SAFETY: `off` is inside the mapping, which is readable and alive.
        unsafe { ((self.addr + off) as *const u8).read_volatile() }
    }

    /// madvise(2) over `pages` pages from page `first` of the mapping.
    pub fn madvise_pages(&self, first: usize, pages: usize, advice: u32) -> SysResult<()> {
        let ps = page_size();
        assert!(
            (first + pages) * ps <= self.len,
            "madvise past the end of a mapping"
        );
        // SAFETY: the range is inside this mapping; as for `madvise`, the
        // advice values crest uses do not discard contents Rust code relies on.
        unsafe { syscall!(Sysno::madvise, self.addr + first * ps, pages * ps, advice) }.map(drop)
    }

    /// madvise(2) over the whole mapping.
    pub fn madvise(&self, advice: u32) -> SysResult<()> {
        // SAFETY: the range is this mapping; the advice values crest uses do
        // not discard contents Rust code relies on.
        unsafe { syscall!(Sysno::madvise, self.addr, self.len, advice) }.map(drop)
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the range was mapped by `map` and nothing borrows it anymore.
        let _ = unsafe { syscall!(Sysno::munmap, self.addr, self.len) };
    }
}

/// memfd_create(2).
pub fn memfd_create(name: &CStr, flags: u32) -> SysResult<OwnedFd> {
    // SAFETY: `name` is NUL-terminated.
    let fd = unsafe { syscall!(Sysno::memfd_create, name.as_ptr(), flags) }?;
    Ok(own(fd))
}

/// process_vm_readv(2) of `buf.len()` bytes at `remote_addr` in `pid`.
pub fn process_vm_readv(pid: Pid, remote_addr: u64, buf: &mut [u8]) -> SysResult<usize> {
    let local = [buf.as_mut_ptr() as u64, buf.len() as u64];
    let remote = [remote_addr, buf.len() as u64];
    // SAFETY: the local iovec covers exactly `buf`; the remote address is
    // only interpreted in the other process.
    unsafe {
        syscall!(
            Sysno::process_vm_readv,
            pid,
            local.as_ptr(),
            1,
            remote.as_ptr(),
            1,
            0
        )
    }
}

/// vmsplice(2) of `buf` into the pipe `fd`, by copy semantics for the
/// caller: the pipe may reference the pages until read, so `buf` must not
/// change before the data is consumed.
pub fn vmsplice(fd: BorrowedFd<'_>, buf: &[u8]) -> SysResult<usize> {
    let iov = [buf.as_ptr() as u64, buf.len() as u64];
    // SAFETY: the iovec covers `buf`, which the kernel only reads.
    unsafe { syscall!(Sysno::vmsplice, fd.as_raw_fd(), iov.as_ptr(), 1, 0) }
}
