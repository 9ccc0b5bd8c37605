//! `stats`: what the store holds, counted (requests queued for handlers included).

use evoq_runtime::Config;
use serde_json::{Value, json};

use crate::commands::Ctx;
use crate::commands::checkpoints::checkpoint_table;
use crate::error::{CliError, Doing};
use crate::output::{fields, table};
use crate::target::open_for_reading;

/// `stats`.
pub(crate) async fn stats(ctx: &mut Ctx) -> Result<(), CliError> {
    let store_id = match &ctx.config {
        Some(path) => Some(
            Config::from_toml_file(path)
                .map_err(|e| {
                    CliError::Usage(format!(
                        "the configuration `{}` does not load: {e}",
                        path.display()
                    ))
                })?
                .store_id,
        ),
        None => None,
    };
    let opened = open_for_reading(&ctx.target).await?;
    let store = &opened.store;
    let head = opened.head().doing("reading the head").await?;
    let counts = store.count_events().doing("counting events").await?;
    let checkpoints = store
        .list_checkpoints()
        .doing("listing checkpoints")
        .await?;
    let dead_letters = store
        .count_dead_letters()
        .doing("counting dead letters")
        .await?;
    let dead_letter_count: u64 = dead_letters.iter().map(|(_, n)| n).sum();
    let requests = store
        .count_requests()
        .doing("counting the queued requests")
        .await?;
    let request_count: u64 = requests.iter().map(|(_, n)| n).sum();
    if ctx.json {
        let by_type: serde_json::Map<String, Value> = counts
            .by_type
            .iter()
            .map(|(name, n)| (name.clone(), json!(n)))
            .collect();
        let listed: Vec<Value> = checkpoints
            .iter()
            .map(|(name, position)| {
                json!({ "name": name, "position": position, "lag": head.saturating_sub(*position) })
            })
            .collect();
        let per_handler: serde_json::Map<String, Value> = dead_letters
            .iter()
            .map(|(name, n)| (name.clone(), json!(n)))
            .collect();
        let requests_per_handler: serde_json::Map<String, Value> = requests
            .iter()
            .map(|(name, n)| (name.clone(), json!(n)))
            .collect();
        return ctx.print_json(&json!({
            "store": opened.kind,
            "location": opened.location,
            "store_id": store_id,
            "head": head,
            "events": counts.events,
            "streams": counts.streams,
            "events_by_type": by_type,
            "checkpoints": listed,
            "dead_letters": dead_letter_count,
            "dead_letters_by_handler": per_handler,
            "requests": request_count,
            "requests_by_handler": requests_per_handler,
        }));
    }
    let mut pairs = vec![("store", format!("{} {}", opened.kind, opened.location))];
    if let Some(id) = &store_id {
        pairs.push(("store id", id.clone()));
    }
    pairs.extend([
        ("head", head.to_string()),
        ("events", counts.events.to_string()),
        ("streams", counts.streams.to_string()),
        ("checkpoints", checkpoints.len().to_string()),
        ("dead letters", dead_letter_count.to_string()),
        ("requests", request_count.to_string()),
    ]);
    ctx.line(&fields(&pairs))?;
    if !counts.by_type.is_empty() {
        let rows = counts
            .by_type
            .iter()
            .map(|(name, n)| vec![name.clone(), n.to_string()])
            .collect();
        ctx.line("")?;
        ctx.line(&table(&["EVENT TYPE", "EVENTS"], rows, &[1]))?;
    }
    if !checkpoints.is_empty() {
        ctx.line("")?;
        ctx.line(&checkpoint_table(&checkpoints, head))?;
    }
    if !dead_letters.is_empty() {
        let rows = dead_letters
            .iter()
            .map(|(name, n)| vec![name.clone(), n.to_string()])
            .collect();
        ctx.line("")?;
        ctx.line(&table(&["HANDLER", "DEAD LETTERS"], rows, &[1]))?;
    }
    if !requests.is_empty() {
        // Queued for a handler's task and not carried out yet: `evoq requests` lists them.
        let rows = requests
            .iter()
            .map(|(name, n)| vec![name.clone(), n.to_string()])
            .collect();
        ctx.line("")?;
        ctx.line(&table(&["HANDLER", "QUEUED REQUESTS"], rows, &[1]))?;
    }
    Ok(())
}
