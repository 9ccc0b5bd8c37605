//! What the inspector's tests share: a small application that fills a store (the bank account
//! of the shared test domain, with a handler that dead-letters withdrawals), running the
//! built `evoq` binary, and golden files.

#![allow(dead_code)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use evoq::EventStore;
use evoq::prelude::*;
use evoq_tests::bank::*;
use evoq_tests::ledger::Failed;

/// Fails on every withdrawal (one attempt: each is dead-lettered at once).
#[derive(Default)]
pub(crate) struct Notifier;

#[event_handler(name = "notifier", max_attempts = 1)]
impl Notifier {
    #[handles]
    async fn opened(&mut self, _: &AccountOpened, _: &EventMeta) -> Result<(), Failed> {
        Ok(())
    }

    #[handles]
    async fn withdrawn(&mut self, e: &MoneyWithdrawn, _: &EventMeta) -> Result<(), Failed> {
        Err(Failed(format!("no mail server for {}", e.account)))
    }
}

/// Takes every deposit.
#[derive(Default)]
pub(crate) struct Audit;

#[event_handler(name = "audit")]
impl Audit {
    #[handles]
    async fn deposited(&mut self, _: &MoneyDeposited, _: &EventMeta) -> Result<(), Failed> {
        Ok(())
    }
}

/// The head after [`fill`].
pub(crate) const HEAD: u64 = 7;

/// Starts the application on `store`.
pub(crate) async fn start(store: Arc<dyn EventStore>) -> Evoq {
    Evoq::builder()
        .shared_store(store)
        .handler(Notifier)
        .handler(Audit)
        .start()
        .await
        .expect("the application starts")
}

/// Runs the application on `store`: 7 events in two streams, one dead letter of `notifier`,
/// the checkpoints of both handlers at 7; then stops it.
pub(crate) async fn fill(store: Arc<dyn EventStore>) {
    let app = start(store).await;
    app.command(OpenAccount {
        account: "acc-1".into(),
        initial_balance: 100,
    })
    .metadata("user", "alice")
    .dispatch()
    .await
    .unwrap();
    app.dispatch(Deposit {
        account: "acc-1".into(),
        amount: 50,
    })
    .await
    .unwrap();
    app.dispatch(OpenAccount {
        account: "acc-2".into(),
        initial_balance: 10,
    })
    .await
    .unwrap();
    app.dispatch(Withdraw {
        account: "acc-1".into(),
        amount: 30,
    })
    .await
    .unwrap();
    app.dispatch(DepositMany {
        account: "acc-2".into(),
        amount: 5,
        times: 2,
    })
    .await
    .unwrap();
    let last = app
        .dispatch(CloseAccount {
            account: "acc-2".into(),
        })
        .await
        .unwrap();
    assert_eq!(last.position, Some(HEAD));
    for handler in ["notifier", "audit"] {
        tokio::time::timeout(
            Duration::from_secs(20),
            app.wait_for_named(handler, HEAD).without_deadline(),
        )
        .await
        .expect("the handlers catch up")
        .expect("the handler runs");
    }
    app.stop().await;
}

/// Runs `evoq <args> verify` `times` times while the application writes to `store` as fast as
/// it can (deposits, and withdrawals its handler dead-letters, so that checkpoints move and
/// dead letters are saved); returns the runs that did not exit with 0.
pub(crate) async fn verify_while_writing(
    store: Arc<dyn EventStore>,
    args: Vec<String>,
    times: usize,
) -> Vec<Run> {
    let app = start(store).await;
    app.dispatch(OpenAccount {
        account: "busy".into(),
        initial_balance: 1_000_000,
    })
    .await
    .unwrap();
    let writing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let writers: Vec<_> = (0..4)
        .map(|n| {
            let (app, writing) = (app.clone(), Arc::clone(&writing));
            tokio::spawn(async move {
                while writing.load(std::sync::atomic::Ordering::SeqCst) {
                    let _ = app
                        .dispatch(Deposit {
                            account: format!("busy-{n}"),
                            amount: 1,
                        })
                        .await;
                    let _ = app
                        .dispatch(Withdraw {
                            account: "busy".into(),
                            amount: 1,
                        })
                        .await;
                }
            })
        })
        .collect();
    let failed = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        (0..times)
            .map(|_| evoq(&[args.as_slice(), &["verify"]].concat()))
            .filter(|run| run.code != 0)
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    writing.store(false, std::sync::atomic::Ordering::SeqCst);
    for writer in writers {
        writer.await.unwrap();
    }
    app.stop().await;
    failed
}

/// What a run of `evoq` gave.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Run {
    /// The output as JSON, or a panic showing the run.
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("the output is not JSON ({e}): {self:#?}"))
    }

    /// Asserts the exit code, showing the run when it differs.
    #[track_caller]
    pub(crate) fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "exit code of {self:#?}");
        self
    }
}

/// Runs `evoq` with `args`, stdin closed, stderr not a terminal.
pub(crate) fn evoq(args: &[&str]) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_evoq"))
        .args(args)
        .env_remove("EVOQ_STORE")
        .env_remove("EVOQ_SCHEMA")
        .env_remove("EVOQ_CONFIG")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run evoq");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `text` with what changes from run to run replaced by placeholders of the same width (so
/// tables keep their layout): times, UUIDs, and `dir`.
pub(crate) fn normalize(text: &str, dir: Option<&Path>) -> String {
    let mut text = text.to_owned();
    if let Some(dir) = dir {
        text = text.replace(&dir.display().to_string(), "<dir>");
    }
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        if let Some(n) = matches(&chars[i..], "dddd-dd-ddTdd:dd:dd.dddZ") {
            out.push_str("YYYY-MM-DDThh:mm:ss.sssZ");
            i += n;
        } else if let Some(n) = matches(&chars[i..], "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx") {
            out.push_str("xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx");
            i += n;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

/// The length of `pattern` when `text` starts with it (`d`: a digit, `x`: a hex digit; other
/// characters stand for themselves).
fn matches(text: &[char], pattern: &str) -> Option<usize> {
    let n = pattern.chars().count();
    if text.len() < n {
        return None;
    }
    let ok = pattern.chars().zip(text).all(|(p, c)| match p {
        'd' => c.is_ascii_digit(),
        'x' => c.is_ascii_hexdigit(),
        other => other == *c,
    });
    ok.then_some(n)
}

/// Compares `actual` with `tests/golden/<name>.txt`; `UPDATE_GOLDEN=1` writes it instead.
#[track_caller]
pub(crate) fn golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}.txt"));
    if std::env::var("UPDATE_GOLDEN").as_deref() == Ok("1") {
        std::fs::write(&path, actual).expect("write the golden file");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "no golden file `{}` ({e}); run with UPDATE_GOLDEN=1 to write it",
            path.display()
        )
    });
    assert!(
        actual == expected,
        "the output differs from `{}` (UPDATE_GOLDEN=1 rewrites it):\n--- expected\n{expected}\n--- actual\n{actual}",
        path.display()
    );
}
