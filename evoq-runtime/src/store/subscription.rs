use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::watch;

use super::error::StoreError;
use super::event_store::{EventFilter, EventStore};
use super::undecodable::StoredRow;
use crate::envelope::RecordedEvent;

/// Events of the chosen types, in global order, from a position on: first the stored ones
/// (catch-up), then new ones as they are committed (live).
///
/// It reads the global order in pages and, once at the head, waits on the store's
/// [`head`](EventStore::head) watch. Both phases read by position from the last position
/// scanned, so nothing is skipped or delivered twice between them.
///
/// A stored row that does not decode ([`UndecodableRow`](super::UndecodableRow)) takes its
/// place in the order: [`next_rows`](Self::next_rows) yields it as a [`StoredRow`]; the readers
/// of events alone meet it as the [`StoreError::Integrity`] of that row, once, and read on
/// after it.
pub struct Subscription {
    store: Arc<dyn EventStore>,
    filter: EventFilter,
    scanned_through: u64,
    buffer: VecDeque<StoredRow>,
    head: watch::Receiver<u64>,
    page_size: usize,
}

impl Subscription {
    /// Default number of events read per page.
    pub const DEFAULT_PAGE_SIZE: usize = 1_000;

    /// A subscription to events matching `filter` with a position above `after`
    /// (`after = 0`: from the first event).
    pub fn new(store: Arc<dyn EventStore>, filter: EventFilter, after: u64) -> Self {
        let head = store.head();
        Subscription {
            store,
            filter,
            scanned_through: after,
            buffer: VecDeque::new(),
            head,
            page_size: Self::DEFAULT_PAGE_SIZE,
        }
    }

    /// Sets the number of events read per page (at least 1).
    pub fn with_page_size(mut self, page_size: usize) -> Self {
        self.page_size = page_size.max(1);
        self
    }

    /// The next matching event, waiting for one to be committed if need be. A row that does
    /// not decode is its integrity error, returned once.
    pub async fn next(&mut self) -> Result<Arc<RecordedEvent>, StoreError> {
        loop {
            match self.buffer.pop_front() {
                Some(StoredRow::Event(event)) => return Ok(event),
                Some(StoredRow::Undecodable(row)) => return Err(row.to_error()),
                None => self.fill().await?,
            }
        }
    }

    /// Every matching event already buffered or committed (at least one), waiting for one if
    /// none is there yet. Faster than [`next`](Self::next) for batch consumers. The batch ends
    /// before a row that does not decode; that row is the next call's integrity error.
    pub async fn next_batch(&mut self) -> Result<Vec<Arc<RecordedEvent>>, StoreError> {
        while self.buffer.is_empty() {
            self.fill().await?;
        }
        self.take_events()
    }

    /// Every buffered event, or, when none is buffered, the events of the next scan, which may
    /// be none: unlike [`next_batch`](Self::next_batch) it returns whenever the subscription
    /// has scanned further (or has seen a new head to scan to), so a subscriber can advance its
    /// position past events it does not take (see [`scanned_through`](Self::scanned_through)).
    /// Cancel-safe: dropping the future loses no event. It stops before a row that does not
    /// decode, as [`next_batch`](Self::next_batch) does.
    pub async fn next_progress(&mut self) -> Result<Vec<Arc<RecordedEvent>>, StoreError> {
        if self.buffer.is_empty() {
            self.fill().await?;
        }
        self.take_events()
    }

    /// [`next_progress`](Self::next_progress) with the rows that do not decode in their place:
    /// every buffered row, or the rows of the next scan (maybe none). Cancel-safe.
    pub async fn next_rows(&mut self) -> Result<Vec<StoredRow>, StoreError> {
        if self.buffer.is_empty() {
            self.fill().await?;
        }
        Ok(self.buffer.drain(..).collect())
    }

    /// The buffered events up to the first row that does not decode; that row's error when it
    /// comes first.
    fn take_events(&mut self) -> Result<Vec<Arc<RecordedEvent>>, StoreError> {
        if let Some(StoredRow::Undecodable(_)) = self.buffer.front()
            && let Some(StoredRow::Undecodable(row)) = self.buffer.pop_front()
        {
            return Err(row.to_error());
        }
        let mut events = Vec::with_capacity(self.buffer.len());
        while let Some(StoredRow::Event(_)) = self.buffer.front() {
            if let Some(StoredRow::Event(event)) = self.buffer.pop_front() {
                events.push(event);
            }
        }
        Ok(events)
    }

    /// The position the subscription has scanned through. Once every buffered event has been
    /// taken, a subscriber may checkpoint here even if no event matched.
    pub fn scanned_through(&self) -> u64 {
        self.scanned_through
    }

    /// Whether events are buffered, ready to be taken without waiting.
    pub fn has_buffered(&self) -> bool {
        !self.buffer.is_empty()
    }

    async fn fill(&mut self) -> Result<(), StoreError> {
        // Mark the current head as seen BEFORE reading, so a commit that lands after the read
        // wakes `changed()` below.
        let head = *self.head.borrow_and_update();
        if self.scanned_through < head {
            let page = self
                .store
                .read_all(self.scanned_through, self.page_size, &self.filter)
                .await?;
            if page.scanned_through > self.scanned_through {
                self.scanned_through = page.scanned_through;
            }
            self.buffer.extend(page.into_rows());
            return Ok(());
        }
        if self.head.changed().await.is_err() {
            return Err(StoreError::Backend {
                backend: "subscription",
                message: "the event store was shut down while a subscription was waiting".into(),
            });
        }
        Ok(())
    }
}
