//! `evoq`, the inspector of evoq event stores: an operator's tool on SQLite files and
//! PostgreSQL schemas.
//!
//! ```text
//! evoq --store events.db streams --prefix BankAccount- --limit 20
//! evoq --store sqlite:events.db stream BankAccount-acc-1
//! evoq --store events.db events --type MoneyDeposited --from 100 --limit 50
//! evoq --store events.db events --follow          # or: evoq --store events.db tail
//! evoq --store postgres://app@db/app --schema billing checkpoints
//! evoq --store events.db dead-letters list --handler notifier
//! evoq --store events.db dead-letters show notifier 0190a5e4-...
//! evoq --store events.db dead-letters discard notifier 0190a5e4-...
//! evoq --store events.db dead-letters retry notifier 0190a5e4-...   # done by the application
//! evoq --store events.db rebuild balances                            # done by the application
//! evoq --store events.db requests                                    # queued, not carried out yet
//! evoq --store events.db requests withdraw balances 0190a5f1-...
//! evoq --store events.db checkpoint rewind notifier 120
//! evoq --store events.db checkpoint reset notifier
//! evoq --store events.db --config evoq.toml stats
//! evoq --store events.db verify
//! ```
//!
//! `--store` (or `EVOQ_STORE`) is `sqlite:PATH`, a plain path, or a `postgres://` URL, with
//! `--schema` (or `EVOQ_SCHEMA`, default `evoq`). Tables for people by default (one layout,
//! whatever the terminal); `--json` prints one JSON document per command, and one JSON line
//! per event for `events --follow` and `tail`.
//!
//! # Reading and writing
//!
//! Reads never change the store and work while the application runs: a SQLite file is opened
//! for inspection (no lock, read-only connections), a PostgreSQL schema is connected without
//! creating or migrating anything (a wrong `--schema` is refused, not created).
//!
//! Writes (`checkpoint rewind`, `checkpoint reset`, `dead-letters discard`) open the store as
//! the application does. On SQLite that takes the file's lock, so they are refused while an
//! application has the file open (exit code 5): stop it first. On PostgreSQL, a checkpoint is
//! moved only while the command holds the handler's lease, which a running node holds
//! (refused with exit code 5 too); a dead letter is discarded at any time, as any node may.
//!
//! # Asking the running application
//!
//! `dead-letters retry` and `rebuild` need the handler's code, which only the application has:
//! the command saves a request in the store (on SQLite too while the application runs: a
//! request is the one write an inspection makes), and the application's task for that handler
//! carries it out between two events within a fraction of a second, then removes it. The
//! command waits for that (`--wait`, default 30 s) and reports the outcome: the dead letter
//! delivered (removed) or failed again (with the new error); for `rebuild`, where the
//! projection's checkpoint is once the application took the request. A request the application
//! could not carry out (a rebuild of a handler that is not a projection, a read model that could
//! not be cleared) is kept in the store marked failed with the reason, which the command
//! reports (exit code 8) before removing the request. When no application runs the
//! handler within the wait, the request stays in the store, carried out when one does, and the
//! command exits with 7, naming the request. A store that stops answering while the command
//! waits ends it with 7 when the wait ends first (a poll is bounded by what is left of
//! `--wait`), with 4 when a poll outlives the 30 s each call is given.
//!
//! A queued request is carried out by whichever application runs a handler of that name next,
//! however much later (a mistyped `rebuild balanses` would rebuild a projection deployed under
//! that name one day). `requests [HANDLER]` lists the queued requests, oldest first (`stats`
//! counts them per handler); `requests withdraw <handler> <id>` removes one, while the
//! application runs too (a request is the one write an inspection makes), and exits with 3
//! when the handler has no such request. A request an application already took is carried out
//! regardless: the withdrawal then finds it gone, or marked failed (removed, with the reason).
//!
//! The inspector waits up to 30 s for the store to answer each call (the waits of `tail`,
//! `events --follow` and `--wait` aside): a server that stops answering ends the command with
//! exit code 4, naming the server and what the command was doing.
//!
//! # Exit codes
//!
//! | code | meaning |
//! |---|---|
//! | 0 | done |
//! | 1 | `verify` found problems |
//! | 2 | the command line is wrong |
//! | 3 | what the command names is not there: a stream, a checkpoint, a dead letter, a queued request |
//! | 4 | the store cannot be opened: no such file, not an evoq store, a newer evoq's, a server that does not answer or refuses; or it stopped answering for 30 s during the command |
//! | 5 | a write refused because an application has the store (or runs the handler) |
//! | 6 | the store failed while the command ran (an I/O error, a row that does not decode) |
//! | 7 | a request was saved, but no running application carried it out within `--wait` (it stays queued: `evoq requests` lists it, `evoq requests withdraw` withdraws it) |
//! | 8 | the application could not carry out the request: a retried dead letter failed again, or a rebuild was refused or failed |

use std::process::ExitCode;

use clap::Parser;

mod cli;
mod commands;
mod error;
mod output;
mod target;

use crate::cli::{
    CheckpointCommand, Cli, Command, DeadLetterCommand, RequestsArgs, RequestsCommand,
};
use crate::commands::Ctx;
use crate::error::{CliError, exit};
use crate::target::Target;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            output::note(&format!("evoq: cannot start: {e}"));
            return ExitCode::from(exit::STORE);
        }
    };
    let code = match runtime.block_on(run(cli)) {
        Ok(code) => code,
        // A closed pipe (`evoq events | head`): the reader has what it wanted.
        Err(CliError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => exit::OK,
        Err(error) => {
            output::note(&format!("evoq: {error}"));
            error.exit_code()
        }
    };
    // Background tasks of the stores (a PostgreSQL listener) end with the runtime.
    runtime.shutdown_background();
    ExitCode::from(code)
}

async fn run(cli: Cli) -> Result<u8, CliError> {
    let target = Target::parse(cli.store.as_deref(), cli.schema.as_deref())?;
    let mut ctx = Ctx::new(target, cli.json, cli.config);
    let ctx = &mut ctx;
    match &cli.command {
        Command::Streams(args) => commands::read::streams(ctx, args).await?,
        Command::Stream(args) => commands::read::stream(ctx, args).await?,
        Command::Events(args) => commands::read::events(ctx, args, false).await?,
        Command::Tail(args) => commands::read::events(ctx, args, true).await?,
        Command::Checkpoints => commands::checkpoints::list(ctx).await?,
        Command::Checkpoint(CheckpointCommand::Rewind { handler, position }) => {
            commands::checkpoints::rewind(ctx, handler, *position).await?
        }
        Command::Checkpoint(CheckpointCommand::Reset { handler }) => {
            commands::checkpoints::rewind(ctx, handler, 0).await?
        }
        Command::DeadLetters(DeadLetterCommand::List { handler, limit }) => {
            commands::dead_letters::list(ctx, handler.as_deref(), *limit).await?
        }
        Command::DeadLetters(DeadLetterCommand::Show { handler, event_id }) => {
            commands::dead_letters::show(ctx, handler, event_id).await?
        }
        Command::DeadLetters(DeadLetterCommand::Discard { handler, event_id }) => {
            commands::dead_letters::discard(ctx, handler, event_id).await?
        }
        Command::DeadLetters(DeadLetterCommand::Retry {
            handler,
            event_id,
            wait,
        }) => return commands::requests::retry(ctx, handler, event_id, *wait).await,
        Command::Rebuild { projection, wait } => {
            return commands::requests::rebuild(ctx, projection, *wait).await;
        }
        Command::Requests(RequestsArgs {
            command:
                Some(RequestsCommand::Withdraw {
                    handler,
                    request_id,
                }),
            ..
        }) => commands::requests::withdraw(ctx, handler, request_id).await?,
        Command::Requests(RequestsArgs {
            command: None,
            handler,
            limit,
        }) => commands::requests::list(ctx, handler.as_deref(), *limit).await?,
        Command::Stats => commands::stats::stats(ctx).await?,
        Command::Verify(args) => {
            if !commands::verify::verify(ctx, args).await? {
                return Ok(exit::PROBLEMS);
            }
        }
    }
    Ok(exit::OK)
}
