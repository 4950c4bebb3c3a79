//! Realistic synthesized images, built through the writer API the dump will
//! use: a process tree with a running two-thread root, a stopped child and a
//! zombie, full thread cores, credentials, limits, signals, timers, an address
//! space with every backing kind, fds of every kind and a page store with
//! present, zero and (for a child image) parent runs.
//!
//! No kernel interface is involved. This exists so tests, `crest show`
//! examples and the fuzzers' seed corpus exercise images shaped like real
//! ones long before and independently of `crest dump`.

use std::io::Write;

use super::creds::Creds;
use super::dir::{self, ImageDir};
use super::files::{Fd, FdDesc, FdFile, FileId, PipeData, UnixMessage, UnixQueue};
use super::header::{Arch, FileKind};
use super::inventory::{CpuFeatures, ImageKind, Inventory};
use super::load::{FilesImage, MmImage, TaskImage};
use super::mm::Mm;
use super::pagemap::{PageRun, PagemapHead, RunKind, Space};
use super::pages::{PageTotals, PageWriter};
use super::pstree::{Process, TaskState};
use super::record::AnyRecord;
use super::rlimits::{Rlimit, Rlimits};
use super::sigactions::{Sigaction, Sigactions};
use super::signals::{SharedSignals, Siginfo};
use super::task::TaskMisc;
use super::thread::{self, AltStack, Regset, Rseq, ThreadCore};
use super::timers::{Itimers, PosixTimer, TimerSpec};
use super::vma::{Backing, VMA_DONTFORK, VMA_HUGEPAGE, Vma};
use crate::error::Result;

/// The root pid of the sample tree.
pub const ROOT: u32 = 4242;
/// The stopped child.
pub const STOPPED: u32 = 4250;
/// The zombie child.
pub const ZOMBIE: u32 = 4251;
/// The sample heap's address.
pub const HEAP: u64 = 0x5555_5570_0000;
/// The shared anonymous object's id.
pub const SHMID: u64 = 77_001;

/// A deterministic page: its bytes depend on `vaddr` and `generation`.
pub fn page_pattern(vaddr: u64, generation: u8, page_size: usize) -> Vec<u8> {
    (0..page_size)
        .map(|i| ((vaddr >> 12) as u8).wrapping_mul(31) ^ (i as u8) ^ generation.wrapping_mul(97))
        .collect()
}

/// Thread registers of the host layout with a recognisable ip and sp.
pub fn thread_core(arch: Arch, tid: u32) -> ThreadCore {
    let (gp, fp, ip_word, sp_word) = match arch {
        Arch::Aarch64 => (thread::AARCH64_GPREGS, thread::AARCH64_FPREGS, 32, 31),
        _ => (thread::X86_64_GPREGS, 2432, 16, 19),
    };
    let mut gpregs: Vec<u8> = (0..gp).map(|i| (i as u8).wrapping_add(tid as u8)).collect();
    let ip = 0x5555_5555_5000u64 + tid as u64;
    let sp = 0x7ffd_0000_0000u64 - 64 * tid as u64;
    gpregs[ip_word * 8..ip_word * 8 + 8].copy_from_slice(&ip.to_le_bytes());
    gpregs[sp_word * 8..sp_word * 8 + 8].copy_from_slice(&sp.to_le_bytes());
    let mut pending = Siginfo::new(10, -6);
    pending.0[16..20].copy_from_slice(&tid.to_le_bytes());
    ThreadCore {
        tid,
        arch,
        gpregs,
        fpregs: (0..fp).map(|i| (i * 7) as u8).collect(),
        extra_regsets: vec![Regset {
            note: 0x401,
            data: tid.to_le_bytes().repeat(2),
        }],
        tls: 0x7f00_0000_0740 + tid as u64 * 0x1000,
        sigmask: 1 << 9,
        pending: vec![pending],
        altstack: AltStack {
            sp: 0x7f00_1000_0000,
            flags: 0,
            size: 65536,
        },
        rseq: Rseq {
            addr: 0x7f00_0000_0a00 + tid as u64 * 0x1000,
            len: 32,
            sig: 0x5305_3053,
        },
        clear_tid: 0x7f00_0000_0990 + tid as u64 * 0x1000,
        comm: format!("worker-{tid}").into_bytes(),
    }
}

fn file_id(ino: u64, size: u64) -> FileId {
    FileId {
        dev: 0x803,
        ino,
        size,
        mtime_ns: 1_764_000_000_123_456_789,
        mode: 0o100755,
    }
}

/// The VMAs of a sample process.
pub fn vmas() -> Vec<Vma> {
    let exe = b"/usr/bin/victim".to_vec();
    let vma = |start: u64, end: u64, prot: u32, flags: u32, backing: Backing, name: &[u8]| Vma {
        start,
        end,
        pgoff: 0,
        prot,
        flags,
        advice: 0,
        backing,
        name: name.to_vec(),
    };
    let text = Backing::FilePrivate {
        path: exe.clone(),
        id: file_id(1234, 20480),
    };
    let mut v = vec![
        vma(0x5555_5555_4000, 0x5555_5555_6000, 5, 2, text.clone(), b""),
        vma(0x5555_5555_6000, 0x5555_5555_7000, 3, 2, text, b""),
        vma(
            HEAP,
            HEAP + 0x10_0000,
            3,
            0x22,
            Backing::AnonPrivate,
            b"[heap]",
        ),
        vma(
            0x7f00_2000_0000,
            0x7f00_2000_4000,
            3,
            0x21,
            Backing::AnonShared { shmid: SHMID },
            b"/dev/zero (deleted)",
        ),
        vma(
            0x7ffd_0000_0000 - 0x21000,
            0x7ffd_0000_0000,
            3,
            0x122,
            Backing::AnonPrivate,
            b"[stack]",
        ),
        vma(
            0x7ffd_1000_0000,
            0x7ffd_1000_4000,
            1,
            0,
            Backing::Vvar,
            b"[vvar]",
        ),
        vma(
            0x7ffd_1000_4000,
            0x7ffd_1000_6000,
            1,
            0,
            Backing::VvarVclock,
            b"[vvar_vclock]",
        ),
        vma(
            0x7ffd_1000_6000,
            0x7ffd_1000_8000,
            5,
            0,
            Backing::Vdso,
            b"[vdso]",
        ),
        vma(
            0xffff_ffff_ff60_0000,
            0xffff_ffff_ff60_1000,
            4,
            0,
            Backing::Vsyscall,
            b"[vsyscall]",
        ),
    ];
    v[1].pgoff = 2;
    v[2].advice = VMA_HUGEPAGE | VMA_DONTFORK;
    v
}

/// One instance of every record kind, with nothing left at its default.
pub fn every_record() -> Vec<AnyRecord> {
    let arch = Arch::host();
    let mut v = vec![
        AnyRecord::Inventory(inventory(None)),
        AnyRecord::Process(Process {
            pid: ROOT,
            ppid: 1,
            pgid: ROOT,
            sid: 4000,
            state: TaskState::Running,
            threads: vec![ROOT, ROOT + 1],
        }),
        AnyRecord::ThreadCore(thread_core(arch, ROOT)),
        AnyRecord::TaskMisc(task_misc()),
        AnyRecord::Creds(creds()),
        AnyRecord::Rlimits(rlimits()),
        AnyRecord::Sigactions(sigactions()),
        AnyRecord::Itimers(itimers()),
        AnyRecord::PosixTimer(posix_timer(ROOT)),
        AnyRecord::SharedSignals(SharedSignals {
            pending: vec![Siginfo::new(14, 0), Siginfo::new(34, -1)],
        }),
        AnyRecord::Mm(mm(vmas().len() as u32)),
        AnyRecord::Fd(fds()[3].clone()),
        AnyRecord::PipeData(PipeData {
            pipe_id: 99_001,
            data: b"queued in the pipe\n".to_vec(),
        }),
        AnyRecord::GhostData(super::files::GhostData {
            dev: 0x803,
            ino: 99_003,
            offset: 8192,
            data: b"a deleted file's bytes".to_vec(),
        }),
        AnyRecord::UnixQueue(UnixQueue {
            ino: 99_002,
            messages: vec![UnixMessage {
                data: b"queued in a socket".to_vec(),
                fds: vec![fds()[3].file.clone()],
            }],
        }),
        AnyRecord::PagemapHead(PagemapHead {
            space: Space::Process(ROOT),
            pages_file: dir::pages_file(ROOT),
        }),
        AnyRecord::FdDesc(FdDesc { fd: 3, desc_id: 7 }),
        AnyRecord::UnixFlightFile(super::files::UnixFlightFile {
            ino: 99_002,
            message: 0,
            index: 0,
            pid: ROOT,
            fd: 3,
        }),
        AnyRecord::ProcessComm(super::pstree::ProcessComm {
            pid: ROOT,
            comm: b"sample".to_vec(),
        }),
        AnyRecord::PageRun(PageRun {
            vaddr: HEAP,
            nr_pages: 3,
            kind: RunKind::Present,
            pages_off: 5,
            crc: Some(0xdead_beef),
        }),
    ];
    v.extend(vmas().into_iter().map(AnyRecord::Vma));
    v.extend(fds().into_iter().map(AnyRecord::Fd));
    v.push(AnyRecord::GhostData(super::files::GhostData {
        dev: 0xfe00,
        ino: 4321,
        offset: 65536,
        data: b"bytes of a deleted file".to_vec(),
    }));
    v.push(AnyRecord::FileLock(super::files::FileLock {
        fd: 7,
        kind: super::files::LockKind::Posix,
        write: true,
        start: 5,
        end: u64::MAX,
    }));
    v.push(AnyRecord::MemfdObject(super::files::MemfdObject {
        id: 99_004,
        name: b"only mapped".to_vec(),
        size: 10_000,
        seals: 0xf,
        mode: 0o100600,
    }));
    v.push(AnyRecord::Ctty(super::tty::Ctty {
        sid: ROOT,
        index: 3,
        fg_pgrp: ROOT,
    }));
    v.push(AnyRecord::PtyQueue(super::tty::PtyQueue {
        index: 3,
        to_slave: b"typed\npart".to_vec(),
        to_master: b"printed\r\n".to_vec(),
        slave_closed: false,
    }));
    v
}

/// The inventory of a sample image.
pub fn inventory(parent: Option<&str>) -> Inventory {
    Inventory {
        crest_version: env!("CARGO_PKG_VERSION").into(),
        kernel_release: "6.18.0-crest-test".into(),
        arch: Arch::host(),
        page_size: dir::host_page_size(),
        cpu: CpuFeatures {
            xsave_mask: 0x2e7,
            xsave_size: 2432,
            hwcap: 0x178b_fbff,
            hwcap2: 2,
        },
        dump_time_ns: 1_795_651_199_000_000_000,
        kind: if parent.is_some() {
            ImageKind::Dump
        } else {
            ImageKind::PreDump
        },
        root_pid: ROOT,
        options: ["dump", "-t", "4242", "-D", "img", "--leave-running"]
            .map(String::from)
            .to_vec(),
        parent: parent.map(String::from),
    }
}

fn task_misc() -> TaskMisc {
    TaskMisc {
        personality: 0x0040_0000,
        umask: 0o022,
        comm: b"victim".to_vec(),
        cwd: b"/srv/work dir".to_vec(),
        root: b"/".to_vec(),
        dumpable: 1,
        thp_disable: true,
        pdeath_signal: 15,
        child_subreaper: true,
    }
}

fn creds() -> Creds {
    Creds {
        uids: [1000, 1000, 1000, 1000],
        gids: [1000, 1001, 1000, 1000],
        groups: vec![4, 24, 27, 1000],
        cap_inheritable: 0,
        cap_permitted: 1 << 12,
        cap_effective: 1 << 12,
        cap_bounding: 0x1ff_ffff_ffff,
        cap_ambient: 1 << 12,
        securebits: 0x2f,
        no_new_privs: true,
    }
}

fn rlimits() -> Rlimits {
    let mut limits = vec![
        Rlimit {
            cur: u64::MAX,
            max: u64::MAX
        };
        16
    ];
    limits[7] = Rlimit {
        cur: 1024,
        max: 524_288,
    };
    limits[3] = Rlimit {
        cur: 8 << 20,
        max: u64::MAX,
    };
    Rlimits { limits }
}

fn sigactions() -> Sigactions {
    let act = |signo, handler| Sigaction {
        signo,
        handler,
        flags: 0x0400_0004,
        restorer: 0x7f00_0004_2000,
        mask: 1 << 1,
    };
    Sigactions {
        actions: vec![
            act(2, 0x5555_5555_5200),
            act(13, 1),
            act(10, 0x5555_5555_5300),
        ],
    }
}

fn itimers() -> Itimers {
    let spec = TimerSpec {
        interval_ns: 250_000_000,
        value_ns: 120_000_000,
    };
    Itimers {
        real: spec,
        virt: TimerSpec::default(),
        prof: TimerSpec {
            interval_ns: 1_000_000,
            value_ns: 3,
        },
    }
}

fn posix_timer(tid: u32) -> PosixTimer {
    PosixTimer {
        id: 2,
        clock_id: 1,
        sigev_notify: 4,
        sigev_signo: 34,
        sigev_value: 0xfeed,
        notify_tid: tid,
        spec: TimerSpec {
            interval_ns: 10_000_000,
            value_ns: 4_000_000,
        },
        overrun: 1,
    }
}

fn mm(nr_vmas: u32) -> Mm {
    Mm {
        code: (0x5555_5555_4000, 0x5555_5555_6000),
        data: (0x5555_5555_6000, 0x5555_5555_7000),
        brk: (HEAP, HEAP + 0x10_0000),
        start_stack: 0x7ffd_0000_0000 - 0x1000,
        arg: (0x7ffd_0000_0000 - 0x800, 0x7ffd_0000_0000 - 0x7c0),
        env: (0x7ffd_0000_0000 - 0x7c0, 0x7ffd_0000_0000 - 0x100),
        auxv: vec![
            (6, dir::host_page_size() as u64),
            (33, 0x7ffd_1000_6000),
            (25, 0x7ffd_0000_0000 - 0x40),
        ],
        exe: b"/usr/bin/victim".to_vec(),
        exe_id: file_id(1234, 20480),
        nr_vmas,
    }
}

fn fds() -> Vec<Fd> {
    vec![
        Fd {
            fd: 0,
            fd_flags: 0,
            file: FdFile::Chr {
                path: b"/dev/null".to_vec(),
                flags: 0o100002,
                rdev: 0x103,
                pos: 0,
            },
        },
        Fd {
            fd: 1,
            fd_flags: 0,
            file: FdFile::Pipe {
                pipe_id: 99_001,
                flags: 0o1,
            },
        },
        Fd {
            fd: 2,
            fd_flags: 1,
            file: FdFile::Pipe {
                pipe_id: 99_001,
                flags: 0o4000,
            },
        },
        Fd {
            fd: 7,
            fd_flags: 1,
            file: FdFile::Reg {
                path: b"/var/log/victim.log".to_vec(),
                flags: 0o2101,
                pos: 12,
                id: file_id(5678, 12),
            },
        },
    ]
}

/// What a sample image holds, for tests to check against.
#[derive(Debug, Clone, Default)]
pub struct SampleInfo {
    /// Every file written.
    pub files: Vec<String>,
    /// Page counts of the root's private memory.
    pub pages: PageTotals,
}

/// Writes a complete sample image into `d`. With `parent`, the image is an
/// incremental child: half of the heap's stored pages are marked as in the
/// parent and the rest are of `generation`.
pub fn write_image(d: &ImageDir, parent: Option<&str>, generation: u8) -> Result<SampleInfo> {
    let mut info = SampleInfo::default();
    let mut w = d.writer(dir::INVENTORY, FileKind::Inventory)?;
    w.write(&inventory(parent))?;
    w.finish()?;
    let mut w = d.writer(dir::PSTREE, FileKind::Pstree)?;
    let procs = [
        Process {
            pid: ROOT,
            ppid: 1,
            pgid: ROOT,
            sid: 4000,
            state: TaskState::Running,
            threads: vec![ROOT, ROOT + 1],
        },
        Process {
            pid: STOPPED,
            ppid: ROOT,
            pgid: ROOT,
            sid: 4000,
            state: TaskState::Stopped { signal: 19 },
            threads: vec![STOPPED],
        },
        Process {
            pid: ZOMBIE,
            ppid: ROOT,
            pgid: ROOT,
            sid: 4000,
            state: TaskState::Zombie { exit_code: 0x100 },
            threads: vec![],
        },
    ];
    for p in &procs {
        w.write(p)?;
    }
    w.finish()?;
    info.files
        .extend([dir::INVENTORY.to_string(), dir::PSTREE.to_string()]);
    for p in procs.iter().filter(|p| !p.threads.is_empty()) {
        write_process(d, p, &mut info)?;
    }
    info.pages = write_pages(d, ROOT, parent.is_some(), generation, &mut info)?;
    write_shmem(d, generation, &mut info)?;
    Ok(info)
}

/// The task image of a sample process.
pub fn task_image(p: &Process) -> TaskImage {
    TaskImage {
        misc: task_misc(),
        creds: creds(),
        rlimits: rlimits(),
        sigactions: sigactions(),
        itimers: itimers(),
        posix_timers: vec![posix_timer(p.pid)],
        shared_signals: SharedSignals {
            pending: vec![Siginfo::new(14, 0)],
        },
        threads: p
            .threads
            .iter()
            .map(|t| thread_core(Arch::host(), *t))
            .collect(),
    }
}

/// The mm image of a sample process.
pub fn mm_image() -> MmImage {
    let vmas = vmas();
    MmImage {
        mm: mm(vmas.len() as u32),
        vmas,
    }
}

/// The files image of a sample process.
pub fn files_image() -> FilesImage {
    FilesImage {
        fds: fds(),
        pipes: vec![PipeData {
            pipe_id: 99_001,
            data: b"queued in the pipe\n".to_vec(),
        }],
        descs: vec![FdDesc { fd: 0, desc_id: 1 }],
        ..FilesImage::default()
    }
}

fn write_process(d: &ImageDir, p: &Process, info: &mut SampleInfo) -> Result<()> {
    task_image(p).write(d, p.pid)?;
    mm_image().write(d, p.pid)?;
    files_image().write(d, p.pid)?;
    info.files.extend([
        dir::task_file(p.pid),
        dir::mm_file(p.pid),
        dir::files_file(p.pid),
    ]);
    Ok(())
}

fn write_pages(
    d: &ImageDir,
    pid: u32,
    child: bool,
    generation: u8,
    info: &mut SampleInfo,
) -> Result<PageTotals> {
    let (index, data) = (dir::pagemap_file(pid), dir::pages_file(pid));
    let mut pw = PageWriter::create(d, &index, &data, Space::Process(pid))?;
    let ps = dir::host_page_size() as u64;
    let page = |i: u64| page_pattern(HEAP + i * ps, generation, ps as usize);
    if child {
        pw.add_parent(HEAP, 4)?;
    } else {
        pw.add_pages(HEAP, &[page(0), page(1), page(2), page(3)].concat())?;
    }
    pw.add_zero(HEAP + 4 * ps, 2)?;
    pw.add_zero(HEAP + 6 * ps, 1)?;
    pw.add_pages(HEAP + 8 * ps, &page(8))?;
    // The way dump will store pages it never copies: the closure writes them.
    pw.add_pages_with(HEAP + 9 * ps, 2, |out, len| {
        let bytes = [page(9), page(10)].concat();
        out.write_all(&bytes)?;
        Ok(len.min(bytes.len() as u64))
    })?;
    let stack = 0x7ffd_0000_0000 - 2 * ps;
    pw.add_pages(stack, &[page(100), page(101)].concat())?;
    let totals = pw.totals();
    pw.finish()?;
    info.files.extend([index, data]);
    Ok(totals)
}

fn write_shmem(d: &ImageDir, generation: u8, info: &mut SampleInfo) -> Result<()> {
    let (index, data) = (dir::shmem_pagemap_file(SHMID), dir::shmem_pages_file(SHMID));
    let mut pw = PageWriter::create(d, &index, &data, Space::Shmem(SHMID))?;
    let ps = dir::host_page_size() as u64;
    pw.add_pages(0, &page_pattern(0, generation, ps as usize))?;
    pw.add_zero(ps, 3)?;
    pw.finish()?;
    info.files.extend([index, data]);
    Ok(())
}
