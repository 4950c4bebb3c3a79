//! The embedded blobs, run for real. Each test loads a blob the way crest
//! will (memfd, shared executable mapping), forks, jumps into it in the
//! child with its args area filled, and checks from the parent how the child
//! ended and what the blob wrote back. Ground truth comes from outside the
//! blob: fork()'s pid, /proc/PID/maps and status, and the registers ptrace
//! reads at the final trap (skipped under qemu-user, which has no ptrace;
//! the rest runs there too).
//!
//! The build-time ELF gate (parasite/build/elf.rs) is tested here as well,
//! against the real linked blob and damaged copies of it.

#[path = "blob/elf_gate.rs"]
mod elf_gate;
#[path = "blob/harness.rs"]
mod harness;
#[path = "blob/parasite.rs"]
mod parasite;
#[path = "blob/restorer.rs"]
mod restorer;
