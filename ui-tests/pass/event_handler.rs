//! An event handler with every attribute argument, the explicit `#[handles(Event)]` form, a
//! `#[cfg]` on a method and a plain helper method; it runs and sees its events.
#![deny(warnings)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use evoq::prelude::*;
use evoq::{HandlerOptions, OnError, RetryStrategy};
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Opened {
    id: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
#[event(name = "pass.Closed")]
struct Closed {
    id: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Audited;

#[derive(Command)]
struct Open {
    #[aggregate_id]
    id: String,
}

#[derive(Command)]
struct Close {
    #[aggregate_id]
    id: String,
}

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

#[derive(Default)]
struct Door;

#[aggregate]
impl Door {
    #[handles]
    fn open(&self, cmd: &Open) -> Result<Opened, Never> {
        Ok(Opened { id: cmd.id.clone() })
    }

    #[handles]
    fn close(&self, cmd: &Close) -> Result<Closed, Never> {
        Ok(Closed { id: cmd.id.clone() })
    }

    #[apply]
    fn opened(&mut self, _: &Opened) {}

    #[apply]
    fn closed(&mut self, _: &Closed) {}
}

#[derive(Debug, thiserror::Error)]
#[error("mail failed")]
struct MailError;

#[derive(Default)]
struct Doorman {
    seen: Arc<Mutex<Vec<String>>>,
}

#[event_handler(
    name = "doorman",
    strong,
    retry = exponential_jitter("100ms", "2s"),
    max_attempts = 3,
    on_error = skip
)]
impl Doorman {
    #[handles]
    async fn opened(&mut self, e: &Opened, meta: &EventMeta) -> Result<(), MailError> {
        self.note(format!("opened {} at {}", e.id, meta.global_position()));
        Ok(())
    }

    #[handles(Closed)]
    async fn closed(&mut self, e: &Closed, _meta: &EventMeta) -> Result<(), MailError> {
        tokio::task::yield_now().await;
        self.note(format!("closed {}", e.id));
        Ok(())
    }

    #[cfg(any())]
    #[handles]
    async fn audited(&mut self, _: &Audited, _: &EventMeta) -> Result<(), MailError> {
        Ok(())
    }

    fn note(&self, line: String) {
        self.seen.lock().expect("lock").push(line);
    }
}

#[derive(Default)]
struct Quiet;

#[event_handler(name = "quiet", retry = fixed("1s"))]
impl Quiet {
    #[handles]
    async fn audited(&mut self, _: &Audited, _: &EventMeta) -> Result<(), MailError> {
        Err(MailError)
    }
}

pub(crate) fn main() {
    assert_eq!(Doorman::NAME, "doorman");
    assert_eq!(Doorman::EVENT_TYPES, ["Opened", "pass.Closed"]);
    assert_eq!(
        Doorman::OPTIONS,
        HandlerOptions::new()
            .retry(RetryStrategy::exponential_jitter(
                Duration::from_millis(100),
                Duration::from_secs(2)
            ))
            .max_attempts(3)
            .on_error(OnError::Skip)
            .strong(true)
    );
    assert_eq!(
        Quiet::OPTIONS.retry,
        Some(RetryStrategy::fixed(Duration::from_secs(1)))
    );
    let _ = Audited;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let doorman = Doorman::default();
        let seen = Arc::clone(&doorman.seen);
        let app = Evoq::builder()
            .handler(doorman)
            .handler(Quiet)
            .start()
            .await
            .expect("starts");
        app.dispatch(Open { id: "d".into() }).await.expect("open");
        app.command(Close { id: "d".into() })
            .consistency(Consistency::Strong)
            .dispatch()
            .await
            .expect("close");
        assert_eq!(*seen.lock().expect("lock"), ["opened d at 1", "closed d"]);
    });
}
