//! `streams`, `stream <id>`, `events` and `tail`: what the store holds, and what it commits.

use std::sync::Arc;

use evoq_runtime::RecordedEvent;
use evoq_runtime::StoreError;
use evoq_runtime::store::{AllPage, Direction, EventFilter};
use serde_json::{Value, json};

use crate::cli::{EventsArgs, StreamArgs, StreamsArgs};
use crate::commands::Ctx;
use crate::error::{CliError, Doing};
use crate::output::{event_json, event_line, events_table, note, table, time};
use crate::target::{Opened, open_for_reading};

/// Events read per page.
const PAGE: usize = 1_000;

/// `streams`.
pub(crate) async fn streams(ctx: &mut Ctx, args: &StreamsArgs) -> Result<(), CliError> {
    let opened = open_for_reading(&ctx.target).await?;
    let streams = opened
        .store
        .list_streams(&args.prefix, args.after.as_deref(), args.limit)
        .doing("listing streams")
        .await?;
    // A full page may have more after it.
    let next = (args.limit > 0 && streams.len() == args.limit)
        .then(|| streams.last().map(|s| s.stream_id.clone()))
        .flatten();
    if ctx.json {
        let listed: Vec<Value> = streams
            .iter()
            .map(|s| {
                json!({
                    "stream_id": s.stream_id,
                    "version": s.version,
                    "last_position": s.last_position,
                    "last_recorded_at": time(s.last_recorded_at),
                })
            })
            .collect();
        return ctx.print_json(&json!({ "streams": listed, "next_after": next }));
    }
    if streams.is_empty() {
        return ctx.line("no streams");
    }
    let rows = streams
        .iter()
        .map(|s| {
            vec![
                s.stream_id.clone(),
                s.version.to_string(),
                s.last_position.to_string(),
                time(s.last_recorded_at),
            ]
        })
        .collect();
    ctx.line(&table(
        &["STREAM", "VERSION", "LAST POSITION", "LAST EVENT AT"],
        rows,
        &[1, 2],
    ))?;
    if let Some(next) = next {
        note(&format!(
            "(at most {} shown: the next page is `--after '{next}'`)",
            args.limit
        ));
    }
    Ok(())
}

/// `stream <id>`.
pub(crate) async fn stream(ctx: &mut Ctx, args: &StreamArgs) -> Result<(), CliError> {
    let opened = open_for_reading(&ctx.target).await?;
    let store = &opened.store;
    let version = store
        .stream_version(&args.id)
        .doing(&format!("reading the version of stream `{}`", args.id))
        .await?;
    if version == 0 {
        return Err(CliError::UnknownStream(args.id.clone()));
    }
    let events = store
        .read_stream(&args.id, args.from, Direction::Forward, args.limit)
        .doing(&format!("reading stream `{}`", args.id))
        .await?;
    let last = events.last().map_or(0, |e| e.stream_version);
    let more = last < version && !events.is_empty();
    if ctx.json {
        let listed: Vec<Value> = events.iter().map(|e| event_json(e)).collect();
        return ctx.print_json(&json!({
            "stream_id": args.id,
            "version": version,
            "events": listed,
            "next_from": more.then_some(last + 1),
        }));
    }
    ctx.line(&format!("stream {}: version {version}", args.id))?;
    if events.is_empty() {
        return ctx.line(&format!("no events from version {}", args.from));
    }
    let shown: Vec<&RecordedEvent> = events.iter().map(|e| &**e).collect();
    ctx.line(&events_table(&shown, false))?;
    if more {
        note(&format!(
            "(at most {} shown: the next page is `--from {}`)",
            args.limit,
            last + 1
        ));
    }
    Ok(())
}

/// `events` (and `tail`, with `tail` set: follow from the current head).
pub(crate) async fn events(ctx: &mut Ctx, args: &EventsArgs, tail: bool) -> Result<(), CliError> {
    let opened = open_for_reading(&ctx.target).await?;
    let follow = args.follow || tail;
    let filter = if args.types.is_empty() {
        EventFilter::All
    } else {
        EventFilter::types(args.types.iter().cloned())
    };
    let limit = args.limit.unwrap_or(if follow { usize::MAX } else { 100 });
    let after = match args.from {
        Some(from) => from.saturating_sub(1),
        None if tail => opened.head().doing("reading the head").await?,
        None => 0,
    };
    let mut shown = Shown {
        limit,
        count: 0,
        table: Vec::new(),
        follow,
    };
    // The stream's own events first, by version (its events' positions increase with them),
    // rather than a scan of the whole store.
    let mut cursor = after;
    if let (Some(stream), false) = (&args.stream, tail) {
        let head = opened.head().doing("reading the head").await?;
        let mut version = 1;
        loop {
            let page = opened
                .store
                .read_stream(stream, version, Direction::Forward, PAGE)
                .doing(&format!("reading stream `{stream}`"))
                .await?;
            let full = page.len() == PAGE;
            for event in page {
                version = event.stream_version + 1;
                cursor = cursor.max(event.global_position);
                if event.global_position > after
                    && filter.matches(&event.event_type)
                    && !shown.take(ctx, event)?
                {
                    return shown.finish(ctx, true);
                }
            }
            if !full {
                break;
            }
        }
        cursor = cursor.max(head);
    } else {
        loop {
            let read = opened
                .store
                .read_all(cursor, PAGE.min(limit.max(1)), &filter);
            let page = async { read.await.and_then(decoded) }
                .doing(&format!("reading events after position {cursor}"))
                .await?;
            let done = page.scanned_through <= cursor;
            cursor = page.scanned_through;
            for event in page.events {
                if matches_stream(&event, args.stream.as_deref()) && !shown.take(ctx, event)? {
                    return shown.finish(ctx, true);
                }
            }
            if done {
                break;
            }
        }
    }
    if !follow {
        return shown.finish(ctx, false);
    }
    shown.flush(ctx)?;
    follow_from(
        ctx,
        &opened,
        &filter,
        args.stream.as_deref(),
        cursor,
        &mut shown,
    )
    .await
}

/// Prints events committed after `cursor` as they come, until Ctrl-C or the limit.
async fn follow_from(
    ctx: &mut Ctx,
    opened: &Opened,
    filter: &EventFilter,
    stream: Option<&str>,
    mut cursor: u64,
    shown: &mut Shown,
) -> Result<(), CliError> {
    let mut head = opened.store.head();
    note(&format!(
        "(following: the events after position {cursor}, until Ctrl-C)"
    ));
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        let read = opened.store.read_all(cursor, PAGE, filter);
        let page = async { read.await.and_then(decoded) }
            .doing(&format!("reading events after position {cursor}"))
            .await?;
        let moved = page.scanned_through > cursor;
        cursor = page.scanned_through;
        for event in page.events {
            if matches_stream(&event, stream) && !shown.take(ctx, event)? {
                return Ok(());
            }
        }
        if moved {
            continue;
        }
        tokio::select! {
            _ = &mut interrupted => return Ok(()),
            changed = head.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
            }
            // Besides the watch: a read now and then, whatever the watch does.
            () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
        }
    }
}

fn matches_stream(event: &RecordedEvent, stream: Option<&str>) -> bool {
    stream.is_none_or(|s| event.stream_id() == s)
}

/// The events a command shows: kept for one table, or printed one by one when following.
struct Shown {
    limit: usize,
    count: usize,
    table: Vec<Arc<RecordedEvent>>,
    follow: bool,
}

impl Shown {
    /// Shows `event`; `false` once the limit is reached (and the event not shown).
    fn take(&mut self, ctx: &mut Ctx, event: Arc<RecordedEvent>) -> Result<bool, CliError> {
        if self.count >= self.limit {
            return Ok(false);
        }
        self.count += 1;
        if self.follow {
            if ctx.json {
                ctx.print_json_line(&event_json(&event))?;
            } else {
                ctx.line(&event_line(&event))?;
            }
        } else {
            self.table.push(event);
        }
        Ok(true)
    }

    /// Prints what was kept.
    fn flush(&mut self, ctx: &mut Ctx) -> Result<(), CliError> {
        if self.table.is_empty() {
            return Ok(());
        }
        let events: Vec<&RecordedEvent> = self.table.iter().map(|e| &**e).collect();
        ctx.line(&events_table(&events, true))?;
        self.table.clear();
        Ok(())
    }

    /// Prints the table (or its JSON document); `cut` when the limit left events out.
    fn finish(mut self, ctx: &mut Ctx, cut: bool) -> Result<(), CliError> {
        let next_from = self
            .table
            .last()
            .filter(|_| cut)
            .map(|e| e.global_position + 1);
        if self.follow {
            return Ok(());
        }
        if ctx.json {
            let listed: Vec<Value> = self.table.iter().map(|e| event_json(e)).collect();
            return ctx.print_json(&json!({ "events": listed, "next_from": next_from }));
        }
        if self.table.is_empty() {
            return ctx.line("no events");
        }
        self.flush(ctx)?;
        if let Some(next) = next_from {
            note(&format!(
                "(at most {} shown: the next page is `--from {next}`)",
                self.limit
            ));
        }
        Ok(())
    }
}

/// `page`, or the integrity error of its first row that does not decode: the events are shown
/// in order, so a bad row stops the listing there (`evoq verify` lists every such row).
fn decoded(page: AllPage) -> Result<AllPage, StoreError> {
    match page.undecodable.first() {
        Some(bad) => Err(bad.to_error()),
        None => Ok(page),
    }
}
