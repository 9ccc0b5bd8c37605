//! The group-commit writer: every append of a node goes through it, and it commits the appends
//! waiting for it together, one statement (one round trip, one transaction) per batch.
//!
//! - **Batches grow with the load.** The writer takes every append waiting (up to
//!   `max_batch`) into one call of `evoq_append_conditional`, which does the whole batch in a
//!   fixed number of set-based statements: one lookup of every stream's version and live
//!   command entry, one insert of every event, one of every tag (none when no event has a
//!   tag), one of every command entry, the head moved once (and a few statements per condition
//!   of a conditional append). So a batch of 64 costs little more than a batch
//!   of 1, and the more commands are in flight, the more each commit carries.
//! - **A batch waits for the callers it just answered.** Before it closes a batch, the writer
//!   steps aside until the runtime has nothing else to run (see [`gather`]): the callers the
//!   last commit answered run their next command meanwhile, and their appends join this batch.
//!   Without that, a batch closed on the first caller back, and batches alternated between a
//!   few appends and the rest. (Two batches in flight on two connections were measured too:
//!   the head lock lets one in at a time, so they only split the appends in two.)
//! - **A batch never holds two appends it cannot tell apart in one statement**: two appends to
//!   one stream, two commands with one key, or two with one command id (the second must see the
//!   first's events or entry). The writer ends the batch before such an append, which starts
//!   the next one, so the appends still commit in the order they arrived.
//! - **Conditional appends ([`append_if`](crate::store::EventStore::append_if)) are batched
//!   too**, with plain ones: the function checks each job's condition in the batch's order,
//!   against the stored events and the events of the jobs before it in the batch, so a batch
//!   decides as its appends would one after the other. A job whose condition fails is skipped
//!   (nothing appended, nothing recorded) and the others commit.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, SystemTime};

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_postgres::types::ToSql;
use tokio_postgres::{CancelToken, NoTls, Row};
use uuid::Uuid;

use super::{
    BACKEND, COMMAND_COLUMNS, Failure, SourceIo, advance, connect_timeout, decode_command,
    describe, limits, pooled, retry_after,
};
use crate::envelope::NewEvent;
use crate::store::codec::{encode_metadata, from_db, time_to_nanos, to_db};
use crate::store::{AppendCondition, Appended, ExpectedVersion, NewCommand, StoreError};

/// One append: its stream, expected version and events, and the command to record with it, if
/// any. What one job of the append function does.
pub(super) struct Append {
    pub(super) stream: String,
    pub(super) expected: ExpectedVersion,
    pub(super) events: Vec<NewEvent>,
    pub(super) command: Option<NewCommand>,
    /// The condition of a conditional append
    /// ([`append_if`](crate::store::EventStore::append_if)).
    pub(super) condition: Option<AppendCondition>,
}

impl Append {
    /// Whether PostgreSQL can hold every value of the append (see [`limits`](super::limits)).
    pub(super) fn storable(&self) -> Result<(), StoreError> {
        limits::indexed(StoreError::STREAM_ID, &self.stream)?;
        for event in &self.events {
            limits::text("event type", &event.event_type)?;
            for tag in event.metadata.tags.iter() {
                limits::indexed("tag", tag)?;
            }
        }
        if let Some(command) = &self.command {
            if let Some(key) = &command.idempotency_key {
                limits::indexed("idempotency key", key)?;
            }
            limits::text("command type", &command.command)?;
            limits::text("aggregate type", &command.aggregate)?;
        }
        if let Some(condition) = &self.condition {
            limits::query(&condition.query)?;
        }
        Ok(())
    }
}

/// One append waiting for the writer, and where its result goes.
pub(super) struct AppendJob {
    pub(super) append: Append,
    pub(super) reply: oneshot::Sender<Result<Appended, StoreError>>,
}

/// The group-commit writer of one store (see the [module docs](self)).
pub(super) struct Writer {
    pub(super) pool: Pool,
    /// The call of `evoq_append_conditional`, from [`append_statement`].
    pub(super) statement: String,
    /// The quoted schema, for the lookup of an append whose outcome is unknown.
    pub(super) schema: String,
    pub(super) location: String,
    pub(super) channel: String,
    pub(super) head: watch::Sender<u64>,
    pub(super) max_batch: usize,
    pub(super) retries: u32,
    /// The deadline of a wait for a pooled connection.
    pub(super) connect_timeout: Duration,
    /// The sessions' lock timeout (see
    /// [`PostgresOptions::lock_timeout`](super::PostgresOptions::lock_timeout)).
    pub(super) lock_timeout: Duration,
}

/// A batch's outcome before the commit.
struct Planned {
    /// Each append's result, in the batch's order.
    results: Vec<Result<Appended, StoreError>>,
    /// The highest position appended (0: none).
    last_position: u64,
}

/// How many parameters `evoq_append_conditional` takes.
const APPEND_PARAMETERS: usize = 28;

/// A version of the set-based append function (see [`append_batch_ddl`]).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum AppendFunction {
    /// Schema 5: `evoq_append_batch`.
    Batch,
    /// Schema 6: `evoq_append_tagged`, which also writes the tag index.
    Tagged,
    /// Schema 7: `evoq_append_conditional`, which also checks the jobs' conditions.
    Conditional,
}

/// The set-based append of a whole batch (see the [module docs](self)), in the version
/// `function` names: schema 5's `evoq_append_batch`; schema 6's `evoq_append_tagged`, the
/// same plus the tag index; or schema 7's `evoq_append_conditional`, the same plus the jobs'
/// conditions.
///
/// It does what `evoq_append_commands` (schema 2) does for a batch whose appends name distinct
/// streams, keys and command ids, in a fixed number of statements instead of several per
/// append: after the head lock, one query finds each append's live command entry (checked
/// commands: by key, else by id, recorded at or after `c_since`: outcome `duplicate`) and its
/// stream's version (outcome `conflict` when the expected version, `-1` for any, differs, else
/// `appended`); the positions go to the appended ones in the batch's order; expired entries of
/// the checked commands (and the entry of an unchecked key that is replaced) are deleted, then
/// the events (`e_jobs` / `e_offsets`: each event's append, 1-based, and its place in it) and
/// the command entries (for an append without events only when checked) are inserted, the
/// head moves and the commit is notified. `evoq_append_tagged` also inserts a row of
/// `evoq_event_tags` per tag of an appended event (`t_events`: the event's place in the event
/// arrays, 1-based; `t_tags`: the tag), one statement skipped when the batch has no tag.
/// `evoq_append_conditional` also gives a job with a condition (`q_afters`, see
/// [`condition_check_sql`]) that an event matches the outcome `condition`, the lowest matching
/// position in `actual`, before the job takes its positions; such a job deletes no expired
/// command entry either.
///
/// The older functions stay: a node of an older version still running during a rolling
/// upgrade appends with them (`evoq_append_batch` indexing no tag: such a node writes none),
/// under the same head lock as everyone else.
pub(super) fn append_batch_ddl(s: &str, function: AppendFunction) -> String {
    let tag_insert = format!(
        "        IF cardinality(t_tags) > 0 THEN
            INSERT INTO {s}.evoq_event_tags (tag, position)
            SELECT t.tag, v_firsts[e_jobs[t.ev]] + e_offsets[t.ev]
            FROM unnest(t_events, t_tags) AS t(ev, tag)
            WHERE v_outcomes[e_jobs[t.ev]] = 'appended';
        END IF;
"
    );
    let tag_parameters = "    t_events INT[], t_tags TEXT[],\n";
    let (name, tag_parameters, tag_insert) = match function {
        AppendFunction::Batch => ("evoq_append_batch", "", String::new()),
        AppendFunction::Tagged => ("evoq_append_tagged", tag_parameters, tag_insert),
        AppendFunction::Conditional => ("evoq_append_conditional", tag_parameters, tag_insert),
    };
    let (condition_parameters, condition_variables, condition_check, condition_outcome) =
        if function == AppendFunction::Conditional {
            (
                "    q_afters BIGINT[], q_jobs INT[], y_items INT[], y_types TEXT[], g_items INT[],
    g_tags TEXT[],\n",
                CONDITION_VARIABLES,
                condition_check_sql(s),
                CONDITION_OUTCOME,
            )
        } else {
            ("", "", String::new(), "")
        };
    format!(
        "
CREATE FUNCTION {s}.{name}(
    p_streams TEXT[], p_expected BIGINT[], p_counts INT[],
    e_jobs INT[], e_offsets INT[], e_ids UUID[], e_types TEXT[], e_schema_versions BIGINT[],
    e_data BYTEA[], e_metadata BYTEA[],
{tag_parameters}    c_has BOOLEAN[], c_ids UUID[], c_keys TEXT[], c_commands TEXT[], c_aggregates TEXT[],
    c_aggregate_ids TEXT[], c_check BOOLEAN[], c_since BIGINT[],
{condition_parameters}    p_recorded_at BIGINT, p_channel TEXT)
RETURNS TABLE (job INT, outcome TEXT, actual BIGINT, first_position BIGINT, duplicate {s}.commands)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $body$
#variable_conflict use_column
DECLARE
    v_head BIGINT;
    v_next BIGINT;
    v_jobs INT := COALESCE(array_length(p_streams, 1), 0);
    v_outcomes TEXT[];
    v_actuals BIGINT[];
    v_found BOOLEAN[];
    v_duplicates {s}.commands[];
    v_firsts BIGINT[];
{condition_variables}BEGIN
    -- The lock that orders every append (and every command check) of the cluster, held until
    -- the commit.
    SELECT h.position INTO v_head FROM {s}.evoq_head h WHERE h.id = 1 FOR UPDATE;
    IF TRUE = ANY(c_check) THEN
        -- The live entry of each checked command: by its key, else by its id.
        SELECT array_agg(x.found ORDER BY x.i), array_agg(x.entry ORDER BY x.i)
        INTO v_found, v_duplicates
        FROM (
            SELECT j.i, d.found, d.entry
            FROM unnest(c_has, c_ids, c_keys, c_check, c_since)
                 WITH ORDINALITY AS j(has, id, key, chk, since, i)
            LEFT JOIN LATERAL (
                SELECT TRUE AS found, u.entry FROM (
                    SELECT c AS entry, c.recorded_at AS at FROM {s}.commands c
                    WHERE j.has AND j.chk AND j.key IS NULL
                      AND c.command_id = j.id AND c.recorded_at >= j.since
                    UNION ALL
                    SELECT c AS entry, c.recorded_at AS at FROM {s}.commands c
                    WHERE j.has AND j.chk AND j.key IS NOT NULL
                      AND c.idempotency_key = j.key AND c.recorded_at >= j.since
                ) u ORDER BY u.at DESC LIMIT 1
            ) d ON TRUE
        ) x;
    END IF;
    -- Each stream's version (the last entry of its index).
    v_actuals := ARRAY(
        SELECT COALESCE(l.version, 0)
        FROM unnest(p_streams) WITH ORDINALITY AS j(stream, i)
        LEFT JOIN LATERAL (
            SELECT e.version FROM {s}.events e WHERE e.stream_id = j.stream
            ORDER BY e.version DESC LIMIT 1
        ) l ON TRUE
        ORDER BY j.i);
    v_outcomes := array_fill('appended'::TEXT, ARRAY[v_jobs]);
    v_firsts := array_fill(0::BIGINT, ARRAY[v_jobs]);
    v_next := v_head + 1;
    FOR i IN 1 .. v_jobs LOOP
{condition_check}        IF v_found[i] THEN
            v_outcomes[i] := 'duplicate';
            v_actuals[i] := 0;
        ELSIF p_expected[i] >= 0 AND p_expected[i] <> v_actuals[i] THEN
            v_outcomes[i] := 'conflict';
{condition_outcome}        ELSIF p_counts[i] > 0 THEN
            v_firsts[i] := v_next;
            v_next := v_next + p_counts[i];
        END IF;
    END LOOP;
    IF TRUE = ANY(c_check) THEN
        -- A checked command that is not a duplicate: its expired entries go.
        DELETE FROM {s}.commands c
        USING unnest(c_has, c_check, c_keys, c_ids, v_outcomes) AS j(has, chk, key, id, outcome)
        WHERE j.has AND j.chk AND j.key IS NULL AND j.outcome NOT IN ('duplicate', 'condition')
          AND c.command_id = j.id;
    END IF;
    IF EXISTS (SELECT 1 FROM unnest(c_keys) AS k(key) WHERE k.key IS NOT NULL) THEN
        -- The same for a key; and an unchecked command with a key replaces the key's entry.
        DELETE FROM {s}.commands c
        USING unnest(c_has, c_check, c_keys, p_counts, v_outcomes) AS j(has, chk, key, cnt, outcome)
        WHERE j.has AND j.key IS NOT NULL AND c.idempotency_key = j.key
          AND ((j.chk AND j.outcome NOT IN ('duplicate', 'condition'))
               OR (NOT j.chk AND j.outcome = 'appended' AND j.cnt > 0));
    END IF;
    IF v_next > v_head + 1 THEN
        INSERT INTO {s}.events (position, stream_id, version, event_id, event_type, schema_version, data, metadata, recorded_at)
        SELECT v_firsts[e.job] + e.off, p_streams[e.job], v_actuals[e.job] + e.off + 1, e.id, e.typ,
               e.sv, e.data, e.meta, p_recorded_at
        FROM unnest(e_jobs, e_offsets, e_ids, e_types, e_schema_versions, e_data, e_metadata)
             AS e(job, off, id, typ, sv, data, meta)
        WHERE v_outcomes[e.job] = 'appended';
{tag_insert}    END IF;
    INSERT INTO {s}.commands (command_id, idempotency_key, command, aggregate, aggregate_id, stream_id, version, event_count, first_position, last_position, recorded_at)
    SELECT j.id, j.key, j.command, j.aggregate, j.aggregate_id, j.stream, v_actuals[j.i] + j.cnt, j.cnt,
           CASE WHEN j.cnt > 0 THEN v_firsts[j.i] ELSE 0 END,
           CASE WHEN j.cnt > 0 THEN v_firsts[j.i] + j.cnt - 1 ELSE 0 END,
           p_recorded_at
    FROM unnest(c_has, c_ids, c_keys, c_commands, c_aggregates, c_aggregate_ids, c_check, p_streams, p_counts)
         WITH ORDINALITY AS j(has, id, key, command, aggregate, aggregate_id, chk, stream, cnt, i)
    WHERE j.has AND (j.cnt > 0 OR j.chk) AND v_outcomes[j.i] = 'appended';
    IF v_next > v_head + 1 THEN
        UPDATE {s}.evoq_head SET position = v_next - 1 WHERE id = 1;
        PERFORM pg_notify(p_channel, (v_next - 1)::TEXT);
    END IF;
    RETURN QUERY
        SELECT g.i, v_outcomes[g.i], v_actuals[g.i], v_firsts[g.i], v_duplicates[g.i]
        FROM generate_series(1, v_jobs) AS g(i);
END
$body$;
"
    )
}

/// The variables of the condition check of `evoq_append_conditional` (see [`condition_check_sql`]).
const CONDITION_VARIABLES: &str = "    v_item INT := 1;
    v_items INT := COALESCE(array_length(q_jobs, 1), 0);
    v_types TEXT[];
    v_tags TEXT[];
    v_match BIGINT;
    v_stored BIGINT;
    v_batched BIGINT;
    v_failed BIGINT;
";

/// The branch of a job whose condition failed: outcome `condition`, the lowest matching
/// position in `actual`.
const CONDITION_OUTCOME: &str = "        ELSIF v_failed IS NOT NULL THEN
            v_outcomes[i] := 'condition';
            v_actuals[i] := v_failed;
";

/// The condition check of job `i` of `evoq_append_conditional`, at the start of its turn of
/// the loop that gives the positions, so after the jobs before it took theirs.
///
/// A job's condition is `q_afters[i]` (`NULL`: none) and its query's items, the rows of
/// `q_jobs` (each item's job, in the jobs' order) whose number is `v_item`: the item's types
/// are the `y_types` of its number in `y_items`, its tags the `g_tags` of its number in
/// `g_items`, in order. Unless the job is a duplicate, each item gives the lowest position
/// above `after` it matches among the stored events (an item with tags: the index rows of its
/// first tag, which carry its other tags and whose event has one of its types; without: the
/// events of its types). Only when none matches, the events of the jobs before it in the
/// batch that were appended are matched too (their positions are above every stored one), the
/// same way: from the batch's rows of the item's first tag, or the batch's events.
/// The lowest is `v_failed` (`NULL`: the condition holds).
fn condition_check_sql(s: &str) -> String {
    format!(
        "        v_failed := NULL;
        WHILE v_item <= v_items AND q_jobs[v_item] < i LOOP
            v_item := v_item + 1;
        END LOOP;
        IF q_afters[i] IS NOT NULL AND v_found[i] IS NOT TRUE THEN
            v_stored := NULL;
            v_batched := NULL;
            WHILE v_item <= v_items AND q_jobs[v_item] = i LOOP
                v_types := ARRAY(
                    SELECT y.typ FROM unnest(y_items, y_types) AS y(item, typ)
                    WHERE y.item = v_item);
                v_tags := ARRAY(
                    SELECT g.tag FROM unnest(g_items, g_tags) WITH ORDINALITY AS g(item, tag, n)
                    WHERE g.item = v_item ORDER BY g.n);
                IF cardinality(v_tags) > 0 THEN
                    SELECT t.position INTO v_match FROM {s}.evoq_event_tags t
                    WHERE t.tag = v_tags[1] AND t.position > q_afters[i]
                      AND NOT EXISTS (
                          SELECT 1 FROM unnest(v_tags[2:]) AS w(tag)
                          WHERE NOT EXISTS (
                              SELECT 1 FROM {s}.evoq_event_tags o
                              WHERE o.tag = w.tag AND o.position = t.position))
                      AND (cardinality(v_types) = 0 OR EXISTS (
                          SELECT 1 FROM {s}.events e
                          WHERE e.position = t.position AND e.event_type = ANY(v_types)))
                    ORDER BY t.position LIMIT 1;
                ELSE
                    SELECT e.position INTO v_match FROM {s}.events e
                    WHERE e.position > q_afters[i]
                      AND (cardinality(v_types) = 0 OR e.event_type = ANY(v_types))
                    ORDER BY e.position LIMIT 1;
                END IF;
                v_stored := LEAST(v_stored, v_match);
                IF v_stored IS NULL AND v_next > v_head + 1 AND cardinality(v_tags) > 0 THEN
                    SELECT MIN(v_firsts[e_jobs[b.ev]] + e_offsets[b.ev]) INTO v_match
                    FROM unnest(t_events, t_tags) AS b(ev, tag)
                    WHERE b.tag = v_tags[1]
                      AND e_jobs[b.ev] < i AND v_outcomes[e_jobs[b.ev]] = 'appended'
                      AND (cardinality(v_types) = 0 OR e_types[b.ev] = ANY(v_types))
                      AND NOT EXISTS (
                          SELECT 1 FROM unnest(v_tags[2:]) AS w(tag)
                          WHERE NOT EXISTS (
                              SELECT 1 FROM unnest(t_events, t_tags) AS x(ev, tag)
                              WHERE x.ev = b.ev AND x.tag = w.tag));
                    v_batched := LEAST(v_batched, v_match);
                ELSIF v_stored IS NULL AND v_next > v_head + 1 THEN
                    SELECT MIN(v_firsts[e_jobs[b.ev]] + e_offsets[b.ev]) INTO v_match
                    FROM generate_series(1, cardinality(e_jobs)) AS b(ev)
                    WHERE e_jobs[b.ev] < i AND v_outcomes[e_jobs[b.ev]] = 'appended'
                      AND (cardinality(v_types) = 0 OR e_types[b.ev] = ANY(v_types));
                    v_batched := LEAST(v_batched, v_match);
                END IF;
                v_item := v_item + 1;
            END LOOP;
            v_failed := COALESCE(v_stored, v_batched);
        END IF;
"
    )
}

/// The call of the append function of schema `s` (`evoq_append_conditional`): its result rows with
/// the duplicate entry spread into [`COMMAND_COLUMNS`] from column 4 on (see [`job_result`]).
pub(super) fn append_statement(s: &str) -> String {
    let duplicate: Vec<String> = COMMAND_COLUMNS
        .iter()
        .map(|column| format!("(r.duplicate).{column}"))
        .collect();
    let parameters: Vec<String> = (1..=APPEND_PARAMETERS).map(|n| format!("${n}")).collect();
    format!(
        "SELECT r.job, r.outcome, r.actual, r.first_position, {} FROM {s}.evoq_append_conditional({}) r",
        duplicate.join(", "),
        parameters.join(", ")
    )
}

/// The arguments of `evoq_append_conditional` for one batch: one entry per append (job) in the
/// arrays of streams and commands, one per event in the arrays of events, one per tag of an
/// event in the arrays of tags, one per item of a condition's query in the arrays of items. A
/// job without a command has `has_command` false and placeholders in the other command arrays;
/// one without a condition has `after` `NULL`.
#[derive(Default)]
struct BatchArrays<'a> {
    streams: Vec<&'a str>,
    expected: Vec<i64>,
    counts: Vec<i32>,
    event_jobs: Vec<i32>,
    event_offsets: Vec<i32>,
    event_ids: Vec<Uuid>,
    types: Vec<&'a str>,
    schema_versions: Vec<i64>,
    datas: Vec<&'a [u8]>,
    metadatas: Vec<Vec<u8>>,
    tag_events: Vec<i32>,
    tags: Vec<&'a str>,
    has_command: Vec<bool>,
    command_ids: Vec<Uuid>,
    keys: Vec<Option<&'a str>>,
    commands: Vec<&'a str>,
    aggregates: Vec<&'a str>,
    aggregate_ids: Vec<&'a str>,
    checks: Vec<bool>,
    since: Vec<i64>,
    afters: Vec<Option<i64>>,
    item_jobs: Vec<i32>,
    type_items: Vec<i32>,
    item_types: Vec<&'a str>,
    tag_items: Vec<i32>,
    item_tags: Vec<&'a str>,
}

impl<'a> BatchArrays<'a> {
    /// The arrays of `batch`, in its order.
    fn new(batch: &[&'a Append]) -> Self {
        let mut arrays = BatchArrays::default();
        for (index, job) in batch.iter().enumerate() {
            arrays.push_job(index, job);
        }
        arrays
    }

    /// Adds `job`, the `index`th of the batch: its stream, expected version, events and their
    /// tags, and its command.
    fn push_job(&mut self, index: usize, job: &'a Append) {
        let number = i32::try_from(index + 1).unwrap_or(i32::MAX);
        self.streams.push(&job.stream);
        self.expected.push(match job.expected {
            ExpectedVersion::Any => -1,
            ExpectedVersion::NoStream => 0,
            ExpectedVersion::Exact(v) => to_db(v),
        });
        self.counts
            .push(i32::try_from(job.events.len()).unwrap_or(i32::MAX));
        for (offset, event) in job.events.iter().enumerate() {
            self.event_jobs.push(number);
            self.event_offsets
                .push(i32::try_from(offset).unwrap_or(i32::MAX));
            self.event_ids.push(event.event_id);
            self.types.push(event.event_type.as_ref());
            self.schema_versions.push(i64::from(event.schema_version));
            self.datas.push(&event.data);
            self.metadatas.push(encode_metadata(&event.metadata));
            // The event's place in the event arrays, 1-based.
            let place = i32::try_from(self.event_ids.len()).unwrap_or(i32::MAX);
            for tag in event.metadata.tags.iter() {
                self.tag_events.push(place);
                self.tags.push(tag);
            }
        }
        self.push_command(&job.stream, job.command.as_ref());
        self.push_condition(number, job.condition.as_ref());
    }

    /// Adds the condition of the `number`th job (1-based), if it has one: its `after`, and
    /// each item of its query with the item's types and tags.
    fn push_condition(&mut self, number: i32, condition: Option<&'a AppendCondition>) {
        self.afters.push(condition.map(|c| to_db(c.after)));
        for item in condition.map_or(&[][..], |c| c.query.items()) {
            self.item_jobs.push(number);
            let item_number = i32::try_from(self.item_jobs.len()).unwrap_or(i32::MAX);
            for event_type in &item.types {
                self.type_items.push(item_number);
                self.item_types.push(event_type);
            }
            for tag in &item.tags {
                self.tag_items.push(item_number);
                self.item_tags.push(tag);
            }
        }
    }

    /// Adds the command of a job (placeholders when it has none); the check is set when the
    /// command asks for one.
    fn push_command(&mut self, stream: &'a str, command: Option<&'a NewCommand>) {
        let since = command.and_then(|c| c.deduplicate_since);
        self.has_command.push(command.is_some());
        self.command_ids
            .push(command.map_or(Uuid::nil(), |c| c.command_id));
        self.keys
            .push(command.and_then(|c| c.idempotency_key.as_deref()));
        self.commands.push(command.map_or("", |c| &c.command));
        self.aggregates.push(command.map_or("", |c| &c.aggregate));
        self.aggregate_ids
            .push(command.map_or("", |c| c.aggregate_id(stream)));
        self.checks.push(since.is_some());
        self.since.push(since.map_or(0, time_to_nanos));
    }

    /// The parameters of [`append_statement`], in the function's order.
    fn parameters<'p>(
        &'p self,
        recorded_at: &'p i64,
        channel: &'p String,
    ) -> [&'p (dyn ToSql + Sync); APPEND_PARAMETERS] {
        [
            &self.streams,
            &self.expected,
            &self.counts,
            &self.event_jobs,
            &self.event_offsets,
            &self.event_ids,
            &self.types,
            &self.schema_versions,
            &self.datas,
            &self.metadatas,
            &self.tag_events,
            &self.tags,
            &self.has_command,
            &self.command_ids,
            &self.keys,
            &self.commands,
            &self.aggregates,
            &self.aggregate_ids,
            &self.checks,
            &self.since,
            &self.afters,
            &self.item_jobs,
            &self.type_items,
            &self.item_types,
            &self.tag_items,
            &self.item_tags,
            recorded_at,
            channel,
        ]
    }
}

/// What a batch already holds that a later append must not share with it (see
/// [`Writer::next_batch`]).
#[derive(Default)]
struct Claimed<'a> {
    streams: HashSet<&'a str>,
    keys: HashSet<&'a str>,
    command_ids: HashSet<Uuid>,
}

impl<'a> Claimed<'a> {
    /// Claims what `job` names; false (claiming nothing) when it shares any of it with a job
    /// claimed before.
    fn claim(&mut self, job: &'a AppendJob) -> bool {
        let job = &job.append;
        let key = job
            .command
            .as_ref()
            .and_then(|c| c.idempotency_key.as_deref());
        let id = job.command.as_ref().map(|c| c.command_id);
        if self.streams.contains(job.stream.as_str())
            || key.is_some_and(|k| self.keys.contains(k))
            || id.is_some_and(|i| self.command_ids.contains(&i))
        {
            return false;
        }
        self.streams.insert(&job.stream);
        if let Some(key) = key {
            self.keys.insert(key);
        }
        if let Some(id) = id {
            self.command_ids.insert(id);
        }
        true
    }
}

/// How many appends from the front of `waiting` (at most `max`) can share one statement: up to
/// the first that shares a stream, a key or a command id with one before it.
fn batch_len(waiting: &VecDeque<AppendJob>, max: usize) -> usize {
    let mut claimed = Claimed::default();
    waiting
        .iter()
        .take(max)
        .take_while(|job| claimed.claim(job))
        .count()
}

/// Adds to `received` what else arrives while the runtime has other work to do (up to `max`):
/// the writer steps aside (`yield_now`) and looks again until two turns in a row bring
/// nothing. The callers the last commit answered are among that work: each runs its next
/// command and appends, so they join this batch rather than the next, and a batch grows to
/// the number of appends in flight. On an idle runtime a turn returns at once, so an append
/// alone is not delayed.
async fn gather(
    jobs: &mut mpsc::UnboundedReceiver<AppendJob>,
    received: &mut Vec<AppendJob>,
    max: usize,
) {
    let mut quiet = 0;
    while received.len() < max && quiet < 2 {
        let before = received.len();
        while received.len() < max {
            match jobs.try_recv() {
                Ok(job) => received.push(job),
                Err(_) => break,
            }
        }
        if received.len() == before {
            quiet += 1;
        } else {
            quiet = 0;
        }
        tokio::task::yield_now().await;
    }
}

impl Writer {
    /// Takes the appends as they come and commits them in batches, one at a time; returns when
    /// every sender is gone.
    pub(super) async fn run(self, mut jobs: mpsc::UnboundedReceiver<AppendJob>) {
        let mut waiting: VecDeque<AppendJob> = VecDeque::new();
        let mut received = Vec::with_capacity(self.max_batch);
        loop {
            if waiting.is_empty() && jobs.recv_many(&mut received, self.max_batch).await == 0 {
                return;
            }
            gather(&mut jobs, &mut received, self.max_batch).await;
            waiting.extend(received.drain(..));
            let len = batch_len(&waiting, self.max_batch).max(1);
            let batch: Vec<AppendJob> = waiting.drain(..len).collect();
            self.commit_and_reply(batch).await;
        }
    }

    /// Commits `batch` and answers each of its appends.
    ///
    /// When the database refuses data of one of the appends (a value the checks of
    /// [`limits`](super::limits) let through), the whole transaction rolled back: the batch is
    /// committed again in halves, in order, until the append that holds the data is alone, so
    /// that it fails by itself ([`StoreError::Unstorable`]) and every other append commits.
    async fn commit_and_reply(&self, mut batch: Vec<AppendJob>) {
        match self.commit(&batch).await {
            Ok(results) => {
                for (job, result) in batch.into_iter().zip(results) {
                    let _ = job.reply.send(result);
                }
            }
            Err(error) if refuses_data(&error) && batch.len() > 1 => {
                let second = batch.split_off(batch.len() / 2);
                Box::pin(self.commit_and_reply(batch)).await;
                Box::pin(self.commit_and_reply(second)).await;
            }
            Err(error) if refuses_data(&error) => {
                // The server's words, not the error's whole text, which names the server: the
                // caller's input is at fault, and an HTTP answer may show this.
                let words = refusal(&error);
                for job in batch {
                    let _ = job.reply.send(Err(limits::unstorable(
                        "events of the stream",
                        &job.append.stream,
                        format!("the database refused them ({words}); fix their data"),
                    )));
                }
            }
            Err(error) => {
                // Each append gets the batch's error as it is: the same words, the same kind.
                for job in batch {
                    let _ = job.reply.send(Err(error.clone()));
                }
            }
        }
    }

    /// Commits `batch` in one transaction, retrying transient failures that happen before the
    /// commit.
    async fn commit(
        &self,
        batch: &[AppendJob],
    ) -> Result<Vec<Result<Appended, StoreError>>, StoreError> {
        metrics::histogram!("evoq_store_batch_size", "backend" => BACKEND)
            .record(batch.len() as f64);
        let started = std::time::Instant::now();
        let committed = self.commit_retrying(batch).await;
        metrics::histogram!("evoq_store_commit_seconds", "backend" => BACKEND)
            .record(started.elapsed().as_secs_f64());
        committed
    }

    /// [`commit`](Self::commit), unmeasured.
    async fn commit_retrying(
        &self,
        batch: &[AppendJob],
    ) -> Result<Vec<Result<Appended, StoreError>>, StoreError> {
        let appends: Vec<&Append> = batch.iter().map(|job| &job.append).collect();
        self.commit_appends(&appends).await
    }

    /// Commits `appends` in one transaction, retrying transient failures that happen before
    /// the commit. When the connection broke after the statement was sent (it may have
    /// committed), the store looks for what it wrote before it tries again (see
    /// [`settle`](Self::settle)): appends it finds are answered with what is stored, never
    /// appended twice; the others are committed again.
    async fn commit_appends(
        &self,
        appends: &[&Append],
    ) -> Result<Vec<Result<Appended, StoreError>>, StoreError> {
        let mut attempt = 0u32;
        loop {
            let recorded_at = time_to_nanos(SystemTime::now());
            // Below every position the attempt can take: the lookup after a lost reply reads
            // only above it.
            let known_head = *self.head.borrow();
            let failure = match self.try_commit(appends, recorded_at).await {
                Ok(planned) => {
                    if planned.last_position > 0 {
                        advance(&self.head, planned.last_position);
                    }
                    return Ok(planned.results);
                }
                Err(Attempt::Failed(failure)) => failure,
                Err(Attempt::Unknown {
                    error,
                    cause,
                    cancel,
                }) => {
                    match self.settle(appends, recorded_at, known_head, &cancel).await {
                        // Nothing of it is stored: it did not commit; tried again as the
                        // connection failure it is.
                        Ok(Settled::NotCommitted) => {
                            Failure::sql("appending", &self.location, cause)
                        }
                        Ok(Settled::Committed(found)) => {
                            return Ok(self.answer_settled(appends, found).await);
                        }
                        // The store could not tell: the outcome stays unknown.
                        Err(_) => return Err(error),
                    }
                }
            };
            attempt = retry_after(failure, attempt, self.retries, self.lock_timeout).await?;
        }
    }

    /// The results of `appends` whose attempt committed, as [`settle`](Self::settle) found
    /// them: an append found is answered with what is stored; one not found took no part in
    /// that commit (its condition, expected version or command check refused it, or it had
    /// nothing to write) and is committed again, alone with the others not found, to get its
    /// answer.
    async fn answer_settled(
        &self,
        appends: &[&Append],
        found: Vec<Option<Appended>>,
    ) -> Vec<Result<Appended, StoreError>> {
        let last = found
            .iter()
            .flatten()
            .map(|appended| appended.last_position)
            .max()
            .unwrap_or(0);
        if last > 0 {
            advance(&self.head, last);
        }
        let again: Vec<&Append> = appends
            .iter()
            .zip(&found)
            .filter(|(_, found)| found.is_none())
            .map(|(append, _)| *append)
            .collect();
        // A failure of the appends committed again is theirs alone: an append found stored
        // is answered as stored whatever becomes of the others (never failed, never resent).
        let (mut answers, failed) = if again.is_empty() {
            (Vec::new().into_iter(), None)
        } else {
            match Box::pin(self.commit_appends(&again)).await {
                Ok(answers) => (answers.into_iter(), None),
                Err(error) => (Vec::new().into_iter(), Some(error)),
            }
        };
        found
            .into_iter()
            .map(|found| match (found, &failed) {
                (Some(appended), _) => Ok(appended),
                (None, Some(error)) => Err(error.clone()),
                (None, None) => answers.next().unwrap_or_else(|| {
                    Err(StoreError::Integrity {
                        location: format!("{}: evoq_append_conditional", self.location),
                        reason: "an append committed again got no answer".into(),
                    })
                }),
            })
            .collect()
    }

    /// Whether the attempt of `appends` stamped `recorded_at` committed, after its connection
    /// broke with the statement sent: its statement is cancelled first (through `cancel`, in
    /// case it still waits on the server), then, on a new connection and under the lock of the
    /// `evoq_head` row (which a commit still under way holds until it ends), the store looks
    /// for its events by their ids and for its command entries by their ids and that stamp.
    /// `Committed` holds, per append, what is stored of it.
    async fn settle(
        &self,
        appends: &[&Append],
        recorded_at: i64,
        known_head: u64,
        cancel: &CancelToken,
    ) -> Result<Settled, Failure> {
        let location = &self.location;
        let what = "looking for the events of an append whose connection broke";
        tracing::warn!(
            name: "evoq.store.append",
            stage = "unknown",
            backend = BACKEND,
            appends = appends.len(),
            "an append lost its connection after it was sent: looking for its events before trying again",
        );
        // Unless the cancel reached the server, the statement may still be on its way to the
        // head's lock, behind the lookup: finding nothing would prove nothing.
        match tokio::time::timeout(self.connect_timeout, cancel.cancel_query(NoTls)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(Failure::sql(what, location, error)),
            Err(_) => {
                return Err(Failure::Transient(connect_timeout(
                    what,
                    location,
                    self.connect_timeout,
                )));
            }
        }
        let ids: Vec<Uuid> = appends
            .iter()
            .flat_map(|append| append.events.iter().map(|event| event.event_id))
            .collect();
        let streams: Vec<&str> = appends
            .iter()
            .map(|append| append.stream.as_str())
            .collect();
        let commands: Vec<Uuid> = appends
            .iter()
            .filter_map(|append| append.command.as_ref().map(|c| c.command_id))
            .collect();
        let s = &self.schema;
        let client = pooled(&self.pool, what, location, self.connect_timeout).await?;
        let fail = |error| Failure::sql(what, location, error);
        client.batch_execute("BEGIN").await.map_err(fail)?;
        let looked = async {
            client
                .query(
                    &format!("SELECT 1 FROM {s}.evoq_head WHERE id = 1 FOR UPDATE"),
                    &[],
                )
                .await?;
            let events = client
                .query(
                    &format!(
                        "SELECT event_id, position, version FROM {s}.events \
                         WHERE position > $3 AND stream_id = ANY($1) AND event_id = ANY($2)"
                    ),
                    &[&streams, &ids, &to_db(known_head)],
                )
                .await?;
            let entries = client
                .query(
                    &format!(
                        "SELECT command_id, version, first_position, last_position FROM {s}.commands \
                         WHERE command_id = ANY($1) AND recorded_at = $2"
                    ),
                    &[&commands, &recorded_at],
                )
                .await?;
            Ok::<_, tokio_postgres::Error>((events, entries))
        }
        .await;
        let _ = client.batch_execute("ROLLBACK").await;
        let (events, entries) = looked.map_err(fail)?;
        let stored = |row: &Row, at: usize| -> Result<u64, Failure> {
            let value: i64 = row.try_get(at).map_err(fail)?;
            Ok(from_db(
                value,
                || format!("{location}: events"),
                "a position",
            )?)
        };
        let mut events_by_id = HashMap::with_capacity(events.len());
        for row in &events {
            let id: Uuid = row.try_get(0).map_err(fail)?;
            events_by_id.insert(id, (stored(row, 1)?, stored(row, 2)?));
        }
        let mut entries_by_id = HashMap::with_capacity(entries.len());
        for row in &entries {
            let id: Uuid = row.try_get(0).map_err(fail)?;
            let appended = Appended {
                version: stored(row, 1)?,
                first_position: stored(row, 2)?,
                last_position: stored(row, 3)?,
            };
            entries_by_id.insert(id, appended);
        }
        if events_by_id.is_empty() && entries_by_id.is_empty() {
            return Ok(Settled::NotCommitted);
        }
        let found = appends
            .iter()
            .map(|append| {
                if let Some(entry) = append
                    .command
                    .as_ref()
                    .and_then(|command| entries_by_id.get(&command.command_id))
                {
                    return Some(*entry);
                }
                let stored: Vec<(u64, u64)> = append
                    .events
                    .iter()
                    .filter_map(|event| events_by_id.get(&event.event_id).copied())
                    .collect();
                (!stored.is_empty() && stored.len() == append.events.len()).then(|| Appended {
                    version: stored
                        .iter()
                        .map(|(_, version)| *version)
                        .max()
                        .unwrap_or(0),
                    first_position: stored
                        .iter()
                        .map(|(position, _)| *position)
                        .min()
                        .unwrap_or(0),
                    last_position: stored
                        .iter()
                        .map(|(position, _)| *position)
                        .max()
                        .unwrap_or(0),
                })
            })
            .collect();
        Ok(Settled::Committed(found))
    }

    /// One round trip: `evoq_append_conditional` runs the whole batch as one statement, so one
    /// transaction (autocommit) that locks the head row, checks each append's command and
    /// expected version, inserts, moves the head and notifies; its rows and command entries
    /// are stamped `recorded_at`.
    async fn try_commit(&self, appends: &[&Append], recorded_at: i64) -> Result<Planned, Attempt> {
        let location = &self.location;
        let client = pooled(&self.pool, "appending", location, self.connect_timeout)
            .await
            .map_err(Attempt::Failed)?;
        let statement = client
            .prepare_cached(&self.statement)
            .await
            .map_err(|e| Attempt::Failed(Failure::sql("appending", location, e)))?;
        let arrays = BatchArrays::new(appends);
        let rows = client
            .query(&statement, &arrays.parameters(&recorded_at, &self.channel))
            .await
            .map_err(|error| commit_failure(location, error, &client))?;
        Ok(plan(&rows, appends, location))
    }
}

/// How an attempt to commit a batch failed.
enum Attempt {
    /// Before the commit, or refused by the server: nothing was written.
    Failed(Failure),
    /// The connection broke after the statement was sent: it may have committed. `error` says
    /// so; `cancel` reaches the statement, should it still run on the server.
    Unknown {
        error: StoreError,
        cause: tokio_postgres::Error,
        cancel: CancelToken,
    },
}

/// What [`Writer::settle`] found of an attempt whose outcome was unknown.
enum Settled {
    /// Nothing of it is stored: it did not commit.
    NotCommitted,
    /// It committed: per append of the batch, what is stored of it (`None`: the append took
    /// no part in the commit).
    Committed(Vec<Option<Appended>>),
}

/// The failure of the statement that commits appends on `location`: when the server answered
/// with an error, the transaction rolled back and nothing was written; when the connection
/// broke while it ran, it may have committed: the error says the outcome is unknown, and the
/// writer looks for the appends' events before it tries again (see [`Writer::settle`]).
fn commit_failure(
    location: &str,
    error: tokio_postgres::Error,
    client: &tokio_postgres::Client,
) -> Attempt {
    // Only a connection that broke leaves the outcome open: an answer of the server's, or an
    // error of the client's before anything was sent, wrote nothing.
    let broke = error.code().is_none() && (error.is_closed() || error.source_io().is_some());
    if !broke {
        return Attempt::Failed(Failure::sql("appending", location, error));
    }
    Attempt::Unknown {
        cancel: client.cancel_token(),
        error: StoreError::Backend {
            backend: BACKEND,
            message: format!(
                "an append on {location} lost its connection and its outcome is unknown (read the stream to see whether it was written): {}",
                describe(&error)
            ),
        },
        cause: error,
    }
}

/// Whether the database refused the data of a statement, rolling it back: what an append
/// holds, not the database's state, so the batch's other appends commit without it. The
/// SQLSTATE classes of such a refusal: 22, a data exception; 23, a constraint the append
/// function does not check itself (an operator's CHECK, an event id used twice); 54, a value
/// past a limit of the database's; and the classes of a trigger or routine an operator added
/// that refuses the row: P0 (PL/pgSQL's `RAISE EXCEPTION`), 09 (triggered action), 27
/// (triggered data change), 2F (SQL routine), 38 and 39 (external routine), 44 (`WITH CHECK
/// OPTION`). A connection, a lock, resources or the server itself (08, 40, 53, 57, 58, XX) are
/// the database's state, never the data's.
fn refuses_data(error: &StoreError) -> bool {
    const CLASSES: [&str; 10] = ["09", "22", "23", "27", "2F", "38", "39", "44", "54", "P0"];
    matches!(
        error,
        StoreError::Refused { code: Some(code), .. }
            if CLASSES.iter().any(|class| code.starts_with(class))
    )
}

/// The database's words for data it refused: its code, message and hint, and the routine
/// that raised it (a trigger's function), but not its detail, which shows the refused row's
/// values (the event's data and metadata, in hex).
fn refusal(error: &StoreError) -> String {
    let StoreError::Refused { reason, source, .. } = error else {
        return String::new();
    };
    let Some(db) = source
        .as_deref()
        .and_then(|source| source.downcast_ref::<tokio_postgres::Error>())
        .and_then(tokio_postgres::Error::as_db_error)
    else {
        return reason.clone();
    };
    let mut words = format!("{} {}", db.code().code(), db.message());
    if let Some(routine) = db.where_().and_then(raised_by) {
        words.push_str(&format!(", raised by {routine}"));
    }
    if let Some(hint) = db.hint() {
        words.push_str(&format!(" (hint: {hint})"));
    }
    words
}

/// The routine an error's context (PostgreSQL's `CONTEXT`, innermost first) says raised it,
/// unless it is the append function itself: `PL/pgSQL function s.refuse() line 3 at RAISE`
/// gives `PL/pgSQL function s.refuse()`.
fn raised_by(context: &str) -> Option<&str> {
    let first = context.lines().next()?;
    let routine = first.split(" line ").next()?;
    let named = routine.starts_with("PL/pgSQL function ") || routine.starts_with("SQL function ");
    (named && !routine.contains("evoq_append_conditional")).then_some(routine)
}

/// Each append's result from the rows of the append function; an append the rows do not
/// answer fails with an integrity error.
fn plan(rows: &[Row], batch: &[&Append], location: &str) -> Planned {
    let mut results: Vec<Option<Result<Appended, StoreError>>> =
        (0..batch.len()).map(|_| None).collect();
    let mut last_position = 0;
    for row in rows {
        let Some(index) = row
            .try_get::<_, i32>(0)
            .ok()
            .and_then(|job| usize::try_from(job).ok())
            .and_then(|job| job.checked_sub(1))
        else {
            continue;
        };
        let Some((slot, job)) = results.get_mut(index).zip(batch.get(index).copied()) else {
            continue;
        };
        let result = job_result(row, job, location);
        if let Ok(appended) = &result {
            last_position = last_position.max(appended.last_position);
        }
        *slot = Some(result);
    }
    let results = results
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                Err(StoreError::Integrity {
                    location: format!("{location}: evoq_append_conditional"),
                    reason: "the append function returned no result for an append of the batch"
                        .into(),
                })
            })
        })
        .collect();
    Planned {
        results,
        last_position,
    }
}

/// One append's result from its row of `evoq_append_conditional` (columns of
/// [`append_statement`]).
fn job_result(row: &Row, job: &Append, location: &str) -> Result<Appended, StoreError> {
    let stream = || format!("stream `{}`", job.stream);
    let corrupt = |what: &str, e: &dyn std::fmt::Display| StoreError::Integrity {
        location: format!("{location}: evoq_append_conditional"),
        reason: format!("the append function's {what} does not decode ({e})"),
    };
    let outcome: &str = row.try_get(1).map_err(|e| corrupt("outcome", &e))?;
    let actual: i64 = row.try_get(2).map_err(|e| corrupt("version", &e))?;
    match outcome {
        "appended" => {
            let first: i64 = row.try_get(3).map_err(|e| corrupt("position", &e))?;
            let version = from_db(actual, stream, "the version")?;
            let first = from_db(first, || "evoq_head".to_owned(), "the position")?;
            let count = job.events.len() as u64;
            Ok(Appended {
                version: version + count,
                first_position: first,
                last_position: if count == 0 { 0 } else { first + count - 1 },
            })
        }
        "conflict" => Err(StoreError::WrongExpectedVersion {
            stream: job.stream.clone(),
            expected: job.expected,
            actual: from_db(actual, stream, "the version")?,
        }),
        "duplicate" => Err(StoreError::DuplicateCommand {
            record: Box::new(decode_command(row, 4)?),
        }),
        "condition" => match &job.condition {
            Some(condition) => Err(StoreError::ConditionFailed {
                stream: job.stream.clone(),
                query: condition.query.to_string(),
                after: condition.after,
                position: from_db(actual, || "evoq_event_tags".to_owned(), "a position")?,
            }),
            None => Err(corrupt(
                "outcome",
                &"`condition` for an append without a condition",
            )),
        },
        other => Err(corrupt("outcome", &format!("unknown outcome `{other}`"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(stream: &str, key: Option<&str>, id: Option<u128>) -> AppendJob {
        let (reply, _) = oneshot::channel();
        AppendJob {
            append: Append {
                stream: stream.to_owned(),
                expected: ExpectedVersion::Any,
                events: Vec::new(),
                condition: None,
                command: id.map(|id| NewCommand {
                    command_id: Uuid::from_u128(id),
                    idempotency_key: key.map(str::to_owned),
                    command: "Deposit".into(),
                    aggregate: "account".into(),
                    deduplicate_since: None,
                }),
            },
            reply,
        }
    }

    #[test]
    fn a_batch_ends_before_a_second_append_to_one_stream() {
        let waiting: VecDeque<_> = [
            job("a", None, None),
            job("b", None, None),
            job("a", None, None),
        ]
        .into_iter()
        .collect();
        assert_eq!(batch_len(&waiting, 10), 2);
    }

    #[test]
    fn a_batch_ends_before_a_second_command_with_one_key_or_one_id() {
        let waiting: VecDeque<_> = [job("a", Some("k"), Some(1)), job("b", Some("k"), Some(2))]
            .into_iter()
            .collect();
        assert_eq!(batch_len(&waiting, 10), 1);
        let waiting: VecDeque<_> = [job("a", None, Some(1)), job("b", None, Some(1))]
            .into_iter()
            .collect();
        assert_eq!(batch_len(&waiting, 10), 1);
    }

    #[test]
    fn a_batch_of_distinct_appends_is_cut_at_the_most_it_may_hold() {
        let waiting: VecDeque<_> = (0..10)
            .map(|i| job(&format!("s{i}"), None, Some(i)))
            .collect();
        assert_eq!(batch_len(&waiting, 4), 4);
        assert_eq!(batch_len(&waiting, 64), 10);
    }
}
