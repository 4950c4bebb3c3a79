//! How long `crest check --all` takes, next to the cost of merely starting
//! crest (`crest --version`) in the same run. The goal is under 100 ms.
//!
//! Run: `cargo bench --bench check`. Prints medians over many runs after a
//! warm-up, so page cache and free-page reporting do not skew the result.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RUNS: usize = 41;

fn median_of(args: &[&str]) -> Duration {
    let run = || {
        let start = Instant::now();
        let status = Command::new(env!("CARGO_BIN_EXE_crest"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("crest runs");
        assert!(
            status.code().is_some(),
            "crest {args:?} was killed by a signal"
        );
        start.elapsed()
    };
    for _ in 0..5 {
        run();
    }
    let mut times: Vec<Duration> = (0..RUNS).map(|_| run()).collect();
    times.sort();
    times[RUNS / 2]
}

fn main() {
    let start = median_of(&["--version"]);
    let check = median_of(&["check"]);
    let all = median_of(&["check", "--all"]);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("warm medians over {RUNS} runs");
    println!(
        "crest --version      {:8.2} ms  (process start, the floor)",
        ms(start)
    );
    println!(
        "crest check          {:8.2} ms  {:6.1}x the floor",
        ms(check),
        ms(check) / ms(start)
    );
    println!(
        "crest check --all    {:8.2} ms  {:6.1}x the floor, {:.2}x the 100 ms budget",
        ms(all),
        ms(all) / ms(start),
        ms(all) / 100.0
    );
}
