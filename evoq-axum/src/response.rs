//! The response of a command: a JSON body and the consistency token header.

use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use evoq_runtime::{Aggregate, Dispatched};
use serde::Serialize;

/// The header that carries a consistency token: `evoq-token: <global position>`.
///
/// A command response sets it to [`Dispatched::token`]; a client sends it back on a read, where
/// [`Consistent`](crate::Consistent) waits until the read side has reached it.
pub const TOKEN_HEADER: HeaderName = HeaderName::from_static("evoq-token");

/// A command's response: `body` as JSON, and the consistency token in the
/// [`evoq-token`](TOKEN_HEADER) header, for the client to read its own writes.
///
/// `From<Dispatched<A>>` makes the dispatch result itself the body (it serializes as
/// `{"aggregate", "version", "position", "token", "command_id", "events": [{"type", "data"}]}`);
/// [`new`](Self::new) takes a body of one's own. Status 200; wrap it in a tuple for another
/// (`(StatusCode::CREATED, response)`).
///
/// ```
/// use axum::response::IntoResponse;
/// use evoq::axum::{CommandResponse, TOKEN_HEADER};
/// use evoq::prelude::*;
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Event, Serialize, Deserialize, Clone, Debug)]
/// # struct Deposited { amount: u64 }
/// # #[derive(Command)]
/// # struct Deposit { #[aggregate_id] account: String, amount: u64 }
/// # #[derive(Debug, thiserror::Error)] #[error("never")] struct Never;
/// # #[derive(Default)] struct Account;
/// # #[aggregate]
/// # impl Account {
/// #     #[handles]
/// #     fn deposit(&self, c: &Deposit) -> Result<Deposited, Never> { Ok(Deposited { amount: c.amount }) }
/// #     #[apply]
/// #     fn deposited(&mut self, _: &Deposited) {}
/// # }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), evoq::Error> {
/// let app = Evoq::builder().start().await?;
/// let done = app.dispatch(Deposit { account: "acc-1".into(), amount: 50 }).await?;
/// let response = CommandResponse::from(done).into_response();
/// assert_eq!(response.headers()[TOKEN_HEADER], "1");
/// assert_eq!(response.headers()["content-type"], "application/json");
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct CommandResponse<T> {
    token: u64,
    body: T,
}

impl<T> CommandResponse<T> {
    /// A response with `body`, for a command whose consistency token is `token`.
    pub fn new(token: u64, body: T) -> Self {
        CommandResponse { token, body }
    }

    /// The consistency token.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// The body.
    pub fn body(&self) -> &T {
        &self.body
    }

    /// The body, taken out.
    pub fn into_body(self) -> T {
        self.body
    }

    /// The same token with another body.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> CommandResponse<U> {
        CommandResponse {
            token: self.token,
            body: f(self.body),
        }
    }
}

impl<A: Aggregate> From<Dispatched<A>> for CommandResponse<Dispatched<A>> {
    fn from(done: Dispatched<A>) -> Self {
        CommandResponse::new(done.token, done)
    }
}

impl<T: Serialize> IntoResponse for CommandResponse<T> {
    fn into_response(self) -> Response {
        let mut response = axum::Json(self.body).into_response();
        response
            .headers_mut()
            .insert(TOKEN_HEADER, HeaderValue::from(self.token));
        response
    }
}
