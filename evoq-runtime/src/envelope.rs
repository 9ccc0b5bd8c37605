//! The envelope every stored event travels in, and the metadata it carries.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Metadata stored with every event.
///
/// The framework fills the three ids from the command that produced the event: `command_id`
/// is the command's id, `causation_id` is the command id too (the event was caused by that
/// command), and `correlation_id` is inherited from the command (which inherits it from
/// whatever caused the command, or gets a fresh one). `user` holds the caller's own entries.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// Id of the command that produced the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_id: Option<Uuid>,
    /// Id of the message that caused the event (for events written by a command: its id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    /// Id shared by every message of one business conversation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<Uuid>,
    /// The caller's own entries.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub user: BTreeMap<String, String>,
}

/// An event on its way into the store: everything but the positions the store assigns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEvent {
    /// Unique id of the event (UUID v7, so ids sort by creation time).
    pub event_id: Uuid,
    /// The event's wire name (`Event::NAME`).
    pub event_type: Cow<'static, str>,
    /// The schema version the data was written with (`Event::VERSION`).
    pub schema_version: u32,
    /// The serialized event (JSON).
    pub data: Vec<u8>,
    /// Ids and user entries.
    pub metadata: Metadata,
}

/// A stored event, as every read path returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedEvent {
    /// Unique id of the event.
    pub event_id: Uuid,
    /// The stream it belongs to: `"<aggregate name>-<aggregate id>"`. Shared: the records of
    /// one stream point at one copy of the id where the store can (the in-memory store always
    /// does), so cloning it only counts a reference. Read it as a `&str` with
    /// [`stream_id()`](Self::stream_id).
    pub stream_id: Arc<str>,
    /// Its version within the stream, from 1.
    pub stream_version: u64,
    /// Its position in the global order of the store, from 1.
    pub global_position: u64,
    /// The event's wire name.
    pub event_type: Cow<'static, str>,
    /// The schema version its data was written with.
    pub schema_version: u32,
    /// The serialized event (JSON), exactly as stored.
    pub data: Vec<u8>,
    /// Ids and user entries.
    pub metadata: Metadata,
    /// When the store committed it.
    pub recorded_at: SystemTime,
}

impl RecordedEvent {
    /// The stream it belongs to, as a string slice.
    pub fn stream_id(&self) -> &str {
        &self.stream_id
    }

    /// Builds the recorded form of `event` once the store has given it its place; the record
    /// shares `stream_id`.
    pub fn from_new(
        event: NewEvent,
        stream_id: Arc<str>,
        stream_version: u64,
        global_position: u64,
        recorded_at: SystemTime,
    ) -> Self {
        RecordedEvent {
            event_id: event.event_id,
            stream_id,
            stream_version,
            global_position,
            event_type: event.event_type,
            schema_version: event.schema_version,
            data: event.data,
            metadata: event.metadata,
            recorded_at,
        }
    }
}

/// The stream id of aggregate `id` of the aggregate type named `aggregate`.
///
/// Two aggregate types may share an id: their streams differ by the prefix.
pub fn stream_id(aggregate: &str, id: &str) -> String {
    let mut s = String::with_capacity(aggregate.len() + 1 + id.len());
    s.push_str(aggregate);
    s.push('-');
    s.push_str(id);
    s
}
