//! crest: checkpoint/restore of Linux process trees in one static binary.
//!
//! The library holds everything; `src/main.rs` only hands it the command line.
//! Unsafe code is denied here and allowed only in the modules that wrap the
//! kernel (`sys`), each of which says why in a `# Safety` note.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod blob;
pub mod check;
pub mod cli;
pub mod dump;
pub mod error;
pub mod image;
pub mod infect;
pub mod log;
pub mod pageserver;
pub mod proc;
pub mod restore;
pub mod selftest;
pub mod sys;

pub use error::{Error, Result};
