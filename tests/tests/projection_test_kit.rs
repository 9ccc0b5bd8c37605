//! `ProjectionTest`: projections tested without a runtime. Events go through the generated
//! `handle` in their stored form (upcasters included), the read model commits the checkpoint
//! after each, a method's error is a typed failure, and a failing `then_*` says what came.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};

use evoq::prelude::*;
use evoq::{ProjectionOutcome, ReadModelError, async_trait};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

// ----- events -----

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct AccountOpened {
    account: String,
    initial_balance: u64,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct MoneyWithdrawn {
    account: String,
    amount: u64,
}

// v1: { "account", "amount" }             stored as "FundsAdded"
// v2: { "account", "cents" }              renamed to "MoneyDeposited"
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
#[event(version = 2)]
struct MoneyDeposited {
    account: String,
    cents: u64,
}

#[upcaster(MoneyDeposited, from = 1, renamed_from = "FundsAdded")]
fn deposited_v1_to_v2(mut data: Value) -> Result<Value, UpcastError> {
    let amount = data["amount"]
        .as_u64()
        .ok_or_else(|| UpcastError::missing_field("amount"))?;
    data["cents"] = json!(amount * 100);
    Ok(data)
}

fn opened(account: &str, initial_balance: u64) -> AccountOpened {
    AccountOpened {
        account: account.into(),
        initial_balance,
    }
}

fn deposited(account: &str, cents: u64) -> MoneyDeposited {
    MoneyDeposited {
        account: account.into(),
        cents,
    }
}

fn withdrawn(account: &str, amount: u64) -> MoneyWithdrawn {
    MoneyWithdrawn {
        account: account.into(),
        amount,
    }
}

// ----- the projection -----

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Summary {
    balance: u64,
    deposits: u32,
    withdrawals: u32,
}

/// What a method saw of one event: (stored name, current name, schema version, position).
type Seen = Arc<Mutex<Vec<(String, String, u32, u64)>>>;

/// A summary per account.
struct AccountSummary {
    summaries: InMemoryReadModel,
    seen: Seen,
}

impl AccountSummary {
    fn new(model: &InMemoryReadModel) -> Self {
        AccountSummary {
            summaries: model.clone(),
            seen: Seen::default(),
        }
    }

    fn saw(&self, meta: &EventMeta) {
        self.seen.lock().unwrap().push((
            meta.event_type().to_owned(),
            meta.current_type().to_owned(),
            meta.schema_version(),
            meta.global_position(),
        ));
    }

    fn summary(&self, account: &str) -> Result<Summary, ProjectionError> {
        self.summaries
            .get(account)?
            .ok_or_else(|| ProjectionError::new(format!("no account `{account}`")))
    }
}

#[projection(name = "account_summary", read_model = summaries)]
impl AccountSummary {
    #[handles]
    async fn opened(&mut self, e: &AccountOpened, meta: &EventMeta) -> Result<(), ProjectionError> {
        self.saw(meta);
        let summary = Summary {
            balance: e.initial_balance,
            ..Summary::default()
        };
        self.summaries.put(&e.account, &summary)?;
        Ok(())
    }

    #[handles]
    async fn deposited(
        &mut self,
        e: &MoneyDeposited,
        meta: &EventMeta,
    ) -> Result<(), ProjectionError> {
        self.saw(meta);
        let mut summary = self.summary(&e.account)?;
        summary.balance += e.cents;
        summary.deposits += 1;
        self.summaries.put(&e.account, &summary)?;
        Ok(())
    }

    #[handles]
    async fn withdrawn(
        &mut self,
        e: &MoneyWithdrawn,
        meta: &EventMeta,
    ) -> Result<(), ProjectionError> {
        self.saw(meta);
        let mut summary = self.summary(&e.account)?;
        summary.balance = summary
            .balance
            .checked_sub(e.amount)
            .ok_or_else(|| ProjectionError::new(format!("`{}` would be overdrawn", e.account)))?;
        summary.withdrawals += 1;
        self.summaries.put(&e.account, &summary)?;
        Ok(())
    }
}

fn summary_of(model: &InMemoryReadModel, account: &str) -> Summary {
    model.get::<Summary>(account).unwrap().expect("a summary")
}

// ----- the happy path -----

#[tokio::test]
async fn given_events_build_the_read_model_read_through_the_users_own_handle() {
    let model = InMemoryReadModel::new();
    ProjectionTest::new(AccountSummary::new(&model))
        .given(opened("acc-1", 10))
        .given(deposited("acc-1", 5))
        .await
        .then_handled();
    assert_eq!(
        summary_of(&model, "acc-1"),
        Summary {
            balance: 15,
            deposits: 1,
            withdrawals: 0
        }
    );
}

#[tokio::test]
async fn events_of_several_types_reach_their_methods_in_order_at_increasing_positions() {
    let model = InMemoryReadModel::new();
    let projection = AccountSummary::new(&model);
    let seen = projection.seen.clone();
    ProjectionTest::new(projection)
        .given(opened("acc-1", 10))
        .given(deposited("acc-1", 5))
        .given(withdrawn("acc-1", 3))
        .given(opened("acc-2", 7))
        .given(deposited("acc-1", 1))
        .await
        .then(|projection| {
            let summary = projection.summaries.get::<Summary>("acc-1").unwrap();
            assert_eq!(
                summary,
                Some(Summary {
                    balance: 13,
                    deposits: 2,
                    withdrawals: 1
                })
            );
            assert_eq!(summary_of(&projection.summaries, "acc-2").balance, 7);
        });
    let seen: Vec<(String, u64)> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|(stored, _, _, position)| (stored.clone(), *position))
        .collect();
    assert_eq!(
        seen,
        [
            ("AccountOpened".to_owned(), 1),
            ("MoneyDeposited".to_owned(), 2),
            ("MoneyWithdrawn".to_owned(), 3),
            ("AccountOpened".to_owned(), 4),
            ("MoneyDeposited".to_owned(), 5),
        ]
    );
}

#[tokio::test]
async fn and_given_goes_on_from_the_outcome_at_the_next_position() {
    let model = InMemoryReadModel::new();
    let outcome = ProjectionTest::new(AccountSummary::new(&model))
        .given(opened("acc-1", 10))
        .await
        .then_checkpoint(1)
        .and_given(deposited("acc-1", 5))
        .await
        .then_checkpoint(2);
    assert_eq!(outcome.position(), 2);
    assert_eq!(summary_of(&model, "acc-1").balance, 15);
}

// ----- errors -----

#[tokio::test]
async fn a_method_error_is_a_typed_failure_that_stops_the_delivery_before_the_commit() {
    let model = InMemoryReadModel::new();
    let projection = AccountSummary::new(&model);
    let seen = projection.seen.clone();
    let outcome = ProjectionTest::new(projection)
        .given(opened("acc-1", 10))
        .given(withdrawn("acc-1", 11))
        .given(deposited("acc-1", 5))
        .await
        .then_error(|error: &ProjectionError| {
            assert_eq!(error.to_string(), "`acc-1` would be overdrawn");
        })
        // The failed event is not committed: the runtime would deliver it again.
        .then_checkpoint(1);
    assert_eq!(outcome.position(), 2, "the failed event was delivered");
    assert_eq!(seen.lock().unwrap().len(), 2, "the event after it was not");
    assert_eq!(summary_of(&model, "acc-1").balance, 10);
    assert!(outcome.failure().is_some());
}

#[tokio::test]
async fn a_read_model_error_converted_by_the_method_is_its_typed_error() {
    let model = InMemoryReadModel::new();
    // A value that is not a summary.
    model.put("acc-1", &"not a summary").unwrap();
    ProjectionTest::new(AccountSummary::new(&model))
        .given(deposited("acc-1", 5))
        .await
        .then_error(|error: &ProjectionError| {
            let source = std::error::Error::source(error).expect("the read model's error");
            assert!(
                source.to_string().contains("key `acc-1`"),
                "{error}: {source}"
            );
        })
        .then_no_checkpoint();
}

// ----- upcasting through the projection -----

#[tokio::test]
async fn an_event_stored_at_v1_under_its_old_name_is_upcast_and_meta_tells_both_names() {
    let model = InMemoryReadModel::new();
    let projection = AccountSummary::new(&model);
    let seen = projection.seen.clone();
    ProjectionTest::new(projection)
        .given(opened("acc-1", 0))
        .given_stored("FundsAdded", 1, json!({ "account": "acc-1", "amount": 3 }))
        .given(deposited("acc-1", 20))
        .await
        .then_handled()
        .then_checkpoint(3);
    assert_eq!(summary_of(&model, "acc-1").balance, 320);
    let seen = seen.lock().unwrap();
    assert_eq!(
        seen[1],
        ("FundsAdded".to_owned(), "MoneyDeposited".to_owned(), 1, 2),
        "stored as `FundsAdded` at version 1, read as `MoneyDeposited`"
    );
    assert_eq!(
        seen[2],
        (
            "MoneyDeposited".to_owned(),
            "MoneyDeposited".to_owned(),
            2,
            3
        )
    );
}

#[tokio::test]
async fn old_data_no_upcaster_reads_is_a_failure_naming_the_missing_step() {
    let model = InMemoryReadModel::new();
    ProjectionTest::new(AccountSummary::new(&model))
        .given(opened("acc-1", 0))
        .given_stored(
            "MoneyDeposited",
            0,
            json!({ "account": "acc-1", "amount": 3 }),
        )
        .await
        .then_failure(|failure| {
            let error = failure.upcast_error().expect("an upcast error");
            assert!(error.is_missing_step(), "{failure}");
            assert_eq!(error.missing_from(), Some(0));
        })
        .then_checkpoint(1);
}

#[tokio::test]
async fn an_upcasters_own_error_is_a_failure_of_the_projection() {
    let model = InMemoryReadModel::new();
    let outcome = ProjectionTest::new(AccountSummary::new(&model))
        .given(opened("acc-1", 0))
        .given_stored("FundsAdded", 1, json!({ "account": "acc-1" }))
        .await;
    let failure = outcome.failure().expect("a failure");
    assert!(
        failure
            .to_string()
            .contains("the stored data has no field `amount`"),
        "{failure}"
    );
    assert!(
        failure.error::<ProjectionError>().is_none(),
        "not the method's"
    );
}

// ----- checkpoints -----

#[tokio::test]
async fn the_in_memory_read_model_keeps_the_checkpoint_of_the_last_event() {
    let model = InMemoryReadModel::new();
    let outcome = ProjectionTest::new(AccountSummary::new(&model))
        .given(opened("acc-1", 1))
        .given(deposited("acc-1", 2))
        .given(deposited("acc-1", 3))
        .await
        .then_checkpoint(3);
    assert_eq!(outcome.checkpoint(), Some(3));
    assert_eq!(
        ReadModel::checkpoint(&model, "account_summary")
            .await
            .unwrap(),
        Some(3)
    );
}

#[tokio::test]
async fn a_second_test_on_the_same_model_resumes_after_its_checkpoint_as_a_restart_does() {
    let model = InMemoryReadModel::new();
    ProjectionTest::new(AccountSummary::new(&model))
        .given(opened("acc-1", 1))
        .given(deposited("acc-1", 2))
        .await
        .then_checkpoint(2);
    let projection = AccountSummary::new(&model);
    let seen = projection.seen.clone();
    ProjectionTest::new(projection)
        .given(deposited("acc-1", 4))
        .await
        .then_checkpoint(3);
    assert_eq!(
        seen.lock().unwrap()[0].3,
        3,
        "the position after the checkpoint"
    );
    assert_eq!(summary_of(&model, "acc-1").balance, 7);
}

#[tokio::test]
async fn a_projection_named_otherwise_commits_its_checkpoint_under_that_name() {
    let model = InMemoryReadModel::new();
    let test = ProjectionTest::new(AccountSummary::new(&model)).named("summary_v2");
    assert_eq!(test.name(), "summary_v2");
    test.given(opened("acc-1", 1)).await.then_checkpoint(1);
    assert_eq!(
        ReadModel::checkpoint(&model, "summary_v2").await.unwrap(),
        Some(1)
    );
    assert_eq!(
        ReadModel::checkpoint(&model, "account_summary")
            .await
            .unwrap(),
        None
    );
}

/// A read model of one's own that keeps no checkpoint (durable by itself): the runtime saves
/// the checkpoint in the event store after each commit.
#[derive(Clone, Default)]
struct Durable {
    entries: Arc<Mutex<Vec<String>>>,
    commits: Arc<Mutex<Vec<(String, u64)>>>,
}

#[async_trait]
impl ReadModel for Durable {
    async fn clear(&self) -> Result<(), ReadModelError> {
        self.entries.lock().unwrap().clear();
        Ok(())
    }

    async fn commit(&self, projection: &str, position: u64) -> Result<bool, ReadModelError> {
        self.commits
            .lock()
            .unwrap()
            .push((projection.to_owned(), position));
        Ok(false)
    }
}

/// Opened accounts, in a `Durable` read model.
struct OpenedAccounts {
    accounts: Durable,
}

#[projection(name = "opened_accounts", read_model = accounts)]
impl OpenedAccounts {
    #[handles]
    async fn opened(&mut self, e: &AccountOpened, _: &EventMeta) -> Result<(), ProjectionError> {
        self.accounts
            .entries
            .lock()
            .unwrap()
            .push(e.account.clone());
        Ok(())
    }
}

#[tokio::test]
async fn any_read_model_gets_a_commit_per_event_and_one_that_keeps_none_leaves_it_to_the_store() {
    let durable = Durable::default();
    let outcome = ProjectionTest::new(OpenedAccounts {
        accounts: durable.clone(),
    })
    .given(opened("acc-1", 1))
    .given(opened("acc-2", 2))
    .await
    .then_checkpoint(2);
    assert_eq!(
        *durable.commits.lock().unwrap(),
        [
            ("opened_accounts".to_owned(), 1),
            ("opened_accounts".to_owned(), 2)
        ]
    );
    assert_eq!(*durable.entries.lock().unwrap(), ["acc-1", "acc-2"]);
    let message = panic_message(|| {
        let _ = outcome.then_checkpoint(1);
    });
    assert!(
        message.contains(
            "the read model does not keep its checkpoint: the runtime saves it in the event store"
        ) && message.contains("the last commit, at position 2, returned `false`"),
        "{message}"
    );
}

// ----- the messages of a failing test -----

/// The message of the panic `run` raises.
fn panic_message(run: impl FnOnce()) -> String {
    let payload = catch_unwind(AssertUnwindSafe(run)).expect_err("the assertion fails");
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

async fn overdrawn() -> ProjectionOutcome<AccountSummary> {
    ProjectionTest::new(AccountSummary::new(&InMemoryReadModel::new()))
        .given(opened("acc-1", 10))
        .given(withdrawn("acc-1", 11))
        .given(deposited("acc-1", 5))
        .given(deposited("acc-1", 6))
        .await
}

#[tokio::test]
async fn a_failed_event_expected_handled_is_named_with_its_error_and_what_was_not_delivered() {
    let outcome = overdrawn().await;
    let message = panic_message(|| {
        let _ = outcome.then_handled();
    });
    assert!(
        message.contains("the projection `account_summary`, given `AccountOpened` (schema version 1) at position 1, `MoneyWithdrawn` (schema version 1) at position 2, failed on `MoneyWithdrawn` (schema version 1) at position 2; expected every given event to be handled (the events given after it were not delivered: `MoneyDeposited`, `MoneyDeposited`)")
            && message.ends_with("\n  failure: `acc-1` would be overdrawn"),
        "{message}"
    );
}

#[tokio::test]
async fn a_then_check_is_not_run_when_an_event_failed() {
    let outcome = overdrawn().await;
    let message = panic_message(|| {
        let _ = outcome.then(|_| panic!("the check ran"));
    });
    assert!(
        !message.contains("the check ran") && message.contains("failed on `MoneyWithdrawn`"),
        "{message}"
    );
}

#[tokio::test]
async fn an_error_expected_where_every_event_was_handled_lists_the_events() {
    let outcome = ProjectionTest::new(AccountSummary::new(&InMemoryReadModel::new()))
        .given(opened("acc-1", 10))
        .await;
    let message = panic_message(|| {
        let _ = outcome.then_error(|_: &ProjectionError| {});
    });
    assert!(
        message.contains(
            "the projection `account_summary`, given `AccountOpened` (schema version 1) at position 1, handled every event; expected a failure with an error of type `evoq_runtime::projection::definition::ProjectionError`"
        ),
        "{message}"
    );
}

#[derive(Debug, thiserror::Error)]
#[error("another error")]
struct Other;

#[tokio::test]
async fn an_error_of_another_type_says_which_failure_came() {
    let outcome = ProjectionTest::new(AccountSummary::new(&InMemoryReadModel::new()))
        .given_stored("MoneyDeposited", 2, json!({ "account": 1 }))
        .await;
    let message = panic_message(|| {
        let _ = outcome.then_error(|_: &Other| {});
    });
    assert!(
        message.contains("failed on `MoneyDeposited` (schema version 2) at position 1, but not with the method's own error of type `projection_test_kit::Other`")
            && message.contains("\n  failure: cannot decode event `MoneyDeposited` (schema version 2) at position 1"),
        "{message}"
    );
}

#[tokio::test]
async fn another_checkpoint_than_expected_says_what_the_read_model_did() {
    let outcome = overdrawn().await;
    let message = panic_message(|| {
        let _ = outcome.then_checkpoint(2);
    });
    assert!(
        message.contains("left the checkpoint 1; expected 2")
            && message.contains("the read model keeps its checkpoint")
            && message.contains(
                "the last commit, at position 1, returned `true` (kept by the read model)"
            )
            && message.contains(
                "; the last event failed on `MoneyWithdrawn` (schema version 1) at position 2"
            )
            && message.ends_with("\n  failure: `acc-1` would be overdrawn"),
        "{message}"
    );
}

#[test]
fn an_event_the_projection_does_not_take_is_a_mistake_of_the_test() {
    #[derive(Event, Serialize, Deserialize, Clone, Debug)]
    struct AccountClosed {
        account: String,
    }
    let message = panic_message(|| {
        let _ = ProjectionTest::new(AccountSummary::new(&InMemoryReadModel::new())).given(
            AccountClosed {
                account: "acc-1".into(),
            },
        );
    });
    assert!(
        message.contains("the projection `account_summary` takes no `AccountClosed` event")
            && message.contains(r#"["AccountOpened", "MoneyDeposited", "MoneyWithdrawn"]"#),
        "{message}"
    );
}

#[test]
fn a_stored_name_the_projection_does_not_read_is_a_mistake_of_the_test() {
    let message =
        panic_message(|| {
            let _ = ProjectionTest::new(AccountSummary::new(&InMemoryReadModel::new()))
                .given_stored("MoneyAdded", 1, json!({}));
        });
    assert!(
        message.contains("the projection `account_summary` reads no event stored as `MoneyAdded`")
            && message.contains(r#""FundsAdded""#),
        "{message}"
    );
}
