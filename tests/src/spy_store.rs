//! A store that forwards every call to another store (any backend) and watches the calls of
//! decisions: the conditions of `append_if`, how many times it and `read_query` were called,
//! and a knob that makes every conditional append fail as violated.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_trait::async_trait;
use evoq::decision::{AppendCondition, EventQuery};
use evoq::store::{
    AllPage, Appended, CommandLookup, CommandRecord, DeadLetter, Direction, EventCounts,
    EventFilter, HandlerRequest, Lease, NewCommand, Snapshot, SnapshotAndEvents, StreamInfo,
    Timeout,
};
use evoq::{EventStore, ExpectedVersion, NewEvent, RecordedEvent, StoreError};
use tokio::sync::watch;
use uuid::Uuid;

/// Wraps `inner`; records what decisions ask of it.
pub struct SpyStore {
    pub inner: Arc<dyn EventStore>,
    /// The next this many conditional appends report a violation (at position `after + 1`),
    /// appending nothing (`u32::MAX`: every one).
    pub violations: AtomicU32,
    /// The condition of every call of `append_if`, in call order.
    pub conditions: Mutex<Vec<AppendCondition>>,
    /// How many times `append_if` was called.
    pub conditional_appends: AtomicUsize,
    /// How many times `read_query` was called.
    pub query_reads: AtomicUsize,
    /// How many events `read_query` returned in all.
    pub events_queried: AtomicUsize,
    /// The next this many command-log lookups find nothing (as when another node runs the
    /// command between the lookup and the run).
    pub hidden_lookups: AtomicU32,
}

impl SpyStore {
    pub fn new(inner: Arc<dyn EventStore>) -> Arc<SpyStore> {
        Arc::new(SpyStore {
            inner,
            violations: AtomicU32::new(0),
            conditions: Mutex::new(Vec::new()),
            conditional_appends: AtomicUsize::new(0),
            query_reads: AtomicUsize::new(0),
            events_queried: AtomicUsize::new(0),
            hidden_lookups: AtomicU32::new(0),
        })
    }

    /// The conditions recorded so far.
    pub fn conditions(&self) -> Vec<AppendCondition> {
        self.conditions.lock().expect("not poisoned").clone()
    }
}

#[async_trait]
impl EventStore for SpyStore {
    async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Appended, StoreError> {
        self.inner.append(stream, expected, events).await
    }

    async fn append_command(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        command: NewCommand,
    ) -> Result<Appended, StoreError> {
        self.inner
            .append_command(stream, expected, events, command)
            .await
    }

    async fn find_command(
        &self,
        lookup: CommandLookup<'_>,
        since: SystemTime,
    ) -> Result<Option<CommandRecord>, StoreError> {
        let hidden = self
            .hidden_lookups
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if hidden {
            return Ok(None);
        }
        self.inner.find_command(lookup, since).await
    }

    async fn sweep_commands(&self, before: SystemTime, limit: usize) -> Result<usize, StoreError> {
        self.inner.sweep_commands(before, limit).await
    }

    fn is_shared(&self) -> bool {
        self.inner.is_shared()
    }

    async fn read_stream(
        &self,
        stream: &str,
        from: u64,
        direction: Direction,
        max_count: usize,
    ) -> Result<Vec<Arc<RecordedEvent>>, StoreError> {
        self.inner
            .read_stream(stream, from, direction, max_count)
            .await
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
        self.inner.read_all(after, max_count, filter).await
    }

    async fn read_query(
        &self,
        query: &EventQuery,
        after: u64,
        max_count: usize,
    ) -> Result<AllPage, StoreError> {
        self.query_reads.fetch_add(1, Ordering::SeqCst);
        let page = self.inner.read_query(query, after, max_count).await?;
        self.events_queried
            .fetch_add(page.events.len(), Ordering::SeqCst);
        Ok(page)
    }

    async fn append_if(
        &self,
        stream: &str,
        events: Vec<NewEvent>,
        condition: &AppendCondition,
        command: Option<NewCommand>,
    ) -> Result<Appended, StoreError> {
        self.conditional_appends.fetch_add(1, Ordering::SeqCst);
        self.conditions
            .lock()
            .expect("not poisoned")
            .push(condition.clone());
        let violated = self
            .violations
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| match n {
                0 => None,
                u32::MAX => Some(u32::MAX),
                n => Some(n - 1),
            })
            .is_ok();
        if violated {
            return Err(StoreError::ConditionFailed {
                stream: stream.to_owned(),
                query: condition.query.to_string(),
                after: condition.after,
                position: condition.after + 1,
            });
        }
        self.inner
            .append_if(stream, events, condition, command)
            .await
    }

    fn head(&self) -> watch::Receiver<u64> {
        self.inner.head()
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        self.inner.save_snapshot(snapshot).await
    }

    async fn load_snapshot(&self, stream: &str) -> Result<Option<Snapshot>, StoreError> {
        self.inner.load_snapshot(stream).await
    }

    async fn read_from_snapshot(
        &self,
        stream: &str,
        max_count: usize,
    ) -> Result<SnapshotAndEvents, StoreError> {
        self.inner.read_from_snapshot(stream, max_count).await
    }

    async fn save_checkpoint(&self, name: &str, position: u64) -> Result<(), StoreError> {
        self.inner.save_checkpoint(name, position).await
    }

    async fn load_checkpoint(&self, name: &str) -> Result<Option<u64>, StoreError> {
        self.inner.load_checkpoint(name).await
    }

    async fn list_checkpoints(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.inner.list_checkpoints().await
    }

    async fn list_streams(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StreamInfo>, StoreError> {
        self.inner.list_streams(prefix, after, limit).await
    }

    async fn list_snapshots(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        self.inner.list_snapshots(after, limit).await
    }

    async fn count_events(&self) -> Result<EventCounts, StoreError> {
        self.inner.count_events().await
    }

    async fn count_dead_letters(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.inner.count_dead_letters().await
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
        event_id: Uuid,
    ) -> Result<Option<DeadLetter>, StoreError> {
        self.inner.load_dead_letter(handler, event_id).await
    }

    async fn delete_dead_letter(&self, handler: &str, event_id: Uuid) -> Result<bool, StoreError> {
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

    async fn count_requests(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.inner.count_requests().await
    }

    async fn load_request(
        &self,
        handler: &str,
        id: Uuid,
    ) -> Result<Option<HandlerRequest>, StoreError> {
        self.inner.load_request(handler, id).await
    }

    async fn delete_request(&self, handler: &str, id: Uuid) -> Result<bool, StoreError> {
        self.inner.delete_request(handler, id).await
    }

    async fn save_saga_state(
        &self,
        saga: &str,
        instance: &str,
        state: Vec<u8>,
    ) -> Result<(), StoreError> {
        self.inner.save_saga_state(saga, instance, state).await
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

    async fn delete_timeout(&self, saga: &str, id: Uuid) -> Result<bool, StoreError> {
        self.inner.delete_timeout(saga, id).await
    }

    async fn cancel_timeouts(&self, saga: &str, instance: &str) -> Result<usize, StoreError> {
        self.inner.cancel_timeouts(saga, instance).await
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush().await
    }

    async fn try_lease(&self, name: &str) -> Result<Option<Lease>, StoreError> {
        self.inner.try_lease(name).await
    }
}
