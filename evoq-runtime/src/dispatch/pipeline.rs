//! The path of one dispatch, under one deadline (the dispatch's timeout):
//!
//! 1. a stopped runtime refuses the command;
//! 2. idempotency ([`idempotency`](super::idempotency)): a remembered success, or one found in
//!    the stream for a caller-supplied command id, is returned at once; a running duplicate is
//!    waited for;
//! 3. `before_dispatch` of every middleware (the runtime's, then the dispatch's); a halt returns;
//! 4. the aggregate's actor runs the command (expected version, conflict retries, metadata) and
//!    appends, in the caller's task; a keyed command runs in a task of its own, so that it
//!    completes and its success is remembered for its key even when the caller stops waiting;
//! 5. `after_dispatch` or `after_failure` of every middleware, with the framework's assigns.
//!
//! With no middleware and no key, steps 2, 3 and 5 cost nothing: no allocation, no lock.

use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::deadline::within;

use crate::actor::Decide;
use crate::aggregate::Aggregate;
use crate::app::Evoq;
use crate::command::Route;
use crate::dispatch::idempotency::{Acquired, Key, Lease, stored_result};
use crate::dispatch::middleware::{Chain, Middleware, Pipeline};
use crate::dispatch::{CommandContext, DispatchOptions, Dispatched};
use crate::envelope::stream_id;
use crate::error::Error;
use crate::event::EventSet;

/// Everything a dispatch carries into the pipeline.
pub(crate) struct Request<C> {
    pub(crate) command: C,
    pub(crate) context: CommandContext,
    pub(crate) options: DispatchOptions,
    /// The dispatch's own middleware, run after the runtime's.
    pub(crate) middleware: Vec<Arc<dyn Middleware>>,
    /// Whether the caller set the command id (a generated one is never a duplicate).
    pub(crate) command_id_supplied: bool,
}

/// Runs one dispatch through the pipeline. See the [module docs](self).
pub(crate) async fn run<C: Route>(
    app: &Evoq,
    request: Request<C>,
    deadline: Instant,
) -> Result<Dispatched<C::Aggregate>, Error> {
    let Request {
        command,
        context,
        options,
        middleware,
        command_id_supplied,
    } = request;
    if app.is_stopped() {
        return Err(Error::Stopped { command: C::NAME });
    }
    if context.idempotency_key.is_none()
        && !command_id_supplied
        && middleware.is_empty()
        && app.global_middleware().is_empty()
    {
        // The bare command: its future stays small (the one below is boxed).
        let id = command.aggregate_id();
        let mut command = command;
        return match within(
            deadline,
            app.run_command(&id, &mut command, &context, &options, || true),
        )
        .await
        {
            Some(Some(result)) => result,
            Some(None) => unreachable!("a bare dispatch is always wanted"),
            None => Err(Error::Timeout {
                command: C::NAME,
                stream: stream_id(<C::Aggregate as Aggregate>::NAME, &id),
                after: options.timeout,
            }),
        };
    }
    Box::pin(run_keyed_or_wrapped(
        app,
        command,
        context,
        options,
        middleware,
        command_id_supplied,
        deadline,
    ))
    .await
}

/// A dispatch with an idempotency key, a caller-supplied command id or middleware.
async fn run_keyed_or_wrapped<C: Route>(
    app: &Evoq,
    command: C,
    context: CommandContext,
    options: DispatchOptions,
    middleware: Vec<Arc<dyn Middleware>>,
    command_id_supplied: bool,
    deadline: Instant,
) -> Result<Dispatched<C::Aggregate>, Error> {
    let id = command.aggregate_id();
    let after = options.timeout;
    let timed_out = || Error::Timeout {
        command: C::NAME,
        stream: stream_id(<C::Aggregate as Aggregate>::NAME, &id),
        after,
    };

    // Idempotency: the key, else a caller-supplied command id; a generated id cannot repeat.
    let key = match &context.idempotency_key {
        Some(key) => Some(Key::Idempotency(Arc::from(key.as_str()))),
        None if command_id_supplied => Some(Key::CommandId(context.command_id)),
        None => None,
    };
    let lease = match key {
        None => None,
        Some(key) => match within(deadline, app.idempotency().acquire::<C>(key, &id)).await {
            None => return Err(timed_out()),
            Some(Err(error)) => return Err(error),
            Some(Ok(Acquired::Hit(done))) => return Ok(done),
            Some(Ok(Acquired::Lead(lease))) => Some(lease),
        },
    };
    if let Some(leader) = &lease {
        if command_id_supplied {
            let stream = stream_id(<C::Aggregate as Aggregate>::NAME, &id);
            let lookup = stored_result::<C::Aggregate>(
                &**app.store(),
                &stream,
                context.command_id,
                app.config().idempotency_lookback,
            );
            let Some(found) = within(deadline, lookup).await else {
                return Err(timed_out());
            };
            let found = found?;
            if let Some(done) = found {
                tracing::debug!(
                    name: "evoq.idempotency.hit",
                    key = %leader.key(),
                    command = C::NAME,
                    source = "store",
                    version = done.version,
                );
                if let Some(lease) = lease {
                    lease.complete(done.clone());
                }
                return Ok(done);
            }
        }
        tracing::debug!(name: "evoq.idempotency.miss", key = %leader.key(), command = C::NAME);
    }

    let chain = Chain {
        global: app.global_middleware(),
        local: &middleware,
    };
    if chain.is_empty() {
        return execute(app, &id, command, context, options, deadline, lease)
            .await
            .unwrap_or_else(|| Err(timed_out()));
    }

    // The middleware see the command before and after the aggregate: share it with the job.
    let command = Arc::new(command);
    let mut pipeline = Pipeline::new(
        &*command,
        C::NAME,
        <C::Aggregate as Aggregate>::NAME,
        &id,
        context,
    );
    if within(deadline, pipeline.run_stage(chain)).await.is_none() {
        return Err(timed_out());
    }
    if let Some(halt) = pipeline.take_halt() {
        return Err(halt);
    }
    let context = pipeline.context_for_job();
    let Some(outcome) = execute(
        app,
        &id,
        Arc::clone(&command),
        context,
        options,
        deadline,
        lease,
    )
    .await
    else {
        return Err(timed_out());
    };
    let done = match outcome {
        Ok(done) => {
            pipeline.enter_after(Ok(()));
            assign_success(&mut pipeline, &done);
            Some(done)
        }
        Err(error) => {
            pipeline.enter_after(Err(error));
            None
        }
    };
    if within(deadline, pipeline.run_stage(chain)).await.is_none() {
        return Err(timed_out());
    }
    match (pipeline.into_response(), done) {
        (Err(error), _) => Err(error),
        (Ok(()), Some(done)) => Ok(done),
        (Ok(()), None) => unreachable!("after_failure cannot turn a failure into a success"),
    }
}

/// Runs the command on its aggregate before `deadline`; `None` when the deadline passed.
///
/// An unkeyed command runs in the caller's task. A keyed one runs in a task of its own that
/// completes the lease (the key remembers a success): when the deadline passes after the
/// command started, it still completes, so a retry with the same key gets its result instead of
/// running the command again; when the deadline passes before it started, it never runs and
/// the lease is released.
async fn execute<A: Aggregate, D: Decide<A> + 'static>(
    app: &Evoq,
    id: &str,
    mut command: D,
    context: CommandContext,
    options: DispatchOptions,
    deadline: Instant,
    lease: Option<Lease>,
) -> Option<Result<Dispatched<A>, Error>> {
    let Some(lease) = lease else {
        return within(
            deadline,
            app.run_command(id, &mut command, &context, &options, || true),
        )
        .await
        .flatten();
    };
    let name = command.name();
    let (reply, outcome) = oneshot::channel();
    let (app, id) = (app.clone(), id.to_owned());
    tokio::spawn(async move {
        let wanted = || !reply.is_closed();
        let ran = app
            .run_command(&id, &mut command, &context, &options, wanted)
            .await;
        if let Some(result) = ran {
            if let Ok(done) = &result {
                lease.complete(done.clone());
            }
            let _ = reply.send(result);
        }
    });
    within(deadline, outcome)
        .await
        .map(|result| result.unwrap_or(Err(Error::Stopped { command: name })))
}

/// The framework's assigns after a success: `events`, `version`, `position`.
fn assign_success<A: Aggregate>(pipeline: &mut Pipeline<'_>, done: &Dispatched<A>) {
    let events = done
        .events
        .iter()
        .map(|event| serde_json::json!({ "type": event.event_type(), "data": event.to_json() }))
        .collect::<Vec<_>>();
    pipeline.assign("events", events);
    pipeline.assign("version", done.version);
    if let Some(position) = done.position {
        pipeline.assign("position", position);
    }
}
