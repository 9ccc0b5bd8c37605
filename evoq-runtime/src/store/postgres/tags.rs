//! The tag index (schema version 6): what [`read_query`](crate::store::EventStore::read_query)
//! reads and [`append_if`](crate::store::EventStore::append_if) checks its condition by.
//!
//! - **Table `evoq_event_tags (tag, position)`**, keyed by both: one row per tag of an event,
//!   inserted by the transaction that appends the event (`evoq_append_tagged`), so an event
//!   and its tags become visible together, at the event's place in the commit order.
//! - **A query is read item by item.** Each item of an [`EventQuery`] becomes one branch
//!   giving the positions it matches, ascending, at most the page's size: an item with tags
//!   walks the index of its first tag from the position read after, keeps the positions that
//!   carry its other tags too (one probe of the key each) and whose event has one of its types;
//!   an item without tags reads the events by type. The events of the branches' positions are
//!   then read in position order, up to the head this node has seen, as `read_all` reads them.
//! - **A conditional append is one transaction** on a pooled connection: the append function
//!   (which takes the `evoq_head` lock every append of the cluster takes, checks the command
//!   and writes the events, their tags and the command's entry), then, under that lock, the
//!   lowest position above the condition's `after` of an event the query matches (its own
//!   events excluded), then `COMMIT`, or `ROLLBACK` when there is one. The lock orders it
//!   with every append of every node: no matching event can commit between the check and the
//!   append.

use std::time::SystemTime;

use tokio_postgres::IsolationLevel;
use tokio_postgres::types::ToSql;

use super::writer::{
    Append, AppendFunction, BatchArrays, append_batch_ddl, append_statement, commit_failure, plan,
};
use super::{EVENT_COLUMNS, Failure, Inner, advance, channel_name, retry_after};
use crate::store::codec::{from_db, time_to_nanos, to_db};
use crate::store::{AppendCondition, Appended, EventQuery, QueryItem, StoreError};

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

    /// The statement giving the lowest matching position (`NULL`: none); `$3` is 1.
    fn first_sql(&self) -> String {
        format!(
            "SELECT MIN(m.position) FROM ({}) AS m",
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

/// [`EventStore::append_if`](crate::store::EventStore::append_if) on the store of `inner`: the
/// transaction of the [module docs](self), retried on transient failures before its commit.
pub(super) async fn append_if(
    inner: &Inner,
    append: Append,
    condition: &AppendCondition,
) -> Result<Appended, StoreError> {
    let check =
        (!condition.query.is_none()).then(|| Matching::new(&inner.schema, &condition.query));
    let conditional = Conditional {
        inner,
        statement: append_statement(&inner.schema),
        channel: channel_name(&inner.options.schema),
        append,
        condition,
        check: check.as_ref().map(|check| (check, check.first_sql())),
    };
    let mut attempt = 0u32;
    loop {
        match conditional.try_once().await {
            Ok(result) => {
                if let Ok(appended) = &result
                    && appended.last_position > 0
                {
                    advance(&inner.head, appended.last_position);
                }
                return result;
            }
            Err(failure) => attempt = retry_after(failure, attempt, inner.options.retries).await?,
        }
    }
}

/// One conditional append, ready to run.
struct Conditional<'a> {
    inner: &'a Inner,
    /// The call of the append function ([`append_statement`]).
    statement: String,
    /// The NOTIFY channel of the schema.
    channel: String,
    append: Append,
    condition: &'a AppendCondition,
    /// The condition's query and the statement of its first match; `None` for a query that
    /// matches nothing (the condition always holds).
    check: Option<(&'a Matching<'a>, String)>,
}

impl Conditional<'_> {
    /// One try: `Ok` with the append's outcome (appended, a duplicate command, a condition that
    /// failed), `Err` for a failure of the database.
    async fn try_once(&self) -> Result<Result<Appended, StoreError>, Failure> {
        const WHAT: &str = "appending under a condition";
        let location = &self.inner.location;
        let fail = |error| Failure::sql(WHAT, location, error);
        let mut client = self.inner.pooled(WHAT).await?;
        // Each statement sees every commit before it started: the check sees every append
        // that committed before this transaction took the head lock.
        let transaction = client
            .build_transaction()
            .isolation_level(IsolationLevel::ReadCommitted)
            .start()
            .await
            .map_err(fail)?;
        let statement = transaction
            .prepare_cached(&self.statement)
            .await
            .map_err(fail)?;
        // A batch of one.
        let appends = [&self.append];
        let arrays = BatchArrays::new(&appends);
        let recorded_at = time_to_nanos(SystemTime::now());
        let rows = transaction
            .query(&statement, &arrays.parameters(&recorded_at, &self.channel))
            .await
            .map_err(fail)?;
        let result = plan(&rows, &appends, location)
            .results
            .into_iter()
            .next()
            .unwrap_or_else(|| {
                Err(StoreError::Integrity {
                    location: format!("{location}: evoq_append_tagged"),
                    reason: "the append function returned no result".into(),
                })
            });
        // A duplicate command: nothing was written.
        let appended = match result {
            Ok(appended) => appended,
            Err(error) => {
                let _ = transaction.rollback().await;
                return Ok(Err(error));
            }
        };
        if let Some(position) = self.first_match(&transaction, &appended).await? {
            let _ = transaction.rollback().await;
            return Ok(Err(StoreError::ConditionFailed {
                stream: self.append.stream.clone(),
                query: self.condition.query.to_string(),
                after: self.condition.after,
                position,
            }));
        }
        transaction
            .commit()
            .await
            .map_err(|error| commit_failure(location, error))?;
        Ok(Ok(appended))
    }

    /// The lowest position above the condition's `after` of an event its query matches, other
    /// than the events `appended` (this transaction's own), if any.
    async fn first_match(
        &self,
        transaction: &deadpool_postgres::Transaction<'_>,
        appended: &Appended,
    ) -> Result<Option<u64>, Failure> {
        const WHAT: &str = "checking the condition of an append";
        let Some((check, sql)) = &self.check else {
            return Ok(None);
        };
        let location = &self.inner.location;
        let fail = |error| Failure::sql(WHAT, location, error);
        let after = to_db(self.condition.after);
        let upto = if appended.last_position > 0 {
            to_db(appended.first_position - 1)
        } else {
            i64::MAX
        };
        let statement = transaction.prepare_cached(sql).await.map_err(fail)?;
        let row = transaction
            .query_one(&statement, &check.parameters(&after, &upto, &1))
            .await
            .map_err(fail)?;
        let position: Option<i64> = row.try_get(0).map_err(fail)?;
        position
            .map(|p| from_db(p, || "evoq_event_tags".to_owned(), "a position"))
            .transpose()
            .map_err(Failure::from)
    }
}
