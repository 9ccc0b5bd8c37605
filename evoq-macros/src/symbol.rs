//! Every attribute and argument name the macros recognise, as a constant.

use std::fmt::{self, Display};

use syn::{Ident, Path};

/// A name the macros look for in user code.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct Symbol(pub(crate) &'static str);

// Attributes.
pub(crate) const EVENT: Symbol = Symbol("event");
pub(crate) const COMMAND: Symbol = Symbol("command");
pub(crate) const AGGREGATE: Symbol = Symbol("aggregate");
pub(crate) const AGGREGATE_ID: Symbol = Symbol("aggregate_id");
pub(crate) const HANDLES: Symbol = Symbol("handles");
pub(crate) const APPLY: Symbol = Symbol("apply");
pub(crate) const CFG: Symbol = Symbol("cfg");
pub(crate) const EVENT_HANDLER: Symbol = Symbol("event_handler");
pub(crate) const PROJECTION: Symbol = Symbol("projection");
pub(crate) const UPCASTER: Symbol = Symbol("upcaster");
pub(crate) const SAGA: Symbol = Symbol("saga");
pub(crate) const STARTS: Symbol = Symbol("starts");
pub(crate) const CONTINUES: Symbol = Symbol("continues");
pub(crate) const STOPS: Symbol = Symbol("stops");
pub(crate) const COMPENSATES: Symbol = Symbol("compensates");
pub(crate) const INIT: Symbol = Symbol("init");
pub(crate) const TAG: Symbol = Symbol("tag");
pub(crate) const DECISION: Symbol = Symbol("decision");
pub(crate) const QUERY: Symbol = Symbol("query");

/// The crate whose path may prefix a helper attribute (`#[evoq::handles]`).
pub(crate) const EVOQ: Symbol = Symbol("evoq");

// Arguments.
pub(crate) const NAME: Symbol = Symbol("name");
pub(crate) const VERSION: Symbol = Symbol("version");
pub(crate) const ATTEMPTS: Symbol = Symbol("attempts");
pub(crate) const CACHED: Symbol = Symbol("cached");
pub(crate) const SNAPSHOT_EVERY: Symbol = Symbol("snapshot_every");
pub(crate) const EVENT_ENUM: Symbol = Symbol("event_enum");
pub(crate) const IDLE_TIMEOUT: Symbol = Symbol("idle_timeout");
pub(crate) const HIBERNATE_AFTER: Symbol = Symbol("hibernate_after");
pub(crate) const LIFESPAN: Symbol = Symbol("lifespan");
pub(crate) const STRONG: Symbol = Symbol("strong");
pub(crate) const MAX_ATTEMPTS: Symbol = Symbol("max_attempts");
pub(crate) const ON_ERROR: Symbol = Symbol("on_error");
pub(crate) const RETRY: Symbol = Symbol("retry");
pub(crate) const READ_MODEL: Symbol = Symbol("read_model");
pub(crate) const FROM: Symbol = Symbol("from");
pub(crate) const RENAMED_FROM: Symbol = Symbol("renamed_from");
pub(crate) const BY: Symbol = Symbol("by");

// Values of `on_error = ...`.
pub(crate) const DEAD_LETTER: Symbol = Symbol("dead_letter");
pub(crate) const SKIP: Symbol = Symbol("skip");
pub(crate) const STOP: Symbol = Symbol("stop");

// Values of `retry = ...`.
pub(crate) const IMMEDIATE: Symbol = Symbol("immediate");
pub(crate) const FIXED: Symbol = Symbol("fixed");
pub(crate) const EXPONENTIAL: Symbol = Symbol("exponential");
pub(crate) const EXPONENTIAL_JITTER: Symbol = Symbol("exponential_jitter");

impl PartialEq<Symbol> for Ident {
    fn eq(&self, word: &Symbol) -> bool {
        self == word.0
    }
}

impl PartialEq<Symbol> for &Ident {
    fn eq(&self, word: &Symbol) -> bool {
        *self == word.0
    }
}

impl PartialEq<Symbol> for Path {
    fn eq(&self, word: &Symbol) -> bool {
        self.is_ident(word.0)
    }
}

impl PartialEq<Symbol> for &Path {
    fn eq(&self, word: &Symbol) -> bool {
        self.is_ident(word.0)
    }
}

impl Display for Symbol {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.0)
    }
}
