//! The `Projection` and `ReadModel` traits, and the errors of read models and projections.

use std::error::Error as StdError;
use std::fmt;

use async_trait::async_trait;

use crate::handler::EventHandler;

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

/// What the runtime needs of a read model: binding it to its projection at start, clearing it
/// for a rebuild, and committing its changes with the projection's checkpoint.
///
/// The queries are the read model's own (see [`InMemoryReadModel`](crate::InMemoryReadModel)). A durable backend that
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
    /// Binds the read model to `projection`, the name its projection runs under. The runtime
    /// calls it once at start, before any event is delivered. A read model that holds one
    /// projection's data and checkpoint (the SQL read models) records the name where it keeps
    /// them, and refuses another name with [`ReadModelError::Refused`]: the runtime then does
    /// not start (`Error::Config`, key `projection`). Any other error is logged, and the
    /// runtime starts. `Ok(())` (the default): any name will do.
    async fn bind(&self, projection: &str) -> Result<(), ReadModelError> {
        let _ = projection;
        Ok(())
    }

    /// Removes every entry (the start of a rebuild).
    async fn clear(&self) -> Result<(), ReadModelError>;

    /// Called once the projection has handled the event at `position` (or moved past events
    /// it does not take): commits what the projection changed since the last commit, and the
    /// checkpoint `position` of `projection` with it when the backend can. `true` when the
    /// read model stored the checkpoint; `false` (the default) and the runtime saves it in the
    /// event store right after.
    ///
    /// An `Err` from a read model that [keeps its checkpoint](Self::keeps_checkpoint) may or
    /// may not have gone through: the runtime then reads [`checkpoint`](Self::checkpoint)
    /// again and delivers the events after it once more. Such a model must drop its
    /// uncommitted changes when a commit fails and answer only what it durably committed, or
    /// the events delivered again would be applied twice.
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

    /// Moves the checkpoint of `projection` this read model keeps back to `position`, leaving
    /// its data as it is. The runtime calls it when it starts and finds the kept checkpoint
    /// beyond the event store's head (the model restored from a newer backup than the store,
    /// or filled from another store): the projection resumes at the head, and the events
    /// appended from then on must not be taken for ones the model already holds. The default
    /// commits `position` (a model whose [`commit`](Self::commit) sets the checkpoint).
    async fn rewind(&self, projection: &str, position: u64) -> Result<(), ReadModelError> {
        self.commit(projection, position).await.map(|_| ())
    }

    /// Whether the changes of the event being handled are finished and wait for
    /// [`commit`](Self::commit) (a SQL read model's transaction after `finish`). When the
    /// projection's method then fails and its error policy gives the event up, the runtime
    /// commits those changes and keeps no dead letter of the event: a retry of it would apply
    /// them a second time. `false` (the default) for a model without such transactions.
    fn has_finished_changes(&self) -> bool {
        false
    }

    /// Drops the changes of the event being handled that are not committed (its transaction,
    /// finished or not), releasing what they hold (a SQL transaction's row locks). The runtime
    /// calls it when it gives the event up without committing it: the projection's lease was
    /// lost to another node, which applies the event itself. Nothing to do (the default) for a
    /// model without such transactions.
    async fn roll_back(&self) -> Result<(), ReadModelError> {
        Ok(())
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
    /// The read model refuses the projection's writes: it belongs to another projection, or
    /// its last commit failed. The reason says which, and what to do.
    #[error("read model `{read_model}` refuses writes: {reason}")]
    Refused {
        /// The read model's name.
        read_model: String,
        /// Why, and what to do.
        reason: String,
    },
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
