//! Schema evolution: upcasters turn the stored data of an old schema version of an event into
//! the next version, so that the code only ever sees the current one.
//!
//! An upcaster is a free function from the stored JSON of version `n` to version `n + 1`,
//! marked `#[upcaster(Event, from = n)]`. The chain of an event type is part of its
//! [`Event`] impl ([`Event::UPCASTERS`]): `#[derive(Event)]` with `#[event(version = 3)]` lists
//! the upcasters from versions 1 and 2, and a missing one does not compile. Nothing is
//! registered at run time, so no upcaster can be forgotten.
//!
//! Every read path decodes through [`decode`]: the aggregate replay, a decision's read of its
//! events, the idempotency lookup of a re-sent command, event handlers, projections and their
//! rebuilds (and sagas, which run on the same subscription engine). Stored data is never
//! rewritten: upcasting happens on every read. A panic of user code on the way (an upcaster,
//! an event type's `Deserialize` impl) is caught where it is called and is that read's error.
//!
//! An upcaster may also rename the event type: `#[upcaster(NewName, from = 1, renamed_from =
//! "OldName")]` makes the events stored under `"OldName"` (at versions up to 1) events of
//! `NewName`, read through the rest of `NewName`'s chain.

use serde_json::Value;

use super::definition::Event;
pub use super::upcaster::{DecodeError, UpcastError, UpcastFn, Upcaster};
use crate::util::panic::{Serde, caught, serde_panicked};

/// Whether an event stored under `event_type` is an `E`: its wire name, or a name it was
/// renamed from.
pub fn stored_as<E: Event>(event_type: &str) -> bool {
    event_type == E::NAME
        || E::UPCASTERS
            .iter()
            .any(|step| step.renamed_from == Some(event_type))
}

/// Decodes data of `E` stored at `schema_version`, through `E`'s upcasters when it is older
/// than [`Event::VERSION`].
///
/// `E`'s `Deserialize` impl is user code: a panic in it is caught and is a
/// [`DecodeError::Data`] saying so, with the panic's message (logged at ERROR as
/// `evoq.decode`), as data that does not deserialize is: each read path reports it as the
/// decode failure it is, never as a panic.
pub fn decode<E: Event>(schema_version: u32, data: &[u8]) -> Result<E, DecodeError> {
    if schema_version == E::VERSION {
        return Ok(decode_current::<E>(data)?);
    }
    let value = upcast::<E>(schema_version, data)?;
    Ok(deserialize::<E>(schema_version, || {
        serde_json::from_value(value)
    })?)
}

/// Decodes data of `E` written at its current schema version ([`Event::VERSION`]), without
/// upcasting; a panic of `E`'s `Deserialize` impl is an error, as in [`decode`].
pub fn decode_current<E: Event>(data: &[u8]) -> Result<E, serde_json::Error> {
    deserialize::<E>(E::VERSION, || serde_json::from_slice(data))
}

/// Runs `E`'s `Deserialize` impl (data stored at `stored_version`). It is user code: its panic
/// is caught here, the one place every read path decodes through, and is a deserialization
/// error naming the type and the panic, logged at ERROR.
fn deserialize<E: Event>(
    stored_version: u32,
    run: impl FnOnce() -> Result<E, serde_json::Error>,
) -> Result<E, serde_json::Error> {
    caught(run).unwrap_or_else(|message| {
        tracing::error!(
            name: "evoq.decode",
            stage = "exception",
            event_type = E::NAME,
            version = stored_version,
            panic = %message,
            "evoq.decode",
        );
        Err(serde_panicked(Serde::Deserialize, E::NAME, &message))
    })
}

/// The data of `E` stored at `schema_version`, as JSON of the current version.
pub fn upcast<E: Event>(schema_version: u32, data: &[u8]) -> Result<Value, UpcastError> {
    if schema_version > E::VERSION {
        return Err(UpcastError::newer_than_code(
            E::NAME,
            schema_version,
            E::VERSION,
        ));
    }
    let mut value: Value = serde_json::from_slice(data)
        .map_err(|error| UpcastError::not_json(E::NAME, schema_version, error.to_string()))?;
    for from in schema_version..E::VERSION {
        let Some(step) = E::UPCASTERS.iter().find(|step| step.from == from) else {
            return Err(UpcastError::missing_step(
                E::NAME,
                schema_version,
                from,
                E::VERSION,
            ));
        };
        value = run_step(E::NAME, schema_version, step, value)
            .map_err(|error| error.at(E::NAME, schema_version, from))?;
    }
    Ok(value)
}

/// Runs one upcaster. An upcaster is user code: its panic is caught here, the one place every
/// read path calls it from, and is its error (so each path reports an upcast failure, as for
/// an error it returns), logged at ERROR.
fn run_step(
    event: &'static str,
    stored_version: u32,
    step: &Upcaster,
    value: Value,
) -> Result<Value, UpcastError> {
    caught(|| (step.upcast)(value)).unwrap_or_else(|message| {
        tracing::error!(
            name: "evoq.upcast",
            stage = "exception",
            event_type = event,
            version = stored_version,
            from = step.from,
            panic = %message,
            "evoq.upcast",
        );
        Err(UpcastError::new(format!("it panicked: {message}")))
    })
}

/// The wire names events of `upcasters`' type were stored under before a rename.
pub fn renamed_from(upcasters: &[Upcaster]) -> impl Iterator<Item = &'static str> + '_ {
    upcasters.iter().filter_map(|step| step.renamed_from)
}
