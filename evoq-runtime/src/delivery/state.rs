//! What the runtime and a handler's task share: the handler's published progress, its control
//! requests and its counters.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{mpsc, oneshot, watch};

use crate::error::Error;
use crate::store::RequestedAction;

/// What one handler's task publishes.
#[derive(Clone, Debug, Default)]
pub(crate) struct Progress {
    /// The position processed through.
    pub(crate) position: u64,
    /// Why the handler stopped, once it has (`OnError::Stop`).
    pub(crate) stopped: Option<Arc<str>>,
    /// What the task is retrying after, while a failure outside the handler's code (the
    /// store's, or a panic of the task) keeps it from going on: [`Retrying::Fault`]'s words.
    pub(crate) trouble: Option<Arc<str>>,
    /// The failed event the handler's retry policy is retrying (what failed, the attempt, when
    /// the next comes), until the event is handled or given up: [`Retrying::Event`]'s words.
    pub(crate) failing: Option<Arc<str>>,
}

impl Progress {
    /// What the handler is doing: a stop wins over a failure being retried, and a failure
    /// outside the handler's code (which holds up everything) over its failed event.
    pub(crate) fn doing(&self) -> Doing<'_> {
        match (&self.stopped, &self.trouble, &self.failing) {
            (Some(reason), _, _) => Doing::Stopped(reason),
            (None, Some(reason), _) | (None, None, Some(reason)) => Doing::Retrying(reason),
            (None, None, None) => Doing::Running,
        }
    }

    /// What the handler was retrying, if it was: the reason of `HandlerStatus::Retrying`.
    pub(crate) fn retrying(&self) -> Option<&str> {
        match self.doing() {
            Doing::Retrying(reason) => Some(reason),
            Doing::Running | Doing::Stopped(_) => None,
        }
    }
}

/// What a handler retries, in the words its status (`HandlerStatus::Retrying`) and the errors
/// of waits on it give: each reason begins by saying which.
pub(crate) enum Retrying {
    /// An event its method failed on, retried under its retry policy.
    Event,
    /// A failure outside its code: the store's, or a panic of its task.
    Fault,
}

impl Retrying {
    /// The reason, from what failed and when the next try comes.
    pub(crate) fn reason(self, what: &str) -> Arc<str> {
        Arc::from(match self {
            Retrying::Event => format!("a failed event ({what})"),
            Retrying::Fault => format!("after a failure outside its code ({what})"),
        })
    }
}

/// What a handler is doing, with why when it is not running: `HandlerStats::status`, and the
/// label of `evoq_handler_status`.
pub(crate) enum Doing<'a> {
    Running,
    Retrying(&'a str),
    Stopped(&'a str),
}

impl Doing<'_> {
    /// Every label of `evoq_handler_status{status}`.
    pub(crate) const LABELS: [&'static str; 3] = ["running", "retrying", "stopped"];

    /// This one's label in `evoq_handler_status{status}`.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Doing::Running => "running",
            Doing::Retrying(_) => "retrying",
            Doing::Stopped(_) => "stopped",
        }
    }
}

/// A request to a handler's task, from a caller in this runtime: carry out `action` (deliver a
/// dead letter again, once; or clear the projection's read model, reset its checkpoint and
/// replay from the start), as a request kept in the store would be, and answer `reply`.
pub(crate) struct Control {
    pub(crate) action: RequestedAction,
    pub(crate) reply: oneshot::Sender<Result<(), Error>>,
}

impl Control {
    /// Whether the caller gave up waiting for the answer (its future was dropped): then the
    /// request is withdrawn, unless it began already.
    pub(crate) fn given_up(&self) -> bool {
        self.reply.is_closed()
    }
}

/// What a handler's task counts: read by `handler_stats()`, and exported through the `metrics`
/// facade as `evoq_handler_events_total{handler, outcome}` (outcome `handled`, `retry`,
/// `dead_letter`, `skipped`, `fault`).
pub(crate) struct DeliveryCounters {
    pub(crate) handled: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) dead_letters: AtomicU64,
    pub(crate) skipped: AtomicU64,
    /// Failures outside the handler's code: store calls that failed or panicked, panics of the
    /// task itself (each followed by a retry).
    pub(crate) faults: AtomicU64,
    /// The exported counters, in the order of [`Count`]; registered when the handler starts
    /// (an application installs its metrics recorder before it starts the runtime).
    exported: [metrics::Counter; 5],
}

/// What [`DeliveryCounters::count`] counts.
#[derive(Clone, Copy)]
pub(crate) enum Count {
    Handled,
    Retry,
    DeadLetter,
    Skipped,
    Fault,
}

impl DeliveryCounters {
    pub(crate) fn new(handler: &str) -> Self {
        let counter = |outcome: &'static str| {
            metrics::counter!(
                "evoq_handler_events_total",
                "handler" => handler.to_owned(),
                "outcome" => outcome
            )
        };
        DeliveryCounters {
            handled: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            dead_letters: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            faults: AtomicU64::new(0),
            exported: [
                counter("handled"),
                counter("retry"),
                counter("dead_letter"),
                counter("skipped"),
                counter("fault"),
            ],
        }
    }

    pub(crate) fn count(&self, what: Count) {
        let counter = match what {
            Count::Handled => &self.handled,
            Count::Retry => &self.retries,
            Count::DeadLetter => &self.dead_letters,
            Count::Skipped => &self.skipped,
            Count::Fault => &self.faults,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.exported[what as usize].increment(1);
    }
}

/// What the runtime and a handler's task share.
pub(crate) struct HandlerState {
    pub(crate) name: Arc<str>,
    pub(crate) event_types: &'static [&'static str],
    pub(crate) renamed_from: Vec<&'static str>,
    /// The handler's type, when it was registered as one (`Evoq::wait_for::<H>`).
    pub(crate) handler_type: Option<std::any::TypeId>,
    pub(crate) strong: bool,
    pub(crate) progress: watch::Sender<Progress>,
    pub(crate) control: mpsc::Sender<Control>,
    pub(crate) counters: DeliveryCounters,
}

impl HandlerState {
    /// Whether the handler takes any of `event_types`.
    pub(crate) fn takes_any(&self, event_types: &[&str]) -> bool {
        self.event_types.iter().any(|t| event_types.contains(t))
    }
}
