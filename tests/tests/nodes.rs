//! Several runtimes (nodes) on one store: a command runs once whichever node sees it, and no
//! node decides a rejection on a state older than a commit made before the command was sent
//! (docs/semantics.md §3.6). On PostgreSQL, and on one in-memory store shared by two runtimes
//! in one process (through a wrapper that declares it shared).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use evoq::prelude::*;
use evoq::store::Direction;
use evoq::{EventStore, Uuid};
use evoq_tests::backends::{Backend, Place};
use evoq_tests::bank::*;
use evoq_tests::faulty_store::FaultyStore;

async fn node(store: Arc<dyn EventStore>) -> Evoq {
    Evoq::builder()
        .shared_store(store)
        .start()
        .await
        .expect("the node starts")
}

/// Two nodes on one PostgreSQL schema, each with its own connection pool; `None` when the
/// server does not answer (and is not required).
async fn two_postgres_nodes() -> Option<(Place, Evoq, Evoq)> {
    let place = Place::new(Backend::Postgres, "nodes").await?;
    let a = node(place.open().await).await;
    let b = node(place.open().await).await;
    Some((place, a, b))
}

/// Two runtimes on one in-memory store that says it is shared.
async fn two_memory_nodes() -> (Evoq, Evoq) {
    let store = FaultyStore::new();
    store.shared.store(true, Ordering::SeqCst);
    let store: Arc<dyn EventStore> = store;
    (node(Arc::clone(&store)).await, node(store).await)
}

async fn events_of(store: &Arc<dyn EventStore>, account: &str) -> Vec<Arc<evoq::RecordedEvent>> {
    store
        .read_stream(&account_stream(account), 1, Direction::Forward, usize::MAX)
        .await
        .expect("the stream reads")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_node_returns_the_first_result_while_the_first_still_runs() {
    let Some((_place, a, b)) = two_postgres_nodes().await else {
        return;
    };
    a.dispatch(open("x")).await.unwrap();
    let first = a
        .command(deposit("x", 5))
        .idempotency_key("pay-1")
        .dispatch()
        .await
        .unwrap();
    let id = Uuid::now_v7();
    let by_id = a
        .command(deposit("x", 6))
        .command_id(id)
        .dispatch()
        .await
        .unwrap();

    let again = b
        .command(deposit("x", 5))
        .idempotency_key("pay-1")
        .dispatch()
        .await
        .unwrap();
    assert_eq!(
        (again.version, again.position, again.command_id),
        (first.version, first.position, first.command_id)
    );
    assert_eq!(again.events, first.events);
    let again_by_id = b
        .command(deposit("x", 6))
        .command_id(id)
        .dispatch()
        .await
        .unwrap();
    assert_eq!(again_by_id.version, by_id.version);
    assert_eq!(
        events_of(a.store(), "x").await.len(),
        3,
        "nothing ran twice"
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_duplicates_across_two_nodes_execute_once() {
    let Some((_place, a, b)) = two_postgres_nodes().await else {
        return;
    };
    a.dispatch(open("x")).await.unwrap();
    b.dispatch(deposit("x", 1)).await.unwrap(); // both nodes hold a live instance
    a.dispatch(deposit("x", 1)).await.unwrap();
    let tasks: Vec<_> = (0..1_000)
        .map(|i| {
            let node = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                node.command(deposit("x", 100))
                    .idempotency_key("once")
                    .dispatch()
                    .await
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap().expect("every duplicate succeeds"));
    }
    let first = &results[0];
    for result in &results {
        assert_eq!(
            (result.version, result.position, result.command_id),
            (first.version, first.position, first.command_id),
            "every duplicate returns the one execution's result"
        );
    }
    let events = events_of(a.store(), "x").await;
    assert_eq!(events.len(), 4, "one execution: one deposit of 100");
    a.stop().await;
    b.stop().await;
}

/// The balance of an account after each version of its stream (index 0: before any event).
fn balances(events: &[Arc<evoq::RecordedEvent>]) -> Vec<u64> {
    let mut balance = 0u64;
    let mut history = vec![0];
    for event in events {
        let data: serde_json::Value = serde_json::from_slice(&event.data).unwrap();
        match &*event.event_type {
            "AccountOpened" => balance = data["initial_balance"].as_u64().unwrap(),
            "MoneyDeposited" => balance += data["amount"].as_u64().unwrap(),
            "MoneyWithdrawn" => balance -= data["amount"].as_u64().unwrap(),
            other => panic!("unexpected event {other}"),
        }
        history.push(balance);
    }
    history
}

/// What one withdrawal saw: the stream's version before it was sent, its amount, and the
/// balance its rejection reported (`None`: accepted).
struct Withdrawal {
    account: String,
    sent_after: u64,
    amount: u64,
    rejected_at_balance: Option<u64>,
}

/// Two nodes, 50 accounts, concurrent deposits and withdrawals on the same accounts from both:
/// every rejection reports a balance the account had at or after the version the stream was at
/// when the command was sent, and the balances equal the accepted commands.
async fn no_rejection_rests_on_a_state_older_than_the_command(a: Evoq, b: Evoq) {
    const ACCOUNTS: usize = 50;
    const ROUNDS: usize = 16;
    let accounts: Vec<String> = (0..ACCOUNTS).map(|i| format!("acct-{i}")).collect();
    for account in &accounts {
        a.dispatch(open(account)).await.unwrap();
        // Both nodes hold a live instance of every account.
        b.dispatch(deposit(account, 10)).await.unwrap();
    }
    let mut tasks = Vec::new();
    for (n, node) in [a.clone(), b.clone()].into_iter().enumerate() {
        for (i, account) in accounts.iter().enumerate() {
            let (node, account) = (node.clone(), account.clone());
            tasks.push(tokio::spawn(async move {
                let mut seed = (i * 7 + n * 13 + 1) as u64;
                let mut withdrawals = Vec::new();
                let mut deposited = 0;
                for round in 0..ROUNDS {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    if (round + n) % 2 == 0 {
                        let amount = 1 + (seed >> 33) % 100;
                        node.dispatch(deposit(&account, amount)).await.unwrap();
                        deposited += amount;
                    } else {
                        let amount = 1 + (seed >> 33) % 120;
                        let sent_after = node
                            .store()
                            .stream_version(&account_stream(&account))
                            .await
                            .unwrap();
                        let outcome = node
                            .dispatch(Withdraw {
                                account: account.clone(),
                                amount,
                            })
                            .await;
                        let rejected_at_balance = match outcome {
                            Ok(_) => None,
                            Err(error) => match error.rejection::<BankError>() {
                                Some(BankError::InsufficientFunds { balance, .. }) => {
                                    Some(*balance)
                                }
                                _ => panic!("unexpected failure: {error}"),
                            },
                        };
                        withdrawals.push(Withdrawal {
                            account: account.clone(),
                            sent_after,
                            amount,
                            rejected_at_balance,
                        });
                    }
                }
                (deposited, withdrawals)
            }));
        }
    }
    let mut deposited: BTreeMap<String, u64> = BTreeMap::new();
    let mut withdrawals = Vec::new();
    for (task, account) in tasks
        .into_iter()
        .zip(accounts.iter().chain(accounts.iter()))
    {
        let (amount, seen) = task.await.unwrap();
        *deposited.entry(account.clone()).or_default() += amount;
        withdrawals.extend(seen);
    }
    let mut rejections = 0;
    for account in &accounts {
        let events = events_of(a.store(), account).await;
        let history = balances(&events);
        let withdrawn: u64 = withdrawals
            .iter()
            .filter(|w| &w.account == account && w.rejected_at_balance.is_none())
            .map(|w| w.amount)
            .sum();
        assert_eq!(
            *history.last().unwrap(),
            10 + deposited[account] - withdrawn,
            "{account}: the balance equals the accepted commands"
        );
        for w in withdrawals.iter().filter(|w| &w.account == account) {
            let Some(balance) = w.rejected_at_balance else {
                continue;
            };
            rejections += 1;
            assert!(balance < w.amount, "a rejection must be justified");
            let fresh = history[w.sent_after as usize..].contains(&balance);
            assert!(
                fresh,
                "{account}: a withdrawal of {} sent at version {} was rejected with balance {balance}, which the account had only before (balances from then on: {:?})",
                w.amount,
                w.sent_after,
                &history[w.sent_after as usize..]
            );
        }
    }
    println!("{rejections} rejections checked");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_node_rejects_on_a_state_older_than_a_commit_before_the_command_on_postgres() {
    let Some((_place, a, b)) = two_postgres_nodes().await else {
        return;
    };
    no_rejection_rests_on_a_state_older_than_the_command(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_node_rejects_on_a_state_older_than_a_commit_before_the_command_on_a_shared_memory_store()
 {
    let (a, b) = two_memory_nodes().await;
    no_rejection_rests_on_a_state_older_than_the_command(a, b).await;
}

/// Node A deposits 10, node B deposits 100, node A withdraws 50: A's cached state says 10, the
/// store says 110, and the store decides.
async fn a_withdrawal_sees_the_other_nodes_deposit(a: Evoq, b: Evoq) {
    a.dispatch(open("x")).await.unwrap();
    a.dispatch(deposit("x", 10)).await.unwrap();
    b.dispatch(deposit("x", 100)).await.unwrap();
    let withdrawn = a
        .dispatch(Withdraw {
            account: "x".into(),
            amount: 50,
        })
        .await
        .expect("the store holds 110: the withdrawal is accepted");
    assert_eq!(withdrawn.version, 4);
    // And a rejection names the balance the store holds.
    b.dispatch(deposit("x", 1)).await.unwrap();
    let error = a
        .dispatch(Withdraw {
            account: "x".into(),
            amount: 1_000,
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            error.rejection::<BankError>(),
            Some(BankError::InsufficientFunds { balance: 61, .. })
        ),
        "{error}"
    );
    // A success without events is confirmed too: A's instance of `y` says "not open", so
    // closing it would do nothing; B opened it since, so A's close closes it.
    let nothing = a
        .dispatch(CloseAccount {
            account: "y".into(),
        })
        .await
        .unwrap();
    assert!(nothing.events.is_empty());
    b.dispatch(open("y")).await.unwrap();
    let closed = a
        .dispatch(CloseAccount {
            account: "y".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        (closed.version, closed.events.len()),
        (2, 1),
        "decided on the account B opened"
    );
    // A decision with events on a stale state is caught by its append's version check.
    b.dispatch(CloseAccount {
        account: "x".into(),
    })
    .await
    .unwrap();
    let error = a
        .dispatch(Deposit {
            account: "x".into(),
            amount: 5,
        })
        .await
        .unwrap_err();
    assert!(
        matches!(error.rejection::<BankError>(), Some(BankError::NotOpen(_))),
        "A's deposit is decided on the closed account: {error}"
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawal_sees_the_other_nodes_deposit_on_postgres() {
    let Some((_place, a, b)) = two_postgres_nodes().await else {
        return;
    };
    a_withdrawal_sees_the_other_nodes_deposit(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawal_sees_the_other_nodes_deposit_on_a_shared_memory_store() {
    let (a, b) = two_memory_nodes().await;
    a_withdrawal_sees_the_other_nodes_deposit(a, b).await;
}
