//! The subscription engine: the one place where delivery of events to consumers, checkpoints,
//! retries and dead letters live. It knows no kind of consumer: event handlers, projections and
//! sagas each implement its [`Consumer`](consumer::Consumer) trait in their own module.
//!
//! # Delivery
//!
//! Each handler runs in a tokio task of its own, so a slow or failing handler delays no other.
//! The task reads the global order through a [`Subscription`](crate::store::Subscription)
//! filtered by the handler's event types: first the stored events (catch-up), then new ones as
//! they are committed (live), with no gap and no duplicate between the two. Events reach the
//! handler one at a time, in global order, across every stream; the next event waits until the
//! previous one is handled, dead-lettered or skipped.
//!
//! # Position and checkpoint
//!
//! A handler's *position* is the global position it has processed through: every event of its
//! types at or below it was handled (or dead-lettered or skipped), and it moves past events of
//! other types as the subscription scans them. It is published in a `tokio::sync::watch`
//! (level-triggered: waiters look at its value, they never match acknowledgements), which is
//! what [`Evoq::wait_for`](crate::Evoq::wait_for) and strong consistency wait on. The value is
//! updated after every event; waiters are woken before anything that makes the task wait (a
//! handler that does not complete at once, a retry delay, a store call, the wait for new
//! events), so a burst of events handled without waiting costs one wake-up and no waiter
//! sleeps while its event is done.
//!
//! The *checkpoint* is the position saved in the store, from which a restarted runtime resumes
//! (by default; see [`StartFrom`]). It is saved in batches: at least every
//! [`HandlerConfig::checkpoint_every`] events (default 100) while the handler is busy, whenever
//! it has caught up with the store's head, and when the runtime stops or is dropped. It is
//! never ahead of the position, so nothing is skipped after a restart; after a crash the events
//! processed since the last save (fewer than `checkpoint_every`, or none when the handler was
//! idle) are delivered again. Delivery is at least once: make effects idempotent with
//! [`EventMeta::event_id`](consumer::EventMeta::event_id).
//!
//! # Errors
//!
//! A failed delivery (the handler's error, an event that does not decode, a panic) is retried
//! with the handler's [`RetryStrategy`] up to its number of attempts (default: 6 in all,
//! exponential with jitter from 100 ms); then its [`OnError`] policy applies: dead-letter
//! (default: the event goes to the store's dead letters and the handler moves on), skip (moves
//! on, no dead letter), or stop (the handler stops before the event).

//!
//! # Files
//!
//! Each imports only those above it: `consumer` (what is delivered, to whom), `policy` (retry
//! strategies, error policy, options), `state` (what a task publishes), `consistency` (waiting
//! for positions), `task` (one consumer's task), `subscribers` (every task of a runtime), `api`
//! (dead letters, stats, rebuilds).

pub(crate) mod api;
pub(crate) mod consistency;
pub(crate) mod consumer;
pub(crate) mod policy;
pub(crate) mod state;
pub(crate) mod subscribers;
pub(crate) mod task;

pub use self::api::{DeadLetterQueue, HandlerStats, HandlerStatus};
pub use self::consistency::Consistency;
pub use self::policy::{HandlerConfig, HandlerOptions, OnError, RetryStrategy, StartFrom};
