use std::any::Any;

use tokio::sync::watch;

/// The right to run one named subscriber (an event handler, a projection, a saga) on this node,
/// from [`EventStore::try_lease`](crate::store::EventStore::try_lease).
///
/// A store shared by several nodes (PostgreSQL) grants each name to one node at a time and
/// frees it when the lease is dropped or the node goes away, so another node takes over. A
/// single-node store (in-memory, SQLite) grants every lease at once ([`Lease::local`]): the
/// runtime's registry already runs each name once in the process.
pub struct Lease {
    /// Keeps the lease held (a connection holding an advisory lock, ...); dropped to free it.
    _guard: Option<Box<dyn Any + Send + Sync>>,
    /// `true` once the lease may have been lost (the connection holding it broke).
    lost: Option<watch::Receiver<bool>>,
    shared: bool,
}

impl Lease {
    /// The lease of a single-node store: always granted, never lost, nothing to free.
    pub fn local() -> Self {
        Lease {
            _guard: None,
            lost: None,
            shared: false,
        }
    }

    /// A lease of a store shared by several nodes, held while `guard` lives; `lost` turns
    /// `true` if it may have been lost without being dropped (the subscriber then stops and asks
    /// for it again).
    pub fn shared(guard: Box<dyn Any + Send + Sync>, lost: watch::Receiver<bool>) -> Self {
        Lease {
            _guard: Some(guard),
            lost: Some(lost),
            shared: true,
        }
    }

    /// Whether the lease comes from a store shared by several nodes: another node may have
    /// moved the subscriber's checkpoint while this one did not hold it.
    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// Whether the lease may have been lost (its connection broke).
    pub fn is_lost(&self) -> bool {
        self.lost.as_ref().is_some_and(|lost| *lost.borrow())
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("shared", &self.shared)
            .field("lost", &self.is_lost())
            .finish()
    }
}
