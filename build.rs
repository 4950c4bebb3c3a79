//! Builds the blobs (parasite/*.rs + arch/<arch>/) that crest injects into
//! other processes, checks them, and embeds them.
//!
//! Each blob is a freestanding `no_std` crate compiled by the same `$RUSTC`
//! for the architecture crest is built for (the target triple of this build,
//! whose `core` is installed by definition), as a fat-LTO static library with
//! position independent code, then linked by the toolchain's own rust-lld
//! with arch/<arch>/blob.ld into one segment at address 0. No C compiler, no
//! external tool: parasite/build/elf.rs reads the result and fails the build
//! unless it is a single relocation-free segment with the required symbols,
//! under its size budget. The flat image goes to `$OUT_DIR/<blob>.bin` and
//! its layout (entry, trap, args area, stack) to `$OUT_DIR/blobs.rs`, which
//! src/blob.rs includes.

#[path = "parasite/build/elf.rs"]
mod elf;

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Symbols every blob's head defines (arch/<arch>/entry.rs).
const HEAD_SYMBOLS: &[&str] = &[
    "__crest_head",
    "__crest_trap",
    "__crest_args",
    "__crest_stack",
    "__crest_stack_top",
];

/// One blob: its crate root and its image budget.
struct Blob {
    name: &'static str,
    root: &'static str,
    budget: usize,
}

const BLOBS: &[Blob] = &[
    Blob {
        name: "parasite",
        root: "parasite/parasite.rs",
        budget: 16 * 1024,
    },
    Blob {
        name: "restorer",
        root: "parasite/restorer.rs",
        budget: 16 * 1024,
    },
];

/// Everything the build needs to know about its environment.
struct Env {
    rustc: PathBuf,
    lld: PathBuf,
    target: String,
    arch: String,
    manifest: PathBuf,
    out: PathBuf,
}

fn var(name: &str) -> String {
    env::var(name).unwrap_or_else(|_| panic!("cargo did not set ${name} for build.rs"))
}

/// rust-lld ships in every rustup toolchain under the sysroot, next to the
/// host's LLVM tools; finding it there keeps the build free of system tools.
fn find_lld(rustc: &Path) -> PathBuf {
    let out = Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} --print sysroot: {e}", rustc.display()));
    let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let lld = Path::new(&sysroot)
        .join("lib/rustlib")
        .join(var("HOST"))
        .join("bin/rust-lld");
    if !lld.exists() {
        panic!(
            "{} not found: the blobs are linked with the toolchain's rust-lld; \
             use a rustup toolchain that ships it",
            lld.display()
        );
    }
    lld
}

fn setup() -> Env {
    let rustc = PathBuf::from(var("RUSTC"));
    let target = var("TARGET");
    let arch = var("CARGO_CFG_TARGET_ARCH");
    if !matches!(arch.as_str(), "x86_64" | "aarch64") || !target.contains("-linux") {
        panic!("crest runs on x86_64 and aarch64 Linux only, not on {target}");
    }
    Env {
        lld: find_lld(&rustc),
        rustc,
        target,
        arch,
        manifest: PathBuf::from(var("CARGO_MANIFEST_DIR")),
        out: PathBuf::from(var("OUT_DIR")),
    }
}

/// Runs `cmd`; on failure stops the build with its output. Diagnostics of
/// a successful run (rustc warnings in blob code) are passed on as cargo
/// warnings, since cargo hides a build script's own output.
fn run(mut cmd: Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot start {what} ({cmd:?}): {e}"));
    if !out.status.success() {
        panic!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for line in String::from_utf8_lossy(&out.stderr).lines() {
        println!("cargo::warning={what}: {line}");
    }
}

/// rustc flags of every blob. panic=abort: no unwinding machinery (and a
/// panic traps, see parasite/rt.rs); pic: the code addresses everything
/// PC-relatively; opt-level=s with fat LTO and one codegen unit: small code
/// and `core` folded into one object, so --gc-sections keeps only what the
/// head reaches; no debug info and no unwind tables: nothing the flat image
/// would carry.
const RUSTC_FLAGS: &[&str] = &[
    "--edition=2024",
    "--crate-type=staticlib",
    "-Cpanic=abort",
    "-Crelocation-model=pic",
    "-Copt-level=s",
    "-Clto=fat",
    "-Ccodegen-units=1",
    "-Cdebuginfo=0",
    "-Cforce-unwind-tables=no",
];

/// rust-lld flags of every blob. `-pie` (with no dynamic linker) makes
/// anything address dependent surface as a relocation that elf.rs refuses,
/// instead of being resolved for address 0 and silently wrong wherever the
/// blob is mapped; `-z text` already refuses relocations in code at link
/// time. The rest keeps the file small and free of notes.
const LLD_FLAGS: &[&str] = &[
    "-flavor",
    "gnu",
    "-pie",
    "--no-dynamic-linker",
    "-z",
    "text",
    "-z",
    "norelro",
    "-z",
    "max-page-size=4096",
    "--gc-sections",
    "--build-id=none",
    "-e",
    "__crest_head",
];

/// Compiles a blob crate to a fat-LTO static library (one object with the
/// blob and the parts of `core` it uses) and returns its path.
fn compile(env: &Env, blob: &Blob) -> PathBuf {
    let lib = env.out.join(format!("lib{}.a", blob.name));
    let mut cmd = Command::new(&env.rustc);
    cmd.arg(env.manifest.join(blob.root))
        .args(RUSTC_FLAGS)
        .args(["--crate-name", blob.name, "--target", &env.target, "-o"])
        .arg(&lib);
    run(cmd, &format!("compiling blob `{}`", blob.name));
    lib
}

/// Links the library with arch/<arch>/blob.ld into the blob's ELF file.
fn link(env: &Env, blob: &Blob, lib: &Path) -> PathBuf {
    let elf = env.out.join(format!("{}.elf", blob.name));
    let script = env.manifest.join("arch").join(&env.arch).join("blob.ld");
    let mut cmd = Command::new(&env.lld);
    cmd.args(LLD_FLAGS).arg("-T").arg(script);
    cmd.arg("-o").arg(&elf).arg(lib);
    run(cmd, &format!("linking blob `{}`", blob.name));
    elf
}

/// Checks the linked blob, writes its image and returns its blobs.rs entry.
fn embed(env: &Env, blob: &Blob, elf_path: &Path) -> String {
    let data = std::fs::read(elf_path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", elf_path.display()));
    let spec = elf::BlobSpec {
        name: blob.name,
        arch: &env.arch,
        budget: blob.budget,
        symbols: HEAD_SYMBOLS,
    };
    let checked = elf::check_blob(&data, &spec).unwrap_or_else(|e| panic!("{e}"));
    let bin = env.out.join(format!("{}.bin", blob.name));
    std::fs::write(&bin, &checked.image)
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", bin.display()));
    // check_blob returned every symbol of HEAD_SYMBOLS, so indexing cannot fail.
    let sym = |n: &str| checked.symbols[n];
    format!(
        "/// The {name} blob for {arch}.\n\
         const {upper}: Blob = Blob {{\n    \
         bytes: include_bytes!(concat!(env!(\"OUT_DIR\"), \"/{name}.bin\")),\n    \
         entry: {entry},\n    trap: {trap},\n    args_offset: {args},\n    \
         args_size: {args_size},\n    stack_offset: {stack},\n    \
         stack_top: {top},\n    mem_size: {mem},\n}};\n",
        name = blob.name,
        arch = env.arch,
        upper = blob.name.to_uppercase(),
        entry = sym("__crest_head").0,
        trap = sym("__crest_trap").0,
        args = sym("__crest_args").0,
        args_size = sym("__crest_args").1,
        stack = sym("__crest_stack").0,
        top = sym("__crest_stack_top").0,
        mem = checked.mem_size,
    )
}

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=parasite");
    let env = setup();
    println!("cargo::rerun-if-changed=arch/{}", env.arch);
    let mut generated = String::from("// Generated by build.rs: the layout of each blob.\n");
    for blob in BLOBS {
        let lib = compile(&env, blob);
        let elf = link(&env, blob, &lib);
        generated.push_str(&embed(&env, blob, &elf));
    }
    let path = env.out.join("blobs.rs");
    std::fs::write(&path, generated)
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}
