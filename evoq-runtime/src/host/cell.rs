//! The cell of one live aggregate instance: its state behind a fair async lock, and what the
//! registry and the idle timer read without taking the lock (its users, its deadline). Also the
//! serialized form a hibernated instance keeps in its registry slot ([`Frozen`]).

use std::sync::atomic::{AtomicU32, AtomicU64};

use crate::aggregate::Aggregate;
use crate::util::compact::CompactBytes;

/// A deadline that never comes: no timer.
pub(crate) const NEVER: u64 = u64::MAX;

/// The serialized state of a hibernated instance: 40 bytes, plus the state when it is longer
/// than [`CompactBytes::INLINE`].
pub(crate) struct Frozen {
    pub(crate) state: CompactBytes,
    pub(crate) version: u64,
    /// When the sweeper passivates it, in milliseconds since the registry's epoch
    /// ([`NEVER`](Frozen::NEVER): it stays until a command thaws it).
    pub(crate) passivate_at: u32,
    /// Whether a snapshot of this version is saved (in the padding: no byte more).
    pub(crate) snapshotted: bool,
}

impl Frozen {
    const NEVER: u32 = u32::MAX;

    /// The hibernated form of a state; passivated by the sweeper at `passivate_at` (in
    /// milliseconds since the registry's epoch; [`NEVER`]: never).
    pub(crate) fn new(state: &[u8], version: u64, passivate_at: u64, snapshotted: bool) -> Self {
        Frozen {
            state: CompactBytes::new(state),
            version,
            passivate_at: Self::millis(passivate_at),
            snapshotted,
        }
    }

    /// A time in milliseconds since the registry's epoch as kept here: 32 bits (49 days; a
    /// later time is the last one that fits), [`NEVER`](Self::NEVER) for [`NEVER`].
    pub(crate) fn millis(millis: u64) -> u32 {
        if millis == NEVER {
            Self::NEVER
        } else {
            u32::try_from(millis).unwrap_or(Self::NEVER - 1)
        }
    }
}

/// A live instance's place in its registry: the actor's state behind its lock, and what the
/// registry and the idle timer need to know without taking the lock.
pub(crate) struct Cell<A: Aggregate> {
    /// `"<aggregate name>-<id>"`; the id is the part after the prefix.
    pub(crate) stream: Box<str>,
    /// The actor's state. Tokio's mutex is fair: commands run in the order they asked for it.
    pub(crate) core: tokio::sync::Mutex<Core<A>>,
    /// Dispatches (and idle timeouts) that took this cell from the registry and have not
    /// finished with it. Incremented only under the registry shard's lock (read or write), so
    /// an actor that leaves (under the shard's write lock, which excludes both) knows whether
    /// commands are waiting for it.
    pub(crate) users: AtomicU32,
    /// When the idle timer should fire, in milliseconds since the registry's epoch
    /// ([`NEVER`]: no timeout). Written by the lock holder after each command.
    pub(crate) deadline: AtomicU64,
    /// The deadline of this cell's entry in the idle-timer queue ([`NEVER`]: no entry).
    /// Written only under the queue's lock.
    pub(crate) scheduled: AtomicU64,
}

/// The state the lock guards.
pub(crate) struct Core<A> {
    /// `None` until activated, and again after a panic or an unknown append outcome: the next
    /// command rebuilds the instance from the store.
    pub(crate) instance: Option<Instance<A>>,
    /// The hibernated state this actor was started from, decoded on the first command (boxed:
    /// it is rare, and every live instance would carry its size).
    pub(crate) thaw: Option<Box<Frozen>>,
    /// The version of the last snapshot this actor saved or loaded.
    pub(crate) snapshot_version: u64,
    /// What the idle timer does when it fires.
    pub(crate) stage: OnIdle,
}

/// A state at a known stream version.
pub(crate) struct Instance<A> {
    pub(crate) state: A,
    pub(crate) version: u64,
}

/// What the idle timer does when it fires.
#[derive(Clone, Copy, Debug)]
pub(crate) enum OnIdle {
    /// Hibernate; the hibernated state is passivated at `passivate_at` (milliseconds since the
    /// registry's epoch; [`NEVER`]: it stays until a command thaws it).
    Hibernate { passivate_at: u64 },
    /// Ask the lifespan's `on_timeout`.
    Timeout,
}

impl<A: Aggregate> Cell<A> {
    /// A cell for `stream`, taken by its first user, started from a hibernated state or empty.
    pub(crate) fn new(stream: Box<str>, thaw: Option<Box<Frozen>>) -> Self {
        Cell {
            stream,
            core: tokio::sync::Mutex::new(Core {
                instance: None,
                thaw,
                snapshot_version: 0,
                stage: OnIdle::Timeout,
            }),
            users: AtomicU32::new(1),
            deadline: AtomicU64::new(NEVER),
            scheduled: AtomicU64::new(NEVER),
        }
    }

    /// The aggregate id.
    pub(crate) fn id(&self) -> &str {
        &self.stream[A::NAME.len() + 1..]
    }
}
