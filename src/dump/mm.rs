//! The address-space wide values of a process (the mm record): the code,
//! data, brk, stack, argument and environment ranges from `/proc/PID/stat`
//! (fields 26-28 and 45-51, the values PR_SET_MM_MAP takes back), the
//! auxiliary vector from `/proc/PID/auxv`, and the executable from
//! `/proc/PID/exe` (readlink for its path, stat for its identity).
//!
//! The current brk is not in /proc: the end of the `[heap]` VMA is the brk
//! rounded up to a page, which is what restore needs to map the heap; the
//! exact value needs brk(0) inside the process (the parasite).

use super::vma::file_id;
use super::{gone_or, parsed, read_proc};
use crate::error::{Error, Result};
use crate::image::mm::Mm;
use crate::image::vma::Vma;
use crate::proc::{auxv, stat};

/// The mm record of `pid`; `vmas` are its mappings (for the heap's end).
pub fn collect_mm(pid: u32, vmas: &[Vma]) -> Result<Mm> {
    let text = read_proc(pid, "stat")?;
    let st = parsed(pid, "stat", stat::parse(&text))?;
    // The heap may be split into several VMAs (different protections or
    // flags, as musl's allocator leaves it); the last one ends at the brk.
    let heap_end = vmas
        .iter()
        .filter(|v| v.name == b"[heap]")
        .map(|v| v.end)
        .max()
        .unwrap_or(st.start_brk);
    let raw_auxv = read_proc(pid, "auxv")?;
    let (exe, exe_id) = collect_exe(pid)?;
    Ok(Mm {
        code: (st.start_code, st.end_code),
        data: (st.start_data, st.end_data),
        brk: (st.start_brk, heap_end.max(st.start_brk)),
        start_stack: st.start_stack,
        arg: (st.arg_start, st.arg_end),
        env: (st.env_start, st.env_end),
        auxv: parsed(pid, "auxv", auxv::parse(&raw_auxv))?,
        exe,
        exe_id,
        nr_vmas: u32::try_from(vmas.len()).unwrap_or(u32::MAX),
    })
}

/// The executable's path and identity; a deleted executable is refused.
fn collect_exe(pid: u32) -> Result<(Vec<u8>, crate::image::files::FileId)> {
    let link = format!("/proc/{pid}/exe");
    let path = readlink(pid, &link)?;
    if path.ends_with(b" (deleted)") {
        return Err(Error::Unsupported(format!(
            "the executable `{}` of pid {pid} was deleted, which crest cannot dump yet",
            String::from_utf8_lossy(&path)
        )));
    }
    let meta = std::fs::metadata(&link).map_err(|e| gone_or(pid, Error::io("stat", &link, e)))?;
    Ok((path, file_id(&meta)))
}

/// readlink of a /proc link as bytes.
pub(crate) fn readlink(pid: u32, link: &str) -> Result<Vec<u8>> {
    use std::os::unix::ffi::OsStringExt;
    std::fs::read_link(link)
        .map(|p| p.into_os_string().into_vec())
        .map_err(|e| gone_or(pid, Error::io("read the link", link, e)))
}
