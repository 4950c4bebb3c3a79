//! The command line as a user meets it: exit statuses, usage errors, help
//! texts and the log file, run against the real binary.

use std::process::{Command, Output};

fn crest(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_crest"))
        .args(args)
        .output()
        .expect("the crest binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn version_names_the_package_version() {
    let out = crest(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stdout).trim(),
        format!("crest {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn help_lists_every_command() {
    let out = crest(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out.stdout);
    for c in crest::cli::COMMANDS {
        assert!(help.contains(c.name), "--help lacks {}", c.name);
    }
}

#[test]
fn help_command_shows_its_options() {
    let out = crest(&["help", "check"]);
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out.stdout);
    assert!(help.contains("usage: crest check"));
    assert!(help.contains("--feature NAME"));
    assert_eq!(text(&crest(&["check", "--help"]).stdout), help);
}

#[test]
fn unknown_command_is_a_usage_error() {
    let out = crest(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.starts_with("crest: unknown command `frobnicate`\n"),
        "{err}"
    );
    assert!(err.contains("usage: crest"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn unknown_option_is_a_usage_error() {
    for args in [
        &["check", "--frob"][..],
        &["-Z", "check"],
        &["help", "nosuch"],
        &[],
    ] {
        let out = crest(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = text(&out.stderr);
        assert!(err.starts_with("crest: "), "{args:?}: {err}");
        assert!(err.contains("usage: crest"), "{args:?}: {err}");
    }
}

#[test]
fn option_of_another_command_is_refused() {
    let out = crest(&["help", "--feature"]);
    assert_eq!(out.status.code(), Some(2));
    let out = crest(&["--all"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn docs_cli_describes_every_command_and_option() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/CLI.md")).unwrap();
    for c in crest::cli::COMMANDS {
        assert!(
            doc.contains(c.usage),
            "docs/CLI.md lacks the synopsis `{}`",
            c.usage
        );
    }
    for o in crest::cli::OPTIONS {
        assert!(
            doc.contains(&format!("--{}", o.long)),
            "docs/CLI.md lacks --{}",
            o.long
        );
    }
}

#[test]
fn log_file_receives_the_log() {
    let dir = std::env::temp_dir().join(format!("crest-cli-log-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("check.log");
    let out = crest(&[
        "-v4",
        "-o",
        log.to_str().unwrap(),
        "check",
        "--feature",
        "ptrace_seize",
    ]);
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(out.status.code().is_some());
    assert!(
        logged.contains("(Debug)") || logged.contains("(Info)"),
        "log: {logged:?}"
    );
    assert!(
        !text(&out.stderr).contains("(Debug)"),
        "debug lines went to stderr as well"
    );
}
