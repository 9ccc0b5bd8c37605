//! A full aggregate: every handler output shape (one event, `Option`, `Vec`, a tuple, `()`, the
//! generated enum), the explicit `#[handles(Command)]` form, private types, a second aggregate
//! applying a shared event, and a module that shadows the prelude names generated code must not
//! rely on. It must compile without a single warning.
#![deny(warnings)]

mod bank {
    use evoq::prelude::*;
    use serde::{Deserialize, Serialize};

    // Prelude names, shadowed: the generated code must not use them.
    #[allow(dead_code)]
    struct Vec;
    #[allow(dead_code)]
    struct Option;
    #[allow(dead_code)]
    struct String;
    #[allow(dead_code)]
    enum Result {}
    #[allow(dead_code)]
    trait From {}
    #[allow(dead_code)]
    trait Into {}
    #[allow(dead_code)]
    trait Clone {}
    #[allow(dead_code)]
    trait Default {}
    #[allow(dead_code, non_upper_case_globals)]
    const None: u8 = 0;

    type Text = std::string::String;

    #[derive(Event, Serialize, Deserialize, core::clone::Clone, Debug, PartialEq)]
    pub(crate) struct AccountOpened {
        pub(crate) account: Text,
        pub(crate) initial: u64,
    }

    #[derive(Event, Serialize, Deserialize, core::clone::Clone, Debug, PartialEq)]
    #[event(version = 2)]
    pub(crate) struct MoneyDeposited {
        pub(crate) amount: u64,
    }

    #[derive(Event, Serialize, Deserialize, core::clone::Clone, Debug, PartialEq)]
    #[event(name = "bank.MoneyWithdrawn")]
    pub(crate) struct MoneyWithdrawn {
        pub(crate) amount: u64,
    }

    // Private events.
    #[derive(Event, Serialize, Deserialize, core::clone::Clone, Debug, PartialEq)]
    struct FeeCharged {
        fee: u64,
    }

    #[derive(Event, Serialize, Deserialize, core::clone::Clone, Debug, PartialEq)]
    struct AccountClosed;

    #[derive(Event, Serialize, Deserialize, core::clone::Clone, Debug, PartialEq)]
    #[event(name = "InterestAdded", version = 3)]
    struct InterestAdded {
        amount: u64,
    }

    // The upcaster chains of the events above version 1 (with the prelude names shadowed).
    type Upcast = core::result::Result<serde_json::Value, UpcastError>;

    #[upcaster(MoneyDeposited, from = 1)]
    fn deposited_v1(data: serde_json::Value) -> Upcast {
        core::result::Result::Ok(data)
    }

    #[upcaster(InterestAdded, from = 1, renamed_from = "InterestPaid")]
    fn interest_v1(data: serde_json::Value) -> Upcast {
        core::result::Result::Ok(data)
    }

    #[upcaster(InterestAdded, from = 2)]
    fn interest_v2(data: serde_json::Value) -> Upcast {
        core::result::Result::Ok(data)
    }

    #[derive(Command, Debug)]
    #[command(name = "OpenAccount")]
    pub(crate) struct OpenAccount {
        #[aggregate_id]
        pub(crate) account: Text,
        pub(crate) initial: u64,
    }

    #[derive(Command, Debug)]
    pub(crate) struct Deposit {
        #[aggregate_id]
        pub(crate) account: Text,
        pub(crate) amount: u64,
    }

    // A tuple command.
    #[derive(Command, Debug)]
    pub(crate) struct Withdraw(#[aggregate_id] pub(crate) Text, pub(crate) u64);

    #[derive(Command, Debug)]
    pub(crate) struct ChargeFees {
        #[aggregate_id]
        pub(crate) account: Text,
        pub(crate) fees: std::vec::Vec<u64>,
    }

    #[derive(Command, Debug)]
    pub(crate) struct Close {
        #[aggregate_id]
        pub(crate) account: Text,
    }

    #[derive(Command, Debug)]
    pub(crate) struct Ping {
        #[aggregate_id]
        pub(crate) account: Text,
    }

    // A private command with a numeric id.
    #[derive(Command, Debug)]
    struct AccrueInterest {
        #[aggregate_id]
        account: u32,
        percent: u64,
    }

    #[derive(Debug, thiserror::Error, PartialEq)]
    pub(crate) enum BankError {
        #[error("the account is closed")]
        Closed,
        #[error("insufficient funds: the balance is {0}")]
        Insufficient(u64),
    }

    #[derive(core::default::Default, Debug)]
    pub(crate) struct BankAccount {
        pub(crate) open: bool,
        pub(crate) balance: u64,
        pub(crate) closed: bool,
    }

    #[aggregate(snapshot_every = 10)]
    impl BankAccount {
        /// Opens the account (a single event).
        #[handles]
        fn open(&self, cmd: &OpenAccount) -> core::result::Result<AccountOpened, BankError> {
            Ok(AccountOpened {
                account: cmd.account.clone(),
                initial: cmd.initial,
            })
        }

        // The explicit form, and `Option`: a zero deposit records nothing.
        #[handles(Deposit)]
        fn deposit(
            &self,
            cmd: &Deposit,
        ) -> core::result::Result<core::option::Option<MoneyDeposited>, BankError> {
            self.ensure_open()?;
            Ok((cmd.amount > 0).then_some(MoneyDeposited { amount: cmd.amount }))
        }

        #[handles]
        fn withdraw(&self, cmd: &Withdraw) -> core::result::Result<MoneyWithdrawn, BankError> {
            self.ensure_open()?;
            if cmd.1 > self.balance {
                return Err(BankError::Insufficient(self.balance));
            }
            Ok(MoneyWithdrawn { amount: cmd.1 })
        }

        // `Vec`.
        #[handles]
        fn charge(
            &self,
            cmd: &ChargeFees,
        ) -> core::result::Result<std::vec::Vec<FeeCharged>, BankError> {
            self.ensure_open()?;
            Ok(cmd.fees.iter().map(|&fee| FeeCharged { fee }).collect())
        }

        // A tuple.
        #[handles]
        fn close(
            &self,
            _cmd: &Close,
        ) -> core::result::Result<(FeeCharged, AccountClosed), BankError> {
            self.ensure_open()?;
            Ok((FeeCharged { fee: 1 }, AccountClosed))
        }

        // No event.
        #[handles]
        fn ping(&self, _cmd: &Ping) -> core::result::Result<(), BankError> {
            self.ensure_open()
        }

        // The generated enum.
        #[handles]
        fn accrue(
            &self,
            cmd: &AccrueInterest,
        ) -> core::result::Result<BankAccountEvent, BankError> {
            Ok(BankAccountEvent::InterestAdded(InterestAdded {
                amount: self.balance * cmd.percent / 100,
            }))
        }

        // Compiled out: its command does not even exist.
        #[cfg(any())]
        #[handles]
        fn never(&self, cmd: &DoesNotExist) -> core::result::Result<(), BankError> {
            Ok(())
        }

        #[apply]
        fn opened(&mut self, event: &AccountOpened) {
            self.open = true;
            self.balance = event.initial;
        }

        #[apply]
        fn deposited(&mut self, event: &MoneyDeposited) {
            self.balance += event.amount;
        }

        #[apply]
        fn withdrawn(&mut self, event: &MoneyWithdrawn) {
            self.balance -= event.amount;
        }

        #[apply]
        fn charged(&mut self, event: &FeeCharged) {
            self.balance = self.balance.saturating_sub(event.fee);
        }

        #[apply]
        fn closed(&mut self, _event: &AccountClosed) {
            self.closed = true;
        }

        #[apply(InterestAdded)]
        fn interest(&mut self, event: &InterestAdded) {
            self.balance += event.amount;
        }

        // An ordinary method, kept as it is.
        fn ensure_open(&self) -> core::result::Result<(), BankError> {
            if self.closed {
                Err(BankError::Closed)
            } else {
                Ok(())
            }
        }
    }

    // A second aggregate applying an event of the first, with every argument.
    #[derive(core::default::Default)]
    pub(crate) struct Audit {
        pub(crate) opened: u32,
    }

    #[derive(Command)]
    pub(crate) struct Recount {
        #[aggregate_id]
        pub(crate) id: Text,
    }

    #[aggregate(name = "audit", snapshot_every = 1, event_enum = AuditEvents)]
    impl Audit {
        #[evoq::handles]
        fn recount(&self, _cmd: &Recount) -> core::result::Result<(), BankError> {
            Ok(())
        }

        #[evoq::apply]
        fn opened(&mut self, _event: &AccountOpened) {
            self.opened += 1;
        }
    }

    pub(crate) fn private_command(account: u32) -> impl evoq::Route<Aggregate = BankAccount> {
        AccrueInterest {
            account,
            percent: 10,
        }
    }

    pub(crate) fn interest(amount: u64) -> BankAccountEvent {
        BankAccountEvent::from(InterestAdded { amount })
    }

    pub(crate) fn closed_event() -> BankAccountEvent {
        AccountClosed.into()
    }
}

use bank::*;
use evoq::{Aggregate, Command, EventSet, Route};

fn run<C: Route>(state: &mut C::Aggregate, command: C) -> Vec<<C::Aggregate as Aggregate>::Event> {
    let events = C::handle(state, &command).expect("the command is accepted");
    for event in &events {
        state.apply(event);
    }
    events
}

pub(crate) fn main() {
    assert_eq!(BankAccount::NAME, "BankAccount");
    assert_eq!(BankAccount::SNAPSHOT_EVERY, Some(10));
    assert_eq!(
        BankAccountEvent::EVENT_TYPES,
        [
            "AccountOpened",
            "MoneyDeposited",
            "bank.MoneyWithdrawn",
            "FeeCharged",
            "AccountClosed",
            "InterestAdded"
        ]
    );
    assert_eq!(Audit::NAME, "audit");
    assert_eq!(Audit::SNAPSHOT_EVERY, Some(1));
    assert_eq!(AuditEvents::EVENT_TYPES, ["AccountOpened"]);
    assert_eq!(<OpenAccount as Command>::NAME, "OpenAccount");
    assert_eq!(Withdraw("acc-1".into(), 3).aggregate_id(), "acc-1");

    let mut account = BankAccount::default();
    let opened = run(
        &mut account,
        OpenAccount {
            account: "acc-1".into(),
            initial: 10,
        },
    );
    assert_eq!(opened.len(), 1);
    assert_eq!(opened[0].event_type(), "AccountOpened");
    assert!(account.open);

    let deposited = run(
        &mut account,
        Deposit {
            account: "acc-1".into(),
            amount: 5,
        },
    );
    assert_eq!(deposited[0].schema_version(), 2);
    assert_eq!(
        format!("{:?}", deposited[0]),
        "MoneyDeposited(MoneyDeposited { amount: 5 })"
    );
    assert!(
        run(
            &mut account,
            Deposit {
                account: "acc-1".into(),
                amount: 0
            }
        )
        .is_empty()
    );
    assert_eq!(account.balance, 15);

    let withdrawn = run(&mut account, Withdraw("acc-1".into(), 4));
    assert_eq!(withdrawn[0].event_type(), "bank.MoneyWithdrawn");
    let rejection = Withdraw::handle(&account, &Withdraw("acc-1".into(), 100)).unwrap_err();
    assert_eq!(
        rejection.downcast_ref::<BankError>(),
        Some(&BankError::Insufficient(11))
    );

    let fees = run(
        &mut account,
        ChargeFees {
            account: "acc-1".into(),
            fees: vec![1, 2],
        },
    );
    assert_eq!(fees.len(), 2);
    assert!(
        run(
            &mut account,
            Ping {
                account: "acc-1".into()
            }
        )
        .is_empty()
    );
    assert_eq!(account.balance, 8);

    let accrued = run(&mut account, private_command(7));
    assert_eq!(accrued[0].event_type(), "InterestAdded");
    assert_eq!(accrued[0].schema_version(), 3);

    let closed = run(
        &mut account,
        Close {
            account: "acc-1".into(),
        },
    );
    assert_eq!(closed.len(), 2);
    assert_eq!(closed[1].event_type(), "AccountClosed");
    assert!(account.closed);

    // The stored form round-trips; unknown names decode to nothing.
    let event = interest(7);
    let data = event.encode().expect("encodes");
    let decoded = BankAccountEvent::decode("InterestAdded", &data).expect("decodes");
    assert_eq!(decoded.map(|event| event.to_json()), Some(event.to_json()));
    assert!(
        BankAccountEvent::decode("Unknown", &data)
            .expect("no error")
            .is_none()
    );
    assert!(BankAccountEvent::decode("InterestAdded", b"nonsense").is_err());
    // Stored at version 1 under the old name: upcast and renamed.
    let old = BankAccountEvent::decode_stored("InterestPaid", 1, &data).expect("upcasts");
    assert_eq!(old.map(|event| event.to_json()), Some(event.to_json()));
    assert_eq!(
        format!("{:?}", closed_event().clone()),
        "AccountClosed(AccountClosed)"
    );

    // The enum is `PartialEq` when every event is.
    assert_eq!(interest(7), interest(7));
    assert_ne!(interest(7), closed_event());

    let mut audit = Audit::default();
    for event in &opened {
        let BankAccountEvent::AccountOpened(opened) = event else {
            unreachable!()
        };
        audit.apply(&AuditEvents::from(opened.clone()));
    }
    assert_eq!(audit.opened, 1);
    assert!(run(&mut audit, Recount { id: "x".into() }).is_empty());
}
