//! evoq in an [axum](https://docs.rs/axum/0.8) web service: what a handler needs so that
//! its body is the dispatch and nothing else.
//!
//! - [`ApiError`]: `app.dispatch(cmd).await?` in a handler; every evoq error answers with an
//!   RFC 9457 problem document (`application/problem+json`) and a status chosen by its
//!   [`ErrorKind`](evoq_runtime::ErrorKind); a rejection answers with the domain error's own
//!   message and, through [`HttpStatus`], its own status.
//! - [`Json`]: `axum::Json` whose rejection (a body that is not the command) is a problem
//!   document too; axum's path and body rejections convert into [`Problem`] and [`ApiError`].
//! - [`CommandResponse`]: a command's result as JSON, with its consistency token in the
//!   [`evoq-token`](TOKEN_HEADER) header.
//! - [`Consistent`] and [`ReadYourWrites`]: a read that carries the token waits until the
//!   projections it reads have processed it.
//! - [`ready`], [`live`], [`health_routes`]: the probes; [`serve`] and [`shutdown_signal`]:
//!   stop accepting, drain the requests in flight, then stop the runtime.
//!
//! Use it through the facade: `evoq = { version = "0.1", features = ["axum"] }`, then
//! `evoq::axum::...` (this crate depends on `evoq-runtime`, and `evoq` re-exports it).
//!
//! ```
//! use axum::extract::{FromRef, Path, State};
//! use axum::routing::{get, post};
//! use axum::{Json, Router};
//! use evoq::axum::{ApiResult, CommandResponse, Consistent, HttpStatus, Problem, ReadYourWrites};
//! use evoq::prelude::*;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Event, Serialize, Deserialize, Clone, Debug)]
//! struct TaskAdded { id: String, title: String }
//!
//! #[derive(Command, Debug, Deserialize)]
//! struct AddTask { #[aggregate_id] id: String, title: String }
//!
//! #[derive(Debug, thiserror::Error)]
//! #[error("task `{0}` exists already")]
//! struct Exists(String);
//!
//! impl HttpStatus for Exists {
//!     fn status(&self) -> axum::http::StatusCode { axum::http::StatusCode::CONFLICT }
//! }
//!
//! #[derive(Default)]
//! struct Task { added: bool }
//!
//! #[aggregate]
//! impl Task {
//!     #[handles]
//!     fn add(&self, cmd: &AddTask) -> Result<TaskAdded, Exists> {
//!         if self.added { return Err(Exists(cmd.id.clone())); }
//!         Ok(TaskAdded { id: cmd.id.clone(), title: cmd.title.clone() })
//!     }
//!     #[apply]
//!     fn added(&mut self, _: &TaskAdded) { self.added = true; }
//! }
//!
//! #[derive(Clone, Default)]
//! struct Titles { model: InMemoryReadModel }
//!
//! #[projection(name = "titles", read_model = model)]
//! impl Titles {
//!     #[handles]
//!     async fn added(&mut self, e: &TaskAdded, _: &EventMeta) -> Result<(), ProjectionError> {
//!         self.model.put(&e.id, &e.title)?;
//!         Ok(())
//!     }
//! }
//!
//! #[derive(Clone)]
//! struct AppState { app: Evoq, titles: Titles, reads: ReadYourWrites }
//!
//! impl FromRef<AppState> for ReadYourWrites {
//!     fn from_ref(state: &AppState) -> Self { state.reads.clone() }
//! }
//!
//! // A command: 200 with the dispatch result and `evoq-token`; a second add of the same task
//! // answers 409 with {"detail": "task `t-1` exists already", "kind": "rejected", ...}.
//! async fn add(
//!     State(state): State<AppState>,
//!     Json(cmd): Json<AddTask>,
//! ) -> ApiResult<CommandResponse<Dispatched<Task>>, Exists> {
//!     Ok(state.app.dispatch(cmd).await?.into())
//! }
//!
//! // A read: with the `evoq-token` of the add, it sees the task.
//! async fn title(
//!     _: Consistent,
//!     State(state): State<AppState>,
//!     Path(id): Path<String>,
//! ) -> ApiResult<Json<String>> {
//!     let title = state.titles.model.get::<String>(&id)?;
//!     title.map(Json).ok_or_else(|| Problem::not_found(format!("no task `{id}`")).into())
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let titles = Titles::default();
//! let app = Evoq::builder().projection(titles.clone()).start().await?;
//! let reads = ReadYourWrites::new(app.clone()).projection::<Titles>();
//! let router: Router = Router::new()
//!     .route("/tasks", post(add))
//!     .route("/tasks/{id}", get(title))
//!     .with_state(AppState { app: app.clone(), titles, reads })
//!     .merge(evoq::axum::health_routes(app.clone()));
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let server = tokio::spawn(evoq::axum::serve(listener, router, app.clone(), async {
//!     stopped.await.ok();
//! }));
//! // ... requests ...
//! stop.send(()).ok();
//! server.await??;
//! assert!(app.is_stopped());
//! # Ok(())
//! # }
//! ```

mod consistent;
mod extract;
mod health;
mod problem;
mod response;
mod shutdown;

pub use consistent::{Configured, Consistent, ReadYourWrites, WaitFuture, WaitOn};
pub use extract::Json;
pub use health::{HandlerReadiness, Readiness, health_routes, live, ready};
pub use problem::{
    ABOUT_BLANK, ApiError, ApiResult, HttpStatus, NoDomain, PROBLEM_JSON, Problem, Rejections,
};
pub use response::{CommandResponse, TOKEN_HEADER};
pub use shutdown::{serve, shutdown_signal};
