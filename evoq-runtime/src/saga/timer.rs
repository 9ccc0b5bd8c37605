//! Saga timeouts: what a scheduled timeout holds, and the task that fires the due ones.
//!
//! A timeout is stored in the event store ([`Timeout`]) with the event it appends. When it is
//! due, the saga's timer appends that event to the instance's timeout stream with a command-log
//! entry whose id is the timeout's id, then deletes the timeout: a timeout fired twice (two
//! nodes, or a crash between the append and the delete) is appended once, the second append
//! being refused as a duplicate. The saga then handles the event like any other, and ignores
//! it when its instance no longer holds the timeout (it stopped, or a new instance took the
//! id).

use std::borrow::Cow;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};
use uuid::Uuid;

use crate::dispatch::dispatcher::Dispatcher;
use crate::envelope::{Metadata, NewEvent, stream_id};
use crate::store::{EventStore, ExpectedVersion, NewCommand, StoreError, Timeout};

/// The metadata entry that marks an event as a timeout of a saga (its value: the saga's name).
pub(super) const TIMEOUT_ENTRY: &str = "evoq.timeout";

/// The command name of a fired timeout in the command log.
const FIRED: &str = "evoq.timeout";

/// How often the timer looks for timeouts it was not told about (scheduled by another node)
/// when none is due sooner.
const POLL: Duration = Duration::from_secs(1);

/// How many due timeouts one read of the store returns.
const BATCH: usize = 100;

/// The aggregate name of the streams timeouts go to: `saga.<saga name>`.
pub(super) fn stream_of(saga: &str, instance: &str) -> String {
    stream_id(&format!("saga.{saga}"), instance)
}

/// What a stored timeout appends when it fires.
#[derive(Serialize, Deserialize)]
pub(super) struct Payload {
    pub(super) stream: String,
    pub(super) event_id: Uuid,
    pub(super) event_type: String,
    pub(super) schema_version: u32,
    pub(super) data: serde_json::Value,
    pub(super) metadata: Metadata,
}

impl Payload {
    fn into_event(self) -> Result<(String, NewEvent), serde_json::Error> {
        let data = serde_json::to_vec(&self.data)?;
        Ok((
            self.stream,
            NewEvent {
                event_id: self.event_id,
                event_type: Cow::Owned(self.event_type),
                schema_version: self.schema_version,
                data,
                metadata: self.metadata,
            },
        ))
    }
}

/// The timeout id of a `TIMEOUT_ENTRY` event of saga `saga`: `None` for any other event.
pub(super) fn timeout_id(metadata: &Metadata, saga: &str) -> Option<Uuid> {
    let marked = metadata
        .user
        .get(TIMEOUT_ENTRY)
        .is_some_and(|name| name == saga);
    if marked { metadata.command_id } else { None }
}

/// Appends the event of `timeout` (once: a second firing is a duplicate of the first), then
/// removes it.
async fn fire(store: &dyn EventStore, timeout: Timeout) -> Result<(), StoreError> {
    let payload: Result<Payload, _> = serde_json::from_slice(&timeout.payload);
    let decoded = payload.and_then(Payload::into_event);
    let (stream, event) = match decoded {
        Ok(decoded) => decoded,
        Err(error) => {
            // Never fires: dropped with an error, so it does not block the others.
            tracing::error!(
                name: "evoq.saga.timeout",
                stage = "exception",
                saga = %timeout.saga,
                instance = %timeout.instance,
                timeout = %timeout.id,
                error = %format!("the stored timeout does not decode: {error}; it is removed"),
                "evoq.saga.timeout",
            );
            store.delete_timeout(&timeout.saga, timeout.id).await?;
            return Ok(());
        }
    };
    let aggregate = format!("saga.{}", timeout.saga);
    let command = NewCommand {
        command_id: timeout.id,
        idempotency_key: None,
        command: Cow::Borrowed(FIRED),
        aggregate: Cow::Owned(aggregate),
        deduplicate_since: Some(SystemTime::UNIX_EPOCH),
    };
    match store
        .append_command(&stream, ExpectedVersion::Any, vec![event], command)
        .await
    {
        Ok(_) => tracing::debug!(
            name: "evoq.saga.timeout",
            stage = "fire",
            saga = %timeout.saga,
            instance = %timeout.instance,
            timeout = %timeout.id,
            "evoq.saga.timeout",
        ),
        // Fired already (another node, or before a crash): only the removal is left.
        Err(StoreError::DuplicateCommand { .. }) => {}
        Err(error) => return Err(error),
    }
    store.delete_timeout(&timeout.saga, timeout.id).await?;
    Ok(())
}

/// Fires every timeout of `saga` due by now; how many.
pub(super) async fn fire_due(store: &dyn EventStore, saga: &str) -> Result<usize, StoreError> {
    let mut fired = 0;
    loop {
        let due = store.due_timeouts(saga, SystemTime::now(), BATCH).await?;
        let count = due.len();
        for timeout in due {
            fire(store, timeout).await?;
            fired += 1;
        }
        if count < BATCH {
            return Ok(fired);
        }
    }
}

/// Runs the timer of saga `saga` until the dispatcher stops or is dropped: fires the due
/// timeouts, then sleeps until the next one is due, the saga schedules one (`wake`), or
/// [`POLL`] passes. A failed store call is logged and tried again after [`POLL`].
pub(crate) fn spawn(dispatcher: &Arc<Dispatcher>, saga: Arc<str>, wake: Arc<Notify>) {
    let weak: Weak<Dispatcher> = Arc::downgrade(dispatcher);
    let mut stopped: watch::Receiver<bool> = dispatcher.stop_signal();
    tokio::spawn(async move {
        loop {
            let Some(dispatcher) = weak.upgrade() else {
                return;
            };
            if dispatcher.is_stopped() {
                return;
            }
            let store = Arc::clone(dispatcher.store());
            drop(dispatcher);
            // Registered before the store is read, so that a timeout scheduled meanwhile
            // wakes the sleep below.
            let woken = wake.notified();
            let mut woken = std::pin::pin!(woken);
            woken.as_mut().enable();
            // The runtime's store is guarded: a panicking backend fails this round only.
            let pause = match next_pause(&*store, &saga).await {
                Ok(pause) => pause,
                Err(error) => {
                    tracing::warn!(
                        name: "evoq.saga.timeout",
                        stage = "exception",
                        saga = &*saga,
                        error = %error,
                        "evoq.saga.timeout",
                    );
                    POLL
                }
            };
            drop(store);
            tokio::select! {
                _ = stopped.wait_for(|stopped| *stopped) => return,
                () = woken => {}
                () = tokio::time::sleep(pause) => {}
            }
        }
    });
}

/// Fires what is due, then how long until the next timeout (at most [`POLL`]).
async fn next_pause(store: &dyn EventStore, saga: &str) -> Result<Duration, StoreError> {
    fire_due(store, saga).await?;
    let Some(next) = store.next_timeout(saga).await? else {
        return Ok(POLL);
    };
    let until = next
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    Ok(until.min(POLL))
}
