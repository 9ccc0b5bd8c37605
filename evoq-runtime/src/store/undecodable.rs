//! A stored row of the global order that could not be read back as an event.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use uuid::Uuid;

use super::error::StoreError;
use crate::envelope::{Metadata, RecordedEvent};
use crate::util::ids::derived_id;

/// A row of the global order that the store found but could not read back as an event: its
/// id, schema version or metadata does not decode (a row damaged by hand, by a faulty disk, or
/// written by another program).
///
/// [`EventStore::read_all`](super::EventStore::read_all) returns such rows beside the events
/// of its page ([`AllPage::undecodable`](super::AllPage::undecodable)) instead of failing the
/// whole page, so the events around a bad row are still read. A subscriber meets it as a
/// failure of that one event, which its error policy handles like any other (retry,
/// dead-letter with the raw row, skip or stop); nothing is rewritten.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UndecodableRow {
    /// Its position in the global order.
    pub global_position: u64,
    /// Its stream, as stored.
    pub stream_id: String,
    /// Its version within the stream (0 when that does not decode either).
    pub stream_version: u64,
    /// Its event type, as stored.
    pub event_type: String,
    /// Its event id, when that decodes.
    pub event_id: Option<Uuid>,
    /// Its data, the bytes as stored.
    pub data: Vec<u8>,
    /// When it was committed, when that decodes.
    pub recorded_at: Option<SystemTime>,
    /// Every column of the row as text, by name, in the table's order (bytes that are not
    /// UTF-8 as `0x`-prefixed hex).
    pub columns: Vec<(String, String)>,
    /// Why it does not decode (which column, and the decoder's message).
    pub error: String,
}

impl UndecodableRow {
    /// What can be read of the row, as a record: the stored id, or when that does not decode
    /// an id derived from the position (so every reader names the row alike), the stored data
    /// bytes, empty metadata where it does not decode. Dead letters keep it as their event.
    pub fn placeholder(&self) -> RecordedEvent {
        let column = |name: &str| {
            self.columns
                .iter()
                .find(|(column, _)| column == name)
                .map(|(_, value)| value.as_str())
        };
        RecordedEvent {
            event_id: self.event_id.unwrap_or_else(|| {
                derived_id(
                    "evoq:undecodable-row",
                    Uuid::nil(),
                    self.global_position as usize,
                )
            }),
            stream_id: Arc::from(self.stream_id.as_str()),
            stream_version: self.stream_version,
            global_position: self.global_position,
            event_type: self.event_type.clone().into(),
            schema_version: column("schema_version")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            data: self.data.clone(),
            metadata: column("metadata")
                .and_then(|m| serde_json::from_str::<Metadata>(m).ok())
                .unwrap_or_default(),
            recorded_at: self.recorded_at.unwrap_or(UNIX_EPOCH),
        }
    }

    /// The row's place and why it does not decode, for messages.
    pub fn describe(&self) -> String {
        format!(
            "the stored row of stream `{}` version {} (position {}) cannot be read: {}",
            self.stream_id, self.stream_version, self.global_position, self.error
        )
    }
}

/// One row of the global order as a [`Subscription`](super::Subscription) yields it: an event,
/// or a row that could not be read back as one.
#[derive(Clone, Debug)]
pub enum StoredRow {
    /// An event.
    Event(Arc<RecordedEvent>),
    /// A row that does not decode.
    Undecodable(UndecodableRow),
}

impl StoredRow {
    /// The row's position in the global order.
    pub fn global_position(&self) -> u64 {
        match self {
            StoredRow::Event(event) => event.global_position,
            StoredRow::Undecodable(row) => row.global_position,
        }
    }
}

impl UndecodableRow {
    /// The row as the integrity error a reader that takes only events meets.
    pub fn to_error(&self) -> StoreError {
        StoreError::Integrity {
            location: format!(
                "stream `{}` version {} (position {})",
                self.stream_id, self.stream_version, self.global_position
            ),
            reason: self.error.clone(),
        }
    }
}
