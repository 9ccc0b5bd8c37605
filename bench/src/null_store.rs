//! A store that keeps nothing: every append succeeds, every stream reads empty. It isolates the
//! runtime's own memory and time from the store's.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use async_trait::async_trait;
use evoq::store::{
    AllPage, Appended, CommandLookup, CommandRecord, Direction, EventFilter, HandlerRequest,
    NewCommand, Snapshot, Timeout,
};
use evoq::{DeadLetter, EventStore, ExpectedVersion, NewEvent, RecordedEvent, StoreError, Uuid};
use tokio::sync::watch;

/// Accepts every append (the expected version is taken as the truth) and stores nothing but
/// checkpoints: no events, no command log.
pub struct NullStore {
    position: AtomicU64,
    head: watch::Sender<u64>,
    checkpoints: Mutex<HashMap<String, u64>>,
}

impl NullStore {
    /// An empty null store.
    pub fn new() -> Self {
        NullStore {
            position: AtomicU64::new(0),
            head: watch::channel(0).0,
            checkpoints: Mutex::default(),
        }
    }
}

impl Default for NullStore {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl EventStore for NullStore {
    async fn append(
        &self,
        _stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Appended, StoreError> {
        let count = events.len() as u64;
        let base = match expected {
            ExpectedVersion::Exact(version) => version,
            _ => 0,
        };
        let last = self.position.fetch_add(count, Ordering::Relaxed) + count;
        Ok(Appended {
            version: base + count,
            first_position: last + 1 - count,
            last_position: last,
        })
    }

    async fn append_command(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        _command: NewCommand,
    ) -> Result<Appended, StoreError> {
        self.append(stream, expected, events).await
    }

    async fn find_command(
        &self,
        _lookup: CommandLookup<'_>,
        _since: SystemTime,
    ) -> Result<Option<CommandRecord>, StoreError> {
        Ok(None)
    }

    async fn sweep_commands(
        &self,
        _before: SystemTime,
        _limit: usize,
    ) -> Result<usize, StoreError> {
        Ok(0)
    }

    async fn read_stream(
        &self,
        _stream: &str,
        _from: u64,
        _direction: Direction,
        _max_count: usize,
    ) -> Result<Vec<Arc<RecordedEvent>>, StoreError> {
        Ok(Vec::new())
    }

    async fn stream_version(&self, _stream: &str) -> Result<u64, StoreError> {
        Ok(0)
    }

    async fn read_all(
        &self,
        after: u64,
        _max_count: usize,
        _filter: &EventFilter,
    ) -> Result<AllPage, StoreError> {
        Ok(AllPage {
            scanned_through: after,
            ..AllPage::default()
        })
    }

    fn head(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }

    async fn save_snapshot(&self, _snapshot: Snapshot) -> Result<(), StoreError> {
        Ok(())
    }

    async fn load_snapshot(&self, _stream: &str) -> Result<Option<Snapshot>, StoreError> {
        Ok(None)
    }

    async fn save_dead_letter(&self, entry: DeadLetter) -> Result<(), StoreError> {
        Err(StoreError::Backend {
            backend: "null",
            message: format!(
                "the null store keeps no dead letters (handler `{}`); benchmarks must not fail",
                entry.handler
            ),
        })
    }

    async fn list_dead_letters(
        &self,
        _handler: &str,
        _after: u64,
        _limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        Ok(Vec::new())
    }

    async fn load_dead_letter(
        &self,
        _handler: &str,
        _event_id: Uuid,
    ) -> Result<Option<DeadLetter>, StoreError> {
        Ok(None)
    }

    async fn delete_dead_letter(
        &self,
        _handler: &str,
        _event_id: Uuid,
    ) -> Result<bool, StoreError> {
        Ok(false)
    }

    async fn save_request(&self, _request: HandlerRequest) -> Result<(), StoreError> {
        Ok(())
    }

    async fn list_requests(
        &self,
        _handler: &str,
        _limit: usize,
    ) -> Result<Vec<HandlerRequest>, StoreError> {
        Ok(Vec::new())
    }

    async fn load_request(
        &self,
        _handler: &str,
        _id: Uuid,
    ) -> Result<Option<HandlerRequest>, StoreError> {
        Ok(None)
    }

    async fn delete_request(&self, _handler: &str, _id: Uuid) -> Result<bool, StoreError> {
        Ok(false)
    }

    async fn save_checkpoint(&self, name: &str, position: u64) -> Result<(), StoreError> {
        self.checkpoints
            .lock()
            .map_err(|_| StoreError::Backend {
                backend: "null",
                message: "poisoned".into(),
            })?
            .insert(name.to_owned(), position);
        Ok(())
    }

    async fn load_checkpoint(&self, name: &str) -> Result<Option<u64>, StoreError> {
        Ok(self
            .checkpoints
            .lock()
            .map_err(|_| StoreError::Backend {
                backend: "null",
                message: "poisoned".into(),
            })?
            .get(name)
            .copied())
    }

    async fn save_saga_state(
        &self,
        _saga: &str,
        _instance: &str,
        _state: Vec<u8>,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    async fn load_saga_state(
        &self,
        _saga: &str,
        _instance: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(None)
    }

    async fn delete_saga_state(&self, _saga: &str, _instance: &str) -> Result<bool, StoreError> {
        Ok(false)
    }

    async fn list_saga_instances(
        &self,
        _saga: &str,
        _after: Option<&str>,
        _limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        Ok(Vec::new())
    }

    async fn schedule_timeout(&self, _timeout: Timeout) -> Result<(), StoreError> {
        Ok(())
    }

    async fn due_timeouts(
        &self,
        _saga: &str,
        _now: SystemTime,
        _limit: usize,
    ) -> Result<Vec<Timeout>, StoreError> {
        Ok(Vec::new())
    }

    async fn next_timeout(&self, _saga: &str) -> Result<Option<SystemTime>, StoreError> {
        Ok(None)
    }

    async fn delete_timeout(&self, _saga: &str, _id: Uuid) -> Result<bool, StoreError> {
        Ok(false)
    }

    async fn cancel_timeouts(&self, _saga: &str, _instance: &str) -> Result<usize, StoreError> {
        Ok(0)
    }
}
