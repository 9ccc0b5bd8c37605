//! One duration grammar: the strings an attribute takes are the strings the configuration
//! reads, sums and long units included, and they mean the same durations.
#![deny(warnings)]

use std::time::Duration;

use evoq::prelude::*;
use evoq::{Config, RetryStrategy};
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Pinged {
    id: String,
}

#[derive(Command)]
struct Ping {
    #[aggregate_id]
    id: String,
}

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

#[derive(Default)]
struct Pinger;

#[aggregate(idle_timeout = "1h 30m", hibernate_after = "30min")]
impl Pinger {
    #[handles]
    fn ping(&self, cmd: &Ping) -> Result<Pinged, Never> {
        Ok(Pinged { id: cmd.id.clone() })
    }

    #[apply]
    fn pinged(&mut self, _: &Pinged) {}
}

#[derive(Default)]
struct Echo;

#[event_handler(name = "echo", retry = exponential("250ms", "1min"))]
impl Echo {
    #[handles]
    async fn pinged(&mut self, _: &Pinged, _: &EventMeta) -> Result<(), Never> {
        Ok(())
    }
}

fn main() {
    let config = Config::from_toml_str(
        r#"
        [aggregate_defaults]
        idle_timeout = "1h 30m"
        hibernate_after = "30min"
        [handlers]
        retry = "exponential"
        retry_base = "250ms"
        retry_max = "1min"
        "#,
    )
    .expect("the configuration reads the attributes' durations");
    assert_eq!(
        <Pinger as Aggregate>::IDLE_TIMEOUT,
        Some(config.aggregate_defaults.idle_timeout)
    );
    assert_eq!(
        <Pinger as Aggregate>::HIBERNATE_AFTER,
        Some(config.aggregate_defaults.hibernate_after)
    );
    assert_eq!(
        config.aggregate_defaults.idle_timeout,
        Duration::from_secs(90 * 60)
    );
    assert_eq!(<Echo as EventHandler>::OPTIONS.retry, Some(config.handlers.retry));
    assert_eq!(
        config.handlers.retry,
        RetryStrategy::exponential(Duration::from_millis(250), Duration::from_secs(60))
    );
}
