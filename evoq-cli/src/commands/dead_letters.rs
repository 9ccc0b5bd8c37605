//! `dead-letters list`, `show` and `discard`.

use evoq_runtime::store::DeadLetter;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::commands::Ctx;
use crate::error::{CliError, Doing};
use crate::output::{bytes_json, dead_letter_json, fields, short, table, time};
use crate::target::{open_for_reading, open_for_writing};

/// How long the list shows an error.
const ERROR_WIDTH: usize = 60;

/// `dead-letters list [--handler H]`: oldest first, per handler (handlers by name).
pub(crate) async fn list(
    ctx: &mut Ctx,
    handler: Option<&str>,
    limit: usize,
) -> Result<(), CliError> {
    let opened = open_for_reading(&ctx.target).await?;
    let store = &opened.store;
    let handlers: Vec<(String, u64)> = match handler {
        Some(handler) => vec![(handler.to_owned(), 0)],
        None => {
            store
                .count_dead_letters()
                .doing("counting dead letters")
                .await?
        }
    };
    let mut entries: Vec<DeadLetter> = Vec::new();
    for (handler, _) in &handlers {
        entries.extend(
            store
                .list_dead_letters(handler, 0, limit)
                .doing(&format!("listing the dead letters of `{handler}`"))
                .await?,
        );
    }
    if ctx.json {
        let listed: Vec<Value> = entries
            .iter()
            .map(|e| {
                json!({
                    "handler": e.handler,
                    "event_id": e.event.event_id.to_string(),
                    "position": e.event.global_position,
                    "stream_id": e.event.stream_id(),
                    "version": e.event.stream_version,
                    "event_type": e.event.event_type.as_ref(),
                    "attempts": e.attempts,
                    "kind": e.kind.as_str(),
                    "first_failed_at": time(e.first_failed_at),
                    "last_failed_at": time(e.last_failed_at),
                    "error": e.error,
                })
            })
            .collect();
        return ctx.print_json(&json!({ "dead_letters": listed }));
    }
    if entries.is_empty() {
        return ctx.line("no dead letters");
    }
    let rows = entries
        .iter()
        .map(|e| {
            vec![
                e.handler.clone(),
                e.event.global_position.to_string(),
                e.event.event_id.to_string(),
                e.event.stream_id().to_owned(),
                e.event.stream_version.to_string(),
                e.event.event_type.to_string(),
                e.attempts.to_string(),
                time(e.last_failed_at),
                short(e.error.as_bytes(), ERROR_WIDTH),
            ]
        })
        .collect();
    ctx.line(&table(
        &[
            "HANDLER",
            "POSITION",
            "EVENT ID",
            "STREAM",
            "VERSION",
            "TYPE",
            "ATTEMPTS",
            "LAST FAILED AT",
            "ERROR",
        ],
        rows,
        &[1, 4, 6],
    ))
}

/// An event id from the command line.
pub(crate) fn event_id(text: &str) -> Result<Uuid, CliError> {
    Uuid::parse_str(text).map_err(|e| {
        CliError::Usage(format!(
            "`{text}` is not an event id ({e}): `evoq dead-letters list` shows each entry's"
        ))
    })
}

/// `dead-letters show <handler> <event-id>`: the whole entry.
pub(crate) async fn show(ctx: &mut Ctx, handler: &str, id: &str) -> Result<(), CliError> {
    let event_id = event_id(id)?;
    let opened = open_for_reading(&ctx.target).await?;
    let entry = opened
        .store
        .load_dead_letter(handler, event_id)
        .doing("loading the dead letter")
        .await?
        .ok_or_else(|| CliError::UnknownDeadLetter {
            handler: handler.to_owned(),
            event_id: event_id.to_string(),
        })?;
    if ctx.json {
        return ctx.print_json(&dead_letter_json(&entry));
    }
    let e = &entry.event;
    ctx.line(&fields(&[
        ("handler", entry.handler.clone()),
        ("kind", entry.kind.to_string()),
        ("error", entry.error.clone()),
        ("reason", entry.reason.clone()),
        ("attempts", entry.attempts.to_string()),
        ("first failed at", time(entry.first_failed_at)),
        ("last failed at", time(entry.last_failed_at)),
        ("event id", e.event_id.to_string()),
        ("position", e.global_position.to_string()),
        ("stream", e.stream_id().to_owned()),
        ("version", e.stream_version.to_string()),
        ("type", e.event_type.to_string()),
        ("schema version", e.schema_version.to_string()),
        ("recorded at", time(e.recorded_at)),
    ]))?;
    let metadata = serde_json::to_value(&e.metadata).unwrap_or(Value::Null);
    let pretty = |value: &Value| serde_json::to_string_pretty(value).unwrap_or_default();
    ctx.line(&format!("metadata:\n{}", pretty(&metadata)))?;
    ctx.line(&format!("data:\n{}", pretty(&bytes_json(&e.data))))?;
    if let Some(raw_row) = &entry.raw_row {
        let columns: Vec<(&str, String)> = raw_row
            .iter()
            .map(|(name, value)| (name.as_str(), value.clone()))
            .collect();
        ctx.line(&format!("the stored row, as read:\n{}", fields(&columns)))?;
    }
    Ok(())
}

/// `dead-letters discard <handler> <event-id>`: removes the entry; the event stays.
///
/// Through a store opened as the application opens it: on SQLite, only while no application
/// runs (the file's lock; the application's own `DeadLetterQueue::discard` does it while it
/// runs); on PostgreSQL at any time, as any node may discard.
pub(crate) async fn discard(ctx: &mut Ctx, handler: &str, id: &str) -> Result<(), CliError> {
    let event_id = event_id(id)?;
    let what = format!("discard the dead letter of `{handler}` for event {event_id}");
    let opened = open_for_writing(&ctx.target, &what).await?;
    let removed = opened
        .store
        .delete_dead_letter(handler, event_id)
        .doing("discarding the dead letter")
        .await?;
    opened.close().await?;
    if !removed {
        return Err(CliError::UnknownDeadLetter {
            handler: handler.to_owned(),
            event_id: event_id.to_string(),
        });
    }
    if ctx.json {
        return ctx.print_json(&json!({
            "handler": handler,
            "event_id": event_id.to_string(),
            "discarded": true,
        }));
    }
    ctx.line(&format!(
        "discarded the dead letter of `{handler}` for event {event_id} (the event stays in the store)"
    ))
}
