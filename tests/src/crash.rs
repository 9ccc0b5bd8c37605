//! Crash tests: the test binary re-run as a child process on one of its own tests, killed with
//! SIGKILL at a random moment, and what it printed up to then.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The runtime of a crash test's parent and of its children: two workers, as on the 2-core
/// machines the tests run on.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio")
}

/// Random kill moments without a dependency: a xorshift seeded from the clock (the seed is
/// printed, so a failing run can be told apart).
pub struct KillClock(u64);

impl KillClock {
    pub fn new() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1;
        println!("crash test seed {seed}");
        KillClock(seed)
    }

    /// A duration of at least `min` and less than `min + spread`.
    pub fn between(&mut self, min: Duration, spread: Duration) -> Duration {
        let x = &mut self.0;
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        let spread = u64::try_from(spread.as_millis()).unwrap_or(u64::MAX).max(1);
        min + Duration::from_millis(*x % spread)
    }
}

impl Default for KillClock {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs the test `test` of this test binary in a child process with `env` set (with
/// `--ignored`, so the child may be an ignored test), kills it with SIGKILL after `after`, and
/// returns the complete lines it printed to stdout (the kill may cut the last one).
pub fn run_and_kill(test: &str, env: &[(&str, &str)], after: Duration) -> Vec<String> {
    let exe = std::env::current_exe().expect("the test binary");
    let mut child = Command::new(exe)
        .args([
            "--exact",
            test,
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the child");
    let stdout = child.stdout.take().expect("child stdout");
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
            if line.ends_with('\n') {
                lines.push(line.trim_end().to_owned());
            }
            line.clear();
        }
        lines
    });
    std::thread::sleep(after);
    child.kill().expect("SIGKILL the child");
    let _ = child.wait();
    reader.join().expect("the child's output")
}

/// What the children of [`kill_rounds`] printed, over every round.
#[derive(Debug, Default)]
pub struct Rounds {
    /// The highest number a child printed after the `sent` prefix.
    pub highest: Option<u64>,
    /// How many lines starting with `ack ` the children printed.
    pub acked: usize,
}

/// Runs `rounds` children of the test `test` one after the other, each killed with SIGKILL
/// after 300 ms to 1 s (see [`run_and_kill`]), each given `env` and `from_var` = the number to
/// start from: `margin` below the highest number the children before printed after the prefix
/// `sent` (some of those were in flight when they died), or 0 for the first.
pub fn kill_rounds(
    test: &str,
    env: &[(&str, &str)],
    from_var: &str,
    rounds: usize,
    margin: u64,
    sent: &str,
) -> Rounds {
    let mut clock = KillClock::new();
    let mut seen = Rounds::default();
    for round in 0..rounds {
        let from = seen
            .highest
            .map_or(0, |h| h.saturating_sub(margin))
            .to_string();
        let mut child_env = env.to_vec();
        child_env.push((from_var, &from));
        let after = clock.between(Duration::from_millis(300), Duration::from_millis(700));
        for line in run_and_kill(test, &child_env, after) {
            if let Some(i) = line.strip_prefix(sent) {
                let i: u64 = i.parse().expect("a number after the prefix");
                seen.highest = Some(seen.highest.map_or(i, |h| h.max(i)));
            } else if line.starts_with("ack ") {
                seen.acked += 1;
            }
        }
        println!(
            "round {round}: up to {:?} sent, {} acknowledged",
            seen.highest, seen.acked
        );
    }
    seen
}
