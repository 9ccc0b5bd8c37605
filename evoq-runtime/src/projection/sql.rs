//! What the SQL read models of both databases share: names they accept, how a migration list
//! is checked against the migrations a database recorded, and small conversions.

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
