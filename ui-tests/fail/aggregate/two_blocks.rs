//! Two `#[aggregate]` blocks for one state type: an aggregate is one impl block, and the
//! message says to merge them.
use evoq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Opened {
    id: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Closed {
    id: String,
}

#[derive(Command, Debug)]
struct Open {
    #[aggregate_id]
    id: String,
}

#[derive(Command, Debug)]
struct Close {
    #[aggregate_id]
    id: String,
}

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

#[derive(Default)]
struct Account;

#[aggregate]
impl Account {
    #[handles]
    fn open(&self, command: &Open) -> Result<Opened, Never> {
        Ok(Opened { id: command.id.clone() })
    }

    #[apply]
    fn opened(&mut self, _: &Opened) {}
}

#[aggregate]
impl Account {
    #[handles]
    fn close(&self, command: &Close) -> Result<Closed, Never> {
        Ok(Closed { id: command.id.clone() })
    }

    #[apply]
    fn closed(&mut self, _: &Closed) {}
}

fn main() {}
