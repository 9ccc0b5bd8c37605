//! The field named as the read model is not one.
use evoq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct AccountOpened {
    account: String,
}

struct Summary {
    model: Vec<String>,
}

#[projection(name = "summary", read_model = model)]
impl Summary {
    #[handles]
    async fn opened(&mut self, e: &AccountOpened, _: &EventMeta) -> Result<(), ProjectionError> {
        self.model.push(e.account.clone());
        Ok(())
    }
}

fn main() {}
