//! An event store wrapper that injects faults into the in-memory store, and counts reads.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use evoq::store::memory::InMemoryStore;
use evoq::store::{
    AllPage, Appended, CommandLookup, CommandRecord, DeadLetter, Direction, EventFilter,
    HandlerRequest, NewCommand, Snapshot, SnapshotAndEvents, Timeout,
};
use evoq::{EventStore, ExpectedVersion, NewEvent, RecordedEvent, StoreError};
use tokio::sync::watch;

/// Wraps an [`InMemoryStore`]; every knob is off by default.
#[derive(Default)]
pub struct FaultyStore {
    pub inner: InMemoryStore,
    /// `read_stream` fails with a backend error.
    pub fail_reads: AtomicBool,
    /// `read_all` (what subscriptions read) fails with a backend error.
    pub fail_read_all: AtomicBool,
    /// `save_checkpoint` fails with a backend error.
    pub fail_checkpoints: AtomicBool,
    /// How many times `read_all` was called.
    pub all_reads: AtomicUsize,
    /// Each append first sleeps this many milliseconds.
    pub append_delay_ms: AtomicU64,
    /// `append` panics (a buggy backend).
    pub panic_appends: AtomicBool,
    /// The next N appends are preceded by a foreign append to the same stream (a writer
    /// "behind the actor's back"), so they hit a version conflict.
    pub interfere: AtomicU32,
    /// How many times `read_stream` was called.
    pub stream_reads: AtomicUsize,
    /// How many appends reached the inner store (including interfering ones).
    pub appends: AtomicUsize,
    /// How many events `read_stream` returned in all.
    pub events_read: AtomicUsize,
    /// The `from` version of the last `read_stream`.
    pub last_read_from: AtomicU64,
    /// How many snapshots were saved.
    pub snapshot_saves: AtomicUsize,
    /// `load_checkpoint` of this name waits 300 ms, then fails with a backend error.
    pub failing_checkpoint_load: std::sync::Mutex<Option<String>>,
    /// How many times a snapshot was loaded (by `read_from_snapshot` too).
    pub snapshot_loads: AtomicUsize,
    /// How many times `read_from_snapshot` was called (what an activation asks).
    pub rebuild_reads: AtomicUsize,
    /// `is_shared` says yes: the runtime treats the store as written by other nodes too.
    pub shared: AtomicBool,
    /// How many times the command log was searched.
    pub command_lookups: AtomicUsize,
    /// `read_stream` fails with an integrity error (corrupt stored data).
    pub corrupt_reads: AtomicBool,
    /// Appends fail with an integrity error (the store found its data inconsistent).
    pub corrupt_appends: AtomicBool,
    /// `load_snapshot` finds none: every activation replays the whole stream.
    pub hide_snapshots: AtomicBool,
    /// `read_stream` panics (a buggy backend).
    pub panic_reads: AtomicBool,
    /// The next N calls of `read_all` panic.
    pub panic_read_all: AtomicU32,
    /// The next N calls of `save_checkpoint` panic.
    pub panic_checkpoints: AtomicU32,
    /// How many checkpoints were saved.
    pub checkpoint_saves: AtomicUsize,
    /// The next N calls of `save_saga_state` store the state, then fail (an ambiguous write).
    pub ambiguous_saga_saves: AtomicU32,
    /// The next N calls of `try_lease` fail.
    pub lease_failures: AtomicU32,
    /// `try_lease` says another node holds the lease (after the failures above).
    pub lease_held_elsewhere: AtomicBool,
}

/// Takes one from `counter` if it is above zero: whether it was.
fn take_one(counter: &AtomicU32) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

/// The integrity error the `corrupt_*` knobs inject.
fn corrupt(stream: &str) -> StoreError {
    StoreError::Integrity {
        location: format!("stream `{stream}`"),
        reason: "injected corruption".to_owned(),
    }
}

impl FaultyStore {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }
}

/// A deposit of `amount` as raw store input, as a foreign writer would append it.
pub fn raw_deposit(account: &str, amount: u64) -> NewEvent {
    NewEvent {
        event_id: uuid::Uuid::now_v7(),
        event_type: "MoneyDeposited".into(),
        schema_version: 1,
        data: serde_json::to_vec(&serde_json::json!({ "account": account, "amount": amount }))
            .expect("json"),
        metadata: Default::default(),
    }
}

impl FaultyStore {
    /// The knobs every append goes through: a panic, a delay, a foreign writer.
    async fn before_append(&self, stream: &str) -> Result<(), StoreError> {
        assert!(
            !self.panic_appends.load(Ordering::SeqCst),
            "the faulty store panics in append"
        );
        let delay = self.append_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let interfere = self
            .interfere
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if interfere {
            let account = stream.split_once('-').map_or(stream, |(_, id)| id);
            self.appends.fetch_add(1, Ordering::SeqCst);
            self.inner
                .append(stream, ExpectedVersion::Any, vec![raw_deposit(account, 1)])
                .await?;
        }
        self.appends.fetch_add(1, Ordering::SeqCst);
        if self.corrupt_appends.load(Ordering::SeqCst) {
            return Err(corrupt(stream));
        }
        Ok(())
    }
}

#[async_trait]
impl EventStore for FaultyStore {
    async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Appended, StoreError> {
        self.before_append(stream).await?;
        self.inner.append(stream, expected, events).await
    }

    async fn append_command(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        command: NewCommand,
    ) -> Result<Appended, StoreError> {
        self.before_append(stream).await?;
        self.inner
            .append_command(stream, expected, events, command)
            .await
    }

    async fn find_command(
        &self,
        lookup: CommandLookup<'_>,
        since: SystemTime,
    ) -> Result<Option<CommandRecord>, StoreError> {
        self.command_lookups.fetch_add(1, Ordering::SeqCst);
        self.inner.find_command(lookup, since).await
    }

    async fn sweep_commands(&self, before: SystemTime, limit: usize) -> Result<usize, StoreError> {
        self.inner.sweep_commands(before, limit).await
    }

    fn is_shared(&self) -> bool {
        self.shared.load(Ordering::SeqCst)
    }

    async fn try_lease(&self, name: &str) -> Result<Option<evoq::store::Lease>, StoreError> {
        if take_one(&self.lease_failures) {
            return Err(StoreError::Backend {
                backend: "faulty",
                message: "injected lease failure".to_owned(),
            });
        }
        if self.lease_held_elsewhere.load(Ordering::SeqCst) {
            return Ok(None);
        }
        self.inner.try_lease(name).await
    }

    async fn read_stream(
        &self,
        stream: &str,
        from: u64,
        direction: Direction,
        max_count: usize,
    ) -> Result<Vec<Arc<RecordedEvent>>, StoreError> {
        self.stream_reads.fetch_add(1, Ordering::SeqCst);
        assert!(
            !self.panic_reads.load(Ordering::SeqCst),
            "the faulty store panics in read_stream"
        );
        if self.fail_reads.load(Ordering::SeqCst) {
            return Err(StoreError::Backend {
                backend: "faulty",
                message: format!("injected read failure on `{stream}`"),
            });
        }
        if self.corrupt_reads.load(Ordering::SeqCst) {
            return Err(corrupt(stream));
        }
        self.last_read_from.store(from, Ordering::SeqCst);
        let events = self
            .inner
            .read_stream(stream, from, direction, max_count)
            .await?;
        self.events_read.fetch_add(events.len(), Ordering::SeqCst);
        Ok(events)
    }

    async fn stream_version(&self, stream: &str) -> Result<u64, StoreError> {
        self.inner.stream_version(stream).await
    }

    async fn read_all(
        &self,
        after: u64,
        max_count: usize,
        filter: &EventFilter,
    ) -> Result<AllPage, StoreError> {
        self.all_reads.fetch_add(1, Ordering::SeqCst);
        assert!(
            !take_one(&self.panic_read_all),
            "the faulty store panics in read_all"
        );
        if self.fail_read_all.load(Ordering::SeqCst) {
            return Err(StoreError::Backend {
                backend: "faulty",
                message: format!("injected read_all failure after {after}"),
            });
        }
        self.inner.read_all(after, max_count, filter).await
    }

    fn head(&self) -> watch::Receiver<u64> {
        self.inner.head()
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        self.snapshot_saves.fetch_add(1, Ordering::SeqCst);
        self.inner.save_snapshot(snapshot).await
    }

    async fn load_snapshot(&self, stream: &str) -> Result<Option<Snapshot>, StoreError> {
        self.snapshot_loads.fetch_add(1, Ordering::SeqCst);
        if self.hide_snapshots.load(Ordering::SeqCst) {
            return Ok(None);
        }
        self.inner.load_snapshot(stream).await
    }

    /// Counted, then as the trait's default: `load_snapshot` and `read_stream` of this store,
    /// so that their knobs and counters apply to an activation as before.
    async fn read_from_snapshot(
        &self,
        stream: &str,
        max_count: usize,
    ) -> Result<SnapshotAndEvents, StoreError> {
        self.rebuild_reads.fetch_add(1, Ordering::SeqCst);
        let snapshot = self.load_snapshot(stream).await?;
        let from = snapshot.as_ref().map_or(1, |snapshot| snapshot.version + 1);
        let events = self
            .read_stream(stream, from, Direction::Forward, max_count)
            .await?;
        Ok(SnapshotAndEvents { snapshot, events })
    }

    async fn save_checkpoint(&self, name: &str, position: u64) -> Result<(), StoreError> {
        assert!(
            !take_one(&self.panic_checkpoints),
            "the faulty store panics in save_checkpoint"
        );
        if self.fail_checkpoints.load(Ordering::SeqCst) {
            return Err(StoreError::Backend {
                backend: "faulty",
                message: format!("injected checkpoint failure for `{name}`"),
            });
        }
        self.inner.save_checkpoint(name, position).await?;
        self.checkpoint_saves.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn load_checkpoint(&self, name: &str) -> Result<Option<u64>, StoreError> {
        let failing = self
            .failing_checkpoint_load
            .lock()
            .expect("not poisoned")
            .as_deref()
            == Some(name);
        if failing {
            tokio::time::sleep(Duration::from_millis(300)).await;
            return Err(StoreError::Backend {
                backend: "faulty",
                message: format!("the checkpoint of `{name}` cannot be read"),
            });
        }
        self.inner.load_checkpoint(name).await
    }

    async fn save_dead_letter(&self, entry: DeadLetter) -> Result<(), StoreError> {
        self.inner.save_dead_letter(entry).await
    }

    async fn list_dead_letters(
        &self,
        handler: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        self.inner.list_dead_letters(handler, after, limit).await
    }

    async fn load_dead_letter(
        &self,
        handler: &str,
        event_id: uuid::Uuid,
    ) -> Result<Option<DeadLetter>, StoreError> {
        self.inner.load_dead_letter(handler, event_id).await
    }

    async fn delete_dead_letter(
        &self,
        handler: &str,
        event_id: uuid::Uuid,
    ) -> Result<bool, StoreError> {
        self.inner.delete_dead_letter(handler, event_id).await
    }

    async fn save_request(&self, request: HandlerRequest) -> Result<(), StoreError> {
        self.inner.save_request(request).await
    }

    async fn list_requests(
        &self,
        handler: &str,
        limit: usize,
    ) -> Result<Vec<HandlerRequest>, StoreError> {
        self.inner.list_requests(handler, limit).await
    }

    async fn load_request(
        &self,
        handler: &str,
        id: uuid::Uuid,
    ) -> Result<Option<HandlerRequest>, StoreError> {
        self.inner.load_request(handler, id).await
    }

    async fn delete_request(&self, handler: &str, id: uuid::Uuid) -> Result<bool, StoreError> {
        self.inner.delete_request(handler, id).await
    }

    async fn save_saga_state(
        &self,
        saga: &str,
        instance: &str,
        state: Vec<u8>,
    ) -> Result<(), StoreError> {
        self.inner.save_saga_state(saga, instance, state).await?;
        if take_one(&self.ambiguous_saga_saves) {
            return Err(StoreError::Backend {
                backend: "faulty",
                message: format!(
                    "injected failure after saving the state of `{saga}` instance `{instance}`"
                ),
            });
        }
        Ok(())
    }

    async fn load_saga_state(
        &self,
        saga: &str,
        instance: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.load_saga_state(saga, instance).await
    }

    async fn delete_saga_state(&self, saga: &str, instance: &str) -> Result<bool, StoreError> {
        self.inner.delete_saga_state(saga, instance).await
    }

    async fn list_saga_instances(
        &self,
        saga: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        self.inner.list_saga_instances(saga, after, limit).await
    }

    async fn schedule_timeout(&self, timeout: Timeout) -> Result<(), StoreError> {
        self.inner.schedule_timeout(timeout).await
    }

    async fn due_timeouts(
        &self,
        saga: &str,
        now: SystemTime,
        limit: usize,
    ) -> Result<Vec<Timeout>, StoreError> {
        self.inner.due_timeouts(saga, now, limit).await
    }

    async fn next_timeout(&self, saga: &str) -> Result<Option<SystemTime>, StoreError> {
        self.inner.next_timeout(saga).await
    }

    async fn delete_timeout(&self, saga: &str, id: uuid::Uuid) -> Result<bool, StoreError> {
        self.inner.delete_timeout(saga, id).await
    }

    async fn cancel_timeouts(&self, saga: &str, instance: &str) -> Result<usize, StoreError> {
        self.inner.cancel_timeouts(saga, instance).await
    }
}
