use evoq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct AccountOpened;

struct BankAccount {
    open: bool,
}

#[aggregate]
impl BankAccount {
    #[apply]
    fn opened(&mut self, _: &AccountOpened) {
        self.open = true;
    }
}

fn main() {}
