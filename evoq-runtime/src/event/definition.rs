//! Events: the [`Event`] trait that `#[derive(Event)]` implements, and the [`EventSet`] trait of
//! the event enum that `#[aggregate]` generates.

use std::fmt::Debug;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::upcaster::{DecodeError, Upcaster};
use crate::envelope::Tags;

/// A domain event: something that happened, stored for ever under a stable wire name.
///
/// Implemented by `#[derive(Event)]`; the wire name defaults to the type name and the schema
/// version to 1 (`#[event(name = "...", version = N)]` changes them).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an evoq event",
    label = "not an `Event`",
    note = "add `#[derive(Event, Serialize, Deserialize, Clone, Debug)]` to the definition of `{Self}`"
)]
pub trait Event: Serialize + DeserializeOwned + Clone + Debug + Send + Sync + 'static {
    /// The stable wire name stored with every event of this type.
    const NAME: &'static str;
    /// The schema version new events of this type are written with (from 1).
    const VERSION: u32;
    /// The upcasters from every older version, in any order: `#[derive(Event)]` lists the
    /// `#[upcaster(Self, from = n)]` functions for `n` in `1..VERSION` (a missing one does not
    /// compile). See [`upcast`](crate::upcast).
    const UPCASTERS: &'static [Upcaster] = &[];

    /// The event's tags, stored with it (in its [`Metadata`](crate::Metadata)) and indexed by
    /// every store: what a [decision](crate::decision)'s query selects events by.
    /// `#[derive(Event)]` writes one `"<prefix>:<value>"` tag per field marked `#[tag]`
    /// (`#[tag("member")]` sets the prefix, the field's name by default). None by default.
    fn tags(&self) -> Tags {
        Tags::default()
    }
}

/// The closed set of events of one aggregate: the enum `#[aggregate]` generates, with one
/// variant per `#[apply]` method.
pub trait EventSet: Clone + Debug + Send + Sync + Sized + 'static {
    /// The wire names of every member, in declaration order.
    const EVENT_TYPES: &'static [&'static str];

    /// The wire name of this event.
    fn event_type(&self) -> &'static str;

    /// The schema version this event is written with.
    fn schema_version(&self) -> u32;

    /// Serializes the event's data (JSON).
    fn encode(&self) -> Result<Vec<u8>, serde_json::Error>;

    /// The event's tags ([`Event::tags`] of the member). None by default (for hand-written
    /// sets).
    fn tags(&self) -> Tags {
        Tags::default()
    }

    /// Decodes data of the event named `event_type` written at the member's current schema
    /// version; `Ok(None)` when no member has that name. Stored events are read with
    /// [`decode_stored`](Self::decode_stored), which upcasts.
    fn decode(event_type: &str, data: &[u8]) -> Result<Option<Self>, serde_json::Error>;

    /// Decodes data stored under `event_type` at `schema_version`: through the member's
    /// upcasters when the version is older, and under a name the member was renamed from.
    /// `Ok(None)` when no member was ever stored under that name. Every read path of the
    /// runtime (replay, idempotency lookup) decodes with it.
    ///
    /// `#[aggregate]` implements it; the default (for hand-written sets) decodes by
    /// [`decode`](Self::decode) without upcasting.
    fn decode_stored(
        event_type: &str,
        schema_version: u32,
        data: &[u8],
    ) -> Result<Option<Self>, DecodeError> {
        let _ = schema_version;
        Ok(Self::decode(event_type, data)?)
    }

    /// The data as a JSON value, for comparisons in tests and for diagnostics.
    fn to_json(&self) -> serde_json::Value {
        self.encode()
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or(serde_json::Value::Null)
    }
}

/// Marks the events that an aggregate applies: `#[aggregate]` implements it for the type of
/// every `#[apply]` method. A command handler may only return events that implement it.
#[diagnostic::on_unimplemented(
    message = "event `{Self}` is returned by a command handler of `{A}`, but `{A}` never applies it",
    label = "returned here, but there is no `#[apply]` method for `{Self}`",
    note = "add `#[apply] fn on_event(&mut self, event: &{Self}) {{ ... }}` to the `#[aggregate]` block of `{A}`"
)]
pub trait AppliedBy<A> {}
