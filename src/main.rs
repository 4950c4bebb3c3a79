//! The `crest` binary: everything lives in the library so tests and fuzzers reach it.

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    std::process::exit(crest::cli::main(&args));
}
