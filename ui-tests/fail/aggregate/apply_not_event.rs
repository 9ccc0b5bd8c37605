use evoq::prelude::*;
use serde::{Deserialize, Serialize};

// Serializable, but not an `Event`.
#[derive(Serialize, Deserialize, Clone, Debug)]
struct AccountOpened;

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct AccountClosed;

#[derive(Command)]
struct Open {
    #[aggregate_id]
    account: String,
}

#[derive(Debug, thiserror::Error)]
#[error("already open")]
struct AlreadyOpen;

#[derive(Default)]
struct BankAccount {
    open: bool,
}

#[aggregate]
impl BankAccount {
    #[handles]
    fn open(&self, _: &Open) -> Result<AccountOpened, AlreadyOpen> {
        Ok(AccountOpened)
    }

    #[apply]
    fn opened(&mut self, _: &AccountOpened) {
        self.open = true;
    }

    #[apply]
    fn closed(&mut self, _: &AccountClosed) {
        self.open = false;
    }
}

fn main() {
    // Using the aggregate reports nothing more.
    let _ = <BankAccountEvent as EventSet>::EVENT_TYPES;
}
