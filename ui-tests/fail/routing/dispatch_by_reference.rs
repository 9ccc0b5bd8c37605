//! A command dispatched by reference: `dispatch` takes the command by value.
use evoq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Deposited {
    account: String,
}

#[derive(Command)]
struct Deposit {
    #[aggregate_id]
    account: String,
}

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

#[derive(Default)]
struct Account;

#[aggregate]
impl Account {
    #[handles]
    fn deposit(&self, command: &Deposit) -> Result<Deposited, Never> {
        Ok(Deposited {
            account: command.account.clone(),
        })
    }

    #[apply]
    fn deposited(&mut self, _: &Deposited) {}
}

async fn run(app: Evoq) {
    let command = Deposit {
        account: "a".into(),
    };
    let _ = app.dispatch(&command).await;
}

fn main() {
    let _ = run;
}
