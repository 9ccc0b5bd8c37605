//! Partitioned aggregate registries: which actor holds which live aggregate, and which
//! aggregates are hibernated.
//!
//! Each aggregate type has its own [`Registry`] of N partitions (configurable); an aggregate
//! lives in the partition given by a stable hash of (aggregate type name, id). Each partition is
//! a concurrent map (a [`DashMap`] of 64 shards, each behind its own read-write lock), so
//! looking up, starting, thawing or retiring an instance contends only with the same shard, and
//! first dispatches that race for a new id find or start exactly one instance.
//!
//! A dispatch takes the live instance's cell under its shard's lock (the read lock when the
//! instance is live, the write lock to start or thaw it), counting itself as a user of it; an
//! instance leaves its slot only under the shard's write lock, which excludes every reader, and
//! only when no other user holds its cell: a command that already found the instance is never
//! lost, and one that comes after finds the hibernated state, or nothing, and starts a new
//! instance.

use std::any::{Any, TypeId};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry as MapEntry;
use foldhash::fast::RandomState;

use super::cell::{Cell, Frozen, NEVER};
use super::idle::IdleTimers;
use super::memory_monitor::MemoryMonitor;
use super::stream_names::{NameTaken, StreamNames};
use crate::aggregate::Aggregate;
use crate::aggregate::lifespan::{AggregateDefaults, Lifespan};
use crate::envelope::stream_id;
use crate::error::Error;
use crate::store::{EventStore, GuardedStore, Snapshot};
use crate::util::compact::CompactBytes;
use crate::util::hash::{fnv1a_64, fnv1a_64_continue};

/// What every registry shares: the store, the memory monitor and the lifecycle settings.
pub(crate) struct Env {
    /// The store, behind the guard the runtime reads and writes through (held by its type, so
    /// that the calls of every command are not boxed twice).
    pub(crate) store: Arc<GuardedStore>,
    pub(crate) monitor: Arc<MemoryMonitor>,
    /// How many partitions each aggregate type's registry has (at least 1).
    pub(crate) partitions: usize,
    /// The lifecycle defaults of every aggregate type.
    pub(crate) defaults: AggregateDefaults,
}

/// The counters of one aggregate type, readable from the runtime.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AggregateStats {
    /// The aggregate type's name.
    pub aggregate: &'static str,
    /// Instances with a running actor.
    pub live: u64,
    /// Instances kept only as serialized state.
    pub hibernated: u64,
    /// Instances that left memory (passivated or stopped) so far.
    pub passivations: u64,
    /// Instances rebuilt from the store so far.
    pub activations: u64,
    /// Instances thawed from hibernation so far.
    pub thaws: u64,
    /// Snapshots saved so far.
    pub snapshots_saved: u64,
    /// How many instances the type's tables have room for without growing. The tables grow
    /// with a burst of instances and shrink back, at a sweep, once three quarters of their room
    /// is empty, so the memory of a burst returns after its instances left.
    pub capacity: u64,
}

#[derive(Default)]
pub(crate) struct InstanceCounters {
    live: AtomicU64,
    hibernated: AtomicU64,
    passivations: AtomicU64,
    pub(crate) activations: AtomicU64,
    thaws: AtomicU64,
    pub(crate) snapshots_saved: AtomicU64,
}

/// Each partition is split into this many shards, each with its own lock and table. Small tables
/// grow in small steps, and the memory a table frees when it grows is reused by the others
/// (one big table would leave its old, half-size copy resident after every doubling).
const SHARDS_PER_PARTITION: usize = 64;

/// A partition's table shrinks at a sweep when fewer than one in this many of its places are
/// taken (and by then it may shrink a lot: each shard is rebuilt to fit).
const SHRINK_BELOW: usize = 4;

/// One partition: id -> slot, found by a keyed hash of the id (which also picks the shard).
/// Looked up by the id's bytes: `CompactBytes` hashes and compares as them.
type Slots<A> = DashMap<CompactBytes, Slot<A>, RandomState>;

enum Slot<A: Aggregate> {
    Live(Arc<Cell<A>>),
    Hibernated(Frozen),
}

/// How an actor leaves its slot.
pub(crate) enum Leave {
    /// Out of memory (passivated or stopped).
    Remove,
    /// Out, never having come to life (its activation failed): counted nowhere.
    Abandon,
    /// Into a hibernated slot.
    Hibernate(Frozen),
}

/// The lifecycle settings of one aggregate type, resolved against the app's defaults.
pub(crate) struct Kind<A: Aggregate> {
    pub(crate) idle_timeout: Duration,
    pub(crate) hibernate_after: Option<Duration>,
    pub(crate) snapshot_every: u64,
    pub(crate) lifespan: Box<dyn Lifespan<A>>,
}

/// The instances of aggregate type `A`, in partitions.
pub(crate) struct Registry<A: Aggregate> {
    partitions: Box<[Slots<A>]>,
    pub(crate) kind: Kind<A>,
    pub(crate) counters: InstanceCounters,
    pub(crate) env: Arc<Env>,
    /// [`stable_hash`] state after the type name: the partition hash continues from it.
    name_hash: u64,
    /// The origin of the millisecond clocks of idle timers and hibernated states.
    pub(crate) epoch: Instant,
    /// The idle timers of the live instances.
    pub(crate) timers: IdleTimers<A>,
    /// Why commands of `A` are refused: another type of the runtime took its stream name
    /// first (see [`StreamNames`]).
    pub(crate) name_taken: Option<NameTaken>,
}

impl<A: Aggregate> Registry<A> {
    fn new(env: Arc<Env>, name_taken: Option<NameTaken>) -> Self {
        let defaults = &env.defaults;
        let hasher = RandomState::default();
        Registry {
            partitions: (0..env.partitions.max(1))
                .map(|_| DashMap::with_hasher_and_shard_amount(hasher, SHARDS_PER_PARTITION))
                .collect(),
            kind: Kind {
                idle_timeout: A::IDLE_TIMEOUT.unwrap_or(defaults.idle_timeout),
                hibernate_after: A::HIBERNATE_AFTER.unwrap_or(defaults.hibernate_after),
                snapshot_every: A::SNAPSHOT_EVERY.unwrap_or(defaults.snapshot_every),
                lifespan: A::lifespan(),
            },
            counters: InstanceCounters::default(),
            env,
            name_hash: stable_hash_prefix(A::NAME),
            epoch: Instant::now(),
            timers: IdleTimers::default(),
            name_taken,
        }
    }

    /// Milliseconds from the epoch to `at` (0 before the epoch).
    pub(crate) fn millis_at(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_millis() as u64
    }

    /// Milliseconds since the epoch.
    pub(crate) fn now_millis(&self) -> u64 {
        self.millis_at(Instant::now())
    }

    /// The partition of `id`: a stable hash of (type name, id), the same on every run.
    pub(crate) fn partition_of(&self, id: &str) -> usize {
        (stable_hash_continue(self.name_hash, id) % self.partitions.len() as u64) as usize
    }

    /// The partition that holds `id`.
    fn slots(&self, id: &str) -> &Slots<A> {
        &self.partitions[self.partition_of(id)]
    }

    /// Takes the cell of the live instance with this id for one dispatch: the running one, a
    /// thawed hibernated one, or a new one. The caller is counted as a user of the cell until
    /// it gives it back ([`Taken`](super::idle::Taken) does).
    pub(crate) fn take(&self, id: &str) -> Arc<Cell<A>> {
        let slots = self.slots(id);
        // The common case, a live instance: under the shard's read lock, which `leave`'s write
        // lock excludes, so the instance cannot leave between the lookup and the count.
        if let Some(slot) = slots.get(id.as_bytes())
            && let Slot::Live(cell) = slot.value()
        {
            cell.users.fetch_add(1, Ordering::AcqRel);
            return Arc::clone(cell);
        }
        let mut entry = slots.entry(CompactBytes::new(id.as_bytes()));
        let thawed = match &mut entry {
            MapEntry::Occupied(occupied) => match occupied.get_mut() {
                Slot::Live(cell) => {
                    // Started by another dispatch since the lookup above.
                    cell.users.fetch_add(1, Ordering::AcqRel);
                    return Arc::clone(cell);
                }
                slot => {
                    // The state moves out of the slot, which holds an empty one until the new
                    // cell takes its place below, under the same lock.
                    let Slot::Hibernated(frozen) =
                        std::mem::replace(slot, Slot::Hibernated(Frozen::new(&[], 0, 0, false)))
                    else {
                        unreachable!("the live case returned above")
                    };
                    self.counters.hibernated.fetch_sub(1, Ordering::Relaxed);
                    self.counters.thaws.fetch_add(1, Ordering::Relaxed);
                    Some(Box::new(frozen))
                }
            },
            MapEntry::Vacant(_) => None,
        };
        let cell = Arc::new(Cell::new(stream_id(A::NAME, id).into_boxed_str(), thawed));
        entry.insert(Slot::Live(Arc::clone(&cell)));
        self.counters.live.fetch_add(1, Ordering::Relaxed);
        cell
    }

    /// Takes `cell` for its idle timeout: only while it is still the live instance of its id
    /// and nobody else holds it (the last holder queues its deadline again when it lets go).
    pub(crate) fn take_idle(&self, cell: &Arc<Cell<A>>) -> bool {
        let id = cell.id();
        let Some(slot) = self.slots(id).get(id.as_bytes()) else {
            return false;
        };
        // Under the shard's read lock, like `take`.
        match slot.value() {
            // Sequentially consistent with the users' give-back: see `IdleTimers::requeue`.
            Slot::Live(live) if Arc::ptr_eq(live, cell) => cell
                .users
                .compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok(),
            _ => false,
        }
    }

    /// Takes `cell` (held by the caller, and by nobody else) out of its slot: removed, or
    /// replaced by its hibernated state. `false` when other users wait for it: it stays.
    pub(crate) fn leave(&self, cell: &Arc<Cell<A>>, how: Leave) -> bool {
        let id = cell.id();
        // `None`: the slot is not this cell's (the runtime stopped); `Some(false)`: other users
        // hold the cell, it stays; `Some(true)`: it left.
        let mut left = None;
        // Under the shard's write lock: no `take` can count itself in meanwhile. (One lookup,
        // and no key to build, unlike `entry`.)
        self.slots(id).remove_if_mut(id.as_bytes(), |_, slot| {
            if !matches!(slot, Slot::Live(live) if Arc::ptr_eq(live, cell)) {
                return false;
            }
            if cell.users.load(Ordering::Acquire) > 1 {
                left = Some(false);
                return false;
            }
            left = Some(true);
            self.counters.live.fetch_sub(1, Ordering::Relaxed);
            match how {
                Leave::Remove => {
                    self.counters.passivations.fetch_add(1, Ordering::Relaxed);
                    true
                }
                Leave::Abandon => true,
                Leave::Hibernate(frozen) => {
                    *slot = Slot::Hibernated(frozen);
                    self.counters.hibernated.fetch_add(1, Ordering::Relaxed);
                    false
                }
            }
        });
        match left {
            // Not in the registry any more (the runtime stopped).
            None => true,
            Some(false) => false,
            Some(true) => {
                // No deadline left for a user letting go of it to queue again.
                cell.deadline.store(NEVER, Ordering::Release);
                self.timers.unschedule(cell);
                true
            }
        }
    }
}

/// What the runtime needs of a registry without knowing its aggregate type.
trait AnyRegistry: Send + Sync {
    fn stats(&self) -> AggregateStats;
    fn clear(&self);
    fn sweep(&self, now: Instant) -> Vec<Snapshot>;
    /// Counts a snapshot [`sweep`](Self::sweep) gave that was saved.
    fn snapshot_saved(&self);
}

impl<A: Aggregate> AnyRegistry for Registry<A> {
    fn stats(&self) -> AggregateStats {
        let c = &self.counters;
        AggregateStats {
            aggregate: A::NAME,
            live: c.live.load(Ordering::Relaxed),
            hibernated: c.hibernated.load(Ordering::Relaxed),
            passivations: c.passivations.load(Ordering::Relaxed),
            activations: c.activations.load(Ordering::Relaxed),
            thaws: c.thaws.load(Ordering::Relaxed),
            snapshots_saved: c.snapshots_saved.load(Ordering::Relaxed),
            capacity: self
                .partitions
                .iter()
                .map(|slots| slots.capacity() as u64)
                .sum(),
        }
    }

    fn clear(&self) {
        for slots in &self.partitions {
            slots.clear();
        }
        self.timers.close();
        self.counters.live.store(0, Ordering::Relaxed);
        self.counters.hibernated.store(0, Ordering::Relaxed);
    }

    /// Passivates the hibernated instances whose time has come: their state becomes a snapshot.
    fn sweep(&self, now: Instant) -> Vec<Snapshot> {
        let now = Frozen::millis(self.millis_at(now));
        let mut snapshots = Vec::new();
        let mut swept = 0u64;
        for slots in &self.partitions {
            slots.retain(|key, slot| match slot {
                Slot::Hibernated(frozen) if frozen.passivate_at <= now => {
                    // Its state is kept as a snapshot, unless there is nothing to keep (no
                    // event yet) or a snapshot of this version is saved already.
                    if frozen.version > 0 && !frozen.snapshotted {
                        let id = String::from_utf8_lossy(key.as_bytes());
                        snapshots.push(Snapshot {
                            stream_id: stream_id(A::NAME, &id),
                            version: frozen.version,
                            data: frozen.state.as_bytes().to_vec(),
                            taken_at: SystemTime::now(),
                        });
                    }
                    swept += 1;
                    false
                }
                _ => true,
            });
            // The memory of a burst comes back once most of its instances have left (whether
            // passivated here or by their idle timers): a table mostly empty is rebuilt small.
            if slots.len().saturating_mul(SHRINK_BELOW) < slots.capacity() {
                slots.shrink_to_fit();
            }
        }
        self.counters.hibernated.fetch_sub(swept, Ordering::Relaxed);
        self.counters
            .passivations
            .fetch_add(swept, Ordering::Relaxed);
        snapshots
    }

    fn snapshot_saved(&self) {
        self.counters
            .snapshots_saved
            .fetch_add(1, Ordering::Relaxed);
    }
}

/// The registries of every aggregate type.
pub(crate) struct Partitions {
    env: Arc<Env>,
    by_type: DashMap<TypeId, Entry, BuildHasherDefault<TypeIdHasher>>,
    /// The stream names of the aggregate and decision types used so far.
    names: StreamNames,
}

/// One aggregate type's registry, seen untyped and typed.
struct Entry {
    untyped: Arc<dyn AnyRegistry>,
    /// An `Arc<Registry<A>>`.
    typed: Box<dyn Any + Send + Sync>,
}

/// Hashes a `TypeId`, which is already a hash: it keeps the 64 bits it is given.
#[derive(Default)]
struct TypeIdHasher(u64);

impl Hasher for TypeIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not used by `TypeId` today; kept correct for any other way it may hash.
        self.0 = fnv1a_64_continue(self.0, bytes.iter().copied());
    }

    fn write_u64(&mut self, value: u64) {
        self.0 ^= value;
    }
}

impl Partitions {
    pub(crate) fn new(env: Arc<Env>) -> Self {
        Partitions {
            env,
            by_type: DashMap::default(),
            names: StreamNames::default(),
        }
    }

    /// Runs `f` with the registry of `A`, created on first use. The common case (the registry
    /// exists) takes one shard's read lock only, and no reference count.
    pub(crate) fn with_registry<A: Aggregate, R>(
        &self,
        f: impl FnOnce(&Arc<Registry<A>>) -> R,
    ) -> R {
        let key = TypeId::of::<A>();
        if let Some(entry) = self.by_type.get(&key) {
            return f(Self::typed(entry.value()));
        }
        let registry = {
            let entry = self.by_type.entry(key).or_insert_with(|| {
                let name_taken = self.names.claim::<A>().err();
                let registry = Arc::new(Registry::<A>::new(Arc::clone(&self.env), name_taken));
                Entry {
                    untyped: Arc::clone(&registry) as Arc<dyn AnyRegistry>,
                    typed: Box::new(registry),
                }
            });
            Arc::clone(Self::typed::<A>(entry.value()))
        };
        // Once per type: `f` runs without the shard's write lock.
        f(&registry)
    }

    fn typed<A: Aggregate>(entry: &Entry) -> &Arc<Registry<A>> {
        match entry.typed.downcast_ref::<Arc<Registry<A>>>() {
            Some(registry) => registry,
            None => unreachable!("the registry of a TypeId is of that type"),
        }
    }

    /// Takes the stream name of decision `A` (an aggregate type takes its own when its
    /// registry is made): `Err` when another type of the runtime has it.
    pub(crate) fn claim_name<A: Aggregate>(&self) -> Result<(), Error> {
        self.names.claim::<A>().map_err(|taken| taken.error())
    }

    /// The memory monitor whose factor scales the idle timeouts.
    pub(crate) fn monitor(&self) -> &MemoryMonitor {
        &self.env.monitor
    }

    /// The lifecycle defaults of every aggregate type.
    pub(crate) fn defaults(&self) -> &AggregateDefaults {
        &self.env.defaults
    }

    /// The event store the instances append to.
    pub(crate) fn store(&self) -> &Arc<GuardedStore> {
        &self.env.store
    }

    /// The partition that holds aggregate `id` of `A`.
    pub(crate) fn partition_of<A: Aggregate>(&self, id: &str) -> usize {
        self.with_registry::<A, _>(|registry| registry.partition_of(id))
    }

    /// The counters of every aggregate type used so far, by name.
    pub(crate) fn stats(&self) -> Vec<AggregateStats> {
        let mut stats: Vec<AggregateStats> = self
            .registries()
            .iter()
            .map(|registry| registry.stats())
            .collect();
        stats.sort_by_key(|s| s.aggregate);
        stats
    }

    /// Drops every live and hibernated instance and stops the idle timers: the commands already
    /// running complete.
    pub(crate) fn clear(&self) {
        for registry in self.registries() {
            registry.clear();
        }
    }

    /// Passivates expired hibernated instances of every type, saving their state as snapshots.
    pub(crate) async fn sweep(&self) {
        let now = Instant::now();
        for registry in self.registries() {
            for snapshot in registry.sweep(now) {
                // `Name-id`: an aggregate's name has no `-`.
                let stream = snapshot.stream_id.clone();
                let (aggregate, id) = stream.split_once('-').unwrap_or((&stream, ""));
                let version = snapshot.version;
                match self.env.store.save_snapshot(snapshot).await {
                    Ok(()) => {
                        registry.snapshot_saved();
                        tracing::debug!(
                            name: "evoq.aggregate.snapshot_save",
                            stage = "stop",
                            aggregate,
                            aggregate_id = id,
                            version,
                            "evoq.aggregate.snapshot_save",
                        );
                    }
                    Err(error) => tracing::warn!(
                        name: "evoq.aggregate.snapshot_save",
                        stage = "exception",
                        aggregate,
                        aggregate_id = id,
                        version,
                        error = %error,
                        "evoq.aggregate.snapshot_save",
                    ),
                }
                tracing::debug!(
                    name: "evoq.aggregate.passivate",
                    stage = "stop",
                    aggregate,
                    aggregate_id = id,
                    version,
                    from = "hibernation",
                    "evoq.aggregate.passivate",
                );
            }
        }
    }

    fn registries(&self) -> Vec<Arc<dyn AnyRegistry>> {
        self.by_type
            .iter()
            .map(|entry| Arc::clone(&entry.value().untyped))
            .collect()
    }
}

/// FNV-1a over the type name, a separator and the id: the same partition on every run and
/// every machine.
#[cfg(test)]
fn stable_hash(aggregate: &str, id: &str) -> u64 {
    stable_hash_continue(stable_hash_prefix(aggregate), id)
}

/// [`stable_hash`]'s state after the type name and the separator.
fn stable_hash_prefix(aggregate: &str) -> u64 {
    fnv1a_64(aggregate.bytes().chain([0xff]))
}

/// [`stable_hash`] from the state after the type name.
fn stable_hash_continue(prefix: u64, id: &str) -> u64 {
    fnv1a_64_continue(prefix, id.bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_stable_and_separates_type_from_id() {
        // FNV-1a is fixed: this value must never change, or aggregates would move partitions.
        assert_eq!(stable_hash("BankAccount", "acc-1"), 0x47ce_e18f_100a_88c2);
        assert_ne!(stable_hash("A", "bc"), stable_hash("Ab", "c"));
        let spread: std::collections::HashSet<u64> = (0..100)
            .map(|i| stable_hash("BankAccount", &format!("acc-{i}")) % 4)
            .collect();
        assert_eq!(spread.len(), 4, "100 ids should cover all 4 partitions");
    }
}

#[cfg(test)]
mod size_tests {
    use super::*;

    use crate::aggregate::fixture::Tiny;

    #[test]
    fn a_registry_entry_is_at_most_64_bytes_so_hibernated_aggregates_stay_small() {
        // The hibernated footprint is this entry over the table's load factor (a shard of the
        // `DashMap` stores `(key, SharedValue<slot>)`, and `SharedValue` is transparent).
        assert_eq!(std::mem::size_of::<Frozen>(), 40);
        assert!(std::mem::size_of::<(CompactBytes, Slot<Tiny>)>() <= 64);
    }

    #[test]
    fn a_live_cell_stays_small_so_live_aggregates_stay_small() {
        // A live idle aggregate is this cell (in an `Arc`), its state, its stream id, a registry
        // entry and an idle-timer entry.
        let size = std::mem::size_of::<Cell<Tiny>>();
        eprintln!("cell: {size} bytes");
        assert!(size <= 128, "a cell is {size} bytes");
    }
}
