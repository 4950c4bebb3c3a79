//! File descriptors, cwd and root of a restored task (files-PID.img).
//!
//! Filled in by the restore-files work: validation before fork
//! ([`plan_files`]) and installation in the new task ([`install_files`]).
