//! Schema evolution: upcasters turn the stored data of an old schema version of an event into
//! the next version, so that the code only ever sees the current one.
//!
//! An upcaster is a free function from the stored JSON of version `n` to version `n + 1`,
//! marked `#[upcaster(Event, from = n)]`. The chain of an event type is part of its
//! [`Event`] impl ([`Event::UPCASTERS`]): `#[derive(Event)]` with `#[event(version = 3)]` lists
//! the upcasters from versions 1 and 2, and a missing one does not compile. Nothing is
//! registered at run time, so no upcaster can be forgotten.
//!
//! Every read path decodes through [`decode`]: the aggregate replay, the idempotency lookup of
//! a re-sent command, event handlers, projections and their rebuilds (and process managers,
//! which run on the same subscription engine). Stored data is never rewritten: upcasting
//! happens on every read.
//!
//! An upcaster may also rename the event type: `#[upcaster(NewName, from = 1, renamed_from =
//! "OldName")]` makes the events stored under `"OldName"` (at versions up to 1) events of
//! `NewName`, read through the rest of `NewName`'s chain.

use std::fmt;

use serde_json::Value;

use crate::event::Event;

/// The signature of an upcaster: the stored data of version `n` to the data of version `n + 1`.
pub type UpcastFn = fn(Value) -> Result<Value, UpcastError>;

/// One step of an event type's chain: what `#[upcaster]` generates.
#[derive(Clone, Copy)]
pub struct Upcaster {
    /// The version it reads; it returns data of version `from + 1`.
    pub from: u32,
    /// The wire name the event was stored under before this step renamed it, if it did.
    pub renamed_from: Option<&'static str>,
    /// The function.
    pub upcast: UpcastFn,
}

impl fmt::Debug for Upcaster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upcaster")
            .field("from", &self.from)
            .field("renamed_from", &self.renamed_from)
            .finish_non_exhaustive()
    }
}

/// Why stored data could not be brought to the current version of its event type.
///
/// An upcaster returns it with [`UpcastError::new`] (the runtime adds the event and the
/// version); the runtime returns it when the chain has no step for a stored version, or when
/// the stored version is newer than the code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpcastError {
    kind: Kind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    /// An upcaster's own error, before the runtime knows where it happened.
    Message(String),
    /// An upcaster failed.
    Failed {
        event: &'static str,
        stored_version: u32,
        from: u32,
        reason: String,
    },
    /// No step reads version `missing_from`.
    MissingStep {
        event: &'static str,
        stored_version: u32,
        missing_from: u32,
        current_version: u32,
    },
    /// Stored by a newer version of the code.
    NewerThanCode {
        event: &'static str,
        stored_version: u32,
        current_version: u32,
    },
    /// The stored data is not JSON.
    NotJson {
        event: &'static str,
        stored_version: u32,
        reason: String,
    },
}

impl UpcastError {
    /// An upcaster's error: why the data cannot be upcast (a missing field, say).
    pub fn new(reason: impl Into<String>) -> Self {
        UpcastError {
            kind: Kind::Message(reason.into()),
        }
    }

    /// The error of an upcaster that needs `field`, which the data lacks.
    pub fn missing_field(field: &str) -> Self {
        UpcastError::new(format!("the stored data has no field `{field}`"))
    }

    /// No upcaster of `event` reads version `missing_from` (data stored at `stored_version`).
    pub fn missing_step(
        event: &'static str,
        stored_version: u32,
        missing_from: u32,
        current_version: u32,
    ) -> Self {
        UpcastError {
            kind: Kind::MissingStep {
                event,
                stored_version,
                missing_from,
                current_version,
            },
        }
    }

    /// Whether the chain lacks a step.
    pub fn is_missing_step(&self) -> bool {
        matches!(self.kind, Kind::MissingStep { .. })
    }

    /// The version with no upcaster, when the chain lacks a step.
    pub fn missing_from(&self) -> Option<u32> {
        match self.kind {
            Kind::MissingStep { missing_from, .. } => Some(missing_from),
            _ => None,
        }
    }

    /// Whether the data was stored by a newer version of the code.
    pub fn is_newer_than_code(&self) -> bool {
        matches!(self.kind, Kind::NewerThanCode { .. })
    }

    /// The event type, when known.
    pub fn event(&self) -> Option<&'static str> {
        match self.kind {
            Kind::Message(_) => None,
            Kind::Failed { event, .. }
            | Kind::MissingStep { event, .. }
            | Kind::NewerThanCode { event, .. }
            | Kind::NotJson { event, .. } => Some(event),
        }
    }

    /// The schema version the data was stored with, when known.
    pub fn stored_version(&self) -> Option<u32> {
        match self.kind {
            Kind::Message(_) => None,
            Kind::Failed { stored_version, .. }
            | Kind::MissingStep { stored_version, .. }
            | Kind::NewerThanCode { stored_version, .. }
            | Kind::NotJson { stored_version, .. } => Some(stored_version),
        }
    }

    fn at(self, event: &'static str, stored_version: u32, from: u32) -> Self {
        match self.kind {
            Kind::Message(reason) => UpcastError {
                kind: Kind::Failed {
                    event,
                    stored_version,
                    from,
                    reason,
                },
            },
            _ => self,
        }
    }
}

impl fmt::Display for UpcastError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Message(reason) => f.write_str(reason),
            Kind::Failed {
                event,
                stored_version,
                from,
                reason,
            } => write!(
                f,
                "the upcaster of `{event}` from version {from} failed on data stored at version {stored_version}: {reason}"
            ),
            Kind::MissingStep {
                event,
                stored_version,
                missing_from,
                current_version,
            } => write!(
                f,
                "cannot upcast `{event}` stored at schema version {stored_version} to version {current_version}: no upcaster from version {missing_from} to {}; add `#[upcaster({event}, from = {missing_from})] fn ...(data: serde_json::Value) -> Result<serde_json::Value, UpcastError>` (the stored data was not changed)",
                missing_from.saturating_add(1)
            ),
            Kind::NewerThanCode {
                event,
                stored_version,
                current_version,
            } => write!(
                f,
                "`{event}` is stored at schema version {stored_version}, newer than the version this code knows ({current_version}): run the newer code (the stored data was not changed)"
            ),
            Kind::NotJson {
                event,
                stored_version,
                reason,
            } => write!(
                f,
                "the stored data of `{event}` (schema version {stored_version}) is not JSON, so it cannot be upcast: {reason}"
            ),
        }
    }
}

impl std::error::Error for UpcastError {}

/// Why stored data did not decode as an event type.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// It could not be brought to the current version.
    #[error(transparent)]
    Upcast(#[from] UpcastError),
    /// It is at the current version but does not deserialize.
    #[error(transparent)]
    Data(#[from] serde_json::Error),
}

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
pub fn decode<E: Event>(schema_version: u32, data: &[u8]) -> Result<E, DecodeError> {
    if schema_version == E::VERSION {
        return Ok(serde_json::from_slice(data)?);
    }
    let value = upcast::<E>(schema_version, data)?;
    Ok(serde_json::from_value(value)?)
}

/// The data of `E` stored at `schema_version`, as JSON of the current version.
pub fn upcast<E: Event>(schema_version: u32, data: &[u8]) -> Result<Value, UpcastError> {
    if schema_version > E::VERSION {
        return Err(UpcastError {
            kind: Kind::NewerThanCode {
                event: E::NAME,
                stored_version: schema_version,
                current_version: E::VERSION,
            },
        });
    }
    let mut value: Value = serde_json::from_slice(data).map_err(|error| UpcastError {
        kind: Kind::NotJson {
            event: E::NAME,
            stored_version: schema_version,
            reason: error.to_string(),
        },
    })?;
    for from in schema_version..E::VERSION {
        let Some(step) = E::UPCASTERS.iter().find(|step| step.from == from) else {
            return Err(UpcastError::missing_step(
                E::NAME,
                schema_version,
                from,
                E::VERSION,
            ));
        };
        value = (step.upcast)(value).map_err(|error| error.at(E::NAME, schema_version, from))?;
    }
    Ok(value)
}

/// The wire names events of `upcasters`' type were stored under before a rename.
pub fn renamed_from(upcasters: &[Upcaster]) -> impl Iterator<Item = &'static str> + '_ {
    upcasters.iter().filter_map(|step| step.renamed_from)
}
