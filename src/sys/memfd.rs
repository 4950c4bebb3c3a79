//! memfd seals: fcntl(F_GET_SEALS) and fcntl(F_ADD_SEALS).
//!
//! A dump reads a memfd's seals and a restore adds them back after filling
//! the new memfd (a seal such as F_SEAL_WRITE would forbid the filling).
//! The memfd itself comes from [`super::mm::memfd_create`].

use std::os::fd::{AsRawFd, BorrowedFd};

use syscalls::{Sysno, syscall};

use super::SysResult;

/// `F_ADD_SEALS`.
pub const F_ADD_SEALS: u32 = 1033;
/// `F_GET_SEALS`.
pub const F_GET_SEALS: u32 = 1034;
/// `F_SEAL_SEAL`: no more seals may be added.
pub const F_SEAL_SEAL: u32 = 0x1;
/// `F_SEAL_SHRINK`.
pub const F_SEAL_SHRINK: u32 = 0x2;
/// `F_SEAL_GROW`.
pub const F_SEAL_GROW: u32 = 0x4;
/// `F_SEAL_WRITE`.
pub const F_SEAL_WRITE: u32 = 0x8;
/// `F_SEAL_FUTURE_WRITE`.
pub const F_SEAL_FUTURE_WRITE: u32 = 0x10;
/// `F_SEAL_EXEC`.
pub const F_SEAL_EXEC: u32 = 0x20;
/// `MFD_ALLOW_SEALING`.
pub const MFD_ALLOW_SEALING: u32 = 0x2;

/// fcntl(F_GET_SEALS): the seals of the memfd (or other shmem file) `fd`.
pub fn get_seals(fd: BorrowedFd<'_>) -> SysResult<u32> {
    // SAFETY: integers only.
    unsafe { syscall!(Sysno::fcntl, fd.as_raw_fd(), F_GET_SEALS) }.map(|s| s as u32)
}

/// fcntl(F_ADD_SEALS).
pub fn add_seals(fd: BorrowedFd<'_>, seals: u32) -> SysResult<()> {
    // SAFETY: integers only.
    unsafe { syscall!(Sysno::fcntl, fd.as_raw_fd(), F_ADD_SEALS, seals) }.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn seals_added_are_read_back() {
        let m = super::super::mm::memfd_create(c"t", MFD_ALLOW_SEALING).unwrap();
        assert_eq!(get_seals(m.as_fd()), Ok(0));
        add_seals(m.as_fd(), F_SEAL_GROW | F_SEAL_SHRINK).unwrap();
        assert_eq!(get_seals(m.as_fd()), Ok(F_SEAL_GROW | F_SEAL_SHRINK));
        let plain = super::super::mm::memfd_create(c"u", 0).unwrap();
        assert_eq!(get_seals(plain.as_fd()), Ok(F_SEAL_SEAL));
    }
}
