//! A minimal aggregate and command for the crate's own unit tests, written by hand (the macros
//! are not a dependency of the runtime).

use super::command::{Command, Rejection, Route};
use super::definition::Aggregate;
use crate::event::EventSet;

/// An aggregate with no events and no state.
#[derive(Default)]
pub(crate) struct Tiny;

/// The empty event set of [`Tiny`].
#[derive(Clone, Debug)]
pub(crate) enum NoEvents {}

impl EventSet for NoEvents {
    const EVENT_TYPES: &'static [&'static str] = &[];
    fn event_type(&self) -> &'static str {
        match *self {}
    }
    fn schema_version(&self) -> u32 {
        match *self {}
    }
    fn encode(&self) -> Result<Vec<u8>, serde_json::Error> {
        match *self {}
    }
    fn decode(_: &str, _: &[u8]) -> Result<Option<Self>, serde_json::Error> {
        Ok(None)
    }
}

impl Aggregate for Tiny {
    const NAME: &'static str = "Tiny";
    type Event = NoEvents;
    fn apply(&mut self, event: &NoEvents) {
        match *event {}
    }
}

/// A command to [`Tiny`] `t` that produces nothing.
pub(crate) struct Touch;

impl Command for Touch {
    const NAME: &'static str = "Touch";
    fn aggregate_id(&self) -> String {
        "t".to_owned()
    }
}

impl Route for Touch {
    type Aggregate = Tiny;
    fn handle(_: &Tiny, _: &Touch) -> Result<Vec<NoEvents>, Rejection> {
        Ok(Vec::new())
    }
}
