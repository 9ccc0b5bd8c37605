//! A projection method taking a type that is not an event.
use evoq::prelude::*;

struct NotAnEvent;

struct Summary {
    model: InMemoryReadModel,
}

#[projection(name = "summary", read_model = model)]
impl Summary {
    #[handles]
    async fn opened(&mut self, _: &NotAnEvent, _: &EventMeta) -> Result<(), ProjectionError> {
        Ok(())
    }
}

fn main() {}
