//! The commands, and what they share.

use std::path::PathBuf;

use serde_json::Value;

use crate::error::CliError;
use crate::output::Out;
use crate::target::Target;

pub(crate) mod checkpoints;
pub(crate) mod dead_letters;
pub(crate) mod read;
pub(crate) mod requests;
pub(crate) mod stats;
pub(crate) mod verify;

/// What every command gets: the store, the output and its form.
pub(crate) struct Ctx {
    /// The store named on the command line.
    pub(crate) target: Target,
    /// `--json`.
    pub(crate) json: bool,
    /// `--config`.
    pub(crate) config: Option<PathBuf>,
    out: Out,
}

impl Ctx {
    pub(crate) fn new(target: Target, json: bool, config: Option<PathBuf>) -> Self {
        Ctx {
            target,
            json,
            config,
            out: Out::new(),
        }
    }

    /// Prints a line.
    pub(crate) fn line(&mut self, text: &str) -> Result<(), CliError> {
        self.out.line(text).map_err(CliError::Output)
    }

    /// Prints the command's JSON document.
    pub(crate) fn print_json(&mut self, value: &Value) -> Result<(), CliError> {
        self.out.json_pretty(value).map_err(CliError::Output)
    }

    /// Prints one JSON line (a followed event).
    pub(crate) fn print_json_line(&mut self, value: &Value) -> Result<(), CliError> {
        self.out.json(value).map_err(CliError::Output)
    }
}
