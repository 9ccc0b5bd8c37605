//! A command never runs twice across `kill -9` (docs/semantics.md §3.6): a child process sends
//! keyed deposits and is killed at random moments, each new child resending the last keys the
//! one before it sent (some of them in flight when it died); then every key is sent once more.
//! Each key's deposit must be stored exactly once, on SQLite and on PostgreSQL.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;

use evoq::prelude::*;
use evoq::store::{Direction, EventStore};
use evoq_tests::backends::{Backend, Place, open_at};
use evoq_tests::bank::*;
use evoq_tests::crash::{kill_rounds, runtime};

/// Where the child finds its store: `sqlite:<path>` or `postgres:<schema>@<url>`.
const CHILD_STORE: &str = "EVOQ_CRASH_STORE";
/// The first key the child sends.
const CHILD_FROM: &str = "EVOQ_CRASH_FROM";
/// Accounts the keys are spread over (one sending task each).
const ACCOUNTS: u64 = 4;

/// The account key `i` deposits to, and its amount (unique per key).
fn deposit_of(i: u64) -> Deposit {
    Deposit {
        account: format!("acct-{}", i % ACCOUNTS),
        amount: i + 1,
    }
}

/// Sends `keys` (each with its deposit) from one task per account; prints `send i` before and
/// `ack i` after each.
async fn send_keys(app: &Evoq, keys: impl Iterator<Item = u64>, print: bool) {
    let mut per_account: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for i in keys {
        per_account.entry(i % ACCOUNTS).or_default().push(i);
    }
    let tasks: Vec<_> = per_account
        .into_values()
        .map(|keys| {
            let app = app.clone();
            tokio::spawn(async move {
                for i in keys {
                    if print {
                        say(&format!("send {i}"));
                    }
                    app.command(deposit_of(i))
                        .idempotency_key(format!("k{i}"))
                        .dispatch()
                        .await
                        .unwrap_or_else(|e| panic!("key {i}: {e}"));
                    if print {
                        say(&format!("ack {i}"));
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a sending task");
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

async fn start(store: Arc<dyn EventStore>) -> Evoq {
    let app = Evoq::builder()
        .shared_store(store)
        .start()
        .await
        .expect("start");
    for account in 0..ACCOUNTS {
        app.command(OpenAccount {
            account: format!("acct-{account}"),
            initial_balance: 0,
        })
        .idempotency_key(format!("open-{account}"))
        .dispatch()
        .await
        .expect("open");
    }
    app
}

/// The child: runs only when the parent starts it with the environment set.
#[test]
#[ignore = "run by the crash tests in a child process"]
fn crash_child_sends_keyed_deposits() {
    let (Ok(spec), Ok(from)) = (std::env::var(CHILD_STORE), std::env::var(CHILD_FROM)) else {
        return;
    };
    let from: u64 = from.parse().expect("from");
    runtime().block_on(async move {
        let app = start(open_at(&spec).await).await;
        send_keys(&app, from..from + 100_000, true).await;
    });
}

fn kill_children_then_resend_every_key(place: &Place) {
    let spec = &place.address().expect("a place another process can reach");
    // Each child resends the last keys of the one before (some were in flight when it died).
    let rounds = kill_rounds(
        "crash_child_sends_keyed_deposits",
        &[(CHILD_STORE, spec)],
        CHILD_FROM,
        6,
        2 * ACCOUNTS,
        "send ",
    );
    let highest = rounds.highest.expect("the children sent keys");
    assert!(rounds.acked > 0, "the children never completed a key");

    runtime().block_on(async {
        let app = start(place.open().await).await;
        // Every key once more: the ones that ran return their first result, the others run.
        send_keys(&app, 0..=highest, false).await;
        let mut amounts: BTreeMap<u64, usize> = BTreeMap::new();
        for account in 0..ACCOUNTS {
            let events = app
                .store()
                .read_stream(
                    &account_stream(&format!("acct-{account}")),
                    1,
                    Direction::Forward,
                    usize::MAX,
                )
                .await
                .expect("read");
            let opened = events
                .iter()
                .filter(|e| &*e.event_type == "AccountOpened")
                .count();
            assert_eq!(opened, 1, "acct-{account} was opened exactly once");
            for event in events.iter().filter(|e| &*e.event_type == "MoneyDeposited") {
                let data: serde_json::Value = serde_json::from_slice(&event.data).expect("json");
                *amounts
                    .entry(data["amount"].as_u64().expect("amount"))
                    .or_default() += 1;
            }
        }
        let twice: Vec<_> = amounts.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            twice.is_empty(),
            "keys applied twice (amount, times): {twice:?}"
        );
        let missing: Vec<_> = (1..=highest + 1)
            .filter(|a| !amounts.contains_key(a))
            .collect();
        assert!(missing.is_empty(), "keys never applied: {missing:?}");
        assert_eq!(amounts.len() as u64, highest + 1);
        app.stop().await;
    });
}

#[test]
fn keyed_commands_run_once_across_sigkill_on_sqlite() {
    Place::run(
        Backend::Sqlite,
        "cmdlog-crash",
        kill_children_then_resend_every_key,
    );
}

#[test]
fn keyed_commands_run_once_across_sigkill_on_postgres() {
    Place::run(
        Backend::Postgres,
        "crash",
        kill_children_then_resend_every_key,
    );
}
