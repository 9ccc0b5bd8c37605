//! The SQLite store's tag index (table `event_tags`, schema version 5): one row per tag of each
//! event, keyed by `(tag, position)`, written by the writer in the transaction of the event.
//! What [`read_query`](crate::store::EventStore::read_query) reads and
//! [`append_if`](crate::store::EventStore::append_if) checks its condition by.
//!
//! An event without tags has no row and costs no statement. A query is one SQL statement: the
//! union of its items, each the positions of the events it matches in position order (an item
//! with tags walks the index of its first tag and probes the others by key; an item without
//! tags walks the events), merged in position order and cut at the limit, so that a page reads
//! no further than it returns.

use std::fmt::Write;
use std::path::Path;

use rusqlite::types::{Value, ValueRef};
use rusqlite::{Connection, params};

use super::backend;
use crate::store::codec::decode_metadata;
use crate::store::{EventQuery, QueryItem, StoreError};

/// The schema's step from version 4 to 5: the tag index. `WITHOUT ROWID`: the key is the whole
/// row, so an index row is stored once, in tag order then position order.
pub(super) const SCHEMA_V5: &str = "
CREATE TABLE event_tags (
    tag      TEXT    NOT NULL,
    position INTEGER NOT NULL,
    PRIMARY KEY (tag, position)
) WITHOUT ROWID;
";

/// Indexes `tags`, the tags of the event at `position` (call it only for an event that has
/// some). A row already there is kept: the event carries that tag either way.
pub(super) fn insert_tags(
    conn: &Connection,
    position: i64,
    tags: &[String],
) -> rusqlite::Result<()> {
    let mut stmt =
        conn.prepare_cached("INSERT OR IGNORE INTO event_tags (tag, position) VALUES (?1, ?2)")?;
    for tag in tags {
        stmt.execute(params![tag, position])?;
    }
    Ok(())
}

/// Fills the tag index from the metadata of the events already stored (the migration to
/// version 5, in its transaction). Only rows whose metadata mentions `"tags"` are decoded; a
/// row whose metadata does not decode is left out (reads report it as undecodable anyway).
pub(super) fn index_stored_tags(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let fail = |e: rusqlite::Error| backend("indexing the tags of the stored events", path, e);
    let mut select = conn
        .prepare(
            "SELECT position, metadata FROM events WHERE instr(metadata, CAST('\"tags\"' AS BLOB)) > 0 ORDER BY position",
        )
        .map_err(fail)?;
    let mut rows = select.query([]).map_err(fail)?;
    while let Some(row) = rows.next().map_err(fail)? {
        let position: i64 = row.get(0).map_err(fail)?;
        let metadata = match row.get_ref(1).map_err(fail)? {
            ValueRef::Blob(bytes) | ValueRef::Text(bytes) => decode_metadata(bytes, String::new),
            _ => continue,
        };
        if let Ok(metadata) = metadata
            && !metadata.tags.is_empty()
        {
            insert_tags(conn, position, &metadata.tags).map_err(fail)?;
        }
    }
    Ok(())
}

/// The SQL of the positions of the events `query` matches above position `?1` and up to `?2`,
/// ascending, at most `?3` of them, and the values of its other parameters (from `?4`). The
/// text depends only on the query's shape (how many items, types and tags), so that it is
/// prepared once per shape. `query` must have an item.
pub(super) fn matching_positions(query: &EventQuery) -> (String, Vec<Value>) {
    let mut values = Vec::new();
    let arms: Vec<String> = query
        .items()
        .iter()
        .map(|item| item_positions(item, &mut values))
        .collect();
    (
        format!("{} ORDER BY 1 LIMIT ?3", arms.join(" UNION ")),
        values,
    )
}

/// The SQL of the positions of the events `item` matches (above `?1`, up to `?2`), its
/// parameters' values pushed onto `values`.
fn item_positions(item: &QueryItem, values: &mut Vec<Value>) -> String {
    let mut param = |value: &str| {
        values.push(Value::Text(value.to_owned()));
        format!("?{}", values.len() + 3)
    };
    let types = (!item.types.is_empty()).then(|| {
        let marks: Vec<String> = item.types.iter().map(|t| param(t)).collect();
        marks.join(", ")
    });
    let mut sql = String::new();
    match item.tags.split_first() {
        None => {
            sql.push_str("SELECT position FROM events WHERE position > ?1 AND position <= ?2");
            if let Some(types) = types {
                let _ = write!(sql, " AND event_type IN ({types})");
            }
        }
        Some((first, others)) => {
            sql.push_str("SELECT t0.position FROM event_tags t0");
            for (i, tag) in (1..).zip(others) {
                let _ = write!(
                    sql,
                    " JOIN event_tags t{i} ON t{i}.tag = {} AND t{i}.position = t0.position",
                    param(tag)
                );
            }
            if types.is_some() {
                sql.push_str(" JOIN events e ON e.position = t0.position");
            }
            let _ = write!(
                sql,
                " WHERE t0.tag = {} AND t0.position > ?1 AND t0.position <= ?2",
                param(first)
            );
            if let Some(types) = types {
                let _ = write!(sql, " AND e.event_type IN ({types})");
            }
        }
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_is_one_union_of_its_items_numbered_after_the_bounds() {
        let query = EventQuery::types(["Lent", "Returned"])
            .and(EventQuery::tags(["book:b1", "member:m1"]))
            .or(EventQuery::types(["Joined"]))
            .or(EventQuery::all());
        let (sql, values) = matching_positions(&query);
        assert_eq!(
            sql,
            "SELECT t0.position FROM event_tags t0 JOIN event_tags t1 ON t1.tag = ?6 AND t1.position = t0.position JOIN events e ON e.position = t0.position WHERE t0.tag = ?7 AND t0.position > ?1 AND t0.position <= ?2 AND e.event_type IN (?4, ?5) \
             UNION SELECT position FROM events WHERE position > ?1 AND position <= ?2 AND event_type IN (?8) \
             UNION SELECT position FROM events WHERE position > ?1 AND position <= ?2 \
             ORDER BY 1 LIMIT ?3"
        );
        let texts: Vec<&str> = values
            .iter()
            .map(|v| match v {
                Value::Text(text) => text.as_str(),
                _ => "?",
            })
            .collect();
        assert_eq!(
            texts,
            ["Lent", "Returned", "member:m1", "book:b1", "Joined"]
        );
    }
}
