//! `crest restore`: rebuild a dumped process from its images.
//!
//! Orchestration only, like `dump`: load and check every metadata file
//! before any process exists, create the task with its pid (clone3
//! set_tid), put its files back in crest's code, hand over to the restorer
//! blob that rebuilds the address space and the kernel state only the task
//! itself can set, and finish each thread's registers with ptrace.

pub mod child;
pub mod files;
pub mod finish;
pub mod helpers;
pub mod images;
pub mod layout;
pub mod mem;
pub mod pids;
pub mod plan;
pub mod run;
pub mod shmem;
pub mod tree;
