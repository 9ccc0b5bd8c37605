//! What the in-memory store's parts share: the global log of events.

use std::sync::Arc;

use crate::envelope::RecordedEvent;

/// Number of events per chunk of the global log. Chunks never reallocate, so an append never
/// copies the log, however long it is.
pub(super) const LOG_CHUNK: usize = 4_096;

/// The global log, in fixed-size chunks.
#[derive(Default)]
pub(super) struct Log {
    chunks: Vec<Vec<Arc<RecordedEvent>>>,
    len: usize,
}

impl Log {
    pub(super) fn len(&self) -> u64 {
        self.len as u64
    }

    /// The event at global position `position`, if there is one.
    pub(super) fn at(&self, position: u64) -> Option<&Arc<RecordedEvent>> {
        let index = usize::try_from(position.checked_sub(1)?).ok()?;
        self.chunks.get(index / LOG_CHUNK)?.get(index % LOG_CHUNK)
    }

    /// The event at index `index`.
    pub(super) fn get(&self, index: u32) -> &Arc<RecordedEvent> {
        let index = index as usize;
        &self.chunks[index / LOG_CHUNK][index % LOG_CHUNK]
    }

    #[inline]
    pub(super) fn push(&mut self, event: Arc<RecordedEvent>) {
        match self.chunks.last_mut() {
            Some(chunk) if chunk.len() < LOG_CHUNK => chunk.push(event),
            _ => {
                let mut chunk = Vec::with_capacity(LOG_CHUNK);
                chunk.push(event);
                self.chunks.push(chunk);
            }
        }
        self.len += 1;
    }

    /// The events from index `start` on, in order.
    pub(super) fn iter_from(&self, start: usize) -> impl Iterator<Item = &Arc<RecordedEvent>> {
        self.chunks
            .get(start / LOG_CHUNK..)
            .unwrap_or_default()
            .iter()
            .flatten()
            .skip(start % LOG_CHUNK)
    }
}
