//! `SagaOptions`, and the settings its commands are dispatched with.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::delivery::consistency::Consistency;
use crate::delivery::policy::HandlerOptions;
use crate::delivery::state::HandlerState;
use crate::dispatch::dispatcher::Dispatcher;
#[cfg(doc)]
use crate::error::Error;

/// The options of one saga's registration ([`EvoqBuilder::saga_with`](crate::EvoqBuilder::saga_with)):
/// how its events are delivered (a [`HandlerOptions`], as for an event handler) and how the
/// commands it sends, compensations included, are dispatched. A command option left unset is
/// the runtime's default (`dispatch_timeout`, `conflict_retries`, [`Consistency::Eventual`]).
///
/// ```
/// use std::time::Duration;
/// use evoq_runtime::{Consistency, HandlerOptions, OnError, SagaOptions};
///
/// let options = SagaOptions::new()
///     .delivery(HandlerOptions::new().on_error(OnError::Skip))
///     .command_timeout(Duration::from_millis(500))
///     .command_retry_limit(0)
///     .command_consistency(Consistency::handlers(["shipments"]));
/// assert_eq!(options.command_retry_limit, Some(0));
/// // A `HandlerOptions` alone is a `SagaOptions` with the default command options.
/// let options: SagaOptions = HandlerOptions::new().name("fulfillment-v2").into();
/// assert_eq!(options.command_timeout, None);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SagaOptions {
    /// How the saga's events are delivered: name, retries, error policy, start.
    pub delivery: HandlerOptions,
    /// How long each command waits, consistency wait included (default: `dispatch_timeout`).
    pub command_timeout: Option<Duration>,
    /// How many times a command is re-run after a version conflict (default:
    /// `conflict_retries`).
    pub command_retry_limit: Option<u32>,
    /// Which event handlers each command waits for before it counts as done (default:
    /// [`Consistency::Eventual`]). The saga itself is never waited for.
    pub command_consistency: Consistency,
}

impl SagaOptions {
    /// No option set.
    pub fn new() -> Self {
        SagaOptions::default()
    }

    /// How the saga's events are delivered (they take precedence over its attribute's).
    pub fn delivery(mut self, delivery: HandlerOptions) -> Self {
        self.delivery = delivery;
        self
    }

    /// How long each command of the saga waits before it fails with [`Error::Timeout`] (and
    /// is compensated).
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = Some(timeout);
        self
    }

    /// How many times each command of the saga is re-run after a version conflict (0: a
    /// conflict fails the command at once, and it is compensated).
    pub fn command_retry_limit(mut self, retries: u32) -> Self {
        self.command_retry_limit = Some(retries);
        self
    }

    /// Which event handlers each command of the saga waits for; a wait that does not end
    /// within the command's timeout fails the command with [`Error::ConsistencyTimeout`] (its
    /// events were stored) and it is compensated.
    pub fn command_consistency(mut self, consistency: Consistency) -> Self {
        self.command_consistency = consistency;
        self
    }
}

impl From<HandlerOptions> for SagaOptions {
    fn from(delivery: HandlerOptions) -> Self {
        SagaOptions::new().delivery(delivery)
    }
}

/// How a saga's commands are dispatched: its [`SagaOptions`], with the handlers its
/// consistency waits for, known once the runtime's handlers have started.
pub(crate) struct CommandSettings {
    timeout: Option<Duration>,
    retry_limit: Option<u32>,
    /// The handlers each command waits for; `None` until the builder resolved them (the saga's
    /// task may start before: its first command waits for them).
    required: watch::Sender<Option<Arc<[Arc<HandlerState>]>>>,
}

impl CommandSettings {
    /// The settings of `options`. With a consistency other than `Eventual`, commands wait
    /// until [`set_required`](Self::set_required) is called.
    pub(crate) fn new(options: &SagaOptions) -> Self {
        let eventual = matches!(options.command_consistency, Consistency::Eventual);
        let required = eventual.then(|| Arc::from(Vec::new()));
        CommandSettings {
            timeout: options.command_timeout,
            retry_limit: options.command_retry_limit,
            required: watch::Sender::new(required),
        }
    }

    /// The handlers each command waits for, the saga `own` itself left out (it would wait
    /// for the event it is handling).
    pub(crate) fn set_required(&self, required: Vec<Arc<HandlerState>>, own: &str) {
        let others: Vec<_> = required
            .into_iter()
            .filter(|handler| &*handler.name != own)
            .collect();
        self.required.send_replace(Some(Arc::from(others)));
    }

    /// The handlers each command waits for, once resolved.
    pub(super) async fn required(&self) -> Arc<[Arc<HandlerState>]> {
        let mut resolved = self.required.subscribe();
        match resolved.wait_for(Option::is_some).await {
            Ok(required) => required.clone().unwrap_or_else(|| Arc::from(Vec::new())),
            // Unreachable: `self` holds the sender.
            Err(_) => Arc::from(Vec::new()),
        }
    }

    /// The dispatch options of one command.
    pub(super) fn options(
        &self,
        dispatcher: &Dispatcher,
    ) -> crate::aggregate::context::DispatchOptions {
        let mut options = dispatcher.default_options();
        if let Some(timeout) = self.timeout {
            options.timeout = timeout;
        }
        if let Some(retries) = self.retry_limit {
            options.retry_limit = retries;
        }
        options
    }
}
