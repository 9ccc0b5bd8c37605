use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use crate::envelope::RecordedEvent;

/// An event a subscriber (an event handler) gave up on after its retries, kept in the store
/// until it is re-delivered with success or discarded.
///
/// An entry is keyed by the handler's name and the event's id: saving an entry for the same
/// pair replaces the earlier one. Entries of one handler list oldest first, which is the order
/// of their events' global positions (a handler meets its events in that order).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// The name of the handler that failed.
    pub handler: String,
    /// The event, exactly as stored. For a row that could not be read back as an event
    /// ([`FailureKind::Storage`]), what could be read of it: the columns that decoded, its id
    /// if that decoded (else an id derived from its position), its data bytes as stored; the
    /// row itself is in [`raw_row`](Self::raw_row).
    pub event: Arc<RecordedEvent>,
    /// The text of the last error.
    pub error: String,
    /// What kind of failure the last one was.
    pub kind: FailureKind,
    /// Why the event was dead-lettered rather than retried again (the attempts it was given
    /// and the policy that ended them).
    pub reason: String,
    /// For a [`FailureKind::Storage`] failure, every column of the stored row as text, by
    /// name, in the table's order (bytes that are not UTF-8 as `0x`-prefixed hex).
    pub raw_row: Option<Vec<(String, String)>>,
    /// How many times the event was delivered to the handler in all (first delivery, retries
    /// and re-deliveries from the dead-letter store).
    pub attempts: u32,
    /// When the first delivery failed.
    pub first_failed_at: SystemTime,
    /// When the last delivery failed.
    pub last_failed_at: SystemTime,
}

/// What kind of failure ended an event's deliveries to a handler (see [`DeadLetter::kind`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailureKind {
    /// The handler returned an error (or had no method for the event's type).
    HandlerError,
    /// The event's stored data does not decode as the type the handler takes.
    Decode,
    /// The event's stored data could not be brought to the current version of its type.
    Upcast,
    /// The handler panicked.
    Panic,
    /// The stored row could not be read back as an event (its id, schema version or metadata
    /// does not decode): the handler was never called.
    Storage,
}

impl FailureKind {
    /// Every kind, in a stable order.
    pub const ALL: [FailureKind; 5] = [
        FailureKind::HandlerError,
        FailureKind::Decode,
        FailureKind::Upcast,
        FailureKind::Panic,
        FailureKind::Storage,
    ];

    /// The kind's stable name, as stores keep it: `handler_error`, `decode`, `upcast`,
    /// `panic` or `storage`.
    pub const fn as_str(self) -> &'static str {
        match self {
            FailureKind::HandlerError => "handler_error",
            FailureKind::Decode => "decode",
            FailureKind::Upcast => "upcast",
            FailureKind::Panic => "panic",
            FailureKind::Storage => "storage",
        }
    }

    /// The kind named `name` ([`as_str`](Self::as_str)); `None` for any other text.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
