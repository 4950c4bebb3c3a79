//! The command line: CRIU's commands and options, parsed by hand.
//!
//! `main` parses, sets up logging, runs one command and turns its result into
//! an exit status: 0 success, 1 failure (the error is printed once, here), 2
//! a usage error (a one-line reason followed by the usage).

mod args;
mod help;

pub use args::{Args, OPTIONS, OptSpec, parse};
pub use help::{COMMANDS, Command};

use std::ffi::OsString;
use std::io::Write;

use crate::error::{Error, Result};

/// Runs crest with `argv` (without the program name) and returns the exit status.
pub fn main(argv: &[OsString]) -> i32 {
    let args = match parse(argv) {
        Ok(a) => a,
        Err(e) => return usage_error(&e),
    };
    if let Some(level) = args.verbosity {
        crate::log::set_level(level);
    }
    match run(&args) {
        Ok(code) => code,
        Err(e @ Error::Usage(_)) => usage_error(&e),
        Err(e) => {
            crate::error!("{e}");
            // The log may be a file: the user must still see why crest failed.
            if args.log_file.is_some() || crate::log::level() < crate::log::LEVEL_ERROR {
                eprintln!("crest: {e}");
            }
            e.exit_code()
        }
    }
}

fn usage_error(e: &Error) -> i32 {
    eprintln!("crest: {e}");
    eprint!("{}", help::usage());
    2
}

fn run(args: &Args) -> Result<i32> {
    if args.version {
        println!("crest {}", env!("CARGO_PKG_VERSION"));
        return Ok(0);
    }
    let Some(command) = args.command.as_deref() else {
        if args.help {
            print!("{}", help::full());
            return Ok(0);
        }
        return Err(Error::Usage("no command given".into()));
    };
    if args.help {
        return print_help(Some(command));
    }
    open_log(args)?;
    match command {
        "help" => print_help(args.positional.first().map(String::as_str)),
        "check" => {
            no_positional(args)?;
            let opts = crate::check::CheckOptions {
                all: args.all,
                features: args.features.clone(),
                json: args.json,
            };
            crate::check::run(&opts, &mut std::io::stdout().lock())
        }
        "show" => {
            let path = match args.positional.as_slice() {
                [one] => std::path::Path::new(one),
                [] => return Err(Error::Usage("show needs an image directory or file".into())),
                [_, extra, ..] => {
                    return Err(Error::Usage(format!("unexpected argument `{extra}`")));
                }
            };
            crate::image::show::run(path, args.json, &mut std::io::stdout().lock())
        }
        "dump" => dump(args),
        "pre-dump" => pre_dump(args),
        "restore" => restore(args),
        "page-server" => page_server(args),
        "selftest" => {
            no_positional(args)?;
            match &args.workload {
                Some(dir) => Ok(crate::selftest::workload::run(dir)),
                None => crate::selftest::run(&mut std::io::stdout().lock()),
            }
        }
        other => Err(Error::Usage(format!("unknown command `{other}`"))),
    }
}

fn print_help(command: Option<&str>) -> Result<i32> {
    let text = match command {
        None => help::full(),
        Some(name) => {
            help::command(name).ok_or_else(|| Error::Usage(format!("unknown command `{name}`")))?
        }
    };
    let mut out = std::io::stdout().lock();
    // A closed stdout (e.g. `crest help | head -0`) is not worth an error.
    let _ = out.write_all(text.as_bytes());
    Ok(0)
}

fn no_positional(args: &Args) -> Result<()> {
    match args.positional.first() {
        Some(extra) => Err(Error::Usage(format!("unexpected argument `{extra}`"))),
        None => Ok(()),
    }
}

/// The `-t PID` and `-D DIR` that dump and pre-dump both require.
fn target_and_dir(
    args: &Args,
    command: &str,
    what: &str,
) -> Result<(crate::sys::Pid, std::path::PathBuf)> {
    no_positional(args)?;
    let tree = args
        .tree
        .as_deref()
        .ok_or_else(|| Error::Usage(format!("{command} needs -t PID ({what})")))?;
    let dir = args.images_dir.clone().ok_or_else(|| {
        Error::Usage(format!("{command} needs -D DIR (where to write the image)"))
    })?;
    let pid = tree
        .parse::<crate::sys::Pid>()
        .ok()
        .filter(|&p| p > 0)
        .ok_or_else(|| Error::Usage(format!("bad pid `{tree}`: -t takes a positive number")))?;
    Ok((pid, dir))
}

fn dump(args: &Args) -> Result<i32> {
    let (pid, dir) = target_and_dir(args, "dump", "the process to dump")?;
    connect_page_server(args)?;
    let opts = crate::dump::run::DumpOptions {
        pid,
        dir,
        leave_running: args.leave_running,
        command_line: args.argv.clone(),
        external: args.external.clone(),
        files: crate::dump::files::FileOptions {
            ghost_limit: args
                .ghost_limit
                .unwrap_or(crate::dump::files::ghost::DEFAULT_GHOST_LIMIT),
            file_locks: args.file_locks,
        },
    };
    let inc = crate::dump::run::Incremental {
        prev_images_dir: args.prev_images_dir.clone(),
        track_mem: args.track_mem,
    };
    crate::dump::run::run_tracked(&opts, args.shell_job, &inc)?;
    Ok(0)
}

fn pre_dump(args: &Args) -> Result<i32> {
    let (pid, dir) = target_and_dir(args, "pre-dump", "the process to pre-dump")?;
    connect_page_server(args)?;
    let opts = crate::dump::predump::PreDumpOptions {
        pid,
        dir,
        prev_images_dir: args.prev_images_dir.clone(),
        command_line: args.argv.clone(),
    };
    crate::dump::predump::run(&opts)?;
    Ok(0)
}

/// With `--page-server`, connects to the server the page files go to
/// (dump and pre-dump).
fn connect_page_server(args: &Args) -> Result<()> {
    if args.page_server {
        let (address, port) = server_address(args, "127.0.0.1")?;
        crate::pageserver::client::install(crate::pageserver::Client::connect(&address, port)?);
    } else if args.address.is_some() || args.port.is_some() {
        return Err(Error::Usage(
            "--address and --port go with --page-server".into(),
        ));
    }
    Ok(())
}

/// The page server's address (or `default`) and port, from the options.
fn server_address(args: &Args, default: &str) -> Result<(String, u16)> {
    let port = args
        .port
        .as_deref()
        .ok_or_else(|| Error::Usage("the page server needs --port PORT".into()))?;
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|&p| p > 0)
        .ok_or_else(|| Error::Usage(format!("bad port `{port}`: --port takes 1 to 65535")))?;
    Ok((args.address.clone().unwrap_or_else(|| default.into()), port))
}

fn page_server(args: &Args) -> Result<i32> {
    no_positional(args)?;
    let dir = args.images_dir.clone().ok_or_else(|| {
        Error::Usage("page-server needs -D DIR (where to write the pages)".into())
    })?;
    let (address, port) = server_address(args, "0.0.0.0")?;
    crate::image::ImageDir::create(&dir)?;
    let listener = crate::pageserver::server::listen(&address, port)?;
    crate::info!("page server: listening on {address}:{port}");
    let got = crate::pageserver::server::serve_one(&listener, &dir)?;
    crate::info!(
        "page server: {} file(s), {} bytes received",
        got.files.len(),
        got.bytes
    );
    Ok(0)
}

fn restore(args: &Args) -> Result<i32> {
    no_positional(args)?;
    let dir = args
        .images_dir
        .clone()
        .ok_or_else(|| Error::Usage("restore needs -D DIR (the image to restore)".into()))?;
    let opts = crate::restore::run::RestoreOptions {
        dir,
        detach: args.detach,
        pidfile: args.pidfile.clone(),
        shell_job: args.shell_job,
    };
    crate::restore::run::run(&opts)
}

fn open_log(args: &Args) -> Result<()> {
    let Some(path) = &args.log_file else {
        return Ok(());
    };
    // As in CRIU, a relative log path names a file in the images directory.
    let path = match &args.images_dir {
        Some(dir) if path.is_relative() => {
            crate::image::ImageDir::create(dir)?;
            dir.join(path)
        }
        _ => path.clone(),
    };
    let path = &path;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io("open the log file", path, e))?;
    crate::log::set_file(file);
    Ok(())
}
