//! A saga's commands run exactly once across `kill -9` (docs/semantics.md §6.3 and §6.5): a child
//! process places orders that a three-step saga carries through (some fail at a step and are
//! compensated) and is killed at a random moment, ten times over, each new child placing again
//! the last orders the one before it placed. Then a last runtime resends every order and lets
//! the saga finish: every step ran exactly once, every compensation at most once, on SQLite and
//! on PostgreSQL.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use evoq::prelude::*;
use evoq::store::EventStore;
use evoq_tests::backends::{Backend, Place, open_at};
use evoq_tests::crash::{kill_rounds, runtime};
use evoq_tests::steps::*;

/// Where the child finds its store: `sqlite:<path>` or `postgres:<schema>@<url>`.
const CHILD_STORE: &str = "EVOQ_CRASH_STORE";
/// The first order the child places.
const CHILD_FROM: &str = "EVOQ_CRASH_FROM";

/// The order `i`: every third fails at step 3, every fifth (of the others) at step 2.
fn order_of(i: u64) -> PlaceOrder {
    let fail_at = if i % 3 == 2 {
        Some(3)
    } else if i % 5 == 4 {
        Some(2)
    } else {
        None
    };
    PlaceOrder {
        order: format!("o{i}"),
        fail_at,
    }
}

async fn place(app: &Evoq, i: u64) {
    app.command(order_of(i))
        .idempotency_key(format!("place-{i}"))
        .dispatch()
        .await
        .unwrap_or_else(|e| panic!("order {i}: {e}"));
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

async fn start(store: Arc<dyn EventStore>) -> Evoq {
    Evoq::builder()
        .shared_store(store)
        .saga::<Checkout>()
        .start()
        .await
        .expect("start")
}

/// The child: runs only when the parent starts it with the environment set.
#[test]
#[ignore = "run by the crash tests in a child process"]
fn crash_child_places_orders() {
    let (Ok(spec), Ok(from)) = (std::env::var(CHILD_STORE), std::env::var(CHILD_FROM)) else {
        return;
    };
    let from: u64 = from.parse().expect("from");
    runtime().block_on(async move {
        let app = start(open_at(&spec).await).await;
        for i in from.. {
            say(&format!("place {i}"));
            place(&app, i).await;
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
    });
}

/// What the saga must have done for order `i` in the end, checked against the store.
async fn check_order(store: &dyn EventStore, i: u64) {
    let order = format!("o{i}");
    let fail_at = order_of(i).fail_at;
    let placed = events_of(store, "Order", &order).await;
    let expected_order: &[&str] = match fail_at {
        None => &["OrderPlaced", "OrderClosed"],
        Some(_) => &["OrderPlaced"],
    };
    assert_eq!(placed, expected_order, "order {order}");
    for step in 1..=3u8 {
        let events = events_of(store, "Step", &format!("{order}.{step}")).await;
        let expected: &[&str] = match fail_at {
            Some(failing) if step < failing => &["StepDone", "StepUndone"],
            Some(_) => &[],
            None => &["StepDone"],
        };
        assert_eq!(events, expected, "order {order}, step {step}");
    }
    for channel in ["email", "sms"] {
        let notices = events_of(store, "Notice", &format!("{order}.{channel}")).await;
        let expected = usize::from(fail_at.is_none());
        assert_eq!(notices.len(), expected, "order {order}, {channel} notice");
    }
}

fn kill_children_then_finish(place_: &Place) {
    let spec = &place_.address().expect("a place another process can reach");
    // Each child places again the last orders of the one before (one may have been in flight).
    let rounds = kill_rounds(
        "crash_child_places_orders",
        &[(CHILD_STORE, spec)],
        CHILD_FROM,
        10,
        2,
        "place ",
    );
    let highest = rounds.highest.expect("the children placed orders");

    runtime().block_on(async {
        let app = start(place_.open().await).await;
        for i in 0..=highest {
            place(&app, i).await;
        }
        settle(&app, "checkout", Duration::from_secs(180)).await;
        let store = store_of(&app);
        for i in 0..=highest {
            check_order(&*store, i).await;
        }
        app.stop().await;
    });
}

#[test]
fn saga_commands_run_once_across_sigkill_on_sqlite() {
    Place::run(Backend::Sqlite, "saga_crash", kill_children_then_finish);
}

#[test]
fn saga_commands_run_once_across_sigkill_on_postgres() {
    Place::run(Backend::Postgres, "saga_crash", kill_children_then_finish);
}
