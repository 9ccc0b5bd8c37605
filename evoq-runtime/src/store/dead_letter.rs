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
    /// The event, exactly as stored.
    pub event: Arc<RecordedEvent>,
    /// The text of the last error.
    pub error: String,
    /// How many times the event was delivered to the handler in all (first delivery, retries
    /// and re-deliveries from the dead-letter store).
    pub attempts: u32,
    /// When the first delivery failed.
    pub first_failed_at: SystemTime,
    /// When the last delivery failed.
    pub last_failed_at: SystemTime,
}
