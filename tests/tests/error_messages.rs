//! The errors of a command name what decided it as what it is: a decision as a decision
//! ("command `LendBook` was rejected by decision `Lending` `b1`"), an aggregate as an aggregate
//! (docs/semantics.md §2.6).

use std::sync::Arc;

use evoq::prelude::*;
use evoq::store::memory::InMemoryStore;
use evoq::{Decider, ExpectedVersion, NewEvent};
use evoq_tests::bank::{BankError, Explode, deposit, open};
use evoq_tests::library::{LendError, lend};

/// Whether `text` names `name` as an aggregate.
fn names_an_aggregate(text: &str, name: &str) -> bool {
    text.contains(&format!("aggregate `{name}`"))
}

/// Whether `text` names `name` as a decision.
fn names_a_decision(text: &str, name: &str) -> bool {
    text.contains(&format!("decision `{name}`"))
}

#[tokio::test]
async fn a_rejected_decision_command_is_named_as_rejected_by_its_decision() {
    let app = Evoq::builder().start().await.unwrap();
    app.dispatch(lend("m1", "b1")).await.unwrap();
    let error = app.dispatch(lend("m2", "b1")).await.unwrap_err();
    assert!(
        matches!(
            error.rejection::<LendError>(),
            Some(LendError::AlreadyLent(_))
        ),
        "{error}"
    );
    assert!(
        matches!(
            error,
            Error::Rejected {
                decider: Decider::Decision,
                aggregate: "Lending",
                ..
            }
        ),
        "{error:?}"
    );
    let text = error.to_string();
    assert!(
        text.starts_with("command `LendBook` was rejected by decision `Lending` `b1`: "),
        "{text}"
    );
    assert!(!names_an_aggregate(&text, "Lending"), "{text}");
    app.stop().await;
}

#[tokio::test]
async fn a_rejected_aggregate_command_is_still_named_as_rejected_by_its_aggregate() {
    let app = Evoq::builder().start().await.unwrap();
    let error = app.dispatch(deposit("nobody", 5)).await.unwrap_err();
    assert!(
        matches!(error.rejection::<BankError>(), Some(BankError::NotOpen(_))),
        "{error}"
    );
    assert!(
        matches!(
            error,
            Error::Rejected {
                decider: Decider::Aggregate,
                ..
            }
        ),
        "{error:?}"
    );
    let text = error.to_string();
    assert!(
        text.starts_with("command `Deposit` was rejected by aggregate `BankAccount` `nobody`: "),
        "{text}"
    );
    app.stop().await;
}

#[derive(Command, Debug, Clone)]
struct Scribble {
    #[aggregate_id]
    sheet: String,
}

#[derive(Event, serde::Serialize, serde::Deserialize, Clone, Debug)]
struct Scribbled {
    #[tag("sheet")]
    sheet: String,
}

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

/// A decision whose handler panics.
#[derive(Default)]
struct Sheets;

#[decision(name = "Sheets")]
impl Sheets {
    #[handles]
    #[query(all_of(types(Scribbled), tag("sheet", &command.sheet)))]
    fn scribble(&self, command: &Scribble) -> Result<Scribbled, Never> {
        panic!("no ink for sheet {}", command.sheet)
    }

    #[apply]
    fn scribbled(&mut self, _: &Scribbled) {}
}

#[tokio::test]
async fn a_panicking_decision_is_named_as_a_decision_whose_model_was_dropped() {
    let app = Evoq::builder().start().await.unwrap();
    let error = app
        .dispatch(Scribble { sheet: "s1".into() })
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::Panicked {
                decider: Decider::Decision,
                events_stored: false,
                ..
            }
        ),
        "{error:?}"
    );
    let text = error.to_string();
    assert!(
        text.starts_with(
            "decision `Sheets` `s1` panicked while handling command `Scribble`: no ink for sheet s1; "
        ),
        "{text}"
    );
    assert!(text.contains("its model was dropped"), "{text}");
    assert!(text.ends_with("(nothing was appended)"), "{text}");
    assert!(!names_an_aggregate(&text, "Sheets"), "{text}");
    assert!(
        !text.contains("instance"),
        "a decision has no instance: {text}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_panicking_aggregate_is_still_named_as_an_aggregate_whose_instance_was_dropped() {
    let app = Evoq::builder().start().await.unwrap();
    app.dispatch(open("a")).await.unwrap();
    let error = app
        .dispatch(Explode {
            account: "a".into(),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::Panicked {
                decider: Decider::Aggregate,
                ..
            }
        ),
        "{error:?}"
    );
    let text = error.to_string();
    assert!(
        text.starts_with(
            "aggregate `BankAccount` `a` panicked while handling command `Explode`: boom in the handler of account a; the instance was dropped"
        ),
        "{text}"
    );
    app.stop().await;
}

#[tokio::test]
async fn an_empty_id_of_a_decision_command_names_the_decision() {
    let app = Evoq::builder().start().await.unwrap();
    let error = app.dispatch(lend("m1", "")).await.unwrap_err();
    assert!(
        matches!(
            error,
            Error::InvalidAggregateId {
                decider: Decider::Decision,
                ..
            }
        ),
        "{error:?}"
    );
    let text = error.to_string();
    assert!(names_a_decision(&text, "Lending"), "{text}");
    assert!(!names_an_aggregate(&text, "Lending"), "{text}");
    assert!(text.contains("`Lending-<id>`"), "names the stream: {text}");

    let error = app.dispatch(open("")).await.unwrap_err();
    let text = error.to_string();
    assert!(names_an_aggregate(&text, "BankAccount"), "{text}");
    app.stop().await;
}

/// The read-back of a resent decision command whose stream holds a type the decision does not
/// apply (written there by hand) names the decision.
#[tokio::test]
async fn an_unknown_event_type_in_a_decision_stream_names_the_decision() {
    let store = Arc::new(InMemoryStore::new());
    let command_id = evoq::Uuid::now_v7();
    let mut stranger = NewEvent {
        event_id: evoq::Uuid::now_v7(),
        event_type: "Stranger".into(),
        schema_version: 1,
        data: b"{}".to_vec(),
        metadata: Default::default(),
    };
    stranger.metadata.command_id = Some(command_id);
    let command = evoq::store::NewCommand {
        command_id,
        idempotency_key: None,
        command: "LendBook".into(),
        aggregate: "Lending".into(),
        deduplicate_since: Some(std::time::UNIX_EPOCH),
    };
    store
        .append_command(
            "Lending-b9",
            ExpectedVersion::NoStream,
            vec![stranger],
            command,
        )
        .await
        .unwrap();
    let app = Evoq::builder()
        .shared_store(store.clone())
        .start()
        .await
        .unwrap();
    let error = app
        .command(lend("m1", "b9"))
        .command_id(command_id)
        .dispatch()
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::UnknownEventType {
                decider: Decider::Decision,
                ..
            }
        ),
        "{error:?}"
    );
    let text = error.to_string();
    assert!(names_a_decision(&text, "Lending"), "{text}");
    assert!(!names_an_aggregate(&text, "Lending"), "{text}");
    app.stop().await;
}
