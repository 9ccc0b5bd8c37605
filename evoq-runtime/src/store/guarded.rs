//! An event store whose panics are errors: what the runtime reads and writes through (the
//! builder wraps the store it is given), so that a panicking backend fails one call, which its
//! caller retries or reports like any failure of the store, instead of ending a task of the
//! runtime (handlers, projections, sagas, timers, sweepers) or unwinding into a caller's task.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use async_trait::async_trait;
use tokio::sync::watch;
use uuid::Uuid;

use super::command_log::{CommandLookup, CommandRecord, NewCommand};
use super::dead_letter::DeadLetter;
use super::error::StoreError;
use super::event_store::{
    AllPage, AppendNow, Appended, Direction, EventFilter, EventStore, Snapshot, SnapshotAndEvents,
};
use super::expected_version::ExpectedVersion;
use super::lease::Lease;
use super::query::{AppendCondition, EventQuery};
use super::request::HandlerRequest;
use super::timeout::Timeout;
use crate::envelope::{NewEvent, RecordedEvent};
use crate::util::panic::{CatchPanic, Panic, panic_message};

/// Wraps a store: every call that panics returns [`StoreError::Backend`] saying so, with the
/// panic's message and the call's name.
pub(crate) struct GuardedStore {
    inner: Arc<dyn EventStore>,
}

impl GuardedStore {
    /// `store`, guarded.
    pub(crate) fn wrap(store: Arc<dyn EventStore>) -> Arc<GuardedStore> {
        Arc::new(GuardedStore { inner: store })
    }

    // The calls of every command and every activation, as inherent methods: a caller that
    // holds the guard by its type awaits the backend's future under the guard directly, with
    // no boxed future of the guard's own around it (the `EventStore` impl below boxes, as every
    // `async_trait` impl does, and forwards to these).

    /// [`EventStore::append_command`], guarded: made during the call when the store can
    /// ([`EventStore::append_command_now`]: the in-memory store), so that the future only
    /// hands the outcome over and the store makes no boxed future; else the store's future.
    pub(crate) fn append_command<'a>(
        &'a self,
        stream: &'a str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        command: NewCommand,
    ) -> Call<'a, Appended> {
        match self.append_command_now(stream, expected, events, command) {
            AppendNow::Made(outcome) => Call::made(outcome),
            AppendNow::Later { events, command } => {
                let call = self.inner.append_command(stream, expected, events, command);
                Call::later("append_command", call)
            }
        }
    }

    /// [`EventStore::append_command_now`], guarded.
    fn append_command_now(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        command: NewCommand,
    ) -> AppendNow {
        guard_now(
            "append_command_now",
            || {
                self.inner
                    .append_command_now(stream, expected, events, command)
            },
            |error| AppendNow::Made(Err(error)),
        )
    }

    /// [`EventStore::read_stream`], guarded.
    pub(crate) fn read_stream<'a>(
        &'a self,
        stream: &'a str,
        from: u64,
        direction: Direction,
        max_count: usize,
    ) -> impl Future<Output = Result<Vec<Arc<RecordedEvent>>, StoreError>> + Send + 'a {
        let call = self.inner.read_stream(stream, from, direction, max_count);
        guard("read_stream", call)
    }

    /// [`EventStore::load_snapshot`], guarded.
    pub(crate) fn load_snapshot<'a>(
        &'a self,
        stream: &'a str,
    ) -> impl Future<Output = Result<Option<Snapshot>, StoreError>> + Send + 'a {
        guard("load_snapshot", self.inner.load_snapshot(stream))
    }

    /// [`EventStore::read_from_snapshot`], guarded: answered during the call when the store
    /// can ([`EventStore::read_from_snapshot_now`]: the in-memory store), with no boxed
    /// future of the store's; else the store's future.
    pub(crate) fn read_from_snapshot<'a>(
        &'a self,
        stream: &'a str,
        max_count: usize,
    ) -> Call<'a, SnapshotAndEvents> {
        match self.read_from_snapshot_now(stream, max_count) {
            Some(outcome) => Call::made(outcome),
            None => {
                let call = self.inner.read_from_snapshot(stream, max_count);
                Call::later("read_from_snapshot", call)
            }
        }
    }

    /// [`EventStore::read_from_snapshot_now`], guarded.
    fn read_from_snapshot_now(
        &self,
        stream: &str,
        max_count: usize,
    ) -> Option<Result<SnapshotAndEvents, StoreError>> {
        guard_now(
            "read_from_snapshot_now",
            || self.inner.read_from_snapshot_now(stream, max_count),
            |error| Some(Err(error)),
        )
    }
}

/// The boxed future of a call through `dyn EventStore`.
type BoxedCall<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// The future of a guarded call that the store may answer during the call
/// ([`GuardedStore::append_command`], which every command awaits, and
/// [`GuardedStore::read_from_snapshot`]): the outcome then, or the store's future, its panics
/// caught. Small, since every command's future holds it: a made call's error is boxed (a
/// [`StoreError`] takes 112 bytes; a conflict or a duplicate is rare).
pub(crate) enum Call<'a, T> {
    /// Answered during the call.
    Made(std::future::Ready<Result<T, Box<StoreError>>>),
    /// The store's future, and the call's name for a panic's error.
    Later(&'static str, CatchPanic<BoxedCall<'a, T>>),
}

impl<'a, T> Call<'a, T> {
    /// The call answered with `outcome`.
    fn made(outcome: Result<T, StoreError>) -> Self {
        Call::Made(std::future::ready(outcome.map_err(Box::new)))
    }

    /// The call `name` still to be awaited through the store's future `call`.
    fn later(name: &'static str, call: BoxedCall<'a, T>) -> Self {
        Call::Later(name, CatchPanic::new(call))
    }
}

impl<T> Future for Call<'_, T> {
    type Output = Result<T, StoreError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Call::Made(outcome) => Pin::new(outcome).poll(cx).map_err(|error| *error),
            Call::Later(name, call) => Pin::new(call).poll(cx).map(|caught| outcome(name, caught)),
        }
    }
}

/// The error of a call that panicked.
fn panicked(call: &str, message: &str) -> StoreError {
    StoreError::Backend {
        backend: "panic",
        message: format!("the event store panicked in `{call}`: {message}"),
    }
}

/// Runs `call`, a panic while it runs turned into an error.
async fn guard<T>(
    name: &str,
    call: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    outcome(name, CatchPanic::new(call).await)
}

/// Runs the call `name`, made during the call (no future): a panic while it runs becomes the
/// error `answer` turns into its result.
fn guard_now<T>(name: &str, call: impl FnOnce() -> T, answer: impl FnOnce(StoreError) -> T) -> T {
    catch_unwind(AssertUnwindSafe(call))
        .unwrap_or_else(|panic| answer(panicked(name, &panic_message(&*panic))))
}

/// The outcome of the call `name` run under [`CatchPanic`]: its panic as an error.
fn outcome<T>(name: &str, caught: Result<Result<T, StoreError>, Panic>) -> Result<T, StoreError> {
    caught.unwrap_or_else(|panic| Err(panicked(name, &panic_message(&*panic))))
}

#[async_trait]
impl EventStore for GuardedStore {
    async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Appended, StoreError> {
        guard("append", self.inner.append(stream, expected, events)).await
    }

    async fn append_command(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        command: NewCommand,
    ) -> Result<Appended, StoreError> {
        GuardedStore::append_command(self, stream, expected, events, command).await
    }

    fn append_command_now(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        command: NewCommand,
    ) -> AppendNow {
        GuardedStore::append_command_now(self, stream, expected, events, command)
    }

    async fn find_command(
        &self,
        lookup: CommandLookup<'_>,
        since: SystemTime,
    ) -> Result<Option<CommandRecord>, StoreError> {
        guard("find_command", self.inner.find_command(lookup, since)).await
    }

    async fn sweep_commands(&self, before: SystemTime, limit: usize) -> Result<usize, StoreError> {
        guard("sweep_commands", self.inner.sweep_commands(before, limit)).await
    }

    fn is_shared(&self) -> bool {
        // A store that cannot say is treated as shared: the safe answer.
        catch_unwind(AssertUnwindSafe(|| self.inner.is_shared())).unwrap_or(true)
    }

    async fn read_stream(
        &self,
        stream: &str,
        from: u64,
        direction: Direction,
        max_count: usize,
    ) -> Result<Vec<Arc<RecordedEvent>>, StoreError> {
        GuardedStore::read_stream(self, stream, from, direction, max_count).await
    }

    async fn stream_version(&self, stream: &str) -> Result<u64, StoreError> {
        guard("stream_version", self.inner.stream_version(stream)).await
    }

    async fn read_all(
        &self,
        after: u64,
        max_count: usize,
        filter: &EventFilter,
    ) -> Result<AllPage, StoreError> {
        guard("read_all", self.inner.read_all(after, max_count, filter)).await
    }

    async fn read_query(
        &self,
        query: &EventQuery,
        after: u64,
        max_count: usize,
    ) -> Result<AllPage, StoreError> {
        guard("read_query", self.inner.read_query(query, after, max_count)).await
    }

    async fn append_if(
        &self,
        stream: &str,
        events: Vec<NewEvent>,
        condition: &AppendCondition,
        command: Option<NewCommand>,
    ) -> Result<Appended, StoreError> {
        let call = self.inner.append_if(stream, events, condition, command);
        guard("append_if", call).await
    }

    fn head(&self) -> watch::Receiver<u64> {
        // No error to return here: a store whose head panics cannot be read at all.
        self.inner.head()
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        guard("save_snapshot", self.inner.save_snapshot(snapshot)).await
    }

    async fn load_snapshot(&self, stream: &str) -> Result<Option<Snapshot>, StoreError> {
        GuardedStore::load_snapshot(self, stream).await
    }

    async fn read_from_snapshot(
        &self,
        stream: &str,
        max_count: usize,
    ) -> Result<SnapshotAndEvents, StoreError> {
        GuardedStore::read_from_snapshot(self, stream, max_count).await
    }

    fn read_from_snapshot_now(
        &self,
        stream: &str,
        max_count: usize,
    ) -> Option<Result<SnapshotAndEvents, StoreError>> {
        GuardedStore::read_from_snapshot_now(self, stream, max_count)
    }

    async fn save_checkpoint(&self, name: &str, position: u64) -> Result<(), StoreError> {
        guard(
            "save_checkpoint",
            self.inner.save_checkpoint(name, position),
        )
        .await
    }

    async fn load_checkpoint(&self, name: &str) -> Result<Option<u64>, StoreError> {
        guard("load_checkpoint", self.inner.load_checkpoint(name)).await
    }

    async fn save_dead_letter(&self, entry: DeadLetter) -> Result<(), StoreError> {
        guard("save_dead_letter", self.inner.save_dead_letter(entry)).await
    }

    async fn list_dead_letters(
        &self,
        handler: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let call = self.inner.list_dead_letters(handler, after, limit);
        guard("list_dead_letters", call).await
    }

    async fn load_dead_letter(
        &self,
        handler: &str,
        event_id: Uuid,
    ) -> Result<Option<DeadLetter>, StoreError> {
        guard(
            "load_dead_letter",
            self.inner.load_dead_letter(handler, event_id),
        )
        .await
    }

    async fn delete_dead_letter(&self, handler: &str, event_id: Uuid) -> Result<bool, StoreError> {
        let call = self.inner.delete_dead_letter(handler, event_id);
        guard("delete_dead_letter", call).await
    }

    async fn save_request(&self, request: HandlerRequest) -> Result<(), StoreError> {
        guard("save_request", self.inner.save_request(request)).await
    }

    async fn list_requests(
        &self,
        handler: &str,
        limit: usize,
    ) -> Result<Vec<HandlerRequest>, StoreError> {
        guard("list_requests", self.inner.list_requests(handler, limit)).await
    }

    async fn count_requests(&self) -> Result<Vec<(String, u64)>, StoreError> {
        guard("count_requests", self.inner.count_requests()).await
    }

    async fn load_request(
        &self,
        handler: &str,
        id: Uuid,
    ) -> Result<Option<HandlerRequest>, StoreError> {
        guard("load_request", self.inner.load_request(handler, id)).await
    }

    async fn delete_request(&self, handler: &str, id: Uuid) -> Result<bool, StoreError> {
        guard("delete_request", self.inner.delete_request(handler, id)).await
    }

    async fn save_saga_state(
        &self,
        saga: &str,
        instance: &str,
        state: Vec<u8>,
    ) -> Result<(), StoreError> {
        let call = self.inner.save_saga_state(saga, instance, state);
        guard("save_saga_state", call).await
    }

    async fn load_saga_state(
        &self,
        saga: &str,
        instance: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        guard(
            "load_saga_state",
            self.inner.load_saga_state(saga, instance),
        )
        .await
    }

    async fn delete_saga_state(&self, saga: &str, instance: &str) -> Result<bool, StoreError> {
        let call = self.inner.delete_saga_state(saga, instance);
        guard("delete_saga_state", call).await
    }

    async fn list_saga_instances(
        &self,
        saga: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let call = self.inner.list_saga_instances(saga, after, limit);
        guard("list_saga_instances", call).await
    }

    async fn schedule_timeout(&self, timeout: Timeout) -> Result<(), StoreError> {
        guard("schedule_timeout", self.inner.schedule_timeout(timeout)).await
    }

    async fn due_timeouts(
        &self,
        saga: &str,
        now: SystemTime,
        limit: usize,
    ) -> Result<Vec<Timeout>, StoreError> {
        guard("due_timeouts", self.inner.due_timeouts(saga, now, limit)).await
    }

    async fn next_timeout(&self, saga: &str) -> Result<Option<SystemTime>, StoreError> {
        guard("next_timeout", self.inner.next_timeout(saga)).await
    }

    async fn delete_timeout(&self, saga: &str, id: Uuid) -> Result<bool, StoreError> {
        guard("delete_timeout", self.inner.delete_timeout(saga, id)).await
    }

    async fn cancel_timeouts(&self, saga: &str, instance: &str) -> Result<usize, StoreError> {
        guard(
            "cancel_timeouts",
            self.inner.cancel_timeouts(saga, instance),
        )
        .await
    }

    async fn flush(&self) -> Result<(), StoreError> {
        guard("flush", self.inner.flush()).await
    }

    async fn try_lease(&self, name: &str) -> Result<Option<Lease>, StoreError> {
        guard("try_lease", self.inner.try_lease(name)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store whose every call panics, but `stream_version`, and `append_command_now` and
    /// `read_from_snapshot_now`, which do as [`Now`] says.
    struct Panicky(watch::Sender<u64>, Now);

    /// What [`Panicky`]'s calls at once do.
    #[derive(Clone, Copy, PartialEq)]
    enum Now {
        /// Panics.
        Panic,
        /// Gives the append back and does not read, as the defaults do.
        GiveBack,
        /// Makes the append (version 1 of a new stream, else a conflict at version 1), and
        /// reads nothing.
        Make,
    }

    /// The guard around a [`Panicky`] store whose calls at once do as `now` says.
    fn guarded(now: Now) -> Arc<GuardedStore> {
        GuardedStore::wrap(Arc::new(Panicky(watch::channel(0).0, now)))
    }

    /// Whether `error` is the guard's error for a panic (`injected`) in the call `call`
    /// (written with its backquotes).
    fn is_panic_in(error: &StoreError, call: &str) -> bool {
        matches!(error, StoreError::Backend { message, .. }
            if message.contains(call) && message.contains("injected"))
    }

    #[tokio::test]
    async fn a_panicking_call_is_an_error_naming_the_call_and_the_panic() {
        let store = guarded(Now::Panic);
        let error = store
            .read_all(0, 10, &EventFilter::All)
            .await
            .expect_err("the panic is an error");
        assert!(is_panic_in(&error, "`read_all`"), "{error}");
        assert_eq!(
            store.stream_version("s").await.ok(),
            Some(0),
            "other calls work"
        );
    }

    /// An event and the command that opens account `Account-a` (the event carries `n`).
    fn opened(n: u64) -> (Vec<NewEvent>, NewCommand) {
        let event = NewEvent {
            event_id: Uuid::now_v7(),
            event_type: "Opened".into(),
            schema_version: 1,
            data: format!("{{\"n\":{n}}}").into_bytes(),
            metadata: Default::default(),
        };
        let command = NewCommand {
            command_id: Uuid::now_v7(),
            idempotency_key: None,
            command: "Open".into(),
            aggregate: "Account".into(),
            deduplicate_since: None,
        };
        (vec![event], command)
    }

    /// The guard's `append_command` of [`opened`]`(n)` at `expected`.
    async fn open(
        store: &GuardedStore,
        expected: ExpectedVersion,
        n: u64,
    ) -> Result<Appended, StoreError> {
        let (events, command) = opened(n);
        store
            .append_command("Account-a", expected, events, command)
            .await
    }

    #[tokio::test]
    async fn an_append_at_once_goes_through_the_guard_and_its_panic_is_an_error() {
        let making = guarded(Now::Make);
        let (events, command) = opened(1);
        let made = EventStore::append_command_now(
            &*making,
            "Account-a",
            ExpectedVersion::NoStream,
            events,
            command,
        );
        assert!(
            matches!(made, AppendNow::Made(Ok(Appended { version: 1, .. }))),
            "a store's append at once comes through the guard: {made:?}"
        );
        let appended = open(&making, ExpectedVersion::NoStream, 1).await;
        assert_eq!(
            appended.ok().map(|a| a.version),
            Some(1),
            "and through the guard's future, which never calls the store's"
        );
        let conflict = open(&making, ExpectedVersion::Exact(3), 2).await;
        assert!(
            matches!(
                conflict,
                Err(StoreError::WrongExpectedVersion { actual: 1, .. })
            ),
            "a made append's error comes through: {conflict:?}"
        );

        let error = open(&guarded(Now::Panic), ExpectedVersion::NoStream, 1)
            .await
            .expect_err("the panic is an error");
        assert!(is_panic_in(&error, "`append_command_now`"), "{error}");
        let error = open(&guarded(Now::GiveBack), ExpectedVersion::NoStream, 1)
            .await
            .expect_err("the panic of the store's future is an error");
        assert!(is_panic_in(&error, "`append_command`"), "{error}");
    }

    #[tokio::test]
    async fn a_read_at_once_goes_through_the_guard_and_its_panic_is_an_error() {
        let read = guarded(Now::Make).read_from_snapshot("Account-a", 10).await;
        assert_eq!(
            read.ok(),
            Some(SnapshotAndEvents::default()),
            "the store's answer at once, through the guard's future"
        );
        for (now, call) in [
            (Now::Panic, "`read_from_snapshot_now`"),
            // Not at once: the default `read_from_snapshot`, whose `load_snapshot` panics.
            (Now::GiveBack, "`read_from_snapshot`"),
        ] {
            let error = guarded(now)
                .read_from_snapshot("Account-a", 10)
                .await
                .expect_err("the panic is an error");
            assert!(is_panic_in(&error, call), "{error}");
        }
    }

    #[async_trait]
    #[allow(unused_variables)]
    impl EventStore for Panicky {
        fn read_from_snapshot_now(
            &self,
            stream: &str,
            max_count: usize,
        ) -> Option<Result<SnapshotAndEvents, StoreError>> {
            match self.1 {
                Now::Panic => panic!("injected"),
                Now::GiveBack => None,
                Now::Make => Some(Ok(SnapshotAndEvents::default())),
            }
        }
        fn append_command_now(
            &self,
            stream: &str,
            expected: ExpectedVersion,
            events: Vec<NewEvent>,
            command: NewCommand,
        ) -> AppendNow {
            match self.1 {
                Now::Panic => panic!("injected"),
                Now::GiveBack => AppendNow::Later { events, command },
                Now::Make if expected == ExpectedVersion::NoStream => {
                    AppendNow::Made(Ok(Appended {
                        version: 1,
                        first_position: 1,
                        last_position: 1,
                    }))
                }
                Now::Make => AppendNow::Made(Err(StoreError::WrongExpectedVersion {
                    stream: stream.to_owned(),
                    expected,
                    actual: 1,
                })),
            }
        }
        async fn append(
            &self,
            stream: &str,
            expected: ExpectedVersion,
            events: Vec<NewEvent>,
        ) -> Result<Appended, StoreError> {
            panic!("injected")
        }
        async fn append_command(
            &self,
            stream: &str,
            expected: ExpectedVersion,
            events: Vec<NewEvent>,
            command: NewCommand,
        ) -> Result<Appended, StoreError> {
            panic!("injected")
        }
        async fn find_command(
            &self,
            lookup: CommandLookup<'_>,
            since: SystemTime,
        ) -> Result<Option<CommandRecord>, StoreError> {
            panic!("injected")
        }
        async fn sweep_commands(
            &self,
            before: SystemTime,
            limit: usize,
        ) -> Result<usize, StoreError> {
            panic!("injected")
        }
        async fn read_stream(
            &self,
            stream: &str,
            from: u64,
            direction: Direction,
            max_count: usize,
        ) -> Result<Vec<Arc<RecordedEvent>>, StoreError> {
            panic!("injected")
        }
        async fn stream_version(&self, _: &str) -> Result<u64, StoreError> {
            Ok(0)
        }
        async fn read_all(&self, _: u64, _: usize, _: &EventFilter) -> Result<AllPage, StoreError> {
            panic!("injected");
        }
        fn head(&self) -> watch::Receiver<u64> {
            self.0.subscribe()
        }
        async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
            panic!("injected")
        }
        async fn load_snapshot(&self, stream: &str) -> Result<Option<Snapshot>, StoreError> {
            panic!("injected")
        }
        async fn save_checkpoint(&self, name: &str, position: u64) -> Result<(), StoreError> {
            panic!("injected")
        }
        async fn load_checkpoint(&self, name: &str) -> Result<Option<u64>, StoreError> {
            panic!("injected")
        }
        async fn save_dead_letter(&self, entry: DeadLetter) -> Result<(), StoreError> {
            panic!("injected")
        }
        async fn list_dead_letters(
            &self,
            handler: &str,
            after: u64,
            limit: usize,
        ) -> Result<Vec<DeadLetter>, StoreError> {
            panic!("injected")
        }
        async fn load_dead_letter(
            &self,
            handler: &str,
            event_id: Uuid,
        ) -> Result<Option<DeadLetter>, StoreError> {
            panic!("injected")
        }
        async fn delete_dead_letter(
            &self,
            handler: &str,
            event_id: Uuid,
        ) -> Result<bool, StoreError> {
            panic!("injected")
        }
        async fn save_request(&self, request: HandlerRequest) -> Result<(), StoreError> {
            panic!("injected")
        }
        async fn list_requests(
            &self,
            handler: &str,
            limit: usize,
        ) -> Result<Vec<HandlerRequest>, StoreError> {
            panic!("injected")
        }
        async fn load_request(
            &self,
            handler: &str,
            id: Uuid,
        ) -> Result<Option<HandlerRequest>, StoreError> {
            panic!("injected")
        }
        async fn delete_request(&self, handler: &str, id: Uuid) -> Result<bool, StoreError> {
            panic!("injected")
        }
        async fn save_saga_state(
            &self,
            saga: &str,
            instance: &str,
            state: Vec<u8>,
        ) -> Result<(), StoreError> {
            panic!("injected")
        }
        async fn load_saga_state(
            &self,
            saga: &str,
            instance: &str,
        ) -> Result<Option<Vec<u8>>, StoreError> {
            panic!("injected")
        }
        async fn delete_saga_state(&self, saga: &str, instance: &str) -> Result<bool, StoreError> {
            panic!("injected")
        }
        async fn list_saga_instances(
            &self,
            saga: &str,
            after: Option<&str>,
            limit: usize,
        ) -> Result<Vec<String>, StoreError> {
            panic!("injected")
        }
        async fn schedule_timeout(&self, timeout: Timeout) -> Result<(), StoreError> {
            panic!("injected")
        }
        async fn due_timeouts(
            &self,
            saga: &str,
            now: SystemTime,
            limit: usize,
        ) -> Result<Vec<Timeout>, StoreError> {
            panic!("injected")
        }
        async fn next_timeout(&self, saga: &str) -> Result<Option<SystemTime>, StoreError> {
            panic!("injected")
        }
        async fn delete_timeout(&self, saga: &str, id: Uuid) -> Result<bool, StoreError> {
            panic!("injected")
        }
        async fn cancel_timeouts(&self, saga: &str, instance: &str) -> Result<usize, StoreError> {
            panic!("injected")
        }
    }
}
