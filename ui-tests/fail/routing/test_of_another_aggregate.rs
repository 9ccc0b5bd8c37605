//! An `AggregateTest` of one aggregate given a command another aggregate handles.
use evoq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Ticked {
    id: String,
}

#[derive(Command)]
struct Tick {
    #[aggregate_id]
    id: String,
}

#[derive(Command)]
struct Tock {
    #[aggregate_id]
    id: String,
}

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

#[derive(Default)]
struct Clock;

#[aggregate]
impl Clock {
    #[handles]
    fn tick(&self, command: &Tick) -> Result<Ticked, Never> {
        Ok(Ticked {
            id: command.id.clone(),
        })
    }

    #[apply]
    fn ticked(&mut self, _: &Ticked) {}
}

#[derive(Default)]
struct Metronome;

#[aggregate]
impl Metronome {
    #[handles]
    fn tock(&self, command: &Tock) -> Result<Ticked, Never> {
        Ok(Ticked {
            id: command.id.clone(),
        })
    }

    #[apply]
    fn ticked(&mut self, _: &Ticked) {}
}

fn main() {
    AggregateTest::<Clock>::given([Ticked { id: "a".into() }]).when(Tock { id: "a".into() });
}
