use super::command_log::CommandRecord;
use super::expected_version::ExpectedVersion;

/// An error of the event store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The stream was not at the version the append expected; nothing was appended.
    #[error(
        "wrong expected version for stream `{stream}`: the append expected {expected}, but the stream is at version {actual}; nothing was appended"
    )]
    WrongExpectedVersion {
        /// The stream.
        stream: String,
        /// What the append expected.
        expected: ExpectedVersion,
        /// The stream's actual version.
        actual: u64,
    },
    /// The command already ran: the command log holds `record`, of the same command id or
    /// idempotency key; nothing was appended. See
    /// [`EventStore::append_command`](super::EventStore::append_command).
    #[error(
        "command `{}` ({}) already ran on `{}`, recorded at version {}; nothing was appended",
        record.command,
        record.idempotency_key.as_ref().map_or_else(|| format!("command id {}", record.command_id), |key| format!("idempotency key `{key}`")),
        record.stream_id,
        record.version
    )]
    DuplicateCommand {
        /// The entry of the first run.
        record: Box<CommandRecord>,
    },
    /// Stored data is corrupt or does not satisfy the store's invariants; never retried.
    #[error("integrity error in the event store at {location}: {reason}")]
    Integrity {
        /// Where (stream and version, table, ...).
        location: String,
        /// What is wrong.
        reason: String,
    },
    /// The backend failed (I/O, connection, ...); the operation may be retried.
    #[error("event store backend `{backend}` failed: {message}")]
    Backend {
        /// Which backend.
        backend: &'static str,
        /// What failed.
        message: String,
    },
    /// The database holds a schema written by a newer version of evoq; nothing was changed.
    #[error(
        "the {backend} event store at {location} has schema version {found}, newer than the {supported} this version of evoq knows: upgrade evoq, or open another database"
    )]
    SchemaTooNew {
        /// Which backend.
        backend: &'static str,
        /// Which database (file path, or schema name; never a password).
        location: String,
        /// The version found in the database.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
}
