// Each event type a handler can return is checked, wherever it sits in the output.
use evoq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct AccountOpened;

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct WelcomeBonusGranted;

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct FeeCharged;

#[derive(Command)]
struct Open {
    #[aggregate_id]
    account: String,
}

#[derive(Command)]
struct Charge {
    #[aggregate_id]
    account: String,
}

#[derive(Debug, thiserror::Error)]
#[error("closed")]
struct Closed;

#[derive(Default)]
struct BankAccount;

#[aggregate]
impl BankAccount {
    #[handles]
    fn open(&self, _: &Open) -> Result<(AccountOpened, WelcomeBonusGranted), Closed> {
        Ok((AccountOpened, WelcomeBonusGranted))
    }

    #[handles]
    fn charge(&self, _: &Charge) -> Result<Vec<FeeCharged>, Closed> {
        Ok(vec![FeeCharged])
    }

    #[apply]
    fn opened(&mut self, _: &AccountOpened) {}
}

fn main() {}
