use std::any::Any;
use std::future::Future;
use std::pin::Pin;

use tokio::sync::watch;

use super::error::StoreError;

/// The right to run one named subscriber (an event handler, a projection, a saga) on this node,
/// from [`EventStore::try_lease`](crate::store::EventStore::try_lease).
///
/// A store shared by several nodes (PostgreSQL) grants each name to one node at a time and
/// frees it when the lease is dropped or the node goes away, so another node takes over. A
/// single-node store (in-memory, SQLite) grants every lease at once ([`Lease::local`]): the
/// runtime's registry already runs each name once in the process.
///
/// A shared lease can be lost without being dropped (the connection holding it broke). The
/// subscription engine asks [`Lease::confirm`] before each page of events it delivers and
/// before each checkpoint it saves, and stops delivering as soon as the lease is not
/// confirmed.
pub struct Lease {
    /// Keeps the lease held (a connection holding an advisory lock, ...); dropped to free it.
    _guard: Option<Box<dyn Any + Send + Sync>>,
    /// Asks the store whether the lease is still held (see [`Lease::confirmed_by`]).
    confirm: Option<Confirm>,
    /// `true` once the lease may have been lost (the connection holding it broke).
    lost: Option<watch::Receiver<bool>>,
    shared: bool,
}

/// The check of [`Lease::confirmed_by`].
type Confirm =
    Box<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send>> + Send + Sync>;

impl Lease {
    /// The lease of a single-node store: always granted, never lost, nothing to free.
    pub fn local() -> Self {
        Lease {
            _guard: None,
            confirm: None,
            lost: None,
            shared: false,
        }
    }

    /// A lease of a store shared by several nodes, held while `guard` lives; `lost` turns
    /// `true` if it may have been lost without being dropped (the subscriber then stops and asks
    /// for it again). Give it a check with [`confirmed_by`](Self::confirmed_by).
    pub fn shared(guard: Box<dyn Any + Send + Sync>, lost: watch::Receiver<bool>) -> Self {
        Lease {
            _guard: Some(guard),
            confirm: None,
            lost: Some(lost),
            shared: true,
        }
    }

    /// The lease with `check`, which [`confirm`](Self::confirm) runs to ask the store whether
    /// the lease is still held (a round trip on the connection that holds it): `Ok(())` when
    /// the store said so; an error says why it is not held, or why the store could not tell.
    pub fn confirmed_by<F, C>(mut self, check: C) -> Self
    where
        C: Fn() -> F + Send + Sync + 'static,
        F: Future<Output = Result<(), StoreError>> + Send + 'static,
    {
        self.confirm = Some(Box::new(move || Box::pin(check())));
        self
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

    /// Waits until the lease may have been lost (its connection broke); never ends for a lease
    /// that cannot be lost.
    pub async fn lost(&self) {
        match &self.lost {
            Some(lost) => {
                let mut lost = lost.clone();
                // A closed watch: nothing watches the connection any more, so nothing vouches
                // for the lease either.
                let _ = lost.wait_for(|lost| *lost).await;
            }
            None => std::future::pending().await,
        }
    }

    /// Asks the store whether the lease is still held: at once for a single-node lease (always
    /// held), else through its check (a round trip to the database). An error means the lease
    /// must be taken as lost, and says why. A shared lease without a check is confirmed
    /// while its connection is not known to have broken.
    pub async fn confirm(&self) -> Result<(), StoreError> {
        if !self.shared {
            return Ok(());
        }
        match &self.confirm {
            Some(check) => check().await,
            None if self.is_lost() => Err(StoreError::Backend {
                backend: "lease",
                message: "the lease may have been lost: the connection holding it broke".into(),
            }),
            None => Ok(()),
        }
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
