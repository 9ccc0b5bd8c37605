//! `verify`: one scan of the whole store, and every problem it finds.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use evoq_runtime::store::{EventFilter, StoredRow};
use evoq_runtime::{EventStore, StoreError};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use crate::cli::VerifyArgs;
use crate::commands::Ctx;
use crate::error::{CliError, Doing};
use crate::target::open_for_reading;

/// A problem `verify` found.
#[derive(Debug)]
enum Problem {
    /// Positions `from..=to` hold no event (positions are dense from 1 up to the head).
    Gap { from: u64, to: u64 },
    /// A stream's event at `position` has version `found` where `expected` was next.
    Version {
        stream: String,
        expected: u64,
        found: u64,
        position: u64,
    },
    /// The row at `position` does not decode.
    Undecodable {
        position: u64,
        stream: Option<String>,
        version: Option<u64>,
        reason: String,
    },
    /// A snapshot of a version the stream does not reach.
    SnapshotAhead {
        stream: String,
        snapshot: u64,
        version: u64,
    },
    /// A checkpoint beyond the head.
    CheckpointBeyondHead {
        name: String,
        position: u64,
        head: u64,
    },
    /// A row of `table` (snapshots, checkpoints, a handler's dead letters or queued requests)
    /// that does not decode: the listing stops at it, so the rows after it were not checked.
    UndecodableRecord {
        table: &'static str,
        handler: Option<String>,
        reason: String,
    },
}

impl Problem {
    fn kind(&self) -> &'static str {
        match self {
            Problem::Gap { .. } => "position_gap",
            Problem::Version { .. } => "version_gap",
            Problem::Undecodable { .. } => "undecodable_row",
            Problem::SnapshotAhead { .. } => "snapshot_ahead",
            Problem::CheckpointBeyondHead { .. } => "checkpoint_beyond_head",
            Problem::UndecodableRecord { .. } => "undecodable_record",
        }
    }

    fn describe(&self) -> String {
        match self {
            Problem::Gap { from, to } if from == to => {
                format!("position {from} holds no event (positions are dense from 1)")
            }
            Problem::Gap { from, to } => {
                format!("positions {from} to {to} hold no event (positions are dense from 1)")
            }
            Problem::Version {
                stream,
                expected,
                found,
                position,
            } => format!(
                "stream `{stream}`: version {found} at position {position}, where version {expected} was next (versions are contiguous from 1)"
            ),
            Problem::Undecodable {
                position, reason, ..
            } => format!("the row at position {position} does not decode: {reason}"),
            Problem::SnapshotAhead {
                stream,
                snapshot,
                version,
            } => format!(
                "stream `{stream}`: a snapshot at version {snapshot}, but the stream is at version {version}"
            ),
            Problem::CheckpointBeyondHead {
                name,
                position,
                head,
            } => format!("checkpoint `{name}` is at {position}, beyond the head {head}"),
            Problem::UndecodableRecord {
                table: "requests",
                handler: Some(handler),
                reason,
            } => format!(
                "a request queued for `{handler}` does not decode: {reason}; the application's task for `{handler}` cannot read its requests, nor can `evoq requests`"
            ),
            Problem::UndecodableRecord {
                handler: Some(handler),
                reason,
                ..
            } => format!(
                "a dead letter of `{handler}` does not decode: {reason}; the dead letters of `{handler}` after it were not checked"
            ),
            Problem::UndecodableRecord {
                table,
                handler: None,
                reason,
            } => format!(
                "a row of the {table} does not decode: {reason}; the {table} after it were not checked"
            ),
        }
    }

    fn to_json(&self) -> Value {
        let mut value = match self {
            Problem::Gap { from, to } => json!({ "from": from, "to": to }),
            Problem::Version {
                stream,
                expected,
                found,
                position,
            } => json!({
                "stream_id": stream,
                "expected_version": expected,
                "found_version": found,
                "position": position,
            }),
            Problem::Undecodable {
                position,
                stream,
                version,
                reason,
            } => json!({
                "position": position,
                "stream_id": stream,
                "version": version,
                "reason": reason,
            }),
            Problem::SnapshotAhead {
                stream,
                snapshot,
                version,
            } => {
                json!({ "stream_id": stream, "snapshot_version": snapshot, "stream_version": version })
            }
            Problem::CheckpointBeyondHead {
                name,
                position,
                head,
            } => json!({ "name": name, "position": position, "head": head }),
            Problem::UndecodableRecord {
                table,
                handler,
                reason,
            } => json!({ "table": table, "handler": handler, "reason": reason }),
        };
        value["kind"] = json!(self.kind());
        value["message"] = json!(self.describe());
        value
    }
}

/// `verify`; `Ok(true)` when the store is sound.
/// How long `verify` waits for the store's reads to reach the head it read (a PostgreSQL
/// store's watch follows the database with a notification, or a poll twice a second).
const HEAD_WAIT: Duration = Duration::from_secs(5);

pub(crate) async fn verify(ctx: &mut Ctx, args: &VerifyArgs) -> Result<bool, CliError> {
    let opened = open_for_reading(&ctx.target).await?;
    let store = &*opened.store;
    let page_size = args.page_size.max(1);
    let head = opened.head().doing("reading the head").await?;
    let progress = progress_bar(head);

    let mut problems = Vec::new();
    let mut next_position = 1;
    // Each stream's last version seen.
    let mut versions: HashMap<Arc<str>, u64> = HashMap::new();
    let mut scanned = 0u64;
    let mut cursor = 0;
    while cursor < head {
        let page = read_page(store, cursor, page_size)
            .doing(&format!("reading events after position {cursor}"))
            .await?;
        for row in &page.rows {
            let position = row.global_position();
            if position > head {
                break;
            }
            if position > next_position {
                problems.push(Problem::Gap {
                    from: next_position,
                    to: position - 1,
                });
            }
            next_position = position + 1;
            scanned += 1;
            let (stream, version) = match row {
                StoredRow::Event(event) => {
                    (Some(Arc::clone(&event.stream_id)), event.stream_version)
                }
                StoredRow::Undecodable(bad) => {
                    problems.push(Problem::Undecodable {
                        position,
                        stream: Some(bad.stream_id.clone()),
                        version: Some(bad.stream_version),
                        reason: format!(
                            "stream `{}` version {} (position {position}): {}",
                            bad.stream_id, bad.stream_version, bad.error
                        ),
                    });
                    (Some(Arc::from(bad.stream_id.as_str())), bad.stream_version)
                }
            };
            let Some(stream) = stream.filter(|_| version > 0) else {
                continue;
            };
            let last = versions.get(&stream).copied().unwrap_or(0);
            if version != last + 1 {
                problems.push(Problem::Version {
                    stream: stream.to_string(),
                    expected: last + 1,
                    found: version,
                    position,
                });
            }
            versions.insert(stream, last.max(version));
        }
        if page.scanned_through <= cursor {
            // The store reads no further than the head it has seen, which may lag behind the
            // one read above while the application writes: wait for it, once per position.
            if opened.readable_past(cursor, HEAD_WAIT).await {
                continue;
            }
            break;
        }
        cursor = page.scanned_through;
        progress.set_position(cursor.min(head));
    }
    if next_position <= head {
        problems.push(Problem::Gap {
            from: next_position,
            to: head,
        });
    }
    progress.finish_and_clear();

    // Snapshots, against the streams as they are now (the application may have appended).
    let mut snapshots = 0u64;
    let mut after: Option<String> = None;
    loop {
        let listed = store.list_snapshots(after.as_deref(), 1_000);
        let page = match listed.answered("listing snapshots").await? {
            Ok(page) => page,
            Err(error) => {
                problems.push(undecodable("snapshots", None, error, "listing snapshots")?);
                break;
            }
        };
        for (stream, snapshot) in &page {
            snapshots += 1;
            let version = store
                .stream_version(stream)
                .doing(&format!("reading the version of stream `{stream}`"))
                .await?;
            if *snapshot > version {
                problems.push(Problem::SnapshotAhead {
                    stream: stream.clone(),
                    snapshot: *snapshot,
                    version,
                });
            }
        }
        match page.last() {
            Some((last, _)) if page.len() == 1_000 => after = Some(last.clone()),
            _ => break,
        }
    }

    // Checkpoints, against the head read after them: a handler saves only positions it
    // processed, so a checkpoint listed before the head was read is at most that head.
    let checkpoints = match store
        .list_checkpoints()
        .answered("listing checkpoints")
        .await?
    {
        Ok(checkpoints) => checkpoints,
        Err(error) => {
            let what = "listing checkpoints";
            problems.push(undecodable("checkpoints", None, error, what)?);
            Vec::new()
        }
    };
    let now = opened.head().doing("reading the head").await?.max(head);
    for (name, position) in &checkpoints {
        if *position > now {
            problems.push(Problem::CheckpointBeyondHead {
                name: name.clone(),
                position: *position,
                head: now,
            });
        }
    }

    // Dead letters, every handler's, a page at a time.
    let mut dead_letters = 0u64;
    let handlers = store
        .count_dead_letters()
        .doing("counting dead letters")
        .await?;
    for (handler, _) in &handlers {
        let mut after = 0;
        loop {
            let what = format!("listing the dead letters of `{handler}`");
            let listed = store.list_dead_letters(handler, after, page_size);
            let page = match listed.answered(&what).await? {
                Ok(page) => page,
                Err(error) => {
                    problems.push(undecodable("dead_letters", Some(handler), error, &what)?);
                    break;
                }
            };
            dead_letters += page.len() as u64;
            match page.last() {
                Some(last) if page.len() == page_size => after = last.event.global_position,
                _ => break,
            }
        }
    }

    // Queued requests, every handler's: what the handlers' tasks read, so each must decode.
    let mut requests = 0u64;
    let queued = store
        .count_requests()
        .doing("counting the queued requests")
        .await?;
    for (handler, _) in &queued {
        let what = format!("listing the requests of `{handler}`");
        match store
            .list_requests(handler, usize::MAX)
            .answered(&what)
            .await?
        {
            Ok(listed) => requests += listed.len() as u64,
            Err(error) => problems.push(undecodable("requests", Some(handler), error, &what)?),
        }
    }

    let ok = problems.is_empty();
    if ctx.json {
        let listed: Vec<Value> = problems.iter().map(Problem::to_json).collect();
        ctx.print_json(&json!({
            "ok": ok,
            "head": head,
            "events": scanned,
            "streams": versions.len(),
            "snapshots": snapshots,
            "checkpoints": checkpoints.len(),
            "dead_letters": dead_letters,
            "requests": requests,
            "problems": listed,
        }))?;
        return Ok(ok);
    }
    for problem in &problems {
        ctx.line(&format!("problem: {}", problem.describe()))?;
    }
    let summary = format!(
        "checked {scanned} events (head {head}) in {} streams, {snapshots} snapshots, {} checkpoints, {requests} queued requests",
        versions.len(),
        checkpoints.len()
    );
    match problems.len() {
        0 => ctx.line(&format!("{summary}: no problem"))?,
        1 => ctx.line(&format!("{summary}: 1 problem"))?,
        n => ctx.line(&format!("{summary}: {n} problems"))?,
    }
    Ok(ok)
}

/// The problem of a listing of `table` that stopped at a row that does not decode; any other
/// error of the store (I/O, connection) fails the command, naming `what` it was doing.
fn undecodable(
    table: &'static str,
    handler: Option<&str>,
    error: StoreError,
    what: &str,
) -> Result<Problem, CliError> {
    match error {
        StoreError::Integrity { .. } => Ok(Problem::UndecodableRecord {
            table,
            handler: handler.map(str::to_owned),
            reason: error.to_string(),
        }),
        other => Err(CliError::store(what, other)),
    }
}

/// A progress bar on standard error, hidden when it is not a terminal.
fn progress_bar(length: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(length);
    if let Ok(style) =
        ProgressStyle::with_template("verifying {bar:40} {pos}/{len} positions ({eta} left)")
    {
        bar.set_style(style);
    }
    bar
}

/// One page of the global order.
struct Page {
    /// Its events and the rows that do not decode, in position order.
    rows: Vec<StoredRow>,
    scanned_through: u64,
}

/// Reads the page of at most `max` rows after `after`, setting apart the rows that do not
/// decode: the store returns them beside the events of the page (`AllPage::undecodable`).
async fn read_page(store: &dyn EventStore, after: u64, max: usize) -> Result<Page, StoreError> {
    let page = store.read_all(after, max, &EventFilter::All).await?;
    let scanned_through = page.scanned_through;
    Ok(Page {
        rows: page.into_rows(),
        scanned_through,
    })
}
