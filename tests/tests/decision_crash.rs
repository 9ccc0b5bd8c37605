//! A decision's command never runs twice and its rule never breaks across `kill -9`: a child
//! process sends keyed ticket requests (a member holds at most `LIMIT` tickets, a rule over the
//! events tagged with the member, across streams) and is killed at random moments, each new
//! child resending the last keys of the one before; then every key is sent once more. Each
//! member ends with exactly `LIMIT` tickets, none issued twice, on SQLite and on PostgreSQL.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::sync::Arc;

use evoq::prelude::*;
use evoq::store::{EventFilter, EventStore};
use evoq_tests::backends::{Backend, Place, open_at};
use evoq_tests::crash::{kill_rounds, runtime};
use serde::{Deserialize, Serialize};

const CHILD_STORE: &str = "EVOQ_DECISION_CRASH_STORE";
const CHILD_FROM: &str = "EVOQ_DECISION_CRASH_FROM";
/// Members the keys are spread over (one sending task each).
const MEMBERS: u64 = 4;
/// Tickets a member may hold.
const LIMIT: usize = 25;

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct TicketIssued {
    #[tag("member")]
    member: String,
    ticket: u64,
}

#[derive(Command, Debug, Clone)]
struct IssueTicket {
    member: String,
    #[aggregate_id]
    ticket: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("member `{0}` holds {LIMIT} tickets")]
struct SoldOut(String);

#[derive(Default)]
struct Tickets {
    held: usize,
}

#[decision(name = "Tickets", attempts = 50, cached)]
impl Tickets {
    #[handles]
    #[query(all_of(types(TicketIssued), tag("member", &command.member)))]
    fn issue(&self, command: &IssueTicket) -> Result<TicketIssued, SoldOut> {
        if self.held >= LIMIT {
            return Err(SoldOut(command.member.clone()));
        }
        Ok(TicketIssued {
            member: command.member.clone(),
            ticket: command.ticket,
        })
    }

    #[apply]
    fn issued(&mut self, _: &TicketIssued) {
        self.held += 1;
    }
}

fn request(i: u64) -> IssueTicket {
    IssueTicket {
        member: format!("m{}", i % MEMBERS),
        ticket: i,
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Sends `keys` from one task per member; prints `send i` before and `ack i` after each.
async fn send_keys(app: &Evoq, keys: impl Iterator<Item = u64>, print: bool) {
    let mut per_member: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for i in keys {
        per_member.entry(i % MEMBERS).or_default().push(i);
    }
    let tasks: Vec<_> = per_member
        .into_values()
        .map(|keys| {
            let app = app.clone();
            tokio::spawn(async move {
                for i in keys {
                    if print {
                        say(&format!("send {i}"));
                    }
                    let result = app
                        .command(request(i))
                        .idempotency_key(format!("t{i}"))
                        .dispatch()
                        .await;
                    match result {
                        Ok(_) => {}
                        Err(error) if error.rejection::<SoldOut>().is_some() => {}
                        Err(error) => panic!("key {i}: {error}"),
                    }
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

async fn start(store: Arc<dyn EventStore>) -> Evoq {
    Evoq::builder()
        .shared_store(store)
        .start()
        .await
        .expect("start")
}

/// The child: runs only when the parent starts it with the environment set.
#[test]
#[ignore = "run by the crash tests in a child process"]
fn decision_crash_child_sends_keyed_requests() {
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
        "decision_crash_child_sends_keyed_requests",
        &[(CHILD_STORE, spec)],
        CHILD_FROM,
        5,
        2 * MEMBERS,
        "send ",
    );
    let highest = rounds.highest.expect("the children sent keys");
    runtime().block_on(async {
        let app = start(place.open().await).await;
        send_keys(&app, 0..=highest, false).await;
        let mut tickets: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        let mut after = 0;
        loop {
            let page = app
                .store()
                .read_all(after, 1_000, &EventFilter::types(["TicketIssued"]))
                .await
                .expect("read");
            for event in &page.events {
                let issued: TicketIssued = serde_json::from_slice(&event.data).expect("json");
                tickets
                    .entry(issued.member)
                    .or_default()
                    .push(issued.ticket);
            }
            if page.events.len() < 1_000 {
                break;
            }
            after = page.scanned_through;
        }
        for member in 0..MEMBERS {
            let member = format!("m{member}");
            let held = tickets.get(&member).cloned().unwrap_or_default();
            let unique: BTreeSet<u64> = held.iter().copied().collect();
            assert_eq!(
                unique.len(),
                held.len(),
                "{member}: a ticket issued twice: {held:?}"
            );
            let requested = (0..=highest)
                .filter(|i| format!("m{}", i % MEMBERS) == member)
                .count();
            assert_eq!(
                held.len(),
                requested.min(LIMIT),
                "{member}: the rule holds and no request is lost ({requested} requested)"
            );
        }
        app.stop().await;
    });
}

#[test]
fn decisions_run_once_and_keep_their_rule_across_sigkill_on_sqlite() {
    Place::run(
        Backend::Sqlite,
        "decision_crash",
        kill_children_then_resend_every_key,
    );
}

#[test]
fn decisions_run_once_and_keep_their_rule_across_sigkill_on_postgres() {
    Place::run(
        Backend::Postgres,
        "decision_crash",
        kill_children_then_resend_every_key,
    );
}
