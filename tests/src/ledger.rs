//! A small domain for the event handler tests: one aggregate whose command emits any mix of
//! three event types, `Alpha`, `Beta` and `Gamma`, and raw events for appending straight to the
//! store.

use evoq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Alpha {
    pub id: String,
    pub n: u64,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Beta {
    pub id: String,
    pub n: u64,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Gamma {
    pub id: String,
    pub n: u64,
}

/// Which event to emit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    A,
    B,
    C,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::A => "Alpha",
            Kind::B => "Beta",
            Kind::C => "Gamma",
        }
    }
}

/// Emits one event per kind, numbered from `n`, in order.
#[derive(Command, Debug, Clone)]
pub struct Emit {
    #[aggregate_id]
    pub id: String,
    pub kinds: Vec<Kind>,
    pub n: u64,
}

impl Emit {
    pub fn new(id: &str, kinds: &[Kind], n: u64) -> Self {
        Emit {
            id: id.to_owned(),
            kinds: kinds.to_vec(),
            n,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the ledger never rejects")]
pub struct LedgerError;

#[derive(Default, Debug)]
pub struct Ledger {
    pub events: u64,
}

#[aggregate]
impl Ledger {
    #[handles]
    fn emit(&self, cmd: &Emit) -> Result<Vec<LedgerEvent>, LedgerError> {
        Ok((cmd.n..)
            .zip(&cmd.kinds)
            .map(|(n, kind)| {
                let id = cmd.id.clone();
                match kind {
                    Kind::A => LedgerEvent::Alpha(Alpha { id, n }),
                    Kind::B => LedgerEvent::Beta(Beta { id, n }),
                    Kind::C => LedgerEvent::Gamma(Gamma { id, n }),
                }
            })
            .collect())
    }

    #[apply]
    fn alpha(&mut self, _: &Alpha) {
        self.events += 1;
    }

    #[apply]
    fn beta(&mut self, _: &Beta) {
        self.events += 1;
    }

    #[apply]
    fn gamma(&mut self, _: &Gamma) {
        self.events += 1;
    }
}

/// An event of `kind` numbered `n` for ledger `id`, as raw store input.
pub fn raw(kind: Kind, id: &str, n: u64) -> evoq::NewEvent {
    evoq::NewEvent {
        event_id: evoq::Uuid::now_v7(),
        event_type: kind.name().into(),
        schema_version: 1,
        data: serde_json::to_vec(&serde_json::json!({ "id": id, "n": n })).expect("json"),
        metadata: Default::default(),
    }
}

/// The stream of ledger `id`.
pub fn ledger_stream(id: &str) -> String {
    evoq::stream_id("Ledger", id)
}

/// What a recording handler saw of one event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub event_type: String,
    pub position: u64,
    pub stream: String,
    pub event_id: evoq::Uuid,
    pub n: u64,
}

impl Seen {
    pub fn of(meta: &EventMeta, n: u64) -> Self {
        Seen {
            event_type: meta.event_type().to_owned(),
            position: meta.global_position(),
            stream: meta.stream_id().to_owned(),
            event_id: meta.event_id(),
            n,
        }
    }
}

/// A log shared between a handler and its test.
#[derive(Clone, Default, Debug)]
pub struct Log(pub std::sync::Arc<std::sync::Mutex<Vec<Seen>>>);

impl Log {
    pub fn push(&self, seen: Seen) {
        self.0.lock().expect("log").push(seen);
    }

    pub fn all(&self) -> Vec<Seen> {
        self.0.lock().expect("log").clone()
    }

    pub fn positions(&self) -> Vec<u64> {
        self.all().iter().map(|s| s.position).collect()
    }

    pub fn len(&self) -> usize {
        self.0.lock().expect("log").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A handler error for the tests.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Failed(pub String);
