//! `dead-letters retry` and `rebuild`: requests the running application carries out.

use std::time::Duration;

use evoq_runtime::store::{HandlerRequest, RequestedAction};
use serde_json::json;
use tokio::time::Instant;
use uuid::Uuid;

use crate::commands::Ctx;
use crate::commands::dead_letters::event_id;
use crate::error::{CliError, Doing, exit};
use crate::target::{Opened, open_for_reading};

/// How often the command looks whether its request was carried out.
const POLL: Duration = Duration::from_millis(100);

/// `dead-letters retry <handler> <event-id>`: asks the application running `handler` to
/// deliver the dead letter once more, waits up to `wait` seconds, and reports what became of
/// it. The exit code: 0 delivered, 8 failed again, 7 not carried out in time.
pub(crate) async fn retry(
    ctx: &mut Ctx,
    handler: &str,
    id: &str,
    wait: u64,
) -> Result<u8, CliError> {
    let event_id = event_id(id)?;
    let opened = open_for_reading(&ctx.target).await?;
    let before = opened
        .store
        .load_dead_letter(handler, event_id)
        .doing("loading the dead letter")
        .await?
        .ok_or_else(|| CliError::UnknownDeadLetter {
            handler: handler.to_owned(),
            event_id: event_id.to_string(),
        })?;
    let action = RequestedAction::RetryDeadLetter { event_id };
    let request = ask(&opened, handler, action, wait).await?;
    let report = |outcome: &str, error: Option<&str>| {
        json!({
            "handler": handler,
            "event_id": event_id.to_string(),
            "request": request.to_string(),
            "outcome": outcome,
            "error": error,
        })
    };
    let refused = match carried_out(&opened, handler, request, wait).await? {
        Outcome::Pending => {
            return pending(ctx, &report("pending", None), handler, "the retry").await;
        }
        Outcome::Done => None,
        Outcome::Failed(reason) => Some(reason),
    };
    let after = opened
        .store
        .load_dead_letter(handler, event_id)
        .doing("loading the dead letter")
        .await?;
    opened.close().await?;
    match (after, refused) {
        (None, None) => {
            if ctx.json {
                ctx.print_json(&report("delivered", None))?;
            } else {
                ctx.line(&format!(
                    "delivered: the application's `{handler}` handled event {event_id}; its dead letter is removed (request {request})"
                ))?;
            }
            Ok(exit::OK)
        }
        (None, Some(reason)) => {
            // Failed, and the dead letter is gone (discarded meanwhile, or its changes were
            // committed before the failure): the reason says which.
            if ctx.json {
                ctx.print_json(&report("failed", Some(&reason)))?;
            } else {
                ctx.line(&format!(
                    "failed: `{handler}` could not carry out the retry of event {event_id}: {reason}; no dead letter is left"
                ))?;
            }
            Ok(exit::FAILED)
        }
        (Some(after), refused) => {
            let error = if (after.attempts, after.last_failed_at)
                != (before.attempts, before.last_failed_at)
            {
                after.error
            } else {
                refused.unwrap_or_else(|| {
                    "the application took the request but could not carry it out (see its log)"
                        .to_owned()
                })
            };
            if ctx.json {
                ctx.print_json(&report("failed", Some(&error)))?;
            } else {
                ctx.line(&format!(
                    "failed again: `{handler}` could not handle event {event_id}: {error}; the dead letter stays ({} attempts)",
                    after.attempts
                ))?;
            }
            Ok(exit::FAILED)
        }
    }
}

/// `rebuild <projection>`: asks the application running `projection` to clear its read model
/// and replay every event, waits up to `wait` seconds, and reports where its checkpoint is, or
/// why the application could not (a handler that is not a projection, a read model that could
/// not be cleared). The exit code: 0 rebuilt, 8 refused or failed, 7 not carried out in time.
pub(crate) async fn rebuild(ctx: &mut Ctx, projection: &str, wait: u64) -> Result<u8, CliError> {
    let opened = open_for_reading(&ctx.target).await?;
    let request = ask(&opened, projection, RequestedAction::Rebuild, wait).await?;
    let report = |outcome: &str, checkpoint: Option<u64>, error: Option<&str>| {
        json!({
            "projection": projection,
            "request": request.to_string(),
            "outcome": outcome,
            "checkpoint": checkpoint,
            "error": error,
        })
    };
    match carried_out(&opened, projection, request, wait).await? {
        Outcome::Pending => {
            return pending(
                ctx,
                &report("pending", None, None),
                projection,
                "the rebuild",
            )
            .await;
        }
        Outcome::Failed(reason) => {
            opened.close().await?;
            if ctx.json {
                ctx.print_json(&report("failed", None, Some(&reason)))?;
            } else {
                ctx.line(&format!(
                    "failed: the application could not rebuild `{projection}` (request {request}): {reason}"
                ))?;
            }
            return Ok(exit::FAILED);
        }
        Outcome::Done => {}
    }
    let checkpoint = opened
        .store
        .load_checkpoint(projection)
        .doing("loading the checkpoint")
        .await?;
    let head = opened.head().doing("reading the head").await?;
    opened.close().await?;
    if ctx.json {
        ctx.print_json(&report("rebuilt", checkpoint, None))?;
    } else {
        ctx.line(&format!(
            "rebuilt: the application cleared `{projection}` and replays every event into it (request {request}); its checkpoint is at {} of {head}",
            checkpoint.unwrap_or(0)
        ))?;
    }
    Ok(exit::OK)
}

/// Saves the request for `handler`; its id.
async fn ask(
    opened: &Opened,
    handler: &str,
    action: RequestedAction,
    wait: u64,
) -> Result<Uuid, CliError> {
    let request = HandlerRequest::new(handler, action);
    let id = request.id;
    opened
        .store
        .save_request(request)
        .doing(&format!("saving the request for `{handler}`"))
        .await?;
    crate::output::note(&format!(
        "(asked the application running `{handler}`; waiting up to {wait} s for it)"
    ));
    Ok(id)
}

/// What became of a request the command asked for.
enum Outcome {
    /// Carried out: gone from the store.
    Done,
    /// The application could not carry it out, and why (the request is removed once read).
    Failed(String),
    /// Not carried out within the wait, also while a look at the store is not answered.
    Pending,
}

/// Waits up to `wait` seconds for the request to be carried out (gone from the store) or
/// marked failed (then read and removed).
async fn carried_out(
    opened: &Opened,
    handler: &str,
    id: Uuid,
    wait: u64,
) -> Result<Outcome, CliError> {
    // A wait too long for the clock waits until the request is done.
    let deadline = Instant::now().checked_add(Duration::from_secs(wait));
    loop {
        let look = opened
            .store
            .load_request(handler, id)
            .doing("reading the request");
        let kept = match deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline, look).await {
                Ok(kept) => kept?,
                Err(_) => return Ok(Outcome::Pending),
            },
            None => look.await?,
        };
        match kept {
            None => return Ok(Outcome::Done),
            Some(HandlerRequest {
                failed: Some(reason),
                ..
            }) => {
                opened
                    .store
                    .delete_request(handler, id)
                    .doing("removing the failed request")
                    .await?;
                return Ok(Outcome::Failed(reason));
            }
            Some(_) => {}
        }
        if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            return Ok(Outcome::Pending);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The report of a request no application carried out in time; exit code 7.
async fn pending(
    ctx: &mut Ctx,
    report: &serde_json::Value,
    handler: &str,
    what: &str,
) -> Result<u8, CliError> {
    if ctx.json {
        ctx.print_json(report)?;
    } else {
        ctx.line(&format!(
            "pending: no running application carried out {what} for `{handler}` in time; the request stays in the store and is carried out when an application runs `{handler}`"
        ))?;
    }
    Ok(exit::PENDING)
}
