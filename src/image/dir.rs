//! The image directory: where the files of one dump live, and how they are
//! created. Process memory holds secrets (keys, passwords, tokens), so a
//! directory crest creates is 0700 and every file 0600, whatever the umask;
//! an existing directory is used as it is (the user chose its mode).
//!
//! ```text
//!  DIR/ inventory.img           what, by whom, when, parent image
//!       pstree.img              the process tree
//!       task-PID.img            per process: misc, creds, rlimits, sigactions,
//!                               timers, shared signals, one thread-core per thread
//!       mm-PID.img              per process: mm, then its vmas
//!       files-PID.img           per process: fds and pipe data
//!       pagemap-PID.img         page index of a process's private memory
//!       pages-PID.img           its page data
//!       pagemap-shmem-ID.img    page index of a shared anonymous object
//!       pages-shmem-ID.img      its page data
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, BufWriter};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::header::{Arch, FileKind, Header};
use super::stream::{RecordReader, RecordWriter};
use crate::error::{Error, Result};

/// The inventory file.
pub const INVENTORY: &str = "inventory.img";
/// The process tree file.
pub const PSTREE: &str = "pstree.img";

/// task-PID.img.
pub fn task_file(pid: u32) -> String {
    format!("task-{pid}.img")
}
/// mm-PID.img.
pub fn mm_file(pid: u32) -> String {
    format!("mm-{pid}.img")
}
/// files-PID.img.
pub fn files_file(pid: u32) -> String {
    format!("files-{pid}.img")
}
/// pagemap-PID.img.
pub fn pagemap_file(pid: u32) -> String {
    format!("pagemap-{pid}.img")
}
/// pages-PID.img.
pub fn pages_file(pid: u32) -> String {
    format!("pages-{pid}.img")
}
/// pagemap-shmem-ID.img.
pub fn shmem_pagemap_file(id: u64) -> String {
    format!("pagemap-shmem-{id}.img")
}
/// pages-shmem-ID.img.
pub fn shmem_pages_file(id: u64) -> String {
    format!("pages-shmem-{id}.img")
}

/// Whether `name` is a plain file name (no directory part, not `.`/`..`).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

/// An image directory.
#[derive(Debug, Clone)]
pub struct ImageDir {
    path: PathBuf,
}

impl ImageDir {
    /// Opens `dir` for writing, creating it 0700 if it does not exist.
    pub fn create(dir: impl AsRef<Path>) -> Result<ImageDir> {
        let path = dir.as_ref().to_path_buf();
        match fs::DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => {
                // The umask may have removed bits the owner needs.
                fs::set_permissions(&path, fs::Permissions::from_mode(0o700))
                    .map_err(|e| Error::io("set the mode of", &path, e))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && path.is_dir() => {}
            Err(e) => return Err(Error::io("create the image directory", &path, e)),
        }
        Ok(ImageDir { path })
    }

    /// Opens an existing image directory for reading.
    pub fn open(dir: impl AsRef<Path>) -> Result<ImageDir> {
        let path = dir.as_ref().to_path_buf();
        let meta =
            fs::metadata(&path).map_err(|e| Error::io("open the image directory", &path, e))?;
        if !meta.is_dir() {
            return Err(Error::Usage(format!(
                "{} is not a directory; give the images directory with -D",
                path.display()
            )));
        }
        Ok(ImageDir { path })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn file_path(&self, name: &str) -> Result<PathBuf> {
        if !valid_name(name) {
            return Err(Error::Usage(format!(
                "{name:?} is not a plain image file name"
            )));
        }
        Ok(self.path.join(name))
    }

    /// Creates (or truncates) `name`, mode 0600.
    pub fn create_file(&self, name: &str) -> Result<File> {
        let path = self.file_path(name)?;
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| Error::io("create", &path, e))?;
        // An existing file keeps its mode on open: force it.
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::io("set the mode of", &path, e))?;
        Ok(file)
    }

    /// Opens `name` for reading.
    pub fn open_file(&self, name: &str) -> Result<File> {
        let path = self.file_path(name)?;
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| Error::io("open", &path, e))
    }

    /// Whether `name` exists.
    pub fn exists(&self, name: &str) -> bool {
        self.file_path(name).map(|p| p.exists()).unwrap_or(false)
    }

    /// Creates `name` and starts a record file of `kind` for this host.
    pub fn writer(&self, name: &str, kind: FileKind) -> Result<RecordWriter<BufWriter<File>>> {
        let file = BufWriter::with_capacity(64 << 10, self.create_file(name)?);
        RecordWriter::new(
            file,
            name,
            Header::new(kind, Arch::host(), host_page_size()),
        )
    }

    /// Opens `name` and checks its header.
    pub fn reader(&self, name: &str) -> Result<RecordReader<BufReader<File>>> {
        let file = BufReader::with_capacity(64 << 10, self.open_file(name)?);
        Ok(RecordReader::new(file, name)?)
    }

    /// The directory of the parent image, `rel` being relative to this one.
    pub fn parent(&self, rel: &str) -> Result<ImageDir> {
        ImageDir::open(self.path.join(rel))
    }

    /// The image files present, inventory and pstree first, then by name.
    pub fn list(&self) -> Result<Vec<String>> {
        let rd = fs::read_dir(&self.path).map_err(|e| Error::io("list", &self.path, e))?;
        let mut names: Vec<String> = rd
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.ends_with(".img"))
            .collect();
        let rank = |n: &str| match n {
            INVENTORY => 0,
            PSTREE => 1,
            _ => 2,
        };
        names.sort_by(|a, b| rank(a).cmp(&rank(b)).then_with(|| a.cmp(b)));
        Ok(names)
    }
}

/// The page size of this machine, from AT_PAGESZ in the aux vector (aarch64
/// kernels may use 16 or 64 KiB pages); 4096 if it cannot be read.
pub fn host_page_size() -> u32 {
    static SIZE: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *SIZE.get_or_init(|| {
        let Ok(b) = fs::read("/proc/self/auxv") else {
            return 4096;
        };
        let word = |s: &[u8]| {
            let mut a = [0u8; 8];
            a.copy_from_slice(s);
            u64::from_ne_bytes(a)
        };
        b.chunks_exact(16)
            .find(|p| word(&p[..8]) == libc::AT_PAGESZ)
            .and_then(|p| u32::try_from(word(&p[8..])).ok())
            .unwrap_or(4096)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn names_are_plain() {
        assert!(valid_name("pages-1.img"));
        for bad in ["", ".", "..", "a/b", "/etc/passwd", "x\0y"] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_page_size_is_the_kernels() {
        let ps = host_page_size();
        assert!(ps.is_power_of_two() && ps >= 4096);
        if cfg!(target_arch = "x86_64") {
            assert_eq!(ps, 4096);
        }
    }

    #[test]
    fn created_modes_are_exactly_0700_and_0600() {
        let base = std::env::temp_dir().join(format!("crest-dir-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let d = ImageDir::create(&base).unwrap();
        assert_eq!(fs::metadata(&base).unwrap().mode() & 0o7777, 0o700);
        // A file left over with a wide mode is narrowed when re-created.
        let p = base.join("x.img");
        fs::write(&p, b"old").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o666)).unwrap();
        drop(d.create_file("x.img").unwrap());
        let m = fs::metadata(&p).unwrap();
        assert_eq!((m.mode() & 0o7777, m.len()), (0o600, 0));
        assert!(d.create_file("../escape.img").is_err());
        fs::remove_dir_all(&base).unwrap();
    }
}
