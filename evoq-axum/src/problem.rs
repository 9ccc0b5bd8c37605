//! Errors as HTTP responses: [`Problem`] (an RFC 9457 problem document), [`ApiError`] (what a
//! handler returns so that `app.dispatch(cmd).await?` needs no mapping), [`HttpStatus`] (how a
//! domain error chooses its status) and [`Rejections`] (which domain errors an [`ApiError`]
//! knows).

use std::borrow::Cow;
use std::error::Error as StdError;
use std::fmt;
use std::marker::PhantomData;

use axum::http::header::{CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use evoq_runtime::{Error, ErrorKind, ReadModelError, StoreError};
use serde::{Deserialize, Serialize};

use crate::response::TOKEN_HEADER;

/// The media type of a problem document: `application/problem+json` (RFC 9457).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The `type` of a problem that has no type of its own: its status says it all (RFC 9457 §4.2.1).
pub const ABOUT_BLANK: &str = "about:blank";

/// A problem document (RFC 9457, `application/problem+json`): the body of every error response
/// this crate builds.
///
/// `type` is [`ABOUT_BLANK`] and `title` the status's reason phrase unless a domain error says
/// otherwise ([`HttpStatus`]); `detail` is the human-readable explanation; `kind` (an extension
/// member) is the [`ErrorKind`] of an evoq error, `rejected`, `conflict`, ...; other extension
/// members go in [`extensions`](Self::extensions).
///
/// ```
/// use axum::http::StatusCode;
/// use evoq::axum::Problem;
///
/// let problem = Problem::new(StatusCode::NOT_FOUND).with_detail("no book `978-0`");
/// let json = serde_json::to_value(&problem).unwrap();
/// assert_eq!(
///     json,
///     serde_json::json!({
///         "type": "about:blank",
///         "title": "Not Found",
///         "status": 404,
///         "detail": "no book `978-0`",
///     })
/// );
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Problem {
    /// A URI reference naming the problem type; [`ABOUT_BLANK`] when the status is enough.
    #[serde(rename = "type", default = "about_blank")]
    pub problem_type: String,
    /// A short summary of the problem type (the status's reason phrase for `about:blank`).
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What happened, for a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// A URI reference naming this occurrence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// The [`ErrorKind`] of the evoq error it comes from (its [`as_str`](ErrorKind::as_str)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Further members, serialized beside the standard ones.
    #[serde(flatten)]
    pub extensions: serde_json::Map<String, serde_json::Value>,
}

fn about_blank() -> String {
    ABOUT_BLANK.to_owned()
}

impl Problem {
    /// A problem with `status`, type `about:blank` and the status's reason phrase as title.
    pub fn new(status: StatusCode) -> Self {
        Problem {
            problem_type: about_blank(),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: None,
            instance: None,
            kind: None,
            extensions: serde_json::Map::new(),
        }
    }

    /// A 404 problem with `detail`: for a read handler that finds nothing.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::NOT_FOUND).with_detail(detail)
    }

    /// A 400 problem with `detail`: for input a handler refuses before any command.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::BAD_REQUEST).with_detail(detail)
    }

    /// Sets the detail.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Sets the title.
    pub fn with_title(mut self, title: impl Into<String>) -> Self {
        self.title = title.into();
        self
    }

    /// Sets the type (a URI reference, `/problems/already-lent` say).
    pub fn with_type(mut self, problem_type: impl Into<String>) -> Self {
        self.problem_type = problem_type.into();
        self
    }

    /// Sets the instance.
    pub fn with_instance(mut self, instance: impl Into<String>) -> Self {
        self.instance = Some(instance.into());
        self
    }

    /// Sets the `kind` member to an evoq [`ErrorKind`].
    pub fn with_kind(mut self, kind: ErrorKind) -> Self {
        self.kind = Some(kind.as_str().to_owned());
        self
    }

    /// Adds an extension member.
    pub fn with_extension(
        mut self,
        name: impl Into<String>,
        value: impl Into<serde_json::Value>,
    ) -> Self {
        self.extensions.insert(name.into(), value.into());
        self
    }

    /// The status as a [`StatusCode`] (500 if the number is not a valid status).
    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The problem an evoq error answers with, its domain errors read through `D` (see
    /// [`ApiError`] for the statuses, and which details are shown).
    pub fn from_error<D: Rejections>(error: &Error) -> Self {
        let kind = error.kind();
        let problem = match error {
            Error::Rejected { source, .. } => match D::problem(&**source) {
                Some(problem) => problem,
                // The handler's own message, without the runtime's "command `X` was rejected
                // by aggregate (or decision) ..." prefix.
                None => {
                    Problem::new(StatusCode::UNPROCESSABLE_ENTITY).with_detail(source.to_string())
                }
            },
            Error::ConsistencyTimeout {
                command,
                position,
                after,
                ..
            } => Problem::new(StatusCode::ACCEPTED)
                .with_detail(format!(
                    "the command `{command}` succeeded and its events are stored (position {position}), but the read side had not processed them within {} ms: read with the token {position} (header `{TOKEN_HEADER}`) to see them; do not send the command again",
                    after.as_millis()
                ))
                .with_extension("token", *position),
            // What a handler retries, or why it stopped, is its error or the store's, which may
            // name hosts, users and files: the client learns which read side and what to do.
            Error::WaitTimeout {
                handler,
                position,
                reached,
                after,
                retrying,
            } => Problem::new(status_of(kind)).with_detail(format!(
                "the read side `{handler}` had not reached position {position} within {} ms (it is at {reached}{}); try again later",
                after.as_millis(),
                if retrying.is_some() {
                    ", retrying a failure the server's log names"
                } else {
                    ""
                }
            )),
            Error::HandlerStopped { handler, .. } => Problem::new(status_of(kind))
                .with_detail(format!(
                    "the read side `{handler}` has stopped; the server's log says why"
                )),
            // A store failure's message may name hosts and files: the log has it.
            Error::Store(_) if kind == ErrorKind::Unavailable => {
                Problem::new(StatusCode::SERVICE_UNAVAILABLE)
                    .with_detail("the event store cannot serve now; try again later")
            }
            _ => {
                let status = status_of(kind);
                if status == StatusCode::INTERNAL_SERVER_ERROR {
                    Problem::new(status).with_detail(INTERNAL_DETAIL)
                } else {
                    Problem::new(status).with_detail(error.to_string())
                }
            }
        };
        problem.with_kind(kind)
    }
}

/// The detail of a 500: what failed stays in the server's log.
pub(crate) const INTERNAL_DETAIL: &str =
    "the server failed to complete the request; its log says why";

/// The default status of each [`ErrorKind`] (see [`ApiError`]).
fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::Rejected => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::InvalidInput => StatusCode::BAD_REQUEST,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Halted => StatusCode::FORBIDDEN,
        ErrorKind::Timeout | ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let mut response = (status, axum::Json(self)).into_response();
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        response
    }
}

/// How a domain error (the error type of `#[handles]` methods) answers over HTTP: its status,
/// and optionally its problem type and title. The `detail` is the error's own `Display`.
///
/// Every method has a default (422 Unprocessable Content, `about:blank`), so
/// `impl HttpStatus for MyError {}` is enough to start with. Name the type in
/// [`ApiError<MyError>`](ApiError) for its rejections to answer this way.
///
/// ```
/// use axum::http::StatusCode;
/// use evoq::axum::HttpStatus;
///
/// #[derive(Debug, thiserror::Error)]
/// enum LibraryError {
///     #[error("book `{0}` is not in the catalog")]
///     NotInCatalog(String),
///     #[error("book `{isbn}` is already lent to `{member}`")]
///     AlreadyLent { isbn: String, member: String },
/// }
///
/// impl HttpStatus for LibraryError {
///     fn status(&self) -> StatusCode {
///         match self {
///             LibraryError::NotInCatalog(_) => StatusCode::NOT_FOUND,
///             LibraryError::AlreadyLent { .. } => StatusCode::UNPROCESSABLE_ENTITY,
///         }
///     }
///
///     fn problem_type(&self) -> Option<std::borrow::Cow<'static, str>> {
///         match self {
///             LibraryError::AlreadyLent { .. } => Some("/problems/already-lent".into()),
///             _ => None,
///         }
///     }
/// }
/// ```
pub trait HttpStatus: StdError + 'static {
    /// The response's status (default 422 Unprocessable Content).
    fn status(&self) -> StatusCode {
        StatusCode::UNPROCESSABLE_ENTITY
    }

    /// The problem's `type`, a URI reference (default none: `about:blank`).
    fn problem_type(&self) -> Option<Cow<'static, str>> {
        None
    }

    /// The problem's `title` (default none: the status's reason phrase).
    fn title(&self) -> Option<Cow<'static, str>> {
        None
    }

    /// The whole problem document; by default from the three methods above, with the error's
    /// `Display` as `detail`. Override it to add extension members.
    fn problem(&self) -> Problem {
        let mut problem = Problem::new(self.status()).with_detail(self.to_string());
        if let Some(problem_type) = self.problem_type() {
            problem.problem_type = problem_type.into_owned();
        }
        if let Some(title) = self.title() {
            problem.title = title.into_owned();
        }
        problem
    }
}

/// The domain errors an [`ApiError`] recognizes in a rejection: [`NoDomain`] (none), one type
/// implementing [`HttpStatus`], or a tuple of up to six of them (for a service over several
/// aggregates with an error type each).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a domain error an `ApiError` can recognize",
    label = "no `HttpStatus` impl",
    note = "implement `evoq::axum::HttpStatus` for it (an empty impl answers 422), or name a tuple of such types, or `NoDomain`"
)]
pub trait Rejections: 'static {
    /// The problem a command handler's error answers with, when it is one of these types.
    fn problem(rejection: &(dyn StdError + Send + Sync + 'static)) -> Option<Problem>;
}

/// No domain error type: every rejection answers 422 with its error's `Display` as detail.
/// The default type parameter of [`ApiError`].
#[derive(Debug)]
pub enum NoDomain {}

impl Rejections for NoDomain {
    fn problem(_: &(dyn StdError + Send + Sync + 'static)) -> Option<Problem> {
        None
    }
}

impl<D: HttpStatus> Rejections for D {
    fn problem(rejection: &(dyn StdError + Send + Sync + 'static)) -> Option<Problem> {
        rejection.downcast_ref::<D>().map(HttpStatus::problem)
    }
}

macro_rules! tuple_rejections {
    ($($name:ident),+) => {
        impl<$($name: HttpStatus),+> Rejections for ($($name,)+) {
            fn problem(rejection: &(dyn StdError + Send + Sync + 'static)) -> Option<Problem> {
                None$(.or_else(|| <$name as Rejections>::problem(rejection)))+
            }
        }
    };
}

tuple_rejections!(A, B);
tuple_rejections!(A, B, C);
tuple_rejections!(A, B, C, D);
tuple_rejections!(A, B, C, D, E);
tuple_rejections!(A, B, C, D, E, F);

/// An error a handler returns: an evoq [`Error`] (converted by `?`), a [`Problem`] of the
/// handler's own, or an internal failure. It answers with a problem document
/// (`application/problem+json`).
///
/// `D` names the domain error types whose rejections answer with their own [`HttpStatus`];
/// any other rejection answers 422. Every evoq error answers by its [`ErrorKind`]:
///
/// | kind | status | detail |
/// |---|---|---|
/// | `rejected` | 422, or the domain error's [`HttpStatus::status`] | the domain error's `Display`, without the runtime's "command `X` was rejected by ..." prefix |
/// | `conflict` | 409 Conflict | the error's message |
/// | `invalid_input` | 400 Bad Request | the error's message |
/// | `not_found` | 404 Not Found | the error's message |
/// | `halted` | 403 Forbidden: a middleware refused the command, the usual place for permissions and policies (a domain rule belongs in the aggregate, which answers 422) | the error's message |
/// | `timeout` | 503 Service Unavailable (a dispatch or a wait past its deadline; a dispatch's command may still complete), except [`Error::ConsistencyTimeout`]: **202 Accepted**, because the command succeeded and its events are stored, only the handlers its consistency asked for have not processed them yet: it must not be sent again. The body's `token` member and the `evoq-token` header give the position to wait on. | the error's message; for a read side behind ([`Error::ConsistencyTimeout`], [`Error::WaitTimeout`]), which read side and what to do, without what it is retrying (a handler's or the store's error, which may name hosts and files) |
/// | `unavailable` | 503 Service Unavailable, with `Retry-After: 1` | the error's message; for a failing store, a generic sentence (its message may name hosts and files); for a stopped handler, its name without the reason |
/// | `stored_data`, `handler`, `config`, `internal` | 500 Internal Server Error | a generic sentence: the message goes to the log |
///
/// Every 5xx, and the 202 of a consistency timeout, is logged (`tracing`, event
/// `evoq.http.error`, at ERROR for 500, WARN otherwise) with the full error; `kind` is set for
/// every evoq error.
///
/// ```
/// use axum::{extract::State, http::StatusCode, response::IntoResponse, routing::post, Json, Router};
/// use evoq::axum::{ApiError, CommandResponse, HttpStatus, Problem};
/// use evoq::prelude::*;
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Event, Serialize, Deserialize, Clone, Debug)]
/// # struct MoneyWithdrawn { account: String, amount: u64 }
/// # #[derive(Command, Debug, Deserialize)]
/// # struct Withdraw { #[aggregate_id] account: String, amount: u64 }
///
/// #[derive(Debug, thiserror::Error)]
/// #[error("insufficient funds: balance {0}")]
/// struct InsufficientFunds(u64);
///
/// impl HttpStatus for InsufficientFunds {} // 422, the default
///
/// #[derive(Default)]
/// struct Account { balance: u64 }
///
/// #[aggregate]
/// impl Account {
///     #[handles]
///     fn withdraw(&self, cmd: &Withdraw) -> Result<MoneyWithdrawn, InsufficientFunds> {
///         if cmd.amount > self.balance {
///             return Err(InsufficientFunds(self.balance));
///         }
///         Ok(MoneyWithdrawn { account: cmd.account.clone(), amount: cmd.amount })
///     }
///     #[apply]
///     fn withdrawn(&mut self, e: &MoneyWithdrawn) { self.balance -= e.amount; }
/// }
///
/// // No error mapping in the handler: `?` turns evoq's error into an `ApiError`.
/// async fn withdraw(
///     State(app): State<Evoq>,
///     Json(cmd): Json<Withdraw>,
/// ) -> Result<CommandResponse<Dispatched<Account>>, ApiError<InsufficientFunds>> {
///     Ok(app.dispatch(cmd).await?.into())
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), evoq::Error> {
/// let app = Evoq::builder().start().await?;
/// let _router: Router = Router::new().route("/withdraw", post(withdraw)).with_state(app.clone());
///
/// // What the handler answers for a withdrawal the account refuses:
/// let refused = app.dispatch(Withdraw { account: "acc-1".into(), amount: 5 }).await.unwrap_err();
/// let problem = ApiError::<InsufficientFunds>::from(refused).problem();
/// assert_eq!(problem.status, 422);
/// assert_eq!(problem.detail.as_deref(), Some("insufficient funds: balance 0"));
/// assert_eq!(problem.kind.as_deref(), Some("rejected"));
/// # Ok(())
/// # }
/// ```
pub struct ApiError<D = NoDomain> {
    repr: Repr,
    domain: PhantomData<fn() -> D>,
}

enum Repr {
    Evoq(Error),
    Problem(Problem),
    /// A failure outside evoq: the message is logged, the client gets a 500.
    Internal(String),
}

/// What a handler returns: a value, or an [`ApiError`] that knows the domain errors `D`.
pub type ApiResult<T, D = NoDomain> = Result<T, ApiError<D>>;

impl<D> ApiError<D> {
    /// A 500 for a failure outside evoq (a query of a read model, say): `error` is logged,
    /// the client gets a generic detail.
    pub fn internal(error: impl fmt::Display) -> Self {
        ApiError {
            repr: Repr::Internal(error.to_string()),
            domain: PhantomData,
        }
    }

    /// The evoq error this answers, if it is one.
    pub fn error(&self) -> Option<&Error> {
        match &self.repr {
            Repr::Evoq(error) => Some(error),
            _ => None,
        }
    }

    /// The evoq error this answers, if it is one.
    pub fn into_error(self) -> Option<Error> {
        match self.repr {
            Repr::Evoq(error) => Some(error),
            _ => None,
        }
    }

    /// The same error, with the domain errors `E` recognized instead.
    pub fn with_domain<E>(self) -> ApiError<E> {
        ApiError {
            repr: self.repr,
            domain: PhantomData,
        }
    }
}

impl<D: Rejections> ApiError<D> {
    /// The problem document it answers with.
    pub fn problem(&self) -> Problem {
        match &self.repr {
            Repr::Evoq(error) => Problem::from_error::<D>(error),
            Repr::Problem(problem) => problem.clone(),
            Repr::Internal(_) => {
                Problem::new(StatusCode::INTERNAL_SERVER_ERROR).with_detail(INTERNAL_DETAIL)
            }
        }
    }
}

impl<D> From<Error> for ApiError<D> {
    fn from(error: Error) -> Self {
        ApiError {
            repr: Repr::Evoq(error),
            domain: PhantomData,
        }
    }
}

impl<D> From<Problem> for ApiError<D> {
    fn from(problem: Problem) -> Self {
        ApiError {
            repr: Repr::Problem(problem),
            domain: PhantomData,
        }
    }
}

impl<D> From<ReadModelError> for ApiError<D> {
    /// A read model that fails to answer a query: a 500, the error logged.
    fn from(error: ReadModelError) -> Self {
        ApiError::internal(error)
    }
}

impl<D> From<StoreError> for ApiError<D> {
    fn from(error: StoreError) -> Self {
        ApiError::from(Error::Store(error))
    }
}

impl<D: Rejections> IntoResponse for ApiError<D> {
    fn into_response(self) -> Response {
        let problem = self.problem();
        let status = problem.status_code();
        // A consistency timeout (202) is logged too: its client detail names no handler's reason.
        let accepted_late = matches!(&self.repr, Repr::Evoq(Error::ConsistencyTimeout { .. }));
        if status.is_server_error() || accepted_late {
            let error = match &self.repr {
                Repr::Evoq(error) => error.to_string(),
                Repr::Problem(problem) => problem.detail.clone().unwrap_or_default(),
                Repr::Internal(message) => message.clone(),
            };
            if status == StatusCode::INTERNAL_SERVER_ERROR {
                tracing::error!(name: "evoq.http.error", status = status.as_u16(), kind = problem.kind.as_deref(), error = %error, "evoq.http.error");
            } else {
                tracing::warn!(name: "evoq.http.error", status = status.as_u16(), kind = problem.kind.as_deref(), error = %error, "evoq.http.error");
            }
        }
        let mut response = problem.into_response();
        let headers = response.headers_mut();
        match &self.repr {
            Repr::Evoq(Error::ConsistencyTimeout { position, .. }) => {
                headers.insert(TOKEN_HEADER, HeaderValue::from(*position));
            }
            Repr::Evoq(error)
                if error.kind() == ErrorKind::Unavailable || error.is_wait_timeout() =>
            {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

impl<D> fmt::Debug for ApiError<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Repr::Evoq(error) => f.debug_tuple("ApiError").field(error).finish(),
            Repr::Problem(problem) => f.debug_tuple("ApiError").field(problem).finish(),
            Repr::Internal(message) => f.debug_tuple("ApiError::Internal").field(message).finish(),
        }
    }
}

impl<D> fmt::Display for ApiError<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Repr::Evoq(error) => error.fmt(f),
            Repr::Problem(problem) => match &problem.detail {
                Some(detail) => write!(f, "{} {}: {detail}", problem.status, problem.title),
                None => write!(f, "{} {}", problem.status, problem.title),
            },
            Repr::Internal(message) => f.write_str(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("book `{0}` is already lent")]
    struct AlreadyLent(String);

    impl HttpStatus for AlreadyLent {
        fn status(&self) -> StatusCode {
            StatusCode::CONFLICT
        }
        fn problem_type(&self) -> Option<Cow<'static, str>> {
            Some("/problems/already-lent".into())
        }
    }

    #[derive(Debug, thiserror::Error)]
    #[error("not a member: {0}")]
    struct NotAMember(String);

    impl HttpStatus for NotAMember {
        fn title(&self) -> Option<Cow<'static, str>> {
            Some("Not a member".into())
        }
    }

    fn rejected(source: impl StdError + Send + Sync + 'static) -> Error {
        Error::Rejected {
            decider: evoq_runtime::Decider::Decision,
            aggregate: "Book",
            id: "978-0".into(),
            command: "LendBook",
            source: Box::new(source),
        }
    }

    #[test]
    fn a_rejection_answers_with_the_domain_message_alone() {
        let problem = Problem::from_error::<NoDomain>(&rejected(AlreadyLent("978-0".into())));
        assert_eq!(problem.status, 422);
        assert_eq!(
            problem.detail.as_deref(),
            Some("book `978-0` is already lent")
        );
        assert_eq!(problem.problem_type, "about:blank");
        assert_eq!(problem.title, "Unprocessable Entity");
        assert_eq!(problem.kind.as_deref(), Some("rejected"));
    }

    #[test]
    fn a_known_domain_error_chooses_its_status_type_and_title() {
        let problem = Problem::from_error::<AlreadyLent>(&rejected(AlreadyLent("1".into())));
        assert_eq!(
            (problem.status, problem.problem_type.as_str()),
            (409, "/problems/already-lent")
        );
        assert_eq!(problem.kind.as_deref(), Some("rejected"));

        type Both = (AlreadyLent, NotAMember);
        let problem = Problem::from_error::<Both>(&rejected(NotAMember("ann".into())));
        assert_eq!(
            (problem.status, problem.title.as_str()),
            (422, "Not a member")
        );
        assert_eq!(problem.detail.as_deref(), Some("not a member: ann"));
    }

    #[test]
    fn each_kind_has_its_status() {
        let conflict = Error::Conflict {
            stream: "Book-1".into(),
            command: "LendBook",
            expected: 1,
            actual: 2,
            attempts: 1,
        };
        let invalid = Error::InvalidAggregateId {
            decider: evoq_runtime::Decider::Aggregate,
            aggregate: "Book",
            command: "AddBook",
            id: String::new(),
            reason: "is empty".into(),
        };
        let unknown = Error::UnknownHandler {
            handler: "x".into(),
            known: "none".into(),
        };
        let halted = Error::Halted {
            middleware: "auth".into(),
            command: "AddBook",
            reason: "no".into(),
        };
        let timeout = Error::Timeout {
            command: "AddBook",
            stream: "Book-1".into(),
            after: Duration::from_secs(1),
        };
        let stopped = Error::Stopped { command: "AddBook" };
        let panicked = Error::Panicked {
            decider: evoq_runtime::Decider::Aggregate,
            aggregate: "Book",
            id: "1".into(),
            command: "AddBook",
            message: "secret".into(),
            events_stored: false,
        };
        let cases = [
            (conflict, 409, "conflict"),
            (invalid, 400, "invalid_input"),
            (unknown, 404, "not_found"),
            (halted, 403, "halted"),
            (timeout, 503, "timeout"),
            (stopped, 503, "unavailable"),
            (panicked, 500, "internal"),
        ];
        for (error, status, kind) in cases {
            let problem = Problem::from_error::<NoDomain>(&error);
            assert_eq!(
                (problem.status, problem.kind.as_deref()),
                (status, Some(kind)),
                "{error}"
            );
            if status == 500 {
                assert!(!problem.detail.unwrap_or_default().contains("secret"));
            } else {
                assert_eq!(problem.detail, Some(error.to_string()));
            }
        }
    }

    #[test]
    fn a_consistency_timeout_is_accepted_with_its_token() {
        let error = Error::ConsistencyTimeout {
            command: "AddBook",
            position: 42,
            after: Duration::from_secs(1),
            pending: "`catalog` at 41".into(),
        };
        let response = ApiError::<NoDomain>::from(error).into_response();
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        assert_eq!(response.headers()[TOKEN_HEADER], "42");
        assert_eq!(response.headers()[CONTENT_TYPE], PROBLEM_JSON);
    }

    /// What a handler retries, or why it stopped, is its error or the store's: it may name
    /// hosts, users and files. A client is told which read side is behind or stopped and what
    /// to do; the log has the rest.
    #[test]
    fn a_read_side_behind_or_stopped_tells_the_client_no_reason() {
        let secret = "balances db at 10.1.2.3:5432 refused: password authentication failed";
        let errors = [
            Error::ConsistencyTimeout {
                command: "Deposit",
                position: 42,
                after: Duration::from_secs(1),
                pending: format!("`balances` (at position 41, retrying a failed event ({secret}))"),
            },
            Error::WaitTimeout {
                handler: "balances".into(),
                position: 42,
                reached: 41,
                after: Duration::from_secs(2),
                retrying: Some(format!("a failed event ({secret})")),
            },
            Error::HandlerStopped {
                handler: "balances".into(),
                reason: secret.into(),
            },
        ];
        for error in errors {
            let problem = Problem::from_error::<NoDomain>(&error);
            let detail = problem.detail.clone().unwrap_or_default();
            assert!(!detail.contains("10.1.2.3"), "{detail}");
            assert!(
                !detail.contains("Evoq::"),
                "no Rust API in a client's text: {detail}"
            );
            assert!(
                detail.contains("`balances`") || detail.contains("42"),
                "{detail}"
            );
        }
        let accepted = Problem::from_error::<NoDomain>(&Error::ConsistencyTimeout {
            command: "Deposit",
            position: 42,
            after: Duration::from_secs(1),
            pending: secret.into(),
        });
        assert_eq!(
            accepted.detail.as_deref(),
            Some(
                "the command `Deposit` succeeded and its events are stored (position 42), but the read side had not processed them within 1000 ms: read with the token 42 (header `evoq-token`) to see them; do not send the command again"
            )
        );
        let behind = Problem::from_error::<NoDomain>(&Error::WaitTimeout {
            handler: "balances".into(),
            position: 42,
            reached: 41,
            after: Duration::from_secs(2),
            retrying: None,
        });
        assert_eq!(
            behind.detail.as_deref(),
            Some(
                "the read side `balances` had not reached position 42 within 2000 ms (it is at 41); try again later"
            )
        );
    }

    #[test]
    fn a_problem_reads_back() {
        let problem = Problem::new(StatusCode::CONFLICT)
            .with_kind(ErrorKind::Conflict)
            .with_extension("actual", 3);
        let json = serde_json::to_string(&problem).unwrap();
        assert_eq!(
            json,
            r#"{"type":"about:blank","title":"Conflict","status":409,"kind":"conflict","actual":3}"#
        );
        assert_eq!(serde_json::from_str::<Problem>(&json).unwrap(), problem);
    }
}
