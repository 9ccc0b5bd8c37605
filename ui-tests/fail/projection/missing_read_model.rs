//! A projection must name its read model.
use evoq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct AccountOpened {
    account: String,
}

struct Summary {
    model: InMemoryReadModel,
}

#[projection(name = "summary")]
impl Summary {
    #[handles]
    async fn opened(&mut self, e: &AccountOpened, _: &EventMeta) -> Result<(), ProjectionError> {
        self.model.put(&e.account, &1)?;
        Ok(())
    }
}

fn main() {}
