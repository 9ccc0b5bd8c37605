//! The in-memory store's tag index: for every tag, the log indexes of the events that carry it,
//! in position order. What `read_query` reads and `append_if` checks its condition by, under the
//! events' lock.

use std::collections::BTreeSet;

use super::log::Log;
use crate::envelope::RecordedEvent;
use crate::store::{EventQuery, QueryItem};
use crate::util::hash::StreamHasher;

/// Tag -> the log indexes of its events, ascending (4 bytes each, like the streams' indexes).
#[derive(Default)]
pub(super) struct TagIndex {
    by_tag: hashbrown::HashMap<String, Vec<u32>, StreamHasher>,
}

impl TagIndex {
    /// Indexes `event`, stored at log index `index` (the highest so far).
    pub(super) fn insert(&mut self, index: u32, event: &RecordedEvent) {
        for tag in event.metadata.tags.iter() {
            match self.by_tag.get_mut(tag.as_str()) {
                Some(indexes) => indexes.push(index),
                None => {
                    self.by_tag.insert(tag.clone(), vec![index]);
                }
            }
        }
    }

    /// The log indexes of the events `item` may match, after position `after`: those of its
    /// rarest tag, or `None` for an item without tags (any event may match it).
    fn candidates(&self, item: &QueryItem, after: u64) -> Option<&[u32]> {
        let mut rarest: Option<&[u32]> = None;
        for tag in &item.tags {
            let indexes = self.by_tag.get(tag.as_str()).map_or(&[][..], Vec::as_slice);
            if rarest.is_none_or(|r| indexes.len() < r.len()) {
                rarest = Some(indexes);
            }
        }
        let indexes = rarest?;
        // Position `after` is at index `after - 1`: the first index above it is `after`.
        let start = indexes.partition_point(|&index| u64::from(index) < after);
        Some(&indexes[start..])
    }

    /// The positions above `after` of the events `item` matches, ascending, at most `limit`.
    fn matching(&self, log: &Log, item: &QueryItem, after: u64, limit: usize) -> Vec<u64> {
        let matches = |event: &RecordedEvent| item.matches(&event.event_type, &event.metadata.tags);
        match self.candidates(item, after) {
            Some(indexes) => indexes
                .iter()
                .map(|&index| log.get(index))
                .filter(|event| matches(event))
                .take(limit)
                .map(|event| event.global_position)
                .collect(),
            None => {
                let start = usize::try_from(after).unwrap_or(usize::MAX);
                log.iter_from(start)
                    .filter(|event| matches(event))
                    .take(limit)
                    .map(|event| event.global_position)
                    .collect()
            }
        }
    }

    /// The lowest position above `after` of an event `query` matches, if any.
    pub(super) fn first_match(&self, log: &Log, query: &EventQuery, after: u64) -> Option<u64> {
        query
            .items()
            .iter()
            .filter_map(|item| self.matching(log, item, after, 1).first().copied())
            .min()
    }

    /// The positions above `after` of the first `max_count` events `query` matches, ascending.
    pub(super) fn read(
        &self,
        log: &Log,
        query: &EventQuery,
        after: u64,
        max_count: usize,
    ) -> Vec<u64> {
        let mut positions = BTreeSet::new();
        for item in query.items() {
            positions.extend(self.matching(log, item, after, max_count));
        }
        positions.into_iter().take(max_count).collect()
    }
}
