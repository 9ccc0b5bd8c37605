//! The in-memory store's saga timeouts: per saga, in due order and by id.

use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use uuid::Uuid;

use crate::store::Timeout;

/// Every scheduled timeout, per saga.
#[derive(Default)]
pub(super) struct Timeouts {
    sagas: HashMap<String, SagaTimeouts>,
}

/// The timeouts of one saga: by (due time, id), and the due time of each id.
#[derive(Default)]
struct SagaTimeouts {
    by_due: BTreeMap<(SystemTime, Uuid), Timeout>,
    due: HashMap<Uuid, SystemTime>,
}

impl Timeouts {
    /// Stores `timeout`, replacing the one with its id.
    pub(super) fn schedule(&mut self, timeout: Timeout) {
        let saga = self.sagas.entry(timeout.saga.clone()).or_default();
        if let Some(due) = saga.due.insert(timeout.id, timeout.due_at) {
            saga.by_due.remove(&(due, timeout.id));
        }
        saga.by_due.insert((timeout.due_at, timeout.id), timeout);
    }

    /// At most `limit` timeouts of `saga` due at or before `now`, earliest first.
    pub(super) fn due(&self, saga: &str, now: SystemTime, limit: usize) -> Vec<Timeout> {
        let Some(saga) = self.sagas.get(saga) else {
            return Vec::new();
        };
        saga.by_due
            .values()
            .take_while(|timeout| timeout.due_at <= now)
            .take(limit)
            .cloned()
            .collect()
    }

    /// The earliest due time of `saga`.
    pub(super) fn next(&self, saga: &str) -> Option<SystemTime> {
        let saga = self.sagas.get(saga)?;
        saga.by_due.keys().next().map(|(due, _)| *due)
    }

    /// Removes the timeout `id` of `saga`; whether there was one.
    pub(super) fn delete(&mut self, saga: &str, id: Uuid) -> bool {
        let Some(timeouts) = self.sagas.get_mut(saga) else {
            return false;
        };
        let Some(due) = timeouts.due.remove(&id) else {
            return false;
        };
        timeouts.by_due.remove(&(due, id));
        if timeouts.due.is_empty() {
            self.sagas.remove(saga);
        }
        true
    }

    /// Removes every timeout of `instance` of `saga`; how many.
    pub(super) fn cancel(&mut self, saga: &str, instance: &str) -> usize {
        let Some(timeouts) = self.sagas.get_mut(saga) else {
            return 0;
        };
        let ids: Vec<Uuid> = timeouts
            .by_due
            .values()
            .filter(|timeout| timeout.instance == instance)
            .map(|timeout| timeout.id)
            .collect();
        ids.iter().filter(|id| self.delete(saga, **id)).count()
    }
}
