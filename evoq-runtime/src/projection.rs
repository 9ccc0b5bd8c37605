//! Projections and read models.
//!
//! A projection is an event handler whose `#[handles]` methods update a [`ReadModel`]. It runs
//! on the subscription engine like any handler (one task, global order, retries, dead letters,
//! [`Evoq::wait_for`](crate::Evoq::wait_for)), with three differences:
//!
//! - its checkpoint is saved after every event, right after the read model was updated, so
//!   the read model and the checkpoint advance together. A read model that can commit its
//!   changes and the checkpoint in one transaction does so through [`ReadModel::commit`]; the
//!   in-memory one cannot, so a crash between the update and the checkpoint delivers that one
//!   event again: write projections that tolerate a replayed event (a `put` of the new value
//!   is, an increment is not unless it checks [`EventMeta::event_id`](crate::EventMeta));
//! - [`Evoq::rebuild`](crate::Evoq::rebuild) clears the read model, resets the checkpoint and
//!   replays every event of its types from the first one, with no cap, then continues live;
//! - telemetry: `evoq.projection.event` (start / stop, DEBUG), `evoq.projection.exception`
//!   (a failed attempt, WARN), `evoq.projection.checkpoint` (DEBUG) and
//!   `evoq.projection.rebuild` (INFO), besides the handler's own.
//!
//! A fresh projection starts before position 1, so it sees the first event; after a restart
//! it starts after its checkpoint. The checkpoint also moves past events of other types. A
//! failed event follows the handler's retry and error policy: the checkpoint does not pass it
//! until it is handled, dead-lettered or skipped.

use std::collections::{BTreeMap, HashMap};
use std::error::Error as StdError;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::delivery::consumer::{Consumer, EventMeta, HandlerFuture, HookFuture};
use crate::delivery::policy::HandlerOptions;
use crate::delivery::subscribers::Registration;
use crate::handler::{self, EventHandler};

/// A projection: an [`EventHandler`] that maintains a [`ReadModel`].
///
/// Implemented by `#[projection(name = "...", read_model = field)]` on an impl block with
/// `#[handles]` async methods (the same methods as `#[event_handler]`):
///
/// ```ignore
/// #[projection(name = "account_summary", read_model = summaries)]
/// impl AccountSummary {
///     #[handles]
///     async fn opened(&mut self, e: &AccountOpened, _meta: &EventMeta) -> Result<(), ProjectionError> {
///         self.summaries.put(&e.account, &Summary { balance: e.initial_balance })?;
///         Ok(())
///     }
/// }
/// ```
///
/// Register it with [`EvoqBuilder::projection`](crate::EvoqBuilder::projection). (A projection
/// is also an `EventHandler`: given to `handler` instead, it runs as a plain handler, with
/// batched checkpoints and no rebuild.)
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an evoq projection",
    label = "not a `Projection`",
    note = "put `#[projection(name = \"...\", read_model = field)]` on an `impl {Self}` block with `#[handles]` async methods"
)]
pub trait Projection: EventHandler {
    /// The read model the projection writes to; a rebuild clears it.
    fn read_model(&self) -> &dyn ReadModel;
}

/// What the runtime needs of a read model: clearing it for a rebuild, and committing its
/// changes with the projection's checkpoint.
///
/// The queries are the read model's own (see [`InMemoryReadModel`]). A durable backend that
/// keeps its read model in the same database as the checkpoints commits the changes of one
/// event and the checkpoint in one transaction: it returns `true` from
/// [`commit`](Self::commit) (the runtime then saves no checkpoint of its own) and gives the
/// checkpoint back from [`checkpoint`](Self::checkpoint) when the runtime starts.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a read model",
    label = "not a `ReadModel`",
    note = "name a field that holds an `InMemoryReadModel` (or another type implementing `evoq::ReadModel`) in `read_model = ...`"
)]
#[async_trait]
pub trait ReadModel: Send + Sync + 'static {
    /// Removes every entry (the start of a rebuild).
    async fn clear(&self) -> Result<(), ReadModelError>;

    /// Called once the projection has handled the event at `position` (or moved past events
    /// it does not take): commits what the projection changed since the last commit, and the
    /// checkpoint `position` of `projection` with it when the backend can. `true` when the
    /// read model stored the checkpoint; `false` (the default) and the runtime saves it in the
    /// event store right after.
    async fn commit(&self, projection: &str, position: u64) -> Result<bool, ReadModelError> {
        let _ = (projection, position);
        Ok(false)
    }

    /// The checkpoint of `projection` this read model committed, if it keeps checkpoints
    /// (see [`keeps_checkpoint`](Self::keeps_checkpoint)).
    async fn checkpoint(&self, projection: &str) -> Result<Option<u64>, ReadModelError> {
        let _ = projection;
        Ok(None)
    }

    /// Whether the read model keeps its projection's checkpoint itself, with its data, so that
    /// the two can never disagree: then the event store's checkpoint is not read, and
    /// [`checkpoint`](Self::checkpoint) says where the projection resumes (`None`: from the
    /// first event). `true` for a model that commits both in one transaction, and for one that
    /// does not survive a restart (the in-memory one: its checkpoint is gone with its data, so a
    /// restart replays every event into it). `false` (the default): the read model is durable
    /// by itself and the event store's checkpoint is used.
    fn keeps_checkpoint(&self) -> bool {
        false
    }
}

/// A read model operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadModelError {
    /// A value could not be serialized.
    #[error("cannot serialize the value of key `{key}` of the read model: {reason}")]
    Serialize {
        /// The key.
        key: String,
        /// Why.
        reason: String,
    },
    /// A stored value does not deserialize as the type asked for.
    #[error(
        "the value of key `{key}` of the read model does not deserialize as the type asked for: {reason}"
    )]
    Deserialize {
        /// The key.
        key: String,
        /// Why.
        reason: String,
    },
    /// The backend failed.
    #[error("read model backend: {0}")]
    Backend(String),
}

/// The error of a projection method: any message, or a read model error (`?` converts it).
#[derive(Debug)]
pub struct ProjectionError {
    message: String,
    source: Option<Box<dyn StdError + Send + Sync + 'static>>,
}

impl ProjectionError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        ProjectionError {
            message: message.into(),
            source: None,
        }
    }

    /// An error caused by `source`.
    pub fn caused_by<E: StdError + Send + Sync + 'static>(source: E) -> Self {
        ProjectionError {
            message: source.to_string(),
            source: Some(Box::new(source)),
        }
    }
}

impl fmt::Display for ProjectionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for ProjectionError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|source| source as &(dyn StdError + 'static))
    }
}

impl From<ReadModelError> for ProjectionError {
    fn from(error: ReadModelError) -> Self {
        ProjectionError::caused_by(error)
    }
}

/// The in-memory key-value read model: string keys, JSON values, typed through serde.
///
/// Cheap to clone: every clone is the same model, so a projection holds one clone and the
/// queries another. Keys are ordered, so [`list`](Self::list) returns a prefix in key order.
/// Its changes are visible at once.
///
/// It keeps its projection's checkpoint in memory, beside its entries
/// ([`ReadModel::keeps_checkpoint`]): a new process starts with an empty model and replays every
/// event into it, whatever the event store's checkpoints say, so the model is never silently
/// empty and a consistency token is never reported reached before the model holds it.
///
/// ```
/// use evoq_runtime::InMemoryReadModel;
///
/// let model = InMemoryReadModel::new();
/// model.put("account/1", &50u64)?;
/// model.put("account/2", &70u64)?;
/// assert_eq!(model.get::<u64>("account/1")?, Some(50));
/// assert_eq!(model.list::<u64>("account/")?.len(), 2);
/// assert!(model.delete("account/1"));
/// model.clear();
/// assert!(model.is_empty());
/// # Ok::<(), evoq_runtime::ReadModelError>(())
/// ```
#[derive(Clone, Default)]
pub struct InMemoryReadModel {
    entries: Arc<RwLock<BTreeMap<String, Value>>>,
    /// The checkpoint of each projection writing to it.
    checkpoints: Arc<Mutex<HashMap<String, u64>>>,
}

impl InMemoryReadModel {
    /// An empty read model.
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> RwLockReadGuard<'_, BTreeMap<String, Value>> {
        self.entries
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, BTreeMap<String, Value>> {
        self.entries
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The value of `key`, as a `T`.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, ReadModelError> {
        let Some(value) = self.read().get(key).cloned() else {
            return Ok(None);
        };
        serde_json::from_value(value)
            .map(Some)
            .map_err(|error| ReadModelError::Deserialize {
                key: key.to_owned(),
                reason: error.to_string(),
            })
    }

    /// Sets `key` to `value`.
    pub fn put<T: Serialize + ?Sized>(
        &self,
        key: impl Into<String>,
        value: &T,
    ) -> Result<(), ReadModelError> {
        let key = key.into();
        let value = serde_json::to_value(value).map_err(|error| ReadModelError::Serialize {
            key: key.clone(),
            reason: error.to_string(),
        })?;
        self.write().insert(key, value);
        Ok(())
    }

    /// Removes `key`; whether it was there.
    pub fn delete(&self, key: &str) -> bool {
        self.write().remove(key).is_some()
    }

    /// Every entry whose key starts with `prefix`, in key order, as `T`s.
    pub fn list<T: DeserializeOwned>(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, T)>, ReadModelError> {
        let entries: Vec<(String, Value)> = self
            .read()
            .range(prefix.to_owned()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        entries
            .into_iter()
            .map(|(key, value)| match serde_json::from_value(value) {
                Ok(value) => Ok((key, value)),
                Err(error) => Err(ReadModelError::Deserialize {
                    key,
                    reason: error.to_string(),
                }),
            })
            .collect()
    }

    /// Removes every entry (and the checkpoints kept with them).
    pub fn clear(&self) {
        self.write().clear();
        self.checkpoints().clear();
    }

    fn checkpoints(&self) -> MutexGuard<'_, HashMap<String, u64>> {
        self.checkpoints
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How many entries it holds.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether it holds no entry.
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// A copy of every entry, as JSON (to compare two read models, say).
    pub fn to_map(&self) -> BTreeMap<String, Value> {
        self.read().clone()
    }
}

impl fmt::Debug for InMemoryReadModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemoryReadModel")
            .field("entries", &self.len())
            .finish()
    }
}

#[async_trait]
impl ReadModel for InMemoryReadModel {
    async fn clear(&self) -> Result<(), ReadModelError> {
        InMemoryReadModel::clear(self);
        Ok(())
    }

    async fn commit(&self, projection: &str, position: u64) -> Result<bool, ReadModelError> {
        self.checkpoints().insert(projection.to_owned(), position);
        Ok(true)
    }

    async fn checkpoint(&self, projection: &str) -> Result<Option<u64>, ReadModelError> {
        Ok(self.checkpoints().get(projection).copied())
    }

    fn keeps_checkpoint(&self) -> bool {
        true
    }
}

/// A projection as the subscription engine sees it (the telemetry, the read model's hooks),
/// with the name it runs under.
struct Projected<P> {
    projection: P,
    name: Arc<str>,
}

impl<P: Projection> Consumer for Projected<P> {
    /// The read model and the checkpoint advance together, after every event.
    const CHECKPOINT_EVERY_EVENT: bool = true;

    fn consume<'a>(&'a mut self, event: &'a EventMeta) -> HandlerFuture<'a> {
        let delivery = self.projection.handle(event);
        if !tracing::enabled!(tracing::Level::WARN) {
            return delivery;
        }
        let name = &*self.name;
        Box::pin(async move {
            let started = Instant::now();
            tracing::debug!(
                name: "evoq.projection.event",
                stage = "start",
                projection = name,
                event_type = event.event_type(),
                position = event.global_position(),
            );
            let result = delivery.await;
            let duration_us = started.elapsed().as_micros() as u64;
            match &result {
                Ok(()) => tracing::debug!(
                    name: "evoq.projection.event",
                    stage = "stop",
                    projection = name,
                    event_type = event.event_type(),
                    position = event.global_position(),
                    duration_us,
                ),
                Err(failure) => tracing::warn!(
                    name: "evoq.projection.exception",
                    stage = "exception",
                    projection = name,
                    event_type = event.event_type(),
                    position = event.global_position(),
                    error = %failure,
                    duration_us,
                ),
            }
            result
        })
    }

    fn commit<'a>(&'a mut self, name: &'a str, position: u64) -> HookFuture<'a, bool> {
        Box::pin(async move {
            let kept = self
                .projection
                .read_model()
                .commit(name, position)
                .await
                .map_err(|error| error.to_string())?;
            tracing::debug!(
                name: "evoq.projection.checkpoint",
                projection = name,
                position,
                kept_by_read_model = kept,
            );
            Ok(kept)
        })
    }

    fn checkpoint<'a>(&'a mut self, name: &'a str) -> HookFuture<'a, Option<u64>> {
        Box::pin(async move {
            self.projection
                .read_model()
                .checkpoint(name)
                .await
                .map_err(|error| error.to_string())
        })
    }

    fn reset(&mut self) -> HookFuture<'_, ()> {
        Box::pin(async move {
            self.projection
                .read_model()
                .clear()
                .await
                .map_err(|error| error.to_string())
        })
    }
}

/// The engine's registration of the projection `projection`, with the builder's `options`.
pub(crate) fn registration<P: Projection>(projection: P, options: HandlerOptions) -> Registration {
    let name = match options.name.as_ref().or(P::OPTIONS.name.as_ref()) {
        Some(name) => Arc::from(name.as_ref()),
        None => Arc::from(P::NAME),
    };
    let keeps_checkpoint = projection.read_model().keeps_checkpoint();
    handler::registration::<P, _>(Projected { projection, name }, options)
        .keeping_checkpoint(keeps_checkpoint)
}
