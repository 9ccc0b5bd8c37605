//! What an operator reads: under `tracing_subscriber::fmt`, the runtime's events print a message
//! (their catalogue name, or a sentence), never a bare list of fields, for a dispatch, a retry and
//! a dead letter.

use std::io::Write;
use std::sync::{Arc, Mutex};

use evoq::prelude::*;
use evoq::{HandlerOptions, RetryStrategy};
use evoq_tests::ledger::*;

/// A writer into a shared buffer, for the fmt subscriber.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Fails every `Alpha` numbered 1, handles the others.
#[derive(Default)]
struct Grumpy;

#[event_handler(name = "grumpy")]
impl Grumpy {
    #[handles]
    async fn alpha(&mut self, e: &Alpha, _: &EventMeta) -> Result<(), Failed> {
        if e.n == 1 {
            return Err(Failed("one is the loneliest number".into()));
        }
        Ok(())
    }
}

/// The lines `tracing_subscriber::fmt` prints (DEBUG and up, no colours) from here until the
/// guard is dropped.
fn capture() -> (Buffer, tracing::subscriber::DefaultGuard) {
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    (buffer, tracing::subscriber::set_default(subscriber))
}

#[tokio::test(flavor = "current_thread")]
async fn a_dispatch_a_retry_and_a_dead_letter_print_readable_lines() {
    let (buffer, _guard) = capture();

    let app = Evoq::builder()
        .handler_with(
            Grumpy,
            HandlerOptions::new()
                .max_attempts(2)
                .retry(RetryStrategy::immediate()),
        )
        .start()
        .await
        .unwrap();
    let done = app
        .dispatch(Emit::new("l", &[Kind::A, Kind::A], 1))
        .await
        .unwrap();
    app.wait_for::<Grumpy>(done.token).await.unwrap();
    app.stop().await;

    let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("evoq")).collect();
    for wanted in [
        "evoq.dispatch",
        "evoq.handler.retry",
        "evoq.handler.dead_letter",
    ] {
        assert!(
            lines
                .iter()
                .any(|line| line.contains(&format!(" {wanted} "))
                    || line.ends_with(&format!(" {wanted}"))),
            "no line names `{wanted}`:\n{text}"
        );
    }
    // Every line of the runtime has a message before its fields: the text after the level and
    // the target does not start with a field (`stage=...`).
    for line in text.lines() {
        let Some((_, rest)) = line.split_once(": ") else {
            continue;
        };
        let first = rest.split_whitespace().next().unwrap_or("");
        assert!(
            !first.contains('=') || first.starts_with('"'),
            "a line without a message: {line}"
        );
    }
    let dead = lines
        .iter()
        .find(|line| line.contains("evoq.handler.dead_letter"))
        .unwrap();
    assert!(
        dead.contains("WARN") && dead.contains("handler=\"grumpy\"") && dead.contains("loneliest"),
        "{dead}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn the_dispatch_span_names_the_command_correlation_and_causation_ids() {
    let (buffer, _guard) = capture();
    let app = Evoq::builder().start().await.unwrap();
    let (command, correlation, causation) = (
        evoq::Uuid::now_v7(),
        evoq::Uuid::now_v7(),
        evoq::Uuid::now_v7(),
    );
    app.command(Emit::new("ids", &[Kind::A], 1))
        .command_id(command)
        .correlation_id(correlation)
        .causation_id(causation)
        .dispatch()
        .await
        .unwrap();
    app.stop().await;
    let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    let line = text
        .lines()
        .find(|line| line.contains("evoq.dispatch{"))
        .unwrap_or_else(|| panic!("no line in the dispatch span:\n{text}"));
    for (field, id) in [
        ("command_id", command),
        ("correlation_id", correlation),
        ("causation_id", causation),
    ] {
        assert!(line.contains(&format!("{field}={id}")), "{field} in {line}");
    }
}

/// A decision's dispatch prints the dispatch span's lines like any command's, and a violated
/// append condition prints `evoq.decision.conflict` with the decision, the command and the
/// attempt.
#[tokio::test(flavor = "current_thread")]
async fn a_decision_and_its_violated_condition_print_readable_lines() {
    use std::sync::atomic::Ordering;
    let (buffer, _guard) = capture();

    let spy =
        evoq_tests::spy_store::SpyStore::new(Arc::new(evoq::store::memory::InMemoryStore::new()));
    spy.violations.store(1, Ordering::SeqCst);
    let app = Evoq::builder()
        .shared_store(spy.clone())
        .start()
        .await
        .unwrap();
    app.dispatch(evoq_tests::library::lend("m1", "b1"))
        .await
        .expect("the second attempt appends");
    app.stop().await;

    let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    let conflict = text
        .lines()
        .find(|line| line.contains("evoq.decision.conflict"))
        .unwrap_or_else(|| panic!("no conflict line in:\n{text}"));
    for field in ["decision=\"Lending\"", "command=\"LendBook\"", "attempt=1"] {
        assert!(conflict.contains(field), "{field} missing from: {conflict}");
    }
    assert!(
        text.lines()
            .any(|line| line.contains("evoq.dispatch") && line.contains("LendBook")),
        "{text}"
    );
}
