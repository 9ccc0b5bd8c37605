//! Request bodies and paths whose rejections are problem documents: [`Json`], and
//! `From` conversions of axum's own rejections into [`Problem`] and [`ApiError`].
//!
//! axum answers a body it cannot read as a command (not JSON, not the command's shape, not sent
//! as `application/json`) with a plain-text response; an API whose every other error is a
//! problem document should not. Take commands as [`Json<T>`](Json) from this crate instead of
//! `axum::Json`, or wrap any axum extractor with `Result<E, E::Rejection>` and `?` its rejection
//! into an [`ApiError`].

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::problem::{ApiError, INTERNAL_DETAIL, Problem};

/// `axum::Json` whose rejection is a [`Problem`]: a body that is not JSON answers 400, one that
/// is JSON but not `T` answers 422, one sent without `Content-Type: application/json` 415, each
/// with axum's explanation as `detail` (which names the field that failed, when one did). As a
/// response it is `axum::Json`.
///
/// ```
/// use axum::{routing::post, Router};
/// use evoq::axum::{ApiResult, CommandResponse, Json};
/// use evoq::prelude::*;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Command, Debug, Deserialize)]
/// struct Rename { #[aggregate_id] id: String, name: String }
///
/// #[derive(Event, Serialize, Deserialize, Clone, Debug)]
/// struct Renamed { name: String }
///
/// #[derive(Default)]
/// struct Item;
///
/// #[aggregate]
/// impl Item {
///     #[handles]
///     fn rename(&self, cmd: &Rename) -> Result<Renamed, std::convert::Infallible> {
///         Ok(Renamed { name: cmd.name.clone() })
///     }
///     #[apply]
///     fn renamed(&mut self, _: &Renamed) {}
/// }
///
/// // `{"id": "i-1"}` answers 422 with a problem document whose detail names `name`.
/// async fn rename(
///     axum::extract::State(app): axum::extract::State<Evoq>,
///     Json(cmd): Json<Rename>,
/// ) -> ApiResult<CommandResponse<Dispatched<Item>>> {
///     Ok(app.dispatch(cmd).await?.into())
/// }
///
/// # async fn router(app: Evoq) -> Router {
/// Router::new().route("/items", post(rename)).with_state(app)
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    axum::Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Problem> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(Json(value)),
            Err(rejection) => Err(rejection.into()),
        }
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// A rejection's status and explanation: the problem document of a client's mistake, or
/// `Err(explanation)` when the rejection says it is the server's fault (its explanation belongs
/// in the log, not in the response, as for every 500).
fn classify(status: StatusCode, detail: String) -> Result<Problem, String> {
    if status.is_server_error() {
        return Err(detail);
    }
    Ok(Problem::new(status).with_detail(detail))
}

/// The problem document of a rejection: the server's fault is logged here (a [`Problem`]
/// answers as it is) and answered with the generic detail.
fn problem(classified: Result<Problem, String>) -> Problem {
    classified.unwrap_or_else(|detail| {
        tracing::error!(name: "evoq.http.error", status = 500, error = %detail, "evoq.http.error");
        Problem::new(StatusCode::INTERNAL_SERVER_ERROR).with_detail(INTERNAL_DETAIL)
    })
}

/// The [`ApiError`] of a rejection: the server's fault is an internal error, which the
/// `ApiError` logs once when it answers.
fn api_error<D>(classified: Result<Problem, String>) -> ApiError<D> {
    classified.map_or_else(ApiError::internal, ApiError::from)
}

impl From<JsonRejection> for Problem {
    /// A body that is not the expected JSON: 400, 415 or 422 (axum's status), axum's
    /// explanation as `detail`.
    fn from(rejection: JsonRejection) -> Self {
        problem(classify(rejection.status(), rejection.body_text()))
    }
}

impl From<PathRejection> for Problem {
    /// A path whose parameters do not parse: axum's status (400 for a bad value), its
    /// explanation as `detail`.
    fn from(rejection: PathRejection) -> Self {
        problem(classify(rejection.status(), rejection.body_text()))
    }
}

impl<D> From<JsonRejection> for ApiError<D> {
    fn from(rejection: JsonRejection) -> Self {
        api_error(classify(rejection.status(), rejection.body_text()))
    }
}

impl<D> From<PathRejection> for ApiError<D> {
    fn from(rejection: PathRejection) -> Self {
        api_error(classify(rejection.status(), rejection.body_text()))
    }
}
