use evoq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Pinged;

#[derive(Command)]
struct Ping {
    #[aggregate_id]
    id: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

#[derive(Default)]
struct Counter;

/// Has `Default`, but does not implement `evoq::Lifespan<Counter>`.
#[derive(Default)]
struct ShortLived;

#[aggregate(lifespan = ShortLived)]
impl Counter {
    #[handles]
    fn ping(&self, _: &Ping) -> Result<Pinged, Never> {
        Ok(Pinged)
    }

    #[apply]
    fn pinged(&mut self, _: &Pinged) {}
}

fn main() {}
