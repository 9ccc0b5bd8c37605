// Every bad signature is reported in one build, each on its own tokens.
use evoq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct MoneyDeposited;

#[derive(Command)]
struct A(#[aggregate_id] String);
#[derive(Command)]
struct B(#[aggregate_id] String);
#[derive(Command)]
struct C(#[aggregate_id] String);
#[derive(Command)]
struct D(#[aggregate_id] String);
#[derive(Command)]
struct E(#[aggregate_id] String);
#[derive(Command)]
struct F(#[aggregate_id] String);
#[derive(Command)]
struct G(#[aggregate_id] String);
#[derive(Command)]
struct H(#[aggregate_id] String);

#[derive(Debug, thiserror::Error)]
#[error("closed")]
struct Closed;

#[derive(Default)]
struct BankAccount;

#[aggregate]
impl BankAccount {
    #[handles]
    fn mutates(&mut self, _: &A) -> Result<MoneyDeposited, Closed> {
        Ok(MoneyDeposited)
    }

    #[handles]
    fn consumes(self, _: &B) -> Result<MoneyDeposited, Closed> {
        Ok(MoneyDeposited)
    }

    #[handles]
    fn no_receiver(_: &C) -> Result<MoneyDeposited, Closed> {
        Ok(MoneyDeposited)
    }

    #[handles]
    fn by_value(&self, _: D) -> Result<MoneyDeposited, Closed> {
        Ok(MoneyDeposited)
    }

    #[handles]
    fn two_commands(&self, _: &E, _: &A) -> Result<MoneyDeposited, Closed> {
        Ok(MoneyDeposited)
    }

    #[handles]
    fn no_return(&self, _: &F) {}

    #[handles]
    fn not_a_result(&self, _: &G) -> (MoneyDeposited, MoneyDeposited) {
        (MoneyDeposited, MoneyDeposited)
    }

    #[handles]
    fn generic<T>(&self, _: &H) -> Result<MoneyDeposited, Closed> {
        Ok(MoneyDeposited)
    }

    #[apply]
    fn deposited(&mut self, _: &MoneyDeposited) {}
}

fn main() {}
