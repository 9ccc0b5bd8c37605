//! evoq as a [`Peer`] of the workload: the bank account of [`bank`](crate::bank) on a runtime
//! with the default configuration, and the deposit counter of [`read_side`].

use evoq::{Dispatched, Evoq};

use crate::bank::{BankAccount, Deposit, OpenAccount, Withdraw};
use crate::read_side::{self, ReadSide};
use crate::workload::{BankCommand, Done, Failure, Peer};

/// An evoq runtime (default configuration) and its deposit counter.
pub struct EvoqPeer {
    app: Evoq,
    read_side: ReadSide,
}

impl EvoqPeer {
    /// Starts the runtime (in-memory store, default configuration) with the read side.
    pub async fn start() -> Result<Self, evoq::Error> {
        let (builder, read_side) = read_side::start(Evoq::builder());
        let app = builder.start().await?;
        Ok(EvoqPeer { app, read_side })
    }

    /// The runtime.
    pub fn app(&self) -> &Evoq {
        &self.app
    }
}

fn outcome(result: Result<Dispatched<BankAccount>, evoq::Error>) -> Result<Done, Failure> {
    match result {
        Ok(done) => Ok(Done {
            events: done.events.len() as u64,
            position: done.position.unwrap_or(0),
        }),
        Err(error) if error.is_rejection() => Err(Failure::Rejected),
        Err(error) => Err(Failure::Other(error.to_string())),
    }
}

impl Peer for EvoqPeer {
    fn name(&self) -> &'static str {
        "evoq"
    }

    fn version(&self) -> &'static str {
        env!("CARGO_PKG_VERSION")
    }

    async fn dispatch(&self, account: &str, command: BankCommand) -> Result<Done, Failure> {
        let account = account.to_owned();
        let result = match command {
            BankCommand::Open { initial_balance } => {
                self.app
                    .dispatch(OpenAccount {
                        account,
                        initial_balance,
                    })
                    .await
            }
            BankCommand::Deposit { amount } => self.app.dispatch(Deposit { account, amount }).await,
            BankCommand::Withdraw { amount } => {
                self.app.dispatch(Withdraw { account, amount }).await
            }
        };
        outcome(result)
    }

    async fn caught_up(&self, position: u64, _events: u64) {
        if let Err(error) = self.read_side.wait_for(&self.app, position).await {
            eprintln!("the deposit counter did not catch up: {error}");
        }
    }

    fn deposits_projected(&self) -> u64 {
        self.read_side.deposits()
    }
}
