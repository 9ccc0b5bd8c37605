//! What a stopped instance leaves: the position of the event that stopped it, so that no event
//! it handled brings it back (a dead letter delivered again, a replay from the origin).
//!
//! The record is kept in the store's saga state slots, under the saga name `<name>#stopped`
//! (its instance id, a small JSON state), apart from the live instances: it is not listed with
//! them, and `saga_state` does not read it. An event of the instance at or below that position
//! is not run again; a later one starts a new instance, and a later stop moves the record.

use serde::{Deserialize, Serialize};

use crate::store::EventStore;

/// The character that marks the saga names of the runtime's own records.
const MARK: char = '#';

/// The saga name the stopped instances of `saga` are recorded under.
fn slots_of(saga: &str) -> String {
    format!("{saga}{MARK}stopped")
}

/// Refuses a saga name with the [`MARK`] in it: its instances and the stop records of another
/// saga would share their slots (a saga named `orders#stopped` beside `orders`).
pub(crate) fn check_name(saga: &str) -> Result<(), String> {
    if saga.contains(MARK) {
        return Err(format!(
            "a saga's name cannot contain `{MARK}`, which marks the runtime's own records (the stops of saga `x` are kept under `x{MARK}stopped`): rename saga `{saga}` with `HandlerOptions::new().name(\"...\")` or in its `#[saga(name = \"...\")]`"
        ));
    }
    Ok(())
}

/// One stopped instance, as saved (JSON).
#[derive(Serialize, Deserialize)]
struct Stopped {
    /// The global position of the event that stopped it.
    position: u64,
}

/// The position of the event that last stopped instance `instance` of `saga`: `None` when it
/// never stopped. A record that does not decode is an error naming it.
pub(super) async fn position(
    store: &dyn EventStore,
    saga: &str,
    instance: &str,
) -> Result<Option<u64>, String> {
    let slots = slots_of(saga);
    let saved = store
        .load_saga_state(&slots, instance)
        .await
        .map_err(|error| error.to_string())?;
    let Some(bytes) = saved else {
        return Ok(None);
    };
    let stopped: Stopped = serde_json::from_slice(&bytes).map_err(|error| {
        format!("the record of the stop of instance `{instance}` (saga `{slots}`) does not decode: {error}")
    })?;
    Ok(Some(stopped.position))
}

/// Records that instance `instance` of `saga` stopped with the event at `position`.
pub(super) async fn record(
    store: &dyn EventStore,
    saga: &str,
    instance: &str,
    position: u64,
) -> Result<(), String> {
    let bytes = serde_json::to_vec(&Stopped { position })
        .map_err(|error| format!("the stop does not serialize: {error}"))?;
    store
        .save_saga_state(&slots_of(saga), instance, bytes)
        .await
        .map_err(|error| error.to_string())
}
