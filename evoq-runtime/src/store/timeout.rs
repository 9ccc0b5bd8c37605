//! `Timeout`: an event a saga instance scheduled for a later time, as the store keeps it.

use std::time::SystemTime;

use uuid::Uuid;

/// A timeout a saga instance scheduled: something to fire at `due_at`, kept in the store until
/// it has fired or the instance stopped.
///
/// The store treats `payload` as opaque bytes (the runtime keeps the event to append in it);
/// it keeps `due_at` to the microsecond.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timeout {
    /// The timeout's id, unique in the store (sagas derive it deterministically, so scheduling
    /// one timeout twice keeps one).
    pub id: Uuid,
    /// The saga's name.
    pub saga: String,
    /// The instance that scheduled it.
    pub instance: String,
    /// When it is due.
    pub due_at: SystemTime,
    /// What fires (opaque to the store).
    pub payload: Vec<u8>,
}
