//! What can go wrong, each naming the thing and what to do, and the exit code it gives.

use std::time::Duration;

use evoq_runtime::StoreError;

/// The exit codes (documented in the crate docs and the README).
pub(crate) mod exit {
    /// Done.
    pub(crate) const OK: u8 = 0;
    /// `verify` found problems.
    pub(crate) const PROBLEMS: u8 = 1;
    /// The command line is wrong (clap's own errors exit with 2 too).
    pub(crate) const USAGE: u8 = 2;
    /// What the command names is not there: a stream, a checkpoint, a dead letter, a queued
    /// request.
    pub(crate) const NOT_FOUND: u8 = 3;
    /// The store cannot be opened: no such file, not an evoq store, a newer evoq's, a server
    /// that does not answer or refuses; or it stopped answering during the command.
    pub(crate) const UNAVAILABLE: u8 = 4;
    /// A write refused because an application has the store (or the handler) open.
    pub(crate) const IN_USE: u8 = 5;
    /// The store failed while the command ran (an I/O error, a row that does not decode).
    pub(crate) const STORE: u8 = 6;
    /// A request was saved, but no running application carried it out in time (it stays
    /// queued: `evoq requests` lists it, `evoq requests withdraw` withdraws it).
    pub(crate) const PENDING: u8 = 7;
    /// The application carried out a dead-letter retry, and the delivery failed again.
    pub(crate) const FAILED: u8 = 8;
}

/// An error of the inspector.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    /// No `--store`.
    #[error(
        "no store given: pass `--store sqlite:PATH` (or a plain path) or `--store postgres://USER@HOST/DB`, or set EVOQ_STORE"
    )]
    NoStore,
    /// A wrong argument.
    #[error("{0}")]
    Usage(String),
    /// The SQLite file is not there.
    #[error("there is no file at `{path}`: check the path (the inspector never creates a store)")]
    NoSuchFile {
        /// The path given.
        path: String,
    },
    /// The file or schema is not an evoq store.
    #[error("{location} is not an evoq event store ({found}): check the path, or the schema")]
    NotAStore {
        /// The file or the database and schema.
        location: String,
        /// What was found.
        found: String,
    },
    /// The store cannot be opened (or reached).
    #[error("cannot open the store: {0}")]
    Open(Box<StoreError>),
    /// An unknown stream.
    #[error(
        "there is no stream `{0}` (no event has this stream id): `evoq streams --prefix ...` lists the streams"
    )]
    UnknownStream(String),
    /// An unknown checkpoint.
    #[error("there is no checkpoint `{name}` in this store{known}: `evoq checkpoints` lists them")]
    UnknownCheckpoint {
        /// The name given.
        name: String,
        /// The names there are, as a sentence tail (`; it has: a, b`).
        known: String,
    },
    /// An unknown dead letter.
    #[error(
        "handler `{handler}` has no dead letter for event {event_id}: `evoq dead-letters list --handler {handler}` lists its dead letters"
    )]
    UnknownDeadLetter {
        /// The handler given.
        handler: String,
        /// The event id given.
        event_id: String,
    },
    /// A request that is not (or no longer) in the store.
    #[error("handler `{handler}` has no queued request {id}: {why}")]
    UnknownRequest {
        /// The handler given.
        handler: String,
        /// The request id given.
        id: String,
        /// What became of it, as far as the store tells, and what to do.
        why: String,
    },
    /// A write while an application has the SQLite file open.
    #[error(
        "cannot {what}: an application has the store at {location} open ({holder}); stop the application first, then run this again"
    )]
    FileInUse {
        /// What was asked.
        what: String,
        /// The file.
        location: String,
        /// Who holds it.
        holder: String,
    },
    /// A write while a node runs the handler (its lease is held).
    #[error(
        "cannot {what}: handler `{handler}` runs on a node of this store (another process holds its lease); stop the application's nodes that run it, then run this again"
    )]
    HandlerRunning {
        /// What was asked.
        what: String,
        /// The handler.
        handler: String,
    },
    /// The output cannot be written (a closed pipe ends the command quietly: see `main`).
    #[error("cannot write the output: {0}")]
    Output(std::io::Error),
    /// The store did not answer one call in time (a server that stopped answering).
    #[error(
        "the store at {location} did not answer within {} s while {what}: check that the server is up and reachable, then run this again",
        within.as_secs()
    )]
    NoAnswer {
        /// What the command was doing.
        what: String,
        /// The file or the server and schema.
        location: String,
        /// How long the command waited.
        within: Duration,
    },
    /// The store failed while the command ran.
    #[error("{what} failed: {source}{hint}")]
    Store {
        /// What the command was doing.
        what: String,
        /// The store's error.
        source: Box<StoreError>,
        /// Advice, when there is some (`; ...`).
        hint: String,
    },
}

impl CliError {
    /// The exit code of this error.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            CliError::NoStore | CliError::Usage(_) => exit::USAGE,
            CliError::UnknownStream(_)
            | CliError::UnknownCheckpoint { .. }
            | CliError::UnknownDeadLetter { .. }
            | CliError::UnknownRequest { .. } => exit::NOT_FOUND,
            CliError::NoSuchFile { .. }
            | CliError::NotAStore { .. }
            | CliError::Open(_)
            | CliError::NoAnswer { .. } => exit::UNAVAILABLE,
            CliError::FileInUse { .. } | CliError::HandlerRunning { .. } => exit::IN_USE,
            CliError::Store { .. } | CliError::Output(_) => exit::STORE,
        }
    }

    /// The failure of the store while doing `what`.
    pub(crate) fn store(what: impl Into<String>, source: StoreError) -> CliError {
        let hint = match &source {
            StoreError::Integrity { .. } => "; `evoq verify` lists every row that does not decode",
            _ => "",
        };
        CliError::Store {
            what: what.into(),
            source: Box::new(source),
            hint: hint.to_owned(),
        }
    }
}

/// How long the inspector waits for the store to answer one call (the waits of `tail`,
/// `events --follow` and `--wait` aside): past it, the command ends with exit code 4.
pub(crate) const ANSWER_WITHIN: Duration = Duration::from_secs(30);

/// A store call, bounded by [`ANSWER_WITHIN`], its error as the inspector's, naming what it
/// was doing.
pub(crate) trait Doing<T> {
    /// The call's result, or [`CliError::NoAnswer`] when the store did not answer in time.
    async fn answered(self, what: &str) -> Result<Result<T, StoreError>, CliError>;

    /// The call's value; its error, while doing `what`.
    async fn doing(self, what: &str) -> Result<T, CliError>;
}

impl<T, F: Future<Output = Result<T, StoreError>>> Doing<T> for F {
    async fn answered(self, what: &str) -> Result<Result<T, StoreError>, CliError> {
        tokio::time::timeout(ANSWER_WITHIN, self)
            .await
            .map_err(|_| CliError::NoAnswer {
                what: what.to_owned(),
                location: crate::target::opened_location(),
                within: ANSWER_WITHIN,
            })
    }

    async fn doing(self, what: &str) -> Result<T, CliError> {
        self.answered(what)
            .await?
            .map_err(|e| CliError::store(what, e))
    }
}
