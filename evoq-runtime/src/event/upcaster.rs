//! What an upcaster is ([`Upcaster`]) and how reading old data can fail ([`UpcastError`],
//! [`DecodeError`]). How the chain runs is in [`upcast`](super::upcast).

use std::fmt;

use serde_json::Value;

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

    /// Data stored at `stored_version` by code newer than this (at `current_version`).
    pub(crate) fn newer_than_code(
        event: &'static str,
        stored_version: u32,
        current_version: u32,
    ) -> Self {
        UpcastError {
            kind: Kind::NewerThanCode {
                event,
                stored_version,
                current_version,
            },
        }
    }

    /// Data stored at `stored_version` that is not JSON, so no upcaster can read it.
    pub(crate) fn not_json(event: &'static str, stored_version: u32, reason: String) -> Self {
        UpcastError {
            kind: Kind::NotJson {
                event,
                stored_version,
                reason,
            },
        }
    }

    /// An upcaster's own error, placed: the event, the stored version and the failing step.
    pub(crate) fn at(self, event: &'static str, stored_version: u32, from: u32) -> Self {
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
    /// It is at the current version but does not deserialize, or the type's `Deserialize` impl
    /// panicked on it (the error's message says so, with the panic's).
    #[error(transparent)]
    Data(#[from] serde_json::Error),
}
