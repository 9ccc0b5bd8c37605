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
    pub user: UserEntries,
    /// The event's tags (`"member:m1"`, `"book:b7"`): what a [decision](crate::decision)'s
    /// query selects events by, across streams. `#[derive(Event)]` fills them from the fields
    /// marked `#[tag]`; every store keeps them with the event and indexes them.
    #[serde(default, skip_serializing_if = "Tags::is_empty")]
    pub tags: Tags,
}

/// The caller's own entries of an event's [`Metadata`]: a sorted map of strings, which reads
/// like a `BTreeMap<String, String>` (it derefs to one) and costs one pointer when empty, which
/// it nearly always is (every stored event carries one).
///
/// ```
/// use evoq_runtime::envelope::UserEntries;
///
/// let mut user = UserEntries::default();
/// assert!(user.is_empty());
/// user.insert("tenant".to_owned(), "acme".to_owned());
/// assert_eq!(user["tenant"], "acme");
/// assert_eq!(user.get("absent"), None);
/// ```
#[derive(Clone, Default, Deserialize)]
#[serde(from = "BTreeMap<String, String>")]
pub struct UserEntries(
    #[expect(
        clippy::box_collection,
        reason = "one pointer in every event's metadata instead of a 24-byte map, nearly always empty"
    )]
    Option<Box<BTreeMap<String, String>>>,
);

/// What an empty [`UserEntries`] derefs to.
static NO_ENTRIES: BTreeMap<String, String> = BTreeMap::new();

impl UserEntries {
    /// The entries as a map.
    pub fn as_map(&self) -> &BTreeMap<String, String> {
        self.0.as_deref().unwrap_or(&NO_ENTRIES)
    }

    /// The entries as a map that can be changed (allocates the map if there is none yet).
    pub fn as_map_mut(&mut self) -> &mut BTreeMap<String, String> {
        self.0.get_or_insert_default()
    }

    /// The entries, as a map.
    pub fn into_map(self) -> BTreeMap<String, String> {
        self.0.map(|map| *map).unwrap_or_default()
    }
}

impl std::ops::Deref for UserEntries {
    type Target = BTreeMap<String, String>;

    fn deref(&self) -> &Self::Target {
        self.as_map()
    }
}

impl std::ops::DerefMut for UserEntries {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.as_map_mut()
    }
}

impl From<BTreeMap<String, String>> for UserEntries {
    fn from(map: BTreeMap<String, String>) -> Self {
        UserEntries((!map.is_empty()).then(|| Box::new(map)))
    }
}

impl From<UserEntries> for BTreeMap<String, String> {
    fn from(entries: UserEntries) -> Self {
        entries.into_map()
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for UserEntries {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        iter.into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect::<BTreeMap<_, _>>()
            .into()
    }
}

impl PartialEq for UserEntries {
    fn eq(&self, other: &Self) -> bool {
        self.as_map() == other.as_map()
    }
}

impl Eq for UserEntries {}

impl Serialize for UserEntries {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.as_map().serialize(serializer)
    }
}

impl std::fmt::Debug for UserEntries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_map().fmt(f)
    }
}

/// The tags of one event, in the order its type declares them: one pointer when there are none
/// (nearly every event of an aggregate).
///
/// Reads like a slice of strings; built from any iterator of strings. A tag is written
/// `"<prefix>:<value>"` ([`tag`] formats one).
///
/// ```
/// use evoq_runtime::envelope::{Tags, tag};
///
/// let tags: Tags = [tag("member", "m1"), tag("book", 7)].into_iter().collect();
/// assert_eq!(&tags[..], ["member:m1", "book:7"]);
/// assert!(tags.contains("book:7"));
/// assert!(Tags::default().is_empty());
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Tags(
    #[expect(
        clippy::box_collection,
        reason = "one pointer in every event's metadata instead of a 24-byte vector, nearly always empty"
    )]
    Option<Box<Vec<String>>>,
);

impl Tags {
    /// Whether the event has no tag.
    pub fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|tags| tags.is_empty())
    }

    /// Whether the event carries `tag`.
    pub fn contains(&self, tag: &str) -> bool {
        self.iter().any(|own| own == tag)
    }

    /// Adds `tag` (once: a tag already there is not added again).
    pub fn push(&mut self, tag: impl Into<String>) {
        let tag = tag.into();
        if !self.contains(&tag) {
            self.0.get_or_insert_default().push(tag);
        }
    }
}

impl std::ops::Deref for Tags {
    type Target = [String];

    fn deref(&self) -> &[String] {
        self.0.as_deref().map_or(&[], Vec::as_slice)
    }
}

impl<S: Into<String>> FromIterator<S> for Tags {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        let mut tags = Tags::default();
        for tag in iter {
            tags.push(tag);
        }
        tags
    }
}

impl From<Vec<String>> for Tags {
    fn from(tags: Vec<String>) -> Self {
        tags.into_iter().collect()
    }
}

impl std::fmt::Debug for Tags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl Serialize for Tags {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for Tags {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Vec::<String>::deserialize(deserializer)?.into())
    }
}

/// The tag `"<prefix>:<value>"`: how `#[derive(Event)]` writes a `#[tag("prefix")]` field, and
/// how a decision's query names it, so that the two always agree.
///
/// ```
/// assert_eq!(evoq_runtime::envelope::tag("member", "m1"), "member:m1");
/// ```
pub fn tag(prefix: &str, value: impl std::fmt::Display) -> String {
    use std::fmt::Write;
    let mut tag = String::with_capacity(prefix.len() + 16);
    tag.push_str(prefix);
    tag.push(':');
    let _ = write!(tag, "{value}");
    tag
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

/// The largest batch vector (in events) a thread keeps for reuse.
const SPARE_BATCH_MAX: usize = 16;

thread_local! {
    /// This thread's spare batch: the vector of the last new events a store took out of theirs
    /// on this thread, empty, for the next command's events.
    static SPARE_BATCH: std::cell::Cell<Vec<NewEvent>> = const { std::cell::Cell::new(Vec::new()) };
}

impl NewEvent {
    /// An empty vector for `count` new events: this thread's spare one (see
    /// [`recycle`](Self::recycle)) when it is large enough, else a new one.
    ///
    /// Every command's events travel to the store in a vector that the store empties and drops:
    /// a store that commits in the caller's thread (the in-memory one) gives it back, and the
    /// thread's next command fills it again instead of allocating.
    pub(crate) fn batch(count: usize) -> Vec<NewEvent> {
        let spare = SPARE_BATCH.take();
        if spare.capacity() >= count {
            spare
        } else {
            Vec::with_capacity(count)
        }
    }

    /// Keeps `batch`'s memory, emptied, as this thread's spare for the next
    /// [`batch`](Self::batch) (unless it is large: a rare big command's vector is freed).
    pub(crate) fn recycle(mut batch: Vec<NewEvent>) {
        batch.clear();
        if batch.capacity() <= SPARE_BATCH_MAX {
            SPARE_BATCH.set(batch);
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every stored event carries one record: keep it within its allocator size class (with
    /// the `Arc`'s two counts, 208 bytes: glibc's 224-byte chunks; the tags' pointer took the
    /// record from 184 bytes to 192).
    #[test]
    #[cfg(all(target_os = "linux", target_pointer_width = "64"))]
    fn a_record_stays_small() {
        assert!(std::mem::size_of::<RecordedEvent>() <= 192);
        assert_eq!(std::mem::size_of::<UserEntries>(), 8);
        assert_eq!(std::mem::size_of::<Tags>(), 8);
    }

    #[test]
    fn user_entries_read_like_a_map_and_compare_by_content() {
        let mut entries = UserEntries::default();
        assert_eq!(entries, UserEntries::from(BTreeMap::new()));
        entries.as_map_mut();
        assert_eq!(
            entries,
            UserEntries::default(),
            "an empty map is no entries"
        );
        entries.insert("user".to_owned(), "alice".to_owned());
        assert_eq!(entries["user"], "alice");
        assert_eq!(format!("{entries:?}"), r#"{"user": "alice"}"#);
        let json = serde_json::to_string(&entries).expect("json");
        assert_eq!(json, r#"{"user":"alice"}"#);
        let back: UserEntries = serde_json::from_str(&json).expect("decodes");
        assert_eq!(back, entries);
        assert_eq!(
            back.into_map(),
            BTreeMap::from([("user".into(), "alice".into())])
        );
        let metadata = Metadata::default();
        assert_eq!(serde_json::to_string(&metadata).expect("json"), "{}");
    }
}
