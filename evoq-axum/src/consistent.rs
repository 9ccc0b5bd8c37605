//! Reading one's own writes over HTTP: [`ReadYourWrites`] (which handlers a read waits for,
//! and how long) and the extractor [`Consistent`].

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use evoq_runtime::{Error, EventHandler, Evoq, WaitFor};
use tokio::time::Instant;

use crate::problem::{ApiError, Problem};
use crate::response::TOKEN_HEADER;

/// What a read waits for before it runs: the handlers (projections, say) whose read models it
/// serves, and a deadline. Put it in the router's state (with `FromRef`); the extractor
/// [`Consistent`] finds it there.
///
/// The deadline covers all the handlers together; by default it is the runtime's
/// `dispatch_timeout` (5 s unless configured).
///
/// ```
/// # use evoq::prelude::*;
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Event, Serialize, Deserialize, Clone, Debug)]
/// # struct Deposited { account: String, amount: u64 }
/// # #[derive(Clone, Default)]
/// # struct Balances { model: InMemoryReadModel }
/// # #[projection(name = "balances", read_model = model)]
/// # impl Balances {
/// #     #[handles]
/// #     async fn deposited(&mut self, _: &Deposited, _: &EventMeta) -> Result<(), ProjectionError> { Ok(()) }
/// # }
/// use std::time::Duration;
/// use evoq::axum::ReadYourWrites;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), evoq::Error> {
/// let app = Evoq::builder().projection(Balances::default()).start().await?;
/// let reads = ReadYourWrites::new(app.clone())
///     .projection::<Balances>() // by type
///     .timeout(Duration::from_secs(2));
/// reads.wait(0).await?; // what `Consistent` does with the request's token
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ReadYourWrites {
    app: Evoq,
    targets: Arc<Vec<Target>>,
    timeout: Option<Duration>,
}

#[derive(Clone)]
enum Target {
    /// A handler type, waited on with `Evoq::wait_for::<H>`.
    Type {
        name: &'static str,
        wait: for<'a> fn(&'a Evoq, u64) -> WaitFor<'a>,
    },
    /// A handler's name, waited on with `Evoq::wait_for_named`.
    Named(String),
}

impl ReadYourWrites {
    /// Waits for nothing yet: name the handlers with [`projection`](Self::projection) or
    /// [`handler`](Self::handler). A [`Consistent`] read given a token with no handler named
    /// answers 500 (and logs why), so a forgotten name cannot pass for a consistent read.
    pub fn new(app: Evoq) -> Self {
        ReadYourWrites {
            app,
            targets: Arc::new(Vec::new()),
            timeout: None,
        }
    }

    /// Waits for the projection (or event handler) `P`, found by its type.
    pub fn projection<P: EventHandler>(mut self) -> Self {
        Arc::make_mut(&mut self.targets).push(Target::Type {
            name: P::NAME,
            wait: |app, token| app.wait_for::<P>(token),
        });
        self
    }

    /// Waits for the handler, projection or saga that runs under `name`.
    pub fn handler(mut self, name: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.targets).push(Target::Named(name.into()));
        self
    }

    /// How long a read waits, for all the handlers together (default: the runtime's
    /// `dispatch_timeout`). Past it the read answers 503 with a problem document. A timeout too
    /// long for the clock (`Duration::MAX`) waits without a deadline.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The runtime.
    pub fn app(&self) -> &Evoq {
        &self.app
    }

    /// The names of the handlers it waits for.
    pub fn handlers(&self) -> Vec<&str> {
        self.targets
            .iter()
            .map(|target| match target {
                Target::Type { name, .. } => *name,
                Target::Named(name) => name.as_str(),
            })
            .collect()
    }

    /// When the wait ends: `None` for a timeout too long to add to the clock
    /// (`Duration::MAX`, say), which waits without a deadline.
    fn deadline(&self) -> Option<Instant> {
        Instant::now().checked_add(self.timeout.unwrap_or(self.app.config().dispatch_timeout))
    }

    /// Waits until every handler named has processed the events up to `token`, within the
    /// deadline: [`Error::WaitTimeout`] past it, [`Error::HandlerStopped`] when one stops,
    /// [`Error::UnknownHandler`] for a name the runtime does not run.
    pub async fn wait(&self, token: u64) -> Result<(), Error> {
        let deadline = self.deadline();
        for target in self.targets.iter() {
            let wait = match target {
                Target::Type { wait, .. } => wait(&self.app, token),
                Target::Named(name) => self.app.wait_for_named(name, token),
            };
            wait.timeout(left(deadline)).await?;
        }
        Ok(())
    }

    /// Waits until the handler `H` alone has processed the events up to `token`, within the
    /// deadline.
    pub async fn wait_on<H: EventHandler>(&self, token: u64) -> Result<(), Error> {
        self.app
            .wait_for::<H>(token)
            .timeout(left(self.deadline()))
            .await
    }
}

/// The time left until `deadline` (all of it when there is none).
fn left(deadline: Option<Instant>) -> Duration {
    deadline.map_or(Duration::MAX, |deadline| {
        deadline.saturating_duration_since(Instant::now())
    })
}

impl std::fmt::Debug for ReadYourWrites {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadYourWrites")
            .field("handlers", &self.handlers())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl FromRef<ReadYourWrites> for Evoq {
    fn from_ref(reads: &ReadYourWrites) -> Evoq {
        reads.app.clone()
    }
}

/// What a [`Consistent`] read waits for: [`Configured`] (the handlers of the state's
/// [`ReadYourWrites`]), or one event handler or projection type.
pub trait WaitOn: 'static {
    /// Waits until what it names has reached `token`, within `reads`'s deadline.
    fn wait(reads: &ReadYourWrites, token: u64) -> WaitFuture<'_>;
}

/// The future of [`WaitOn::wait`].
pub type WaitFuture<'a> = Pin<Box<dyn Future<Output = Result<(), Error>> + Send + 'a>>;

/// The handlers named in the state's [`ReadYourWrites`]: the default of [`Consistent`].
#[derive(Debug)]
pub enum Configured {}

impl WaitOn for Configured {
    fn wait(reads: &ReadYourWrites, token: u64) -> WaitFuture<'_> {
        Box::pin(reads.wait(token))
    }
}

impl<H: EventHandler> WaitOn for H {
    fn wait(reads: &ReadYourWrites, token: u64) -> WaitFuture<'_> {
        Box::pin(reads.wait_on::<H>(token))
    }
}

/// An extractor that makes a read see the client's own writes: when the request carries a
/// consistency token (the [`evoq-token`](TOKEN_HEADER) header a
/// [`CommandResponse`](crate::CommandResponse) set), it waits until the read side has
/// processed the events up to it before the handler runs.
///
/// `Consistent` (that is, `Consistent<Configured>`) waits for the handlers of the
/// [`ReadYourWrites`] in the router's state; `Consistent<P>` for the projection `P` alone
/// (still within the state's deadline). A request without the header waits for nothing: it
/// reads what the read model holds now, which may not have the client's last write yet.
///
/// A client that wrote several times sends the greatest token. The answers:
///
/// - a header that is not a position: 400, problem `kind` `invalid_input`;
/// - the deadline passed: 503, `kind` `timeout`, `Retry-After: 1` (nothing failed: the read
///   side is behind);
/// - a handler stopped (or the runtime): 503, `kind` `unavailable`;
/// - a handler the runtime does not run, or no handler named: 500, logged (a wiring mistake).
///
/// ```
/// use axum::{extract::{FromRef, Path, State}, routing::get, Json, Router};
/// use evoq::axum::{ApiResult, Consistent, Problem, ReadYourWrites};
/// use evoq::prelude::*;
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Event, Serialize, Deserialize, Clone, Debug)]
/// # struct Deposited { account: String, amount: u64 }
///
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
/// #[derive(Clone)]
/// struct AppState { balances: Balances, reads: ReadYourWrites }
///
/// impl FromRef<AppState> for ReadYourWrites {
///     fn from_ref(state: &AppState) -> Self { state.reads.clone() }
/// }
///
/// async fn balance(
///     _: Consistent, // waits for `balances` when the request carries a token
///     State(state): State<AppState>,
///     Path(account): Path<String>,
/// ) -> ApiResult<Json<u64>> {
///     match state.balances.model.get::<u64>(&account)? {
///         Some(balance) => Ok(Json(balance)),
///         None => Err(Problem::not_found(format!("no account `{account}`")).into()),
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), evoq::Error> {
/// let balances = Balances::default();
/// let app = Evoq::builder().projection(balances.clone()).start().await?;
/// let reads = ReadYourWrites::new(app).projection::<Balances>();
/// let _router: Router = Router::new()
///     .route("/accounts/{account}/balance", get(balance))
///     .with_state(AppState { balances, reads });
/// # Ok(())
/// # }
/// ```
pub struct Consistent<P: WaitOn = Configured> {
    token: Option<u64>,
    on: PhantomData<fn() -> P>,
}

impl<P: WaitOn> Consistent<P> {
    /// The token the read waited for: `None` when the request carried none.
    pub fn token(&self) -> Option<u64> {
        self.token
    }
}

impl<P: WaitOn> std::fmt::Debug for Consistent<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consistent")
            .field("token", &self.token)
            .finish()
    }
}

impl<S, P> FromRequestParts<S> for Consistent<P>
where
    S: Send + Sync,
    ReadYourWrites: FromRef<S>,
    P: WaitOn,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(TOKEN_HEADER) else {
            return Ok(Consistent {
                token: None,
                on: PhantomData,
            });
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|text| text.trim().parse::<u64>().ok())
            .ok_or_else(|| {
                Problem::bad_request(format!(
                    "the `{TOKEN_HEADER}` header must be a global position (a decimal number, as a command response gave it), not {value:?}"
                ))
                .with_kind(evoq_runtime::ErrorKind::InvalidInput)
            })?;
        let reads = ReadYourWrites::from_ref(state);
        if reads.targets.is_empty()
            && std::any::TypeId::of::<P>() == std::any::TypeId::of::<Configured>()
        {
            return Err(ApiError::internal(
                "a `Consistent` read has a token, but its `ReadYourWrites` names no handler to wait for: add `.projection::<P>()` or `.handler(name)`",
            ));
        }
        match P::wait(&reads, token).await {
            Ok(()) => Ok(Consistent {
                token: Some(token),
                on: PhantomData,
            }),
            // A name the runtime does not run is the service's wiring, not the client's doing.
            Err(error @ (Error::UnknownHandler { .. } | Error::AmbiguousHandler { .. })) => {
                Err(ApiError::internal(error))
            }
            Err(error) => Err(error.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_timeout_too_long_for_the_clock_waits_without_a_deadline_instead_of_panicking() {
        let app = Evoq::builder().start().await.expect("the runtime starts");
        let reads = ReadYourWrites::new(app.clone())
            .handler("nobody")
            .timeout(Duration::MAX);
        assert_eq!(reads.deadline(), None);
        // The wait gets as far as the runtime's answer: no handler of that name.
        let waited = reads.wait(0).await;
        assert!(
            matches!(waited, Err(Error::UnknownHandler { .. })),
            "{waited:?}"
        );
        assert_eq!(left(None), Duration::MAX);
        app.stop().await;
    }
}
