//! The command line: what `evoq` takes (clap's derive).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Inspect an evoq event store: streams, events, checkpoints, dead letters, queued requests;
/// check it; move a stopped handler's checkpoint.
#[derive(Debug, Parser)]
#[command(name = "evoq", version, about, long_about = None)]
pub(crate) struct Cli {
    /// The store: `sqlite:PATH` or a plain path (a SQLite file), or `postgres://...` (a
    /// PostgreSQL database; see `--schema`).
    #[arg(
        long,
        short = 's',
        global = true,
        env = "EVOQ_STORE",
        value_name = "STORE"
    )]
    pub(crate) store: Option<String>,

    /// The PostgreSQL schema that holds the store (default `evoq`).
    #[arg(long, global = true, env = "EVOQ_SCHEMA", value_name = "NAME")]
    pub(crate) schema: Option<String>,

    /// The application's TOML configuration, for its `store_id` (shown by `stats`).
    #[arg(long, global = true, env = "EVOQ_CONFIG", value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,

    /// Print JSON for scripts (one document; JSON lines for `events --follow` and `tail`).
    #[arg(long, global = true)]
    pub(crate) json: bool,

    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// List streams: id, version, last event (sorted by id).
    Streams(StreamsArgs),
    /// Show the events of one stream.
    Stream(StreamArgs),
    /// Show events in global order, filtered by stream and type; `--follow` keeps printing
    /// new ones.
    Events(EventsArgs),
    /// Follow new events as they are committed (`events --follow` from the current head).
    Tail(EventsArgs),
    /// List every handler's checkpoint, with its lag behind the head.
    Checkpoints,
    /// Move a stopped handler's checkpoint.
    #[command(subcommand)]
    Checkpoint(CheckpointCommand),
    /// List, show, discard and retry dead letters.
    #[command(subcommand, name = "dead-letters")]
    DeadLetters(DeadLetterCommand),
    /// Ask the running application to rebuild a projection: clear its read model and replay
    /// every event into it.
    ///
    /// The request is saved in the store; when no application carries it out within `--wait`
    /// (exit code 7), it stays queued and is carried out when an application runs a handler
    /// of that name: `evoq requests` lists it, `evoq requests withdraw` withdraws it.
    Rebuild {
        /// The projection.
        projection: String,
        /// How long to wait for the application to carry it out, in seconds.
        #[arg(long, default_value_t = 30, value_name = "SECONDS")]
        wait: u64,
    },
    /// List the requests queued for handlers (by `rebuild` and `dead-letters retry`) that no
    /// application has carried out yet, oldest first; `requests withdraw` withdraws one.
    ///
    /// A request waits in the store until an application running its handler carries it
    /// out: one asked for a handler that no application runs (a mistyped name) waits until
    /// it is withdrawn, or until a handler of that name is deployed.
    #[command(args_conflicts_with_subcommands = true)]
    Requests(RequestsArgs),
    /// Counts: events, streams, types, checkpoints, dead letters, queued requests.
    Stats,
    /// Check the whole store: gaps in positions and versions, rows that do not decode (dead
    /// letters and queued requests too), snapshots ahead of their stream, checkpoints beyond
    /// the head. Exits with 1 on a problem.
    Verify(VerifyArgs),
}

/// `streams`.
#[derive(Debug, Args)]
pub(crate) struct StreamsArgs {
    /// Only the streams whose id starts with this.
    #[arg(long, default_value = "")]
    pub(crate) prefix: String,
    /// Start after this stream id (the last id of the previous page).
    #[arg(long, value_name = "ID")]
    pub(crate) after: Option<String>,
    /// At most this many streams.
    #[arg(long, default_value_t = 100, value_parser = at_least_one())]
    pub(crate) limit: usize,
}

/// `stream <id>`.
#[derive(Debug, Args)]
pub(crate) struct StreamArgs {
    /// The stream's id (`<Aggregate>-<id>`).
    pub(crate) id: String,
    /// From this version on.
    #[arg(long, default_value_t = 1, value_name = "VERSION")]
    pub(crate) from: u64,
    /// At most this many events.
    #[arg(long, default_value_t = 100, value_parser = at_least_one())]
    pub(crate) limit: usize,
}

/// `events` and `tail`.
#[derive(Debug, Args)]
pub(crate) struct EventsArgs {
    /// Only the events of this stream.
    #[arg(long, value_name = "ID")]
    pub(crate) stream: Option<String>,
    /// Only events of this type (repeat for several).
    #[arg(long = "type", value_name = "TYPE")]
    pub(crate) types: Vec<String>,
    /// From this global position on (default: the first event; for `tail`, the next one).
    #[arg(long, value_name = "POSITION")]
    pub(crate) from: Option<u64>,
    /// At most this many events (default 100; no limit with `--follow`).
    #[arg(long, value_parser = at_least_one())]
    pub(crate) limit: Option<usize>,
    /// Keep printing events as they are committed, until Ctrl-C.
    #[arg(long, short = 'f')]
    pub(crate) follow: bool,
}

/// `checkpoint ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum CheckpointCommand {
    /// Move a handler's checkpoint back to a position: it re-delivers the events after it.
    /// Only while no application runs the handler. A projection with a SQL read model applies
    /// the events after it to its tables again: `rebuild` it instead.
    Rewind {
        /// The handler (or projection, saga).
        handler: String,
        /// The new position (at most the current one).
        position: u64,
    },
    /// Move a handler's checkpoint back to 0: it re-delivers every event. Only while no
    /// application runs the handler. A projection with a SQL read model applies every event
    /// to its tables again: `rebuild` it instead.
    Reset {
        /// The handler (or projection, saga).
        handler: String,
    },
}

/// `dead-letters ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum DeadLetterCommand {
    /// List dead letters, oldest first (every handler's, or one's).
    List {
        /// Only this handler's.
        #[arg(long)]
        handler: Option<String>,
        /// At most this many per handler.
        #[arg(long, default_value_t = 100, value_parser = at_least_one())]
        limit: usize,
    },
    /// Show one dead letter in full: the error, the event with its data and metadata.
    Show {
        /// The handler.
        handler: String,
        /// The event's id.
        event_id: String,
    },
    /// Remove one dead letter (the event stays in the store).
    Discard {
        /// The handler.
        handler: String,
        /// The event's id.
        event_id: String,
    },
    /// Ask the running application to deliver a dead letter to its handler once more.
    ///
    /// The request is saved in the store; when no application carries it out within `--wait`
    /// (exit code 7), it stays queued: `evoq requests` lists it, `evoq requests withdraw`
    /// withdraws it.
    Retry {
        /// The handler.
        handler: String,
        /// The event's id.
        event_id: String,
        /// How long to wait for the application to carry it out, in seconds.
        #[arg(long, default_value_t = 30, value_name = "SECONDS")]
        wait: u64,
    },
}

/// `requests [HANDLER]` and `requests withdraw ...`.
#[derive(Debug, Args)]
pub(crate) struct RequestsArgs {
    #[command(subcommand)]
    pub(crate) command: Option<RequestsCommand>,
    /// Only this handler's requests (default: every handler's).
    pub(crate) handler: Option<String>,
    /// At most this many per handler.
    #[arg(long, default_value_t = 100, value_parser = at_least_one())]
    pub(crate) limit: usize,
}

/// `requests withdraw`.
#[derive(Debug, Subcommand)]
pub(crate) enum RequestsCommand {
    /// Withdraw a queued request: remove it from the store, so that no application carries
    /// it out.
    ///
    /// Works while the application runs. A request an application has already taken is
    /// carried out regardless: the command then finds it gone (exit code 3, as for a request
    /// that never was or is queued for another handler, which it names) or marked failed
    /// (removed, with the application's reason).
    Withdraw {
        /// The handler the request is for.
        handler: String,
        /// The request's id (`evoq requests` lists them; `rebuild` and `dead-letters retry`
        /// print it).
        request_id: String,
    },
}

/// `verify`.
#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    /// Events read per page.
    #[arg(long, default_value_t = 1_000, value_name = "N")]
    pub(crate) page_size: usize,
}

/// A count of at least 1 (`--limit 0` would list nothing and look like an empty store).
fn at_least_one() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::<usize>::new().range(1..)
}
