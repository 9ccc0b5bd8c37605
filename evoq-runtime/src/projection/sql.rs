//! What the SQL read models of both databases share: names they accept, how a migration list
//! is checked against the migrations a database recorded, whose a read model is (the projection
//! recorded as its owner) and why another is refused, and small conversions.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::util::hash::fnv1a_64;

/// How many characters of a statement an error quotes.
pub(super) const QUOTED_SQL: usize = 160;

/// What a name of a read model, of its schema or of one of its tables may be.
pub(super) const IDENTIFIER_RULE: &str = "use 1 to 63 ASCII letters, digits or `_`";

/// Whether `name` follows [`IDENTIFIER_RULE`].
pub(super) fn is_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The checksum recorded with an applied migration's SQL.
pub(super) fn checksum(sql: &str) -> i64 {
    i64::from_ne_bytes(fnv1a_64(sql.bytes()).to_ne_bytes())
}

/// Microseconds since the Unix epoch, now.
pub(super) fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// A statement on one line, shortened to [`QUOTED_SQL`] characters, in backquotes.
pub(super) fn quote_sql(sql: &str) -> String {
    let flat = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= QUOTED_SQL {
        format!("`{flat}`")
    } else {
        format!("`{}...`", flat.chars().take(QUOTED_SQL).collect::<String>())
    }
}

/// A position as the databases store it.
pub(super) fn to_db(position: u64) -> i64 {
    i64::try_from(position).unwrap_or(i64::MAX)
}

/// Why the migrations a database recorded do not fit the list a read model gives.
pub(super) enum Mismatch {
    /// The database holds more migrations than the list.
    TooNew { applied: u32, known: u32 },
    /// The migration at `version` was applied otherwise than the list now says.
    Changed { version: u32, reason: String },
}

/// Checks the migrations a database recorded (`(version, name, checksum)`, by version) against
/// the list (`(name, sql)`): how many of the list are applied, or why they do not fit.
pub(super) fn check_applied(
    applied: &[(i64, String, i64)],
    migrations: &[(String, String)],
) -> Result<usize, Mismatch> {
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    if applied.len() > migrations.len() {
        return Err(Mismatch::TooNew {
            applied: count(applied.len()),
            known: count(migrations.len()),
        });
    }
    for (at, ((version, name, sum), (given, script))) in applied.iter().zip(migrations).enumerate()
    {
        let expected = count(at + 1);
        let changed = |reason: String| Mismatch::Changed {
            version: expected,
            reason,
        };
        if *version != i64::from(expected) {
            return Err(changed(format!(
                "is missing from table `evoq_read_model_migrations` (version {version} is recorded in its place)"
            )));
        }
        if name != given {
            return Err(changed(format!(
                "was applied as `{name}` and the list now names it `{given}`"
            )));
        }
        if *sum != checksum(script) {
            return Err(changed(format!(
                "`{given}` was applied with other SQL than the list now gives"
            )));
        }
    }
    Ok(applied.len())
}

/// The table where the read models of a database record the projection each belongs to.
pub(super) const OWNERS: &str = "evoq_read_model_owners";

/// Whose a read model is, as a projection asking for it finds it.
pub(super) enum Owner {
    /// The projection's own: recorded so, or recorded now (a model with no rows, or one an
    /// earlier evoq filled for the projection: its checkpoint is there).
    Projection,
    /// Another projection's, as recorded.
    Other(String),
    /// Nobody's on record (an earlier evoq kept no record), but table `table` holds rows while
    /// the projection has no checkpoint: another projection wrote them.
    Unrecorded {
        /// The first of the model's tables that holds rows.
        table: String,
    },
}

impl Owner {
    /// Why the read model refuses `projection` and what to do, unless it is the projection's
    /// own (`None`); `builder` is the read model's builder (`SqliteReadModel::builder`, ...).
    pub(super) fn refusal(&self, projection: &str, builder: &str) -> Option<String> {
        let elsewhere = format!(
            "Otherwise give `{projection}` a read model of its own (another name in `{builder}`, and tables of its own)"
        );
        match self {
            Owner::Projection => None,
            Owner::Other(owner) => Some(format!(
                "it belongs to projection `{owner}` (recorded in table `{OWNERS}`), whose rows and checkpoint it holds: projection `{projection}` would apply every event to those rows a second time. A renamed projection keeps its old name: register it with `HandlerOptions::new().name(\"{owner}\")` (`projection_with`) or `#[projection(name = \"{owner}\", ...)]`, and it goes on where it was. {elsewhere}, or hand this one over: with no runtime running `{owner}`, empty its tables, reset the checkpoint of `{owner}` (`evoq checkpoint reset {owner}`) and delete its row of table `{OWNERS}`, and `{projection}` replays every event into it"
            )),
            Owner::Unrecorded { table } => Some(format!(
                "its table `{table}` holds rows, projection `{projection}` has no checkpoint, and no projection is recorded as its owner (an earlier version of evoq wrote the rows and kept no record in table `{OWNERS}`): they are another projection's, and `{projection}` would apply every event to them a second time. Register the projection under the name that wrote them, the one whose checkpoint `evoq checkpoints` lists: `HandlerOptions::new().name(\"...\")` (`projection_with`) or `#[projection(name = \"...\", ...)]`, and it goes on where it was. {elsewhere}, or, with no runtime running the other projection, empty the read model's tables, and `{projection}` replays every event into them"
            )),
        }
    }
}

/// Why a SQL read model refuses every write and commit.
pub(super) enum Refusal {
    /// Two projections of this process use it: permanent.
    TwoProjections(String),
    /// The commit of an event's changes failed: until the checkpoint is read again (which the
    /// runtime does at once, and then delivers again the events after it), a rebuild or a
    /// restart.
    FailedCommit(String),
}

impl Refusal {
    /// Why, as the model's `Refused` error says.
    pub(super) fn reason(&self) -> &str {
        match self {
            Refusal::TwoProjections(reason) | Refusal::FailedCommit(reason) => reason,
        }
    }
}

/// The checkpoint read again from the model's table (`found`: its row's value, if any), and
/// what it ends: a failed commit's refusal, as the stored checkpoint says what the tables hold,
/// whatever became of the commit. `Err` with the value when it is negative (a row edited by
/// hand), which each model words as its own error.
pub(super) fn checkpoint_read(
    found: Option<i64>,
    refused: &mut Option<Refusal>,
) -> Result<Option<u64>, i64> {
    let position = found
        .map(|found| u64::try_from(found).map_err(|_| found))
        .transpose()?;
    if matches!(refused, Some(Refusal::FailedCommit(_))) {
        *refused = None;
    }
    Ok(position)
}

/// Why a read model bound to projection `bound` refuses projection `projection` of the same
/// process (for good, `bound` included); `builder` is the read model's builder.
pub(super) fn second_projection(bound: &str, projection: &str, builder: &str) -> String {
    format!(
        "it is the read model of projection `{bound}` and projection `{projection}` uses it too: give each projection a read model of its own (`{builder}` with another name)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_read_again_lifts_a_failed_commit_but_not_a_second_projection() {
        let mut refused = Some(Refusal::FailedCommit("the commit failed".into()));
        assert_eq!(checkpoint_read(Some(7), &mut refused), Ok(Some(7)));
        assert!(
            refused.is_none(),
            "the checkpoint says what the tables hold"
        );

        let mut refused = Some(Refusal::TwoProjections("two".into()));
        assert_eq!(checkpoint_read(None, &mut refused), Ok(None));
        assert_eq!(
            refused.as_ref().map(Refusal::reason),
            Some("two"),
            "permanent"
        );

        let mut refused = Some(Refusal::FailedCommit("failed".into()));
        assert_eq!(checkpoint_read(Some(-3), &mut refused), Err(-3));
        assert!(
            refused.is_some(),
            "a checkpoint that is not one lifts nothing"
        );
    }

    #[test]
    fn a_refusal_names_both_projections_and_each_way_out() {
        let builder = "SqliteReadModel::builder";
        assert_eq!(Owner::Projection.refusal("balances", builder), None);

        let other = Owner::Other("balances".to_owned())
            .refusal("account_balances", builder)
            .expect("refused");
        for needed in [
            "projection `balances`",
            "projection `account_balances`",
            "HandlerOptions::new().name(\"balances\")",
            "#[projection(name = \"balances\"",
            "a read model of its own (another name in `SqliteReadModel::builder`",
            "evoq checkpoint reset balances",
            "table `evoq_read_model_owners`",
        ] {
            assert!(other.contains(needed), "`{needed}` in: {other}");
        }

        let unrecorded = Owner::Unrecorded {
            table: "b".to_owned(),
        }
        .refusal("account_balances", builder)
        .expect("refused");
        for needed in [
            "table `b` holds rows",
            "projection `account_balances` has no checkpoint",
            "evoq checkpoints",
            "HandlerOptions::new().name(",
            "a read model of its own",
            "empty the read model's tables",
        ] {
            assert!(unrecorded.contains(needed), "`{needed}` in: {unrecorded}");
        }
    }
}
