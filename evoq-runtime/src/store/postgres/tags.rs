//! The tag index (schema version 6): what [`read_query`](crate::store::EventStore::read_query)
//! reads and [`append_if`](crate::store::EventStore::append_if) checks its condition by.
//!
//! - **Table `evoq_event_tags (tag, position)`**, keyed by both: one row per tag of an event,
//!   inserted by the transaction that appends the event (`evoq_append_tagged`; since schema 7,
//!   `evoq_append_conditional`), so an event and its tags become visible together, at the
//!   event's place in the commit order.
//! - **A query is read item by item.** Each item of an [`EventQuery`] becomes one branch
//!   giving the positions it matches, ascending, at most the page's size: an item with tags
//!   walks the index of its first tag from the position read after, keeps the positions that
//!   carry its other tags too (one probe of the key each) and whose event has one of its types;
//!   an item without tags reads the events by type. The events of the branches' positions are
//!   then read in position order, up to the head this node has seen, as `read_all` reads them.
//! - **A conditional append goes through the group-commit writer** like every append: the
//!   append function (schema 7's `evoq_append_conditional`, see
//!   [`append_batch_ddl`](super::writer::append_batch_ddl)), after it took the `evoq_head`
//!   lock every append of the cluster takes, looks for the lowest position above the
//!   condition's `after` of an event the query matches, item by item as a read does (an item
//!   with tags from its first tag's index rows, one without from the events of its types), and
//!   among the events of the appends before it in the batch, before the append takes its
//!   positions. The lock orders it with every append of every node: no matching event can
//!   commit between the check and the append.

use tokio_postgres::types::ToSql;

use super::EVENT_COLUMNS;
use super::writer::{AppendFunction, append_batch_ddl};
use crate::store::{EventQuery, QueryItem};

/// Schema version 6, on top of version 5: the tag index, filled from the tags in the metadata
/// of the events already stored, and `evoq_append_tagged`, the append function that writes it
/// (see [`append_batch_ddl`]).
///
/// The fill reads each event's tags from its metadata (JSON in `BYTEA`) with a function of the
/// migration's own, dropped at its end: metadata that does not parse (a row an operator or a
/// faulty disk damaged) gives no tag rather than failing the migration; only events whose
/// metadata holds `"tags"` are parsed.
pub(super) fn tags_ddl(s: &str) -> String {
    format!(
        "
CREATE TABLE {s}.evoq_event_tags (
    tag      TEXT   NOT NULL,
    position BIGINT NOT NULL,
    PRIMARY KEY (tag, position)
);
CREATE FUNCTION {s}.evoq_metadata_tags(p_metadata BYTEA) RETURNS TEXT[]
LANGUAGE plpgsql AS $body$
BEGIN
    RETURN ARRAY(
        SELECT DISTINCT v #>> '{{}}'
        FROM jsonb_array_elements(convert_from(p_metadata, 'UTF8')::jsonb -> 'tags') AS t(v)
        WHERE jsonb_typeof(v) = 'string');
EXCEPTION WHEN OTHERS THEN
    RETURN NULL;
END
$body$;
INSERT INTO {s}.evoq_event_tags (tag, position)
SELECT t.tag, e.position
FROM {s}.events e CROSS JOIN LATERAL unnest({s}.evoq_metadata_tags(e.metadata)) AS t(tag)
WHERE position('\"tags\"'::BYTEA IN e.metadata) > 0;
DROP FUNCTION {s}.evoq_metadata_tags;
{}",
        append_batch_ddl(s, AppendFunction::Tagged)
    )
}

/// The positions one [`EventQuery`] matches, as SQL: one branch per item (see the
/// [module docs](self)), each the positions above `$1` and up to `$2` of the events the item
/// matches, ascending, at most `$3`; the branches' own parameters are `$4` on.
pub(super) struct Matching<'q> {
    branches: Vec<String>,
    values: Vec<&'q (dyn ToSql + Sync)>,
}

impl<'q> Matching<'q> {
    /// The branches of `query`'s items, on the tables of schema `s` (quoted).
    pub(super) fn new(s: &str, query: &'q EventQuery) -> Self {
        let mut matching = Matching {
            branches: Vec::with_capacity(query.items().len()),
            values: Vec::new(),
        };
        for item in query.items() {
            matching.push_item(s, item);
        }
        matching
    }

    /// The placeholder of a new parameter of the branches, `value`.
    fn parameter(&mut self, value: &'q (dyn ToSql + Sync)) -> String {
        self.values.push(value);
        format!("${}", self.values.len() + 3)
    }

    /// Adds the branch of `item`.
    fn push_item(&mut self, s: &str, item: &'q QueryItem) {
        let types = (!item.types.is_empty()).then(|| self.parameter(&item.types));
        let mut sql = match item.tags.split_first() {
            None => format!(
                "SELECT e.position FROM {s}.events e WHERE e.position > $1 AND e.position <= $2"
            ),
            Some((first, others)) => {
                let first = self.parameter(first);
                let mut sql = format!(
                    "SELECT e.position FROM {s}.evoq_event_tags t \
                     JOIN {s}.events e ON e.position = t.position \
                     WHERE t.tag = {first} AND t.position > $1 AND t.position <= $2"
                );
                for tag in others {
                    let tag = self.parameter(tag);
                    sql.push_str(&format!(
                        " AND EXISTS (SELECT 1 FROM {s}.evoq_event_tags o \
                         WHERE o.tag = {tag} AND o.position = t.position)"
                    ));
                }
                sql
            }
        };
        if let Some(types) = types {
            sql.push_str(&format!(" AND e.event_type = ANY({types})"));
        }
        sql.push_str(" ORDER BY e.position LIMIT $3");
        self.branches.push(format!("({sql})"));
    }

    /// The statement reading the matching events (columns [`EVENT_COLUMNS`]) in position
    /// order, at most `$3`. The events are bounded by `$1` and `$2` too, so that a plan that
    /// merges them with the branches' positions starts at `$1`, not at the first event.
    pub(super) fn read_sql(&self, s: &str) -> String {
        format!(
            "SELECT {EVENT_COLUMNS} FROM {s}.events \
             WHERE position > $1 AND position <= $2 AND position IN ({}) \
             ORDER BY position LIMIT $3",
            self.branches.join(" UNION ALL ")
        )
    }

    /// The statement's parameters: `after` (`$1`), `upto` (`$2`), `limit` (`$3`), then the
    /// branches'.
    pub(super) fn parameters<'p>(
        &'p self,
        after: &'p i64,
        upto: &'p i64,
        limit: &'p i64,
    ) -> Vec<&'p (dyn ToSql + Sync)> {
        let mut parameters: Vec<&'p (dyn ToSql + Sync)> = vec![after, upto, limit];
        parameters.extend(self.values.iter().copied());
        parameters
    }
}
