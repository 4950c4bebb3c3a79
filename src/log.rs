//! Logging with CRIU's levels: 0 none, 1 errors, 2 warnings (the default),
//! 3 information, 4 debug.
//!
//! Lines go to stderr, or to the file given with `-o` (inside the image
//! directory when one is given, like CRIU). Each line is written with one
//! `write` so lines from several threads never interleave. Use the macros
//! [`error!`](crate::error!), [`warn!`](crate::warn!), [`info!`](crate::info!)
//! and [`debug!`](crate::debug!); a line should name the pid and the step.

use std::fs::File;
use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};

/// Errors only.
pub const LEVEL_ERROR: u8 = 1;
/// Errors and warnings: the default.
pub const LEVEL_WARN: u8 = 2;
/// Progress of each step.
pub const LEVEL_INFO: u8 = 3;
/// Everything.
pub const LEVEL_DEBUG: u8 = 4;

static LEVEL: AtomicU8 = AtomicU8::new(LEVEL_WARN);
static SINK: Mutex<Option<File>> = Mutex::new(None);

/// Sets the highest level that is written (0 silences everything).
pub fn set_level(level: u8) {
    LEVEL.store(level.min(LEVEL_DEBUG), Ordering::Relaxed);
}

/// The current level.
pub fn level() -> u8 {
    LEVEL.load(Ordering::Relaxed)
}

/// Sends log lines to `file` instead of stderr.
pub fn set_file(file: File) {
    if let Ok(mut sink) = SINK.lock() {
        *sink = Some(file);
    }
}

/// Writes one line at `level` if the level is enabled. Use the macros instead.
pub fn write(level: u8, args: std::fmt::Arguments<'_>) {
    if level > self::level() {
        return;
    }
    let tag = match level {
        LEVEL_ERROR => "Error",
        LEVEL_WARN => "Warn",
        LEVEL_INFO => "Info",
        _ => "Debug",
    };
    let line = format!("({tag}) {args}\n");
    // A poisoned lock or a failed write must not turn logging into a crash:
    // the line is dropped, which is all a logger can do.
    let mut sink = SINK.lock().unwrap_or_else(|p| p.into_inner());
    let _ = match sink.as_mut() {
        Some(file) => file.write_all(line.as_bytes()),
        None => std::io::stderr().write_all(line.as_bytes()),
    };
}

/// Logs an error (level 1).
#[macro_export]
macro_rules! error {
    ($($t:tt)*) => { $crate::log::write($crate::log::LEVEL_ERROR, format_args!($($t)*)) };
}

/// Logs a warning (level 2).
#[macro_export]
macro_rules! warn {
    ($($t:tt)*) => { $crate::log::write($crate::log::LEVEL_WARN, format_args!($($t)*)) };
}

/// Logs progress (level 3).
#[macro_export]
macro_rules! info {
    ($($t:tt)*) => { $crate::log::write($crate::log::LEVEL_INFO, format_args!($($t)*)) };
}

/// Logs details (level 4).
#[macro_export]
macro_rules! debug {
    ($($t:tt)*) => { $crate::log::write($crate::log::LEVEL_DEBUG, format_args!($($t)*)) };
}
