//! The reference floor: the workload on a bare actor-per-aggregate pipeline, no framework.
//!
//! One tokio task per account owns its balance and version and receives commands on a tokio
//! `mpsc` channel, each with a `oneshot` for the reply; a `HashMap` of senders (behind one mutex)
//! finds or starts the actor. Events are serialized with `serde_json` like evoq's and appended to
//! a `HashMap` of streams under one mutex that also numbers them in a global order and hands
//! each one to the read side, a task that counts `MoneyDeposited` per account and publishes the
//! position it has processed. No ids, metadata, idempotency, middleware, telemetry, lifecycle
//! or snapshots: what any event-sourced pipeline must at least do.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};

use crate::bank::{AccountOpened, MoneyDeposited, MoneyWithdrawn};
use crate::workload::{BankCommand, Done, Failure, Peer};

/// A stored event.
struct Recorded {
    stream: Arc<str>,
    event_type: &'static str,
    /// Kept as the store's copy of the event; the counter only needs its type and stream.
    #[expect(
        dead_code,
        reason = "stored like a real store keeps it, never read back here"
    )]
    data: Vec<u8>,
    position: u64,
}

#[derive(Default)]
struct Store {
    streams: HashMap<Arc<str>, Vec<Arc<Recorded>>>,
    head: u64,
}

type Reply = oneshot::Sender<Result<Done, Failure>>;

/// The floor: actors, a store and a deposit counter.
pub struct Floor {
    actors: Mutex<HashMap<String, mpsc::UnboundedSender<(BankCommand, Reply)>>>,
    store: Arc<Mutex<Store>>,
    feed: mpsc::UnboundedSender<Arc<Recorded>>,
    processed: watch::Receiver<u64>,
    deposits: Arc<Mutex<HashMap<Arc<str>, u64>>>,
}

impl Floor {
    /// Starts the floor's read side (call inside a tokio runtime).
    pub fn start() -> Self {
        let (feed, mut events) = mpsc::unbounded_channel::<Arc<Recorded>>();
        let (publish, processed) = watch::channel(0);
        let deposits = Arc::new(Mutex::new(HashMap::new()));
        let counts = Arc::clone(&deposits);
        tokio::spawn(async move {
            let mut batch = Vec::new();
            while events.recv_many(&mut batch, 1_024).await > 0 {
                let mut last = 0;
                {
                    let mut counts = counts.lock().unwrap_or_else(PoisonError::into_inner);
                    for event in batch.drain(..) {
                        if event.event_type == "MoneyDeposited" {
                            *counts.entry(Arc::clone(&event.stream)).or_insert(0) += 1;
                        }
                        last = event.position;
                    }
                }
                publish.send_replace(last);
            }
        });
        Floor {
            actors: Mutex::default(),
            store: Arc::default(),
            feed,
            processed,
            deposits,
        }
    }

    fn actor(&self, account: &str) -> mpsc::UnboundedSender<(BankCommand, Reply)> {
        let mut actors = self.actors.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(sender) = actors.get(account) {
            return sender.clone();
        }
        let (sender, receiver) = mpsc::unbounded_channel();
        actors.insert(account.to_owned(), sender.clone());
        let actor = Actor {
            stream: Arc::from(format!("BankAccount-{account}")),
            balance: 0,
            version: 0,
            store: Arc::clone(&self.store),
            feed: self.feed.clone(),
        };
        tokio::spawn(actor.run(receiver));
        sender
    }
}

struct Actor {
    stream: Arc<str>,
    balance: i64,
    version: u64,
    store: Arc<Mutex<Store>>,
    feed: mpsc::UnboundedSender<Arc<Recorded>>,
}

impl Actor {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<(BankCommand, Reply)>) {
        while let Some((command, reply)) = commands.recv().await {
            let _ = reply.send(self.handle(command));
        }
    }

    fn handle(&mut self, command: BankCommand) -> Result<Done, Failure> {
        match command {
            BankCommand::Open { initial_balance } => {
                let position = self.append("AccountOpened", &AccountOpened { initial_balance })?;
                self.balance = initial_balance;
                Ok(position)
            }
            BankCommand::Deposit { amount } => {
                let position = self.append("MoneyDeposited", &MoneyDeposited { amount })?;
                self.balance += amount;
                Ok(position)
            }
            BankCommand::Withdraw { amount } => {
                if amount > self.balance {
                    return Err(Failure::Rejected);
                }
                let position = self.append("MoneyWithdrawn", &MoneyWithdrawn { amount })?;
                self.balance -= amount;
                Ok(position)
            }
        }
    }

    fn append<E: Serialize>(
        &mut self,
        event_type: &'static str,
        event: &E,
    ) -> Result<Done, Failure> {
        let data = serde_json::to_vec(event).map_err(|e| Failure::Other(e.to_string()))?;
        let mut store = self.store.lock().unwrap_or_else(PoisonError::into_inner);
        let Store { streams, head } = &mut *store;
        let stream = match streams.get_mut(&self.stream) {
            Some(stream) => stream,
            None => streams.entry(Arc::clone(&self.stream)).or_default(),
        };
        if stream.len() as u64 != self.version {
            return Err(Failure::Other(format!(
                "`{}` is at version {}, not {}",
                self.stream,
                stream.len(),
                self.version
            )));
        }
        *head += 1;
        let recorded = Arc::new(Recorded {
            stream: Arc::clone(&self.stream),
            event_type,
            data,
            position: *head,
        });
        stream.push(Arc::clone(&recorded));
        self.version += 1;
        // Under the store's lock, so the read side sees the global order.
        let _ = self.feed.send(recorded);
        Ok(Done {
            events: 1,
            position: *head,
        })
    }
}

impl Peer for Floor {
    fn name(&self) -> &'static str {
        "floor"
    }

    fn version(&self) -> &'static str {
        env!("CARGO_PKG_VERSION")
    }

    async fn dispatch(&self, account: &str, command: BankCommand) -> Result<Done, Failure> {
        let (reply, outcome) = oneshot::channel();
        if self.actor(account).send((command, reply)).is_err() {
            return Err(Failure::Other(format!("the actor of `{account}` is gone")));
        }
        outcome
            .await
            .unwrap_or_else(|_| Err(Failure::Other(format!("the actor of `{account}` died"))))
    }

    async fn caught_up(&self, position: u64, _events: u64) {
        let mut processed = self.processed.clone();
        let _ = processed.wait_for(|seen| *seen >= position).await;
    }

    fn deposits_projected(&self) -> u64 {
        self.deposits
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .sum()
    }
}
