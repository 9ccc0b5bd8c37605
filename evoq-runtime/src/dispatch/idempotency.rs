//! Idempotency: a duplicate command returns the first successful result and runs nothing
//! (docs/semantics.md §3).
//!
//! # The key
//!
//! A dispatch is deduplicated by its idempotency key
//! ([`CommandBuilder::idempotency_key`](crate::CommandBuilder::idempotency_key)) when it has one,
//! else by its command id **when the caller supplied it**
//! ([`CommandBuilder::command_id`](crate::CommandBuilder::command_id)). A command id the runtime
//! generates is a fresh UUID v7 that no other dispatch can carry, so such a dispatch can never be a
//! duplicate: it skips the cache entirely (no lookup, no entry, no allocation), which keeps the
//! cache's memory for the dispatches that can repeat and the plain `app.dispatch(cmd)` path lean.
//! Keys and command ids are separate key spaces.
//!
//! # The window and the memory bound
//!
//! A result is remembered for [`Config::idempotency_ttl`](crate::Config::idempotency_ttl)
//! (default 1 h) after the command completed, and at most
//! [`Config::idempotency_capacity`](crate::Config::idempotency_capacity) results are kept
//! (default 100,000). The cache is one concurrent map from key to slot (a [`DashMap`]: shards
//! behind read-write locks, so dispatches of different keys rarely wait for each other) and one
//! list of the remembered results, oldest first, behind a mutex that only remembering a result
//! takes; no lock is held across an `.await`. Before a result is remembered, the expired ones
//! are dropped, and the oldest ones while the cache is full, so it never holds more than the
//! capacity. An expired result that a dispatch finds before then counts as absent: the dispatch
//! runs, and its result replaces the expired one.
//! [`Evoq::idempotency_entries`](crate::Evoq::idempotency_entries) tells how many results are
//! remembered (expired ones not yet dropped included).
//!
//! # What is remembered
//!
//! Only successes: the result the aggregate returned (version, events, position, command id), as
//! soon as its events are stored and before the after-stage middleware run. A duplicate gets a
//! clone of it without running any middleware or touching the aggregate. (If an
//! `after_dispatch` middleware replaced the first caller's response with an error, duplicates still
//! get the stored result: the events are in the store, and running the command again would append
//! them twice.) Errors are not remembered: a retry after a failure runs.
//!
//! A key reused for a different command type or a different aggregate is answered with
//! [`Error::IdempotencyKeyReused`], never with another command's result.
//!
//! # Concurrent duplicates
//!
//! The first dispatch of a key takes an in-flight slot and runs; duplicates that arrive meanwhile
//! wait for it (within their own timeout). When it succeeds they all get its result. When it fails
//! (or its caller gives up before the job reaches the aggregate), the slot is released and the
//! waiters race for it again: exactly one of them runs its own copy of the command next, and the
//! others wait for that one. So waiters never receive an error they did not cause, and a command
//! never runs twice at the same time for one key.
//!
//! When a keyed dispatch times out after its job reached the aggregate, the slot is not released:
//! the job keeps running (a keyed command is safe to complete after its caller left), and a retry
//! with the same key waits for it and gets its result instead of running the command a second time.
//! (A caller that drops the dispatch future itself, instead of letting the timeout fire, releases
//! the key at once: prefer the dispatch's `timeout` to an outer cancellation for keyed commands.)
//!
//! # Across restarts and nodes: the command log
//!
//! The cache lives in memory; the store's command log does not. Every successful command is
//! recorded in the store in the same transaction as its events (see
//! [`EventStore::append_command`](crate::store::EventStore::append_command)): its id, its key,
//! the command, the aggregate, the versions and positions of its events. A command that may be
//! a resend (it has a key, or the caller chose its id) is recorded even when it appended
//! nothing. When such a dispatch misses the cache, its leader looks the key (else the command
//! id) up in the log before any middleware runs; an entry means the command already ran
//! (before a restart, on another node, or too long ago for the cache): the dispatch appends
//! nothing and returns the first result (the events read back from the stream through their
//! upcasters, the version and position of the last one, the first run's command id), which it
//! also remembers. However long the stream has grown since makes no difference.
//!
//! Between that lookup and the append, another runtime sharing the store may run the same
//! command: the append itself checks the log (in the store's transaction, before the expected
//! version), so the second run appends nothing and returns the first result too. On such a
//! store a rejection of a keyed command is also checked against the log before it is returned.
//!
//! An entry answers for [`Config::command_log_retention`](crate::Config::command_log_retention)
//! (default 7 days): after that it counts as absent, the command runs again, and a sweep
//! removes old entries in bounded batches every
//! [`Config::command_log_sweep_interval`](crate::Config::command_log_sweep_interval) (or at once
//! with [`Evoq::sweep_command_log`](crate::Evoq::sweep_command_log)). The cache never answers
//! for longer than the retention either.

use std::any::{Any, TypeId};
use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use dashmap::DashMap;
use dashmap::mapref::entry::Entry as MapEntry;
use tokio::sync::watch;
use tokio::time::Instant;
use uuid::Uuid;

use crate::aggregate::Aggregate;
use crate::aggregate::command::Route;
use crate::aggregate::context::Dispatched;
use crate::error::Error;
use crate::store::CommandLookup;

/// What a dispatch is deduplicated by.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) enum Key {
    /// A caller's idempotency key.
    Idempotency(Arc<str>),
    /// A caller-supplied command id.
    CommandId(Uuid),
}

impl Key {
    /// How the command log finds the command of this key.
    pub(crate) fn lookup(&self) -> CommandLookup<'_> {
        match self {
            Key::Idempotency(key) => CommandLookup::Key(key),
            Key::CommandId(id) => CommandLookup::Id(*id),
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Idempotency(key) => f.write_str(key),
            Key::CommandId(id) => write!(f, "command id {id}"),
        }
    }
}

/// A remembered success.
struct Entry {
    command: TypeId,
    command_name: &'static str,
    /// The command's aggregate type (or decision).
    aggregate: &'static str,
    aggregate_id: String,
    /// A `Dispatched<A>` of the command's aggregate.
    result: Box<dyn Any + Send + Sync>,
    /// When the command completed: the entry expires `ttl` later.
    at: Instant,
}

/// The state of one key. Every slot has a generation of its own, so that a record of the order,
/// or a claim, only ever touches the slot it was made for.
enum Slot {
    /// A dispatch of this key is running; the receiver sees its sender dropped when it ends.
    InFlight {
        generation: u64,
        done: watch::Receiver<()>,
    },
    /// The first success, remembered until `entry.at + ttl`.
    Done { generation: u64, entry: Arc<Entry> },
}

/// A remembered success in the order: (key, generation of its `Done` slot, completed at).
type Record = (Key, u64, Instant);

/// The idempotency cache of one runtime. See the [module docs](self).
///
/// Lock order: `order`, then a shard of `slots`; never `order` while a shard's guard is held.
pub(crate) struct Idempotency {
    /// Each key's slot: a dispatch in flight, or its remembered success.
    slots: DashMap<Key, Slot>,
    /// The remembered successes, oldest first. May hold stale records of slots replaced since
    /// (an expired success that a dispatch claimed again); they are skipped when popped. Every
    /// `Done` slot has its record here, so there are never more `Done` slots than records.
    order: Mutex<VecDeque<Record>>,
    /// The last generation given to a slot.
    generation: AtomicU64,
    ttl: Duration,
    /// The most successes kept (at least 1).
    capacity: usize,
}

/// The outcome of [`Idempotency::acquire`].
pub(crate) enum Acquired<A: Aggregate> {
    /// A remembered success: return it, run nothing.
    Hit(Dispatched<A>),
    /// This dispatch runs the command; the others wait for the claim to end.
    Lead(Claim),
}

/// What a dispatch finds in the slot of its key.
enum Found {
    /// A remembered success, not expired.
    Done(Arc<Entry>),
    /// Another dispatch runs: wait until its sender is dropped.
    InFlight(watch::Receiver<()>),
    /// Nothing (or an expired success): this dispatch put its in-flight slot of this generation
    /// there, and holds the sender that wakes the waiters.
    Claimed(u64, watch::Sender<()>),
}

impl Idempotency {
    pub(crate) fn new(ttl: Duration, capacity: usize) -> Self {
        Idempotency {
            slots: DashMap::new(),
            order: Mutex::default(),
            generation: AtomicU64::new(0),
            ttl,
            capacity: capacity.max(1),
        }
    }

    /// How many successes are remembered (expired ones not yet dropped included).
    pub(crate) fn len(&self) -> usize {
        self.slots
            .iter()
            .filter(|slot| matches!(slot.value(), Slot::Done { .. }))
            .count()
    }

    /// The remembered result of `key`, or the claim to run the command; waits while another
    /// dispatch of `key` runs.
    pub(crate) async fn acquire<C: Route>(
        self: &Arc<Self>,
        key: Key,
        aggregate_id: &str,
    ) -> Result<Acquired<C::Aggregate>, Error> {
        loop {
            let mut done = match self.find_or_claim(&key) {
                Found::Done(entry) => {
                    tracing::debug!(
                        name: "evoq.idempotency.hit",
                        key = %key,
                        command = C::NAME,
                        source = "memory",
                        "evoq.idempotency.hit",
                    );
                    return answer::<C>(&entry, &key, aggregate_id).map(Acquired::Hit);
                }
                Found::InFlight(done) => done,
                Found::Claimed(generation, sender) => {
                    return Ok(Acquired::Lead(Claim {
                        cache: Arc::clone(self),
                        key,
                        generation,
                        command: TypeId::of::<C>(),
                        command_name: C::NAME,
                        aggregate_id: aggregate_id.to_owned(),
                        completed: false,
                        _running: sender,
                    }));
                }
            };
            tracing::debug!(
                name: "evoq.idempotency.wait",
                key = %key,
                command = C::NAME,
                "evoq.idempotency.wait",
            );
            // The sender never sends: this returns when the running dispatch's claim ends.
            let _ = done.changed().await;
        }
    }

    /// What the slot of `key` holds; when nothing (or an expired success), an in-flight slot of
    /// this caller's, put there under the same lock.
    fn find_or_claim(&self, key: &Key) -> Found {
        let now = Instant::now();
        // The common cases under the shard's read lock: a remembered success, or one running.
        if let Some(found) = self.slots.get(key).and_then(|slot| self.live(&slot, now)) {
            return found;
        }
        // Nothing there, or an expired success (it counts as absent; its record in the order is
        // stale from now): claim the key under the write lock, unless another dispatch did since.
        let entry = self.slots.entry(key.clone());
        if let MapEntry::Occupied(occupied) = &entry
            && let Some(found) = self.live(occupied.get(), now)
        {
            return found;
        }
        let generation = self.next_generation();
        let (sender, done) = watch::channel(());
        entry.insert(Slot::InFlight { generation, done });
        Found::Claimed(generation, sender)
    }

    /// What a slot answers at `now`: a success not expired, or a running dispatch; `None` for an
    /// expired success.
    fn live(&self, slot: &Slot, now: Instant) -> Option<Found> {
        match slot {
            Slot::Done { entry, .. } if !self.expired(entry.at, now) => {
                Some(Found::Done(Arc::clone(entry)))
            }
            Slot::InFlight { done, .. } => Some(Found::InFlight(done.clone())),
            Slot::Done { .. } => None,
        }
    }

    /// Remembers `entry` as the success of `key`, the newest, after dropping the expired
    /// successes and the oldest ones beyond room for it.
    fn remember(&self, key: Key, entry: impl FnOnce(Instant) -> Entry) {
        let mut order = self.order();
        // Stamped under the order's lock, so the order is oldest first.
        let at = Instant::now();
        let entry = Arc::new(entry(at));
        self.evict(&mut order, at, self.capacity - 1);
        let generation = self.next_generation();
        self.slots
            .insert(key.clone(), Slot::Done { generation, entry });
        order.push_back((key, generation, at));
    }

    /// Drops the expired successes, and the oldest ones until at most `keep` records are left.
    /// A stale record (its slot replaced since) is dropped alone: it never removes a newer slot.
    fn evict(&self, order: &mut VecDeque<Record>, now: Instant, keep: usize) {
        while let Some((_, _, at)) = order.front() {
            if !self.expired(*at, now) && order.len() <= keep {
                break;
            }
            let Some((key, generation, _)) = order.pop_front() else {
                break;
            };
            self.slots.remove_if(
                &key,
                |_, slot| matches!(slot, Slot::Done { generation: g, .. } if *g == generation),
            );
        }
    }

    /// Whether a success completed `at` is past its window at `now`.
    fn expired(&self, at: Instant, now: Instant) -> bool {
        now.saturating_duration_since(at) >= self.ttl
    }

    fn next_generation(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn order(&self) -> MutexGuard<'_, VecDeque<Record>> {
        // The order's invariants hold between statements: keep using it after a panic elsewhere.
        self.order.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The remembered result, if it answers this command.
fn answer<C: Route>(
    entry: &Entry,
    key: &Key,
    aggregate_id: &str,
) -> Result<Dispatched<C::Aggregate>, Error> {
    if entry.command == TypeId::of::<C>()
        && entry.aggregate_id == aggregate_id
        && let Some(done) = entry.result.downcast_ref::<Dispatched<C::Aggregate>>()
    {
        return Ok(done.clone());
    }
    Err(Error::IdempotencyKeyReused {
        key: key.to_string(),
        first_command: entry.command_name.to_owned(),
        first_aggregate: entry.aggregate.to_owned(),
        first_aggregate_id: entry.aggregate_id.clone(),
        command: C::NAME,
        aggregate: <C::Aggregate as Aggregate>::NAME,
        aggregate_id: aggregate_id.to_owned(),
    })
}

/// The right to run the command of one key. [`complete`](Claim::complete) remembers its
/// success; dropping it without completing releases the key (the next waiter runs). Either way
/// the waiters wake when it ends.
pub(crate) struct Claim {
    cache: Arc<Idempotency>,
    key: Key,
    generation: u64,
    command: TypeId,
    command_name: &'static str,
    aggregate_id: String,
    completed: bool,
    /// Dropped with the claim: wakes the waiters.
    _running: watch::Sender<()>,
}

impl Claim {
    /// Remembers `done` as the key's result.
    pub(crate) fn complete<A: Aggregate>(mut self, done: Dispatched<A>) {
        let (command, command_name) = (self.command, self.command_name);
        let aggregate_id = std::mem::take(&mut self.aggregate_id);
        // Replaces this claim's in-flight slot (nothing else removes or replaces it), before
        // the claim's sender is dropped and wakes the waiters.
        self.cache.remember(self.key.clone(), |at| Entry {
            command,
            command_name,
            aggregate: A::NAME,
            aggregate_id,
            result: Box::new(done),
            at,
        });
        self.completed = true;
    }

    /// The key, for telemetry.
    pub(crate) fn key(&self) -> &Key {
        &self.key
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if self.completed {
            return;
        }
        let generation = self.generation;
        self.cache.slots.remove_if(
            &self.key,
            |_, slot| matches!(slot, Slot::InFlight { generation: g, .. } if *g == generation),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::fixture::{Tiny, Touch};

    fn key(name: &str) -> Key {
        Key::Idempotency(Arc::from(name))
    }

    /// Runs a dispatch of `name` through the cache: the version it gets, remembered or new.
    async fn dispatch(cache: &Arc<Idempotency>, name: &str, version: u64) -> u64 {
        match cache.acquire::<Touch>(key(name), "c").await {
            Ok(Acquired::Hit(done)) => done.version,
            Ok(Acquired::Lead(claim)) => {
                claim.complete(Dispatched::<Tiny> {
                    version,
                    events: Vec::new(),
                    position: None,
                    token: 0,
                    command_id: Uuid::nil(),
                });
                version
            }
            Err(error) => panic!("{error}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_capacity_bounds_the_remembered_results_and_the_ttl_expires_them() {
        let zero = Idempotency::new(Duration::from_secs(1), 0);
        assert_eq!(zero.capacity, 1, "a capacity of 0 keeps one result");

        let ttl = Duration::from_secs(60);
        let cache = Arc::new(Idempotency::new(ttl, 2));
        assert_eq!(dispatch(&cache, "a", 1).await, 1);
        assert_eq!(dispatch(&cache, "b", 2).await, 2);
        assert_eq!(dispatch(&cache, "c", 3).await, 3); // evicts a, the oldest
        assert_eq!(cache.len(), 2);
        assert_eq!(dispatch(&cache, "b", 20).await, 2, "b is remembered");
        assert_eq!(dispatch(&cache, "c", 30).await, 3, "c is remembered");
        assert_eq!(
            dispatch(&cache, "a", 10).await,
            10,
            "a was evicted: it runs"
        );
        assert_eq!(cache.len(), 2, "and evicted b");
        assert_eq!(cache.order().len(), 2);

        // The clock is paused: c and a both completed at its start.
        tokio::time::advance(ttl - Duration::from_millis(1)).await;
        assert_eq!(dispatch(&cache, "c", 31).await, 3, "inside the window");
        tokio::time::advance(Duration::from_millis(1)).await;
        // Found expired: absent, so it runs; its result replaces the expired one.
        assert_eq!(dispatch(&cache, "c", 32).await, 32, "the window passed");
        assert_eq!(
            cache.order().len(),
            1,
            "remembering it dropped the expired records: c's stale one and a's"
        );
        assert_eq!(cache.len(), 1, "only the new c is left");
        assert_eq!(dispatch(&cache, "c", 33).await, 32);
        assert_eq!(dispatch(&cache, "a", 11).await, 11, "a expired");
    }

    fn done(cache: &Idempotency, name: &str, generation: u64, at: Instant) -> Record {
        let entry = Arc::new(Entry {
            command: TypeId::of::<()>(),
            command_name: "Test",
            aggregate: "Test",
            aggregate_id: String::new(),
            result: Box::new(()),
            at,
        });
        cache
            .slots
            .insert(key(name), Slot::Done { generation, entry });
        (key(name), generation, at)
    }

    #[test]
    fn eviction_drops_expired_and_oldest_entries_and_skips_stale_records() {
        let ttl = Duration::from_secs(60);
        let cache = Idempotency::new(ttl, 1);
        let start = Instant::now();
        let mut order: VecDeque<Record> = [(1, "a"), (2, "b"), (3, "c")]
            .into_iter()
            .map(|(generation, name)| done(&cache, name, generation, start))
            .collect();
        // "a" was replaced since: its record is stale and must not remove the new slot.
        cache.slots.insert(
            key("a"),
            Slot::InFlight {
                generation: 9,
                done: watch::channel(()).1,
            },
        );
        cache.evict(&mut order, start, cache.capacity);
        assert_eq!(order.len(), 1);
        assert!(
            cache.slots.contains_key(&key("a")),
            "a stale record skipped"
        );
        assert!(!cache.slots.contains_key(&key("b")), "the oldest evicted");
        assert!(cache.slots.contains_key(&key("c")));
        cache.evict(&mut order, start + ttl, cache.capacity);
        assert!(order.is_empty());
        assert!(!cache.slots.contains_key(&key("c")), "the expired evicted");
        assert_eq!(cache.len(), 0);
    }
}
