//! How the inspector prints: plain tables for people (the same layout on a terminal and in a
//! pipe, whatever the terminal's width), JSON for scripts.

use std::io::Write;
use std::time::SystemTime;

use comfy_table::{CellAlignment, ContentArrangement, Table, presets};
use evoq_runtime::RecordedEvent;
use evoq_runtime::store::DeadLetter;
use serde_json::{Value, json};

/// Where the output goes: standard output, whose errors end the command (a closed pipe ends
/// it quietly: see `main`).
pub(crate) struct Out {
    stdout: std::io::Stdout,
}

impl Out {
    pub(crate) fn new() -> Self {
        Out {
            stdout: std::io::stdout(),
        }
    }

    /// Prints `text` and a new line.
    pub(crate) fn line(&mut self, text: &str) -> std::io::Result<()> {
        let mut out = self.stdout.lock();
        writeln!(out, "{text}")?;
        out.flush()
    }

    /// Prints a JSON document on one line.
    pub(crate) fn json(&mut self, value: &Value) -> std::io::Result<()> {
        self.line(&value.to_string())
    }

    /// Prints a JSON document, pretty.
    pub(crate) fn json_pretty(&mut self, value: &Value) -> std::io::Result<()> {
        let text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
        self.line(&text)
    }
}

/// Prints a note for people on standard error (never part of the output a script reads).
pub(crate) fn note(text: &str) {
    let _ = writeln!(std::io::stderr(), "{text}");
}

/// A table: a header and rows, columns apart by two spaces, the columns in `right` aligned
/// right (numbers), no trailing spaces.
pub(crate) fn table(header: &[&str], rows: Vec<Vec<String>>, right: &[usize]) -> String {
    let mut table = Table::new();
    table
        .load_preset(presets::NOTHING)
        .force_no_tty()
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.iter().copied());
    for row in rows {
        table.add_row(row);
    }
    let count = header.len();
    for (index, column) in table.column_iter_mut().enumerate() {
        column.set_padding((0, if index + 1 == count { 0 } else { 2 }));
        if right.contains(&index) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    table
        .lines()
        .map(|line| line.trim_end().to_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

/// `key: value` lines, the values aligned.
pub(crate) fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.len() + 1).max().unwrap_or(0);
    pairs
        .iter()
        .map(|(key, value)| format!("{:<width$}  {value}", format!("{key}:")))
        .map(|line| line.trim_end().to_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

/// A time as RFC 3339 in UTC, to the millisecond (always 24 characters).
pub(crate) fn time(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

/// Stored bytes as JSON: the JSON they hold, else their text (lossy UTF-8).
pub(crate) fn bytes_json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

/// Stored bytes on one line, cut at `max` characters (with `…`).
pub(crate) fn short(bytes: &[u8], max: usize) -> String {
    let text = match serde_json::from_slice::<Value>(bytes) {
        Ok(value) => value.to_string(),
        Err(_) => String::from_utf8_lossy(bytes).replace(['\n', '\r', '\t'], " "),
    };
    if text.chars().count() <= max {
        text
    } else {
        let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

/// An event as JSON.
pub(crate) fn event_json(event: &RecordedEvent) -> Value {
    json!({
        "position": event.global_position,
        "stream_id": event.stream_id(),
        "version": event.stream_version,
        "event_id": event.event_id.to_string(),
        "event_type": event.event_type.as_ref(),
        "schema_version": event.schema_version,
        "recorded_at": time(event.recorded_at),
        "metadata": serde_json::to_value(&event.metadata).unwrap_or(Value::Null),
        "data": bytes_json(&event.data),
    })
}

/// How long a table shows an event's data.
pub(crate) const DATA_WIDTH: usize = 60;

/// A table of events; `with_stream` adds the stream's column.
pub(crate) fn events_table(events: &[&RecordedEvent], with_stream: bool) -> String {
    let mut header = vec!["POSITION"];
    if with_stream {
        header.push("STREAM");
    }
    header.extend(["VERSION", "TYPE", "RECORDED AT", "DATA"]);
    let rows = events
        .iter()
        .map(|e| {
            let mut row = vec![e.global_position.to_string()];
            if with_stream {
                row.push(e.stream_id().to_owned());
            }
            row.extend([
                e.stream_version.to_string(),
                type_with_version(e),
                time(e.recorded_at),
                short(&e.data, DATA_WIDTH),
            ]);
            row
        })
        .collect();
    let right = if with_stream { vec![0, 2] } else { vec![0, 1] };
    table(&header, rows, &right)
}

/// One event on one line (what `--follow` prints as events come).
pub(crate) fn event_line(e: &RecordedEvent) -> String {
    format!(
        "{}  {}  {}  {}  {}  {}",
        e.global_position,
        e.stream_id(),
        e.stream_version,
        type_with_version(e),
        time(e.recorded_at),
        short(&e.data, DATA_WIDTH)
    )
}

/// The event's type, with its schema version when it is not 1 (`Renamed@v2`).
fn type_with_version(e: &RecordedEvent) -> String {
    if e.schema_version == 1 {
        e.event_type.to_string()
    } else {
        format!("{}@v{}", e.event_type, e.schema_version)
    }
}

/// A dead letter as JSON (the whole event with it).
pub(crate) fn dead_letter_json(entry: &DeadLetter) -> Value {
    json!({
        "handler": entry.handler,
        "kind": entry.kind.as_str(),
        "error": entry.error,
        "reason": entry.reason,
        "attempts": entry.attempts,
        "first_failed_at": time(entry.first_failed_at),
        "last_failed_at": time(entry.last_failed_at),
        "event": event_json(&entry.event),
        "raw_row": entry.raw_row.as_ref().map(|columns| {
            columns
                .iter()
                .map(|(name, value)| json!([name, value]))
                .collect::<Vec<_>>()
        }),
    })
}
