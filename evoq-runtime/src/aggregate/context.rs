//! What every command carries through a dispatch and what a dispatch returns: its ids and
//! metadata ([`CommandContext`]), its options ([`DispatchOptions`]) and its result
//! ([`Dispatched`]).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::de::Error as _;
use serde::ser::{Error as _, SerializeStruct};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use super::definition::Aggregate;
use crate::envelope::{Metadata, Tags};
use crate::event::definition::EventSet;

/// The ids, idempotency key and user entries of a command; the ids and entries go into the
/// metadata of every event it produces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandContext {
    /// The command's id (a fresh UUID v7 unless the caller sets one).
    pub command_id: Uuid,
    /// The business conversation the command belongs to (inherited, or a fresh UUID v7).
    pub correlation_id: Uuid,
    /// What caused the command (an event id, another command id), if known.
    pub causation_id: Option<Uuid>,
    /// The key that deduplicates the command (default: none, then a caller-supplied command id
    /// is the key). See [`idempotency`](crate::dispatch::idempotency).
    pub idempotency_key: Option<String>,
    /// The caller's own entries, copied into every event's metadata.
    pub metadata: BTreeMap<String, String>,
}

impl CommandContext {
    /// A context with fresh ids and no user entries.
    pub fn new() -> Self {
        let command_id = crate::util::ids::new_v7();
        CommandContext {
            command_id,
            correlation_id: command_id,
            causation_id: None,
            idempotency_key: None,
            metadata: BTreeMap::new(),
        }
    }

    /// The metadata of every event the command produces: the command id, the command id again
    /// as causation, the correlation id and the user entries.
    pub fn event_metadata(&self) -> Metadata {
        Metadata {
            command_id: Some(self.command_id),
            causation_id: Some(self.command_id),
            correlation_id: Some(self.correlation_id),
            user: self.metadata.clone().into(),
            tags: Tags::default(),
        }
    }
}

impl Default for CommandContext {
    fn default() -> Self {
        Self::new()
    }
}

/// Per-dispatch options; defaults come from the runtime's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DispatchOptions {
    /// How long the caller waits for the command to complete.
    pub timeout: Duration,
    /// The version the stream must be at; the dispatch fails with a conflict otherwise (and is
    /// not retried).
    pub expected_version: Option<u64>,
    /// How many times a command is re-run after a version conflict.
    pub retry_limit: u32,
}

/// The result of a successful dispatch.
///
/// It serializes (for the wire: an HTTP response, say) as a JSON object with the aggregate's
/// name, the version, the position, the consistency token, the command id and the events, each
/// as `{"type": <wire name>, "data": <the event>}`; it deserializes back from that form for
/// the same aggregate.
///
/// ```
/// # use evoq::prelude::*;
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
/// # struct Deposited { amount: u64 }
/// # #[derive(Command)]
/// # struct Deposit { #[aggregate_id] account: String, amount: u64 }
/// # #[derive(Debug, thiserror::Error)] #[error("never")] struct Never;
/// # #[derive(Default)] struct Account;
/// # #[aggregate]
/// # impl Account {
/// #     #[handles]
/// #     fn deposit(&self, c: &Deposit) -> Result<Deposited, Never> { Ok(Deposited { amount: c.amount }) }
/// #     #[apply]
/// #     fn deposited(&mut self, _: &Deposited) {}
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let app = Evoq::builder().start().await?;
/// let done = app.dispatch(Deposit { account: "acc-1".into(), amount: 50 }).await?;
/// let json = serde_json::to_value(&done)?;
/// assert_eq!(json["aggregate"], "Account");
/// assert_eq!(json["token"], 1);
/// assert_eq!(json["events"][0]["type"], "Deposited");
/// assert_eq!(json["events"][0]["data"]["amount"], 50);
/// let back: Dispatched<Account> = serde_json::from_value(json)?;
/// assert_eq!(back.token, done.token);
/// # Ok(())
/// # }
/// ```
pub struct Dispatched<A: Aggregate> {
    /// The stream's version after the command (unchanged when it produced no events).
    pub version: u64,
    /// The events the command produced, as the aggregate's event enum.
    pub events: Vec<A::Event>,
    /// The global position of the last event produced; `None` when the command produced no
    /// events.
    pub position: Option<u64>,
    /// The consistency token to wait on ([`Evoq::wait_for`](crate::Evoq::wait_for)) to read
    /// your own writes: the position of the last event produced, or, for a command that
    /// produced none, the store's head when it was decided (what its decision saw). Never 0
    /// once anything is stored.
    pub token: u64,
    /// The id of the command.
    pub command_id: Uuid,
}

impl<A: Aggregate> Clone for Dispatched<A> {
    fn clone(&self) -> Self {
        Dispatched {
            version: self.version,
            events: self.events.clone(),
            position: self.position,
            token: self.token,
            command_id: self.command_id,
        }
    }
}

impl<A: Aggregate> fmt::Debug for Dispatched<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dispatched")
            .field("aggregate", &A::NAME)
            .field("version", &self.version)
            .field("events", &self.events)
            .field("position", &self.position)
            .field("token", &self.token)
            .field("command_id", &self.command_id)
            .finish()
    }
}

impl<A: Aggregate> Serialize for Dispatched<A> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let events = self
            .events
            .iter()
            .map(|event| {
                let data = event.encode().map_err(S::Error::custom)?;
                let data: serde_json::Value =
                    serde_json::from_slice(&data).map_err(S::Error::custom)?;
                Ok(WireEvent {
                    event_type: event.event_type().to_owned(),
                    data,
                })
            })
            .collect::<Result<Vec<_>, S::Error>>()?;
        let mut fields = serializer.serialize_struct("Dispatched", 6)?;
        fields.serialize_field("aggregate", A::NAME)?;
        fields.serialize_field("version", &self.version)?;
        fields.serialize_field("position", &self.position)?;
        fields.serialize_field("token", &self.token)?;
        fields.serialize_field("command_id", &self.command_id)?;
        fields.serialize_field("events", &events)?;
        fields.end()
    }
}

impl<'de, A: Aggregate> Deserialize<'de> for Dispatched<A> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = WireDispatched::deserialize(deserializer)?;
        if let Some(aggregate) = &wire.aggregate
            && aggregate != A::NAME
        {
            return Err(D::Error::custom(format!(
                "this dispatch result is of aggregate `{aggregate}`, not `{}`",
                A::NAME
            )));
        }
        let events = wire
            .events
            .into_iter()
            .map(|event| {
                let data = serde_json::to_vec(&event.data).map_err(D::Error::custom)?;
                A::Event::decode(&event.event_type, &data)
                    .map_err(D::Error::custom)?
                    .ok_or_else(|| {
                        D::Error::custom(format!(
                            "`{}` is not an event of aggregate `{}`",
                            event.event_type,
                            A::NAME
                        ))
                    })
            })
            .collect::<Result<Vec<_>, D::Error>>()?;
        Ok(Dispatched {
            version: wire.version,
            events,
            position: wire.position,
            token: wire.token,
            command_id: wire.command_id,
        })
    }
}

/// One event of a serialized [`Dispatched`].
#[derive(Serialize, Deserialize)]
struct WireEvent {
    #[serde(rename = "type")]
    event_type: String,
    data: serde_json::Value,
}

/// A serialized [`Dispatched`], as read back.
#[derive(Deserialize)]
struct WireDispatched {
    #[serde(default)]
    aggregate: Option<String>,
    version: u64,
    #[serde(default)]
    position: Option<u64>,
    token: u64,
    command_id: Uuid,
    #[serde(default)]
    events: Vec<WireEvent>,
}
