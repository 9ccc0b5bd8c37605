//! `checkpoints`, `checkpoint rewind` and `checkpoint reset`.

use serde_json::{Value, json};

use crate::commands::Ctx;
use crate::error::{CliError, Doing};
use crate::output::table;
use crate::target::{open_for_reading, open_for_writing};

/// `checkpoints`: every checkpoint, its position and its lag behind the head.
pub(crate) async fn list(ctx: &mut Ctx) -> Result<(), CliError> {
    let opened = open_for_reading(&ctx.target).await?;
    let checkpoints = opened
        .store
        .list_checkpoints()
        .doing("listing checkpoints")
        .await?;
    let head = opened.head().doing("reading the head").await?;
    if ctx.json {
        let listed: Vec<Value> = checkpoints
            .iter()
            .map(|(name, position)| {
                json!({
                    "name": name,
                    "position": position,
                    "lag": head.saturating_sub(*position),
                    "beyond_head": *position > head,
                })
            })
            .collect();
        return ctx.print_json(&json!({ "head": head, "checkpoints": listed }));
    }
    ctx.line(&format!("head: {head}"))?;
    if checkpoints.is_empty() {
        return ctx.line("no checkpoints");
    }
    ctx.line(&checkpoint_table(&checkpoints, head))
}

/// The table of checkpoints (also in `stats`).
pub(crate) fn checkpoint_table(checkpoints: &[(String, u64)], head: u64) -> String {
    let rows = checkpoints
        .iter()
        .map(|(name, position)| vec![name.clone(), position.to_string(), lag(*position, head)])
        .collect();
    table(&["CHECKPOINT", "POSITION", "LAG"], rows, &[1, 2])
}

/// A checkpoint's lag behind the head, or how far beyond the head it is.
fn lag(position: u64, head: u64) -> String {
    if position > head {
        format!("{} beyond the head", position - head)
    } else {
        (head - position).to_string()
    }
}

/// `checkpoint rewind <handler> <position>` (`position` 0: `checkpoint reset <handler>`).
///
/// Only while no application runs the handler: on SQLite the command opens the file as the
/// application does, which its lock refuses while the application runs; on PostgreSQL it takes
/// the handler's lease, which a running node holds. The handler re-delivers the events after
/// the new position when it starts again.
pub(crate) async fn rewind(ctx: &mut Ctx, handler: &str, position: u64) -> Result<(), CliError> {
    let what = if position == 0 {
        format!("reset checkpoint `{handler}`")
    } else {
        format!("rewind checkpoint `{handler}` to {position}")
    };
    let opened = open_for_writing(&ctx.target, &what).await?;
    let store = &opened.store;
    let lease = if opened.is_shared() {
        match store
            .try_lease(handler)
            .doing(&format!("taking the lease of `{handler}`"))
            .await?
        {
            Some(lease) => Some(lease),
            None => {
                return Err(CliError::HandlerRunning {
                    what,
                    handler: handler.to_owned(),
                });
            }
        }
    } else {
        None
    };
    let current = store
        .load_checkpoint(handler)
        .doing(&format!("loading checkpoint `{handler}`"))
        .await?;
    let Some(current) = current else {
        let known = store
            .list_checkpoints()
            .doing("listing checkpoints")
            .await?;
        let known = if known.is_empty() {
            "; it has none".to_owned()
        } else {
            let names: Vec<String> = known.iter().map(|(n, _)| format!("`{n}`")).collect();
            format!("; it has {}", names.join(", "))
        };
        return Err(CliError::UnknownCheckpoint {
            name: handler.to_owned(),
            known,
        });
    };
    if position > current {
        return Err(CliError::Usage(format!(
            "checkpoint `{handler}` is at {current}: a rewind moves it back, and {position} is ahead of it (a handler skips an event by dead-lettering it, never by a moved checkpoint)"
        )));
    }
    let head = opened.head().doing("reading the head").await?;
    store
        .save_checkpoint(handler, position)
        .doing(&format!("saving checkpoint `{handler}`"))
        .await?;
    drop(lease);
    opened.close().await?;
    if ctx.json {
        return ctx.print_json(&json!({
            "name": handler,
            "from": current,
            "to": position,
            "head": head,
        }));
    }
    let redelivered = if head > position {
        format!(
            "it re-delivers events {} to {head} when it runs again",
            position + 1
        )
    } else {
        "it has no event to re-deliver".to_owned()
    };
    ctx.line(&format!(
        "checkpoint `{handler}` moved from {current} to {position} (head {head}): {redelivered}"
    ))
}
