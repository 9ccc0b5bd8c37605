//! `dead-letters retry` and `rebuild`: requests the running application carries out; and
//! `requests`, `requests withdraw`: the requests still queued, listed and withdrawn.
//!
//! A retry or a rebuild needs the handler's code, which only the application has: the command
//! saves a [`HandlerRequest`] in the store (`EventStore::save_request`; on SQLite while the
//! application runs too, the one write an inspection makes), and the task of the application
//! that runs the handler takes it between two events, carries it out, and deletes it (or marks
//! it failed with the reason, for the command to read and remove). The command waits for that
//! (`--wait`) and reports the outcome; when no application carried the request out in time it
//! exits with 7, naming the request, which stays queued.
//!
//! A queued request is carried out by whichever application runs a handler of that name next,
//! however much later: one asked for a name no application runs (a mistyped `rebuild
//! balanses`) would rebuild a projection deployed under that name months later. `requests`
//! lists what is queued (`EventStore::count_requests` finds the handlers, `list_requests` their
//! requests, oldest first) and `requests withdraw <handler> <id>` deletes one
//! (`EventStore::delete_request`), a write allowed while the application runs, as saving the
//! request is. A request an application already took is either gone (carried out: exit 3, as
//! for a request that never was) or kept marked failed (removed, with the reason reported);
//! one it takes in the instant of the withdrawal is carried out regardless.

use std::time::Duration;

use evoq_runtime::store::{HandlerRequest, RequestedAction};
use serde_json::{Value, json};
use tokio::time::Instant;
use uuid::Uuid;

use crate::commands::Ctx;
use crate::commands::dead_letters::event_id;
use crate::error::{CliError, Doing, exit};
use crate::output::{table, time};
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
            return pending(
                ctx,
                &opened,
                &report("pending", None),
                handler,
                request,
                "the retry",
            )
            .await;
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
                &opened,
                &report("pending", None, None),
                projection,
                request,
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

/// The report of a request no application carried out in time; exit code 7. The text names
/// the request and how to withdraw it, and warns when the store keeps no checkpoint of that
/// name (a mistyped name, which nothing carries out until a handler of that name is deployed;
/// or a projection whose read model keeps its checkpoint itself, as the in-memory one does).
async fn pending(
    ctx: &mut Ctx,
    opened: &Opened,
    report: &serde_json::Value,
    handler: &str,
    request: Uuid,
    what: &str,
) -> Result<u8, CliError> {
    if ctx.json {
        ctx.print_json(report)?;
        return Ok(exit::PENDING);
    }
    // A hint only: a store that does not answer at once (it may have just stalled the wait)
    // does not delay the report.
    let no_checkpoint = matches!(
        tokio::time::timeout(HINT_WITHIN, opened.store.load_checkpoint(handler)).await,
        Ok(Ok(None))
    );
    let unknown = if no_checkpoint {
        format!(
            " (the store has no checkpoint `{handler}`: is the name right? `evoq checkpoints` lists the handlers it knows)"
        )
    } else {
        String::new()
    };
    ctx.line(&format!(
        "pending: no running application carried out {what} for `{handler}` in time{unknown}; request {request} stays in the store and is carried out when an application runs `{handler}`; `evoq requests withdraw {handler} {request}` withdraws it"
    ))?;
    Ok(exit::PENDING)
}

/// How long the hint of [`pending`] waits for the store.
const HINT_WITHIN: Duration = Duration::from_secs(2);

/// A request id from the command line.
fn request_id(text: &str) -> Result<Uuid, CliError> {
    Uuid::parse_str(text).map_err(|e| {
        CliError::Usage(format!(
            "`{text}` is not a request id ({e}): `evoq requests` lists each queued request's"
        ))
    })
}

/// What a request asks, for people: `rebuild`, `retry of dead letter <event id>`.
fn action_text(action: RequestedAction) -> String {
    match action {
        RequestedAction::Rebuild => "rebuild".to_owned(),
        RequestedAction::RetryDeadLetter { event_id } => {
            format!("retry of dead letter {event_id}")
        }
        other => other.as_str().to_owned(),
    }
}

/// A request as JSON (its id as `request`, as the reports of `rebuild` and `dead-letters
/// retry` name it).
fn request_json(request: &HandlerRequest) -> Value {
    json!({
        "handler": request.handler,
        "request": request.id.to_string(),
        "action": request.action.as_str(),
        "event_id": request.action.event_id().map(|id| id.to_string()),
        "requested_at": time(request.requested_at),
    })
}

/// `requests [HANDLER]`: the requests queued for `handler`, or for every handler that has
/// some, at most `limit` each (the oldest), oldest first (by the time they were asked).
pub(crate) async fn list(
    ctx: &mut Ctx,
    handler: Option<&str>,
    limit: usize,
) -> Result<(), CliError> {
    let opened = open_for_reading(&ctx.target).await?;
    let store = &opened.store;
    let handlers: Vec<String> = match handler {
        Some(handler) => vec![handler.to_owned()],
        None => store
            .count_requests()
            .doing("counting the queued requests")
            .await?
            .into_iter()
            .map(|(handler, _)| handler)
            .collect(),
    };
    let mut requests: Vec<HandlerRequest> = Vec::new();
    for handler in &handlers {
        // One more than shown: whether some are left out.
        let mut listed = store
            .list_requests(handler, limit.saturating_add(1))
            .doing(&format!("listing the requests of `{handler}`"))
            .await?;
        if listed.len() > limit {
            listed.truncate(limit);
            crate::output::note(&format!(
                "(only the oldest {limit} requests of `{handler}` are listed: see `--limit`)"
            ));
        }
        requests.extend(listed);
    }
    requests.sort_by_key(|r| (r.requested_at, r.id));
    if ctx.json {
        let listed: Vec<Value> = requests.iter().map(request_json).collect();
        return ctx.print_json(&json!({ "requests": listed }));
    }
    if requests.is_empty() {
        return match handler {
            Some(handler) => ctx.line(&format!("no queued requests for `{handler}`")),
            None => ctx.line("no queued requests"),
        };
    }
    let rows = requests
        .iter()
        .map(|r| {
            vec![
                r.handler.clone(),
                r.id.to_string(),
                action_text(r.action),
                time(r.requested_at),
            ]
        })
        .collect();
    ctx.line(&table(
        &["HANDLER", "REQUEST ID", "ACTION", "REQUESTED AT"],
        rows,
        &[],
    ))?;
    crate::output::note(
        "(each is carried out when an application runs its handler; `evoq requests withdraw <handler> <request id>` withdraws one)",
    );
    Ok(())
}

/// `requests withdraw <handler> <request-id>`: deletes the request, so that no application
/// carries it out. Allowed while the application runs (the store is opened for reading, as for
/// saving a request). A request marked failed (taken, and not carried out) is removed too,
/// its reason reported. An unknown request, or one carried out already, is an error (exit 3)
/// that says what the store tells of it: queued for another handler, or gone.
pub(crate) async fn withdraw(ctx: &mut Ctx, handler: &str, id: &str) -> Result<(), CliError> {
    let id = request_id(id)?;
    let opened = open_for_reading(&ctx.target).await?;
    let store = &opened.store;
    let unknown = |why: String| CliError::UnknownRequest {
        handler: handler.to_owned(),
        id: id.to_string(),
        why,
    };
    let Some(mut request) = store
        .load_request(handler, id)
        .doing("loading the request")
        .await?
    else {
        return Err(unknown(elsewhere(&opened, handler, id).await?));
    };
    if !store
        .delete_request(handler, id)
        .doing("withdrawing the request")
        .await?
    {
        // Gone between the look and the delete: taken by the application (carried out, or
        // marked failed and kept), or removed by whoever asked.
        match store
            .load_request(handler, id)
            .doing("loading the request")
            .await?
        {
            Some(
                failed @ HandlerRequest {
                    failed: Some(_), ..
                },
            ) => {
                store
                    .delete_request(handler, id)
                    .doing("removing the failed request")
                    .await?;
                request = failed;
            }
            _ => {
                return Err(unknown(format!(
                    "an application running `{handler}` took it as it was being withdrawn, and carried it out (or whoever asked for it removed it); `evoq requests` lists the queued requests"
                )));
            }
        }
    }
    opened.close().await?;
    let action = action_text(request.action);
    let asked = time(request.requested_at);
    if ctx.json {
        let mut report = request_json(&request);
        report["outcome"] = json!(if request.failed.is_some() {
            "failed"
        } else {
            "withdrawn"
        });
        report["error"] = json!(request.failed);
        return ctx.print_json(&report);
    }
    match &request.failed {
        None => ctx.line(&format!(
            "withdrawn: request {id} for `{handler}` ({action}, asked at {asked}) is removed from the store; no application will carry it out"
        )),
        Some(reason) => ctx.line(&format!(
            "removed: request {id} for `{handler}` ({action}, asked at {asked}) had been taken by an application that could not carry it out: {reason}; it was not carried out and will not be"
        )),
    }
}

/// Why `handler` has no request `id`, as far as the store tells: the request is queued for
/// another handler (a mistyped name), or it is not in the store.
async fn elsewhere(opened: &Opened, handler: &str, id: Uuid) -> Result<String, CliError> {
    let handlers = opened
        .store
        .count_requests()
        .doing("counting the queued requests")
        .await?;
    for (other, _) in handlers.iter().filter(|(other, _)| other != handler) {
        if opened
            .store
            .load_request(other, id)
            .doing("loading the request")
            .await?
            .is_some()
        {
            return Ok(format!(
                "it is queued for `{other}` (`evoq requests withdraw {other} {id}` withdraws it)"
            ));
        }
    }
    Ok(format!(
        "it is not in the store: an application running `{handler}` carried it out already, or it was withdrawn, or it was never asked for `{handler}`; `evoq requests` lists the queued requests"
    ))
}
