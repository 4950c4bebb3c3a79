//! Typed wrappers over raw system calls.
