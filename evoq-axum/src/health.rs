//! Probes: readiness ([`ready`], [`Readiness`]) and liveness ([`live`]).

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use evoq_runtime::{Evoq, HandlerStatus};
use serde::{Deserialize, Serialize};

/// Whether the application can serve: the body of [`ready`].
///
/// Ready unless the runtime is stopped ([`Evoq::is_stopped`]) or a handler has stopped
/// ([`HandlerStatus::Stopped`]: its error policy, or the runtime stopping); a handler that is
/// `retrying` (an event its retry policy tries again, or a store failure outside its code)
/// keeps the application ready, as its reads still answer and it resumes by itself. It answers
/// 200 when ready and 503 otherwise, with this JSON body either way:
///
/// ```json
/// {"ready": false, "runtime": "stopped",
///  "handlers": [{"name": "catalog", "status": "stopped", "reason": "the runtime stopped", "position": 12, "lag": 0}],
///  "problems": ["the runtime is stopped", "handler `catalog` has stopped: the runtime stopped"]}
/// ```
///
/// ```
/// # use evoq::prelude::*;
/// use evoq::axum::Readiness;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), evoq::Error> {
/// let app = Evoq::builder().start().await?;
/// assert!(Readiness::of(&app).ready);
/// app.stop().await;
/// let readiness = Readiness::of(&app);
/// assert!(!readiness.ready);
/// assert_eq!(readiness.problems, ["the runtime is stopped"]);
/// # Ok(())
/// # }
/// ```
///
/// The body is for operators: a handler's `reason` is its error or the store's, which may name
/// hosts, users and files. Serve the probe where only the orchestrator and operators reach it
/// (the problem documents of [`ApiError`](crate::ApiError), which clients see, never carry a
/// handler's reason).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readiness {
    /// Whether the application can serve.
    pub ready: bool,
    /// `running` or `stopped`.
    pub runtime: String,
    /// Every handler, projection and saga, in registration order.
    pub handlers: Vec<HandlerReadiness>,
    /// Why it is not ready (empty when it is).
    pub problems: Vec<String>,
}

/// One handler in a [`Readiness`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandlerReadiness {
    /// The name it runs under.
    pub name: String,
    /// `running`, `retrying` or `stopped`.
    pub status: String,
    /// Why it is retrying or stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The global position it has processed through.
    pub position: u64,
    /// How far it is behind the store's head.
    pub lag: u64,
}

impl Readiness {
    /// The readiness of `app` now.
    pub fn of(app: &Evoq) -> Self {
        let stopped = app.is_stopped();
        let mut problems = Vec::new();
        if stopped {
            problems.push("the runtime is stopped".to_owned());
        }
        let handlers = app
            .handler_stats()
            .into_iter()
            .map(|stats| {
                let (status, reason) = match stats.status {
                    HandlerStatus::Running => ("running", None),
                    HandlerStatus::Retrying { reason } => ("retrying", Some(reason)),
                    HandlerStatus::Stopped { reason } => {
                        problems.push(format!("handler `{}` has stopped: {reason}", stats.name));
                        ("stopped", Some(reason))
                    }
                    _ => ("unknown", None),
                };
                HandlerReadiness {
                    name: stats.name,
                    status: status.to_owned(),
                    reason,
                    position: stats.position,
                    lag: stats.lag,
                }
            })
            .collect();
        Readiness {
            ready: problems.is_empty(),
            runtime: if stopped { "stopped" } else { "running" }.to_owned(),
            handlers,
            problems,
        }
    }
}

impl IntoResponse for Readiness {
    fn into_response(self) -> Response {
        let status = if self.ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        (status, axum::Json(self)).into_response()
    }
}

/// The readiness probe: 200 when the application can serve, 503 when the runtime or a
/// handler has stopped; the body is a [`Readiness`]. A handler for any router whose state
/// gives the runtime (`Evoq: FromRef<S>`).
pub async fn ready(State(app): State<Evoq>) -> Readiness {
    Readiness::of(&app)
}

/// The liveness probe: 200 `{"live": true}` as long as the process answers requests.
pub async fn live() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "live": true }))
}

/// `GET /ready` ([`ready`]) and `GET /live` ([`live`]), to merge into a router of any state.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), evoq::Error> {
/// use axum::Router;
///
/// let app = evoq::Evoq::builder().start().await?;
/// let router: Router = Router::new().merge(evoq::axum::health_routes(app.clone()));
/// # let _ = router;
/// # Ok(())
/// # }
/// ```
pub fn health_routes<S>(app: Evoq) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/ready", get(ready))
        .route("/live", get(live))
        .with_state(app)
}
