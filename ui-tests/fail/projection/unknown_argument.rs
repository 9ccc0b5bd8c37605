//! An argument `#[projection]` does not know, and a bad read model value.
use evoq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct AccountOpened {
    account: String,
}

struct Summary {
    model: InMemoryReadModel,
}

#[projection(name = "summary", read_model = "model", shards = 4)]
impl Summary {
    #[handles]
    async fn opened(&mut self, _: &AccountOpened, _: &EventMeta) -> Result<(), ProjectionError> {
        Ok(())
    }
}

fn main() {}
