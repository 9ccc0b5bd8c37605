//! `Error::kind`: the stable classification of the errors a user meets, for mapping them to
//! responses without matching every variant.

use std::time::Duration;

use evoq::prelude::*;
use evoq::{ErrorKind, Evoq};
use evoq_tests::bank::*;

#[tokio::test]
async fn each_error_a_user_meets_has_its_kind() {
    let error = Evoq::builder().partitions(0).start().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Config);

    let app = Evoq::builder().start().await.unwrap();
    let rejected = app.dispatch(deposit("nobody", 5)).await.unwrap_err();
    assert_eq!(rejected.kind(), ErrorKind::Rejected, "{rejected}");

    app.dispatch(open("acc")).await.unwrap();
    let conflict = app
        .command(deposit("acc", 5))
        .expected_version(0)
        .dispatch()
        .await
        .unwrap_err();
    assert_eq!(conflict.kind(), ErrorKind::Conflict, "{conflict}");

    let unknown = app.wait_for_named("nobody", 1).await.unwrap_err();
    assert_eq!(unknown.kind(), ErrorKind::NotFound, "{unknown}");

    let invalid = app.dispatch(open("")).await.unwrap_err();
    assert_eq!(invalid.kind(), ErrorKind::InvalidInput, "{invalid}");

    app.stop().await;
    let stopped = app.dispatch(deposit("acc", 1)).await.unwrap_err();
    assert_eq!(stopped.kind(), ErrorKind::Unavailable, "{stopped}");
    assert_eq!(stopped.kind().to_string(), "unavailable");
}

/// Takes deposits, does nothing.
#[derive(Default)]
struct Quiet;

#[event_handler(name = "quiet")]
impl Quiet {
    #[handles]
    async fn deposited(
        &mut self,
        _: &MoneyDeposited,
        _: &EventMeta,
    ) -> Result<(), evoq_tests::ledger::Failed> {
        Ok(())
    }
}

#[tokio::test]
async fn a_wait_past_its_deadline_is_a_timeout() {
    let app = Evoq::builder().handler(Quiet).start().await.unwrap();
    let waited = app
        .wait_for::<Quiet>(100)
        .timeout(Duration::from_millis(10))
        .await
        .unwrap_err();
    assert_eq!(waited.kind(), ErrorKind::Timeout, "{waited}");
    app.stop().await;
}
