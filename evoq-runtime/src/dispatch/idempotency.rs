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
//! (default 100,000). The cache is split into shards (one per 4,096 entries of capacity, at most
//! 16), each behind its own lock that is never held across an `.await`; the capacity is split
//! evenly over the shards, and a full shard evicts its oldest entry first. Expired entries are
//! dropped whenever their shard is touched. [`Evoq::idempotency_entries`](crate::Evoq::idempotency_entries)
//! tells how many results are remembered.
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
//! # Across restarts
//!
//! The cache lives in memory. When a dispatch with a caller-supplied command id misses it, the
//! runtime reads the target stream backward, at most
//! [`Config::idempotency_lookback`](crate::Config::idempotency_lookback) events (default 100; 0
//! turns the lookup off), looking for events whose metadata carries that command id. If it finds
//! them, the command already ran (before a restart, on another node, or long enough ago to have
//! left the cache): the dispatch appends nothing and returns the stored result (the decoded
//! events, the version and global position of the last one) and remembers it. A command that
//! produced no events leaves nothing to find and runs again, as does one older than the lookback
//! window. Idempotency keys are not stored with events, so this lookup is by command id only.
//!
//! The lookup runs on the caller's side, after the cache and before any middleware, for two
//! reasons: a command found in the store is a duplicate like any other (no middleware, no
//! aggregate), and the aggregate actor stays a pure executor that needs no knowledge of keys. It
//! is race-free within a runtime because the dispatch holds the key's in-flight slot while it
//! looks. Its cost, one bounded backward read, is paid only by dispatches that supply their
//! command id and miss the cache (typically commands that sagas emit with deterministic ids).

use std::any::{Any, TypeId};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use uuid::Uuid;

use crate::aggregate::Aggregate;
use crate::aggregate::command::Route;
use crate::aggregate::context::Dispatched;
use crate::aggregate::replay::decode;
use crate::envelope::RecordedEvent;
use crate::error::Error;
use crate::store::{Direction, EventStore};
use crate::util::hash::fnv1a_64;

/// One shard per this many entries of capacity (at most [`MAX_SHARDS`]).
const ENTRIES_PER_SHARD: usize = 4_096;
/// The most shards the cache is split into.
const MAX_SHARDS: usize = 16;

/// What a dispatch is deduplicated by.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) enum Key {
    /// A caller's idempotency key.
    Idempotency(Arc<str>),
    /// A caller-supplied command id.
    CommandId(Uuid),
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Idempotency(key) => f.write_str(key),
            Key::CommandId(id) => write!(f, "command id {id}"),
        }
    }
}

impl Key {
    /// FNV-1a over the key's bytes, to pick a shard.
    fn shard_hash(&self) -> u64 {
        let bytes: &[u8] = match self {
            Key::Idempotency(key) => key.as_bytes(),
            Key::CommandId(id) => id.as_bytes(),
        };
        fnv1a_64(bytes.iter().copied())
    }
}

/// A remembered success.
struct Entry {
    command: TypeId,
    command_name: &'static str,
    aggregate_id: String,
    /// A `Dispatched<A>` of the command's aggregate.
    result: Box<dyn Any + Send + Sync>,
}

enum Slot {
    /// A dispatch of this key is running; the receiver sees its sender dropped when it ends.
    InFlight {
        generation: u64,
        done: watch::Receiver<()>,
    },
    /// The first success, remembered until `at + ttl`.
    Done { generation: u64, entry: Arc<Entry> },
}

#[derive(Default)]
struct Shard {
    slots: HashMap<Key, Slot>,
    /// The completed entries, oldest first: (key, generation, completed at). May hold stale
    /// records of keys since replaced; they are skipped when popped.
    order: VecDeque<(Key, u64, Instant)>,
    generation: u64,
}

impl Shard {
    /// Drops expired entries, and the oldest ones beyond `capacity`.
    fn evict(&mut self, now: Instant, ttl: Duration, capacity: usize) {
        while let Some((_, _, at)) = self.order.front() {
            let expired = now.saturating_duration_since(*at) >= ttl;
            if !expired && self.order.len() <= capacity {
                break;
            }
            let Some((key, generation, _)) = self.order.pop_front() else {
                break;
            };
            if matches!(self.slots.get(&key), Some(Slot::Done { generation: g, .. }) if *g == generation)
            {
                self.slots.remove(&key);
            }
        }
    }
}

/// The idempotency cache of one runtime. See the [module docs](self).
pub(crate) struct Idempotency {
    shards: Box<[Mutex<Shard>]>,
    ttl: Duration,
    shard_capacity: usize,
}

/// The outcome of [`Idempotency::acquire`].
pub(crate) enum Acquired<A: Aggregate> {
    /// A remembered success: return it, run nothing.
    Hit(Dispatched<A>),
    /// This dispatch runs the command; the others wait for the claim to end.
    Lead(Claim),
}

impl Idempotency {
    pub(crate) fn new(ttl: Duration, capacity: usize) -> Self {
        let capacity = capacity.max(1);
        let shards = (capacity / ENTRIES_PER_SHARD).clamp(1, MAX_SHARDS);
        Idempotency {
            shards: (0..shards).map(|_| Mutex::default()).collect(),
            ttl,
            shard_capacity: capacity.div_ceil(shards),
        }
    }

    /// How many successes are remembered (expired ones not yet dropped included).
    pub(crate) fn len(&self) -> usize {
        (0..self.shards.len())
            .map(|s| {
                let shard = self.lock(s);
                shard
                    .slots
                    .values()
                    .filter(|slot| matches!(slot, Slot::Done { .. }))
                    .count()
            })
            .sum()
    }

    /// The remembered result of `key`, or the claim to run the command; waits while another
    /// dispatch of `key` runs.
    pub(crate) async fn acquire<C: Route>(
        self: &Arc<Self>,
        key: Key,
        aggregate_id: &str,
    ) -> Result<Acquired<C::Aggregate>, Error> {
        let shard_index = (key.shard_hash() % self.shards.len() as u64) as usize;
        loop {
            let mut done = {
                let now = Instant::now();
                let mut shard = self.lock(shard_index);
                shard.evict(now, self.ttl, self.shard_capacity);
                match shard.slots.get(&key) {
                    Some(Slot::Done { entry, .. }) => {
                        let entry = Arc::clone(entry);
                        drop(shard);
                        tracing::debug!(
                            name: "evoq.idempotency.hit",
                            key = %key,
                            command = C::NAME,
                            source = "memory",
                        );
                        return answer::<C>(&entry, &key, aggregate_id).map(Acquired::Hit);
                    }
                    Some(Slot::InFlight { done, .. }) => done.clone(),
                    None => {
                        shard.generation += 1;
                        let generation = shard.generation;
                        let (sender, receiver) = watch::channel(());
                        shard.slots.insert(
                            key.clone(),
                            Slot::InFlight {
                                generation,
                                done: receiver,
                            },
                        );
                        return Ok(Acquired::Lead(Claim {
                            cache: Arc::clone(self),
                            shard: shard_index,
                            key,
                            generation,
                            command: TypeId::of::<C>(),
                            command_name: C::NAME,
                            aggregate_id: aggregate_id.to_owned(),
                            completed: false,
                            _running: sender,
                        }));
                    }
                }
            };
            tracing::debug!(
                name: "evoq.idempotency.wait",
                key = %key,
                command = C::NAME,
            );
            // The sender never sends: this returns when the running dispatch's claim ends.
            let _ = done.changed().await;
        }
    }

    fn lock(&self, shard: usize) -> MutexGuard<'_, Shard> {
        // A shard's invariants hold between statements: keep using it after a panic elsewhere.
        self.shards[shard]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
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
        first_command: entry.command_name,
        first_aggregate_id: entry.aggregate_id.clone(),
        command: C::NAME,
        aggregate_id: aggregate_id.to_owned(),
    })
}

/// The right to run the command of one key. [`complete`](Claim::complete) remembers its
/// success; dropping it without completing releases the key (the next waiter runs). Either way
/// the waiters wake when it ends.
pub(crate) struct Claim {
    cache: Arc<Idempotency>,
    shard: usize,
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
        let entry = Arc::new(Entry {
            command: self.command,
            command_name: self.command_name,
            aggregate_id: std::mem::take(&mut self.aggregate_id),
            result: Box::new(done),
        });
        let now = Instant::now();
        let cache = Arc::clone(&self.cache);
        let mut shard = cache.lock(self.shard);
        shard.generation += 1;
        let generation = shard.generation;
        shard
            .slots
            .insert(self.key.clone(), Slot::Done { generation, entry });
        shard.order.push_back((self.key.clone(), generation, now));
        shard.evict(now, cache.ttl, cache.shard_capacity);
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
        let mut shard = self.cache.lock(self.shard);
        if matches!(shard.slots.get(&self.key), Some(Slot::InFlight { generation, .. }) if *generation == self.generation)
        {
            shard.slots.remove(&self.key);
        }
    }
}

/// The result a command with id `command_id` already stored in `stream`, if its events are among
/// the stream's newest `lookback` events. See the [module docs](self#across-restarts).
pub(crate) async fn stored_result<A: Aggregate>(
    store: &dyn EventStore,
    stream: &str,
    command_id: Uuid,
    lookback: usize,
) -> Result<Option<Dispatched<A>>, Error> {
    if lookback == 0 {
        return Ok(None);
    }
    let mut page = store
        .read_stream(stream, u64::MAX, Direction::Backward, lookback)
        .await?;
    let ours = |event: &RecordedEvent| event.metadata.command_id == Some(command_id);
    let Some(newest) = page.iter().position(|event| ours(event)) else {
        return Ok(None);
    };
    // One command's events are one append: contiguous. Collect them newest first, reading
    // further back only while they continue past the page.
    let mut found: Vec<Arc<RecordedEvent>> = Vec::new();
    let mut start = newest;
    loop {
        let rest = &page[start..];
        let matching = rest.iter().take_while(|event| ours(event)).count();
        found.extend(rest[..matching].iter().cloned());
        let oldest = found.last().map_or(0, |event| event.stream_version);
        if matching < rest.len() || page.len() < lookback || oldest <= 1 {
            break;
        }
        page = store
            .read_stream(stream, oldest - 1, Direction::Backward, lookback)
            .await?;
        start = 0;
    }
    let Some(last) = found.first() else {
        return Ok(None);
    };
    let (version, position) = (last.stream_version, last.global_position);
    let events = found
        .iter()
        .rev()
        .map(|recorded| decode::<A>(recorded))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(Dispatched {
        version,
        events,
        position: Some(position),
        command_id,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_capacities_use_one_shard_and_large_ones_at_most_sixteen() {
        assert_eq!(Idempotency::new(Duration::from_secs(1), 2).shards.len(), 1);
        assert_eq!(
            Idempotency::new(Duration::from_secs(1), 0).shard_capacity,
            1
        );
        let large = Idempotency::new(Duration::from_secs(1), 100_000);
        assert_eq!(large.shards.len(), 16);
        assert_eq!(large.shard_capacity, 6_250);
    }

    #[test]
    fn eviction_drops_expired_and_oldest_entries_and_skips_stale_records() {
        let mut shard = Shard::default();
        let start = Instant::now();
        for (generation, name) in [(1, "a"), (2, "b"), (3, "c")] {
            let key = Key::Idempotency(Arc::from(name));
            shard.slots.insert(
                key.clone(),
                Slot::Done {
                    generation,
                    entry: Arc::new(Entry {
                        command: TypeId::of::<()>(),
                        command_name: "Test",
                        aggregate_id: String::new(),
                        result: Box::new(()),
                    }),
                },
            );
            shard.order.push_back((key, generation, start));
        }
        // "a" was replaced since: its record is stale and must not remove the new slot.
        shard.slots.insert(
            Key::Idempotency(Arc::from("a")),
            Slot::InFlight {
                generation: 9,
                done: watch::channel(()).1,
            },
        );
        shard.evict(start, Duration::from_secs(60), 1);
        assert_eq!(shard.order.len(), 1);
        assert!(shard.slots.contains_key(&Key::Idempotency(Arc::from("a"))));
        assert!(!shard.slots.contains_key(&Key::Idempotency(Arc::from("b"))));
        assert!(shard.slots.contains_key(&Key::Idempotency(Arc::from("c"))));
        shard.evict(start + Duration::from_secs(60), Duration::from_secs(60), 1);
        assert!(shard.order.is_empty());
        assert!(!shard.slots.contains_key(&Key::Idempotency(Arc::from("c"))));
    }
}
