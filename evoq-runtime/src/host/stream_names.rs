//! The names streams are made of: `<name>-<id>` for every aggregate and decision type. Two
//! types of one runtime with one name would write and replay each other's streams, so the
//! first type to use a name keeps it and the other is refused, naming both.

use std::any::{TypeId, type_name};

use dashmap::DashMap;

use crate::aggregate::Aggregate;
use crate::error::Error;

/// Which type of this runtime uses each stream name.
#[derive(Default)]
pub(crate) struct StreamNames {
    /// Name -> the type that took it first, and its path for messages.
    taken: DashMap<&'static str, (TypeId, &'static str)>,
}

impl StreamNames {
    /// Takes `A::NAME` for `A`, or says which other type has it.
    pub(crate) fn claim<A: Aggregate>(&self) -> Result<(), NameTaken> {
        let ours = TypeId::of::<A>();
        let holder = match self.taken.get(A::NAME) {
            Some(holder) => *holder.value(),
            None => *self
                .taken
                .entry(A::NAME)
                .or_insert((ours, type_name::<A>()))
                .value(),
        };
        match holder {
            (id, _) if id == ours => Ok(()),
            (_, other) => Err(NameTaken(format!(
                "`{name}` names two types of this runtime, `{other}` (used first) and `{this}`: their streams (`{name}-<id>`) would mix; give one of them its own name with `#[aggregate(name = \"...\")]` or `#[decision(name = \"...\")]`",
                name = A::NAME,
                this = type_name::<A>(),
            ))),
        }
    }
}

/// A type refused its stream name, and why: every command of it fails with this error.
#[derive(Clone, Debug)]
pub(crate) struct NameTaken(String);

impl NameTaken {
    /// The error a command of the refused type fails with.
    pub(crate) fn error(&self) -> Error {
        Error::Config {
            key: "aggregate name".to_owned(),
            reason: self.0.clone(),
        }
    }
}
