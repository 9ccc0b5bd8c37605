//! Partitioned aggregate registries: which actor holds which live aggregate.
//!
//! There are N partitions (configurable). An aggregate lives in the partition given by a stable
//! hash of (aggregate type name, id). Each partition is a registry guarded by its own lock, so
//! looking up or starting an instance contends only with the same partition, and a first
//! dispatch that races others for the same new id finds or starts exactly one instance.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::mpsc;

use crate::actor::{Actor, Job};
use crate::aggregate::Aggregate;
use crate::envelope::stream_id;
use crate::store::EventStore;

/// The live instances of one aggregate type in one partition: id -> the actor's mailbox
/// (a `mpsc::Sender<Job<A>>`, type-erased so one registry holds every aggregate type).
type Instances = HashMap<String, Box<dyn Any + Send + Sync>>;

/// The registries of every partition.
pub(crate) struct Partitions {
    registries: Box<[Mutex<HashMap<TypeId, Instances>>]>,
    mailbox_capacity: usize,
}

impl Partitions {
    pub(crate) fn new(count: usize, mailbox_capacity: usize) -> Self {
        Partitions {
            registries: (0..count.max(1)).map(|_| Mutex::default()).collect(),
            mailbox_capacity: mailbox_capacity.max(1),
        }
    }

    /// The number of partitions.
    pub(crate) fn count(&self) -> usize {
        self.registries.len()
    }

    /// The partition of aggregate `id` of the type named `aggregate`.
    pub(crate) fn partition_of(&self, aggregate: &str, id: &str) -> usize {
        (stable_hash(aggregate, id) % self.registries.len() as u64) as usize
    }

    /// The mailbox of the live instance of `A` with this id, starting the instance (an actor
    /// task on the current tokio runtime) when there is none.
    pub(crate) fn mailbox<A: Aggregate>(
        &self,
        id: &str,
        store: &Arc<dyn EventStore>,
    ) -> mpsc::Sender<Job<A>> {
        let mut registry = self.lock(self.partition_of(A::NAME, id));
        let instances = registry.entry(TypeId::of::<A>()).or_default();
        if let Some(sender) = instances
            .get(id)
            .and_then(|slot| slot.downcast_ref::<mpsc::Sender<Job<A>>>())
            .filter(|sender| !sender.is_closed())
        {
            return sender.clone();
        }
        let (sender, receiver) = mpsc::channel(self.mailbox_capacity);
        let actor = Actor::<A>::new(id.to_owned(), stream_id(A::NAME, id), Arc::clone(store));
        tokio::spawn(actor.run(receiver));
        instances.insert(id.to_owned(), Box::new(sender.clone()));
        sender
    }

    /// How many instances of `A` are live.
    pub(crate) fn live<A: Aggregate>(&self) -> usize {
        (0..self.registries.len())
            .map(|p| self.lock(p).get(&TypeId::of::<A>()).map_or(0, HashMap::len))
            .sum()
    }

    /// Drops every mailbox: each actor finishes the commands it already has, then ends.
    pub(crate) fn clear(&self) {
        for partition in 0..self.registries.len() {
            self.lock(partition).clear();
        }
    }

    fn lock(&self, partition: usize) -> MutexGuard<'_, HashMap<TypeId, Instances>> {
        // A registry holds no invariant a panic could break halfway: keep using it.
        self.registries[partition]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// FNV-1a over the type name, a separator and the id: the same partition on every run and
/// every machine.
fn stable_hash(aggregate: &str, id: &str) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0100_0000_01b3;
    let mut hash = OFFSET;
    for byte in aggregate.bytes().chain([0xff]).chain(id.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(PRIME);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_is_stable_and_depends_on_type_and_id() {
        let partitions = Partitions::new(4, 8);
        let a = partitions.partition_of("BankAccount", "acc-1");
        assert_eq!(a, partitions.partition_of("BankAccount", "acc-1"));
        let spread: std::collections::HashSet<usize> = (0..100)
            .map(|i| partitions.partition_of("BankAccount", &format!("acc-{i}")))
            .collect();
        assert_eq!(spread.len(), 4, "100 ids should cover all 4 partitions");
        assert_ne!(stable_hash("A", "bc"), stable_hash("Ab", "c"));
    }
}
