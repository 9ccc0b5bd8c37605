//! Queries of events across streams, by type and by tag, and the condition of an append that
//! depends on one: what a [decision](crate::decision) reads, and what it appends under.

use std::fmt;

/// Which events a query selects: an event matches when it matches one of the query's
/// [items](QueryItem) (any of them).
///
/// Built with [`types`](Self::types), [`tag`](Self::tag) and [`tags`](Self::tags), combined
/// with [`and`](Self::and) / [`all_of`](Self::all_of) and [`or`](Self::or) /
/// [`any_of`](Self::any_of). It is kept as a union of items, each an "any of these types, all of
/// these tags" filter, which is what the stores read and check by.
///
/// ```
/// use evoq_runtime::store::EventQuery;
///
/// // What member m1 or book b7 did, among lends and returns.
/// let query = EventQuery::types(["BookLent", "BookReturned"])
///     .and(EventQuery::tag("member:m1").or(EventQuery::tag("book:b7")));
/// assert_eq!(query.items().len(), 2);
/// assert!(query.matches("BookLent", &["member:m1".into(), "book:b1".into()]));
/// assert!(!query.matches("BookLent", &["member:m2".into(), "book:b1".into()]));
/// assert!(!query.matches("MemberJoined", &["member:m1".into()]));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct EventQuery {
    items: Vec<QueryItem>,
}

/// One item of an [`EventQuery`]: an event matches when its type is one of `types` (any type
/// when `types` is empty) and it carries every tag of `tags` (no condition when `tags` is
/// empty).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct QueryItem {
    /// The event types, any of which matches (sorted, no duplicates); empty: every type.
    pub types: Vec<String>,
    /// The tags an event must all carry (sorted, no duplicates); empty: no condition.
    pub tags: Vec<String>,
}

impl QueryItem {
    /// Whether an event of type `event_type` with `tags` matches this item.
    pub fn matches(&self, event_type: &str, tags: &[String]) -> bool {
        (self.types.is_empty() || self.types.iter().any(|t| t == event_type))
            && self.tags.iter().all(|tag| tags.contains(tag))
    }

    /// The item both `self` and `other` must match: `None` when no event can (their types do
    /// not meet).
    fn and(&self, other: &QueryItem) -> Option<QueryItem> {
        let types = match (self.types.is_empty(), other.types.is_empty()) {
            (true, _) => other.types.clone(),
            (_, true) => self.types.clone(),
            _ => {
                let common: Vec<String> = self
                    .types
                    .iter()
                    .filter(|t| other.types.contains(t))
                    .cloned()
                    .collect();
                if common.is_empty() {
                    return None;
                }
                common
            }
        };
        let mut tags = self.tags.clone();
        tags.extend(other.tags.iter().cloned());
        Some(QueryItem {
            types,
            tags: sorted(tags),
        })
    }
}

/// `values` sorted, without duplicates.
fn sorted(mut values: Vec<String>) -> Vec<String> {
    values.sort_unstable();
    values.dedup();
    values
}

impl EventQuery {
    /// Every event.
    pub fn all() -> Self {
        EventQuery {
            items: vec![QueryItem::default()],
        }
    }

    /// No event at all (the union of nothing).
    pub fn none() -> Self {
        EventQuery::default()
    }

    /// The events of any of these types (none: no event).
    pub fn types<I, S>(types: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let types = sorted(types.into_iter().map(Into::into).collect());
        if types.is_empty() {
            return EventQuery::none();
        }
        EventQuery {
            items: vec![QueryItem {
                types,
                tags: Vec::new(),
            }],
        }
    }

    /// The events that carry `tag`.
    pub fn tag(tag: impl Into<String>) -> Self {
        EventQuery::tags([tag])
    }

    /// The events that carry every one of these tags (none: every event).
    pub fn tags<I, S>(tags: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        EventQuery {
            items: vec![QueryItem {
                types: Vec::new(),
                tags: sorted(tags.into_iter().map(Into::into).collect()),
            }],
        }
    }

    /// The events that match both queries.
    pub fn and(self, other: EventQuery) -> Self {
        let mut items = Vec::new();
        for left in &self.items {
            for right in &other.items {
                if let Some(item) = left.and(right) {
                    items.push(item);
                }
            }
        }
        EventQuery::from_items(items)
    }

    /// The events that match either query.
    pub fn or(mut self, other: EventQuery) -> Self {
        self.items.extend(other.items);
        EventQuery::from_items(self.items)
    }

    /// The events that match every one of `queries` (none: every event).
    pub fn all_of(queries: impl IntoIterator<Item = EventQuery>) -> Self {
        queries.into_iter().fold(EventQuery::all(), EventQuery::and)
    }

    /// The events that match any of `queries` (none: no event).
    pub fn any_of(queries: impl IntoIterator<Item = EventQuery>) -> Self {
        queries.into_iter().fold(EventQuery::none(), EventQuery::or)
    }

    /// A query of these items, as they are.
    pub fn from_items(items: Vec<QueryItem>) -> Self {
        let mut unique: Vec<QueryItem> = Vec::with_capacity(items.len());
        for item in items {
            if !unique.contains(&item) {
                unique.push(item);
            }
        }
        EventQuery { items: unique }
    }

    /// The query's items: an event matches when it matches any of them.
    pub fn items(&self) -> &[QueryItem] {
        &self.items
    }

    /// Whether the query selects no event at all.
    pub fn is_none(&self) -> bool {
        self.items.is_empty()
    }

    /// Whether an event of type `event_type` with `tags` matches.
    pub fn matches(&self, event_type: &str, tags: &[String]) -> bool {
        self.items.iter().any(|item| item.matches(event_type, tags))
    }

    /// Every type the query can select, or `None` when one of its items selects any type.
    pub fn type_names(&self) -> Option<Vec<String>> {
        let mut names = Vec::new();
        for item in &self.items {
            if item.types.is_empty() {
                return None;
            }
            names.extend(item.types.iter().cloned());
        }
        Some(sorted(names))
    }
}

impl fmt::Display for EventQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.items.is_empty() {
            return f.write_str("(no event)");
        }
        for (i, item) in self.items.iter().enumerate() {
            if i > 0 {
                f.write_str(" or ")?;
            }
            f.write_str("(")?;
            if item.types.is_empty() {
                f.write_str("any type")?;
            } else {
                f.write_str(&item.types.join("|"))?;
            }
            for tag in &item.tags {
                write!(f, ", tag {tag}")?;
            }
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// The condition of a conditional append
/// ([`EventStore::append_if`](super::EventStore::append_if)): no event matching `query` has a
/// position above `after`.
///
/// A decision reads the events of its query, decides, and appends under the condition that
/// nothing it would have read was appended since: `after` is the highest position it read (0
/// when it read nothing, so that any matching event refuses the append).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppendCondition {
    /// The events that must not have appeared.
    pub query: EventQuery,
    /// The position the reader saw everything matching up to.
    pub after: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(tags: &[&str]) -> Vec<String> {
        tags.iter().map(|t| (*t).to_owned()).collect()
    }

    #[test]
    fn and_distributes_over_or_and_drops_items_whose_types_do_not_meet() {
        let query = EventQuery::types(["A", "B"])
            .and(EventQuery::tag("x").or(EventQuery::types(["C"])))
            .or(EventQuery::types(["A"]).and(EventQuery::types(["B"])));
        assert_eq!(
            query.items(),
            [QueryItem {
                types: tags(&["A", "B"]),
                tags: tags(&["x"])
            }]
        );
        assert_eq!(query.type_names(), Some(tags(&["A", "B"])));
    }

    #[test]
    fn empty_combinations_are_every_event_or_none() {
        assert!(EventQuery::all().matches("Anything", &[]));
        assert!(!EventQuery::none().matches("Anything", &[]));
        assert!(EventQuery::any_of([]).is_none());
        assert_eq!(EventQuery::all_of([]), EventQuery::all());
        assert!(EventQuery::types(Vec::<String>::new()).is_none());
        assert_eq!(EventQuery::tag("a").type_names(), None);
    }

    #[test]
    fn an_item_needs_one_of_its_types_and_all_of_its_tags() {
        let query = EventQuery::all_of([
            EventQuery::types(["Lent"]),
            EventQuery::tag("member:1"),
            EventQuery::tag("book:2"),
        ]);
        assert!(query.matches("Lent", &tags(&["book:2", "member:1", "other"])));
        assert!(!query.matches("Lent", &tags(&["member:1"])));
        assert!(!query.matches("Returned", &tags(&["book:2", "member:1"])));
        assert_eq!(
            query.to_string(),
            "(Lent, tag book:2, tag member:1)",
            "tags sorted"
        );
    }
}
