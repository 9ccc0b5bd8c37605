//! [`WaitFor`]: a wait until a handler (a projection, say) has processed a position.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::time::Duration;

use crate::delivery::subscribers::Subscribers;
use crate::error::Error;

/// A wait until an event handler, projection or saga has processed every event up to a global
/// position: what [`Evoq::wait_for`](crate::Evoq::wait_for) and
/// [`Evoq::wait_for_named`](crate::Evoq::wait_for_named) return. `.await` it; it ends
/// with [`Error::WaitTimeout`] when the handler has not got there by its deadline (by default
/// the runtime's `dispatch_timeout`; [`timeout`](Self::timeout) changes it).
///
/// ```
/// # use evoq::prelude::*;
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Event, Serialize, Deserialize, Clone, Debug)]
/// # struct Deposited { account: String, amount: u64 }
/// # #[derive(Command)]
/// # struct Deposit { #[aggregate_id] account: String, amount: u64 }
/// # #[derive(Debug, thiserror::Error)] #[error("never")] struct Never;
/// # #[derive(Default)] struct Account;
/// # #[aggregate]
/// # impl Account {
/// #     #[handles]
/// #     fn deposit(&self, c: &Deposit) -> Result<Deposited, Never> {
/// #         Ok(Deposited { account: c.account.clone(), amount: c.amount })
/// #     }
/// #     #[apply]
/// #     fn deposited(&mut self, _: &Deposited) {}
/// # }
/// #[derive(Clone, Default)]
/// struct Balances { model: InMemoryReadModel }
///
/// #[projection(name = "balances", read_model = model)]
/// impl Balances {
///     #[handles]
///     async fn deposited(&mut self, e: &Deposited, _: &EventMeta) -> Result<(), ProjectionError> {
///         let balance = self.model.get::<u64>(&e.account)?.unwrap_or(0);
///         self.model.put(&e.account, &(balance + e.amount))?;
///         Ok(())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let balances = Balances::default();
/// let app = Evoq::builder().projection(balances.clone()).start().await?;
/// let done = app.dispatch(Deposit { account: "acc-1".into(), amount: 50 }).await?;
///
/// // Read your own write: wait until the projection has processed the command's events.
/// app.wait_for::<Balances>(done.token)
///     .timeout(std::time::Duration::from_secs(1))
///     .await?;
/// assert_eq!(balances.model.get::<u64>("acc-1")?, Some(50));
/// # app.stop().await;
/// # Ok(())
/// # }
/// ```
#[must_use = "a wait does nothing until it is awaited"]
pub struct WaitFor<'a> {
    subscribers: &'a Subscribers,
    /// The handler's name, or why there is none.
    handler: Result<String, Error>,
    position: u64,
    timeout: Option<Duration>,
}

impl<'a> WaitFor<'a> {
    /// A wait on `subscribers` with the deadline `timeout`.
    pub(super) fn new(
        subscribers: &'a Subscribers,
        handler: Result<String, Error>,
        position: u64,
        timeout: Duration,
    ) -> Self {
        WaitFor {
            subscribers,
            handler,
            position,
            timeout: Some(timeout),
        }
    }

    /// Waits at most `timeout` (instead of the runtime's `dispatch_timeout`).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Waits with no deadline (a catch-up of unknown length, say): the wait ends only when the
    /// handler gets there or stops.
    pub fn without_deadline(mut self) -> Self {
        self.timeout = None;
        self
    }
}

impl<'a> IntoFuture for WaitFor<'a> {
    type Output = Result<(), Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<(), Error>> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let handler = self.handler?;
            self.subscribers
                .wait_for(&handler, self.position, self.timeout)
                .await
        })
    }
}

impl std::fmt::Debug for WaitFor<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WaitFor")
            .field("handler", &self.handler.as_ref().ok())
            .field("position", &self.position)
            .field("timeout", &self.timeout)
            .finish()
    }
}
