//! The given / when / then helper tests one aggregate without a runtime.

use evoq::AggregateTest;
use evoq_tests::bank::*;

fn opened(balance: u64) -> AccountOpened {
    AccountOpened {
        account: "a".into(),
        initial_balance: balance,
    }
}

#[test]
fn given_when_then_events_checks_the_produced_events() {
    AggregateTest::<BankAccount>::given([opened(10)])
        .when(Deposit {
            account: "a".into(),
            amount: 5,
        })
        .then_events([MoneyDeposited {
            account: "a".into(),
            amount: 5,
        }])
        .then_state(|account| assert_eq!(account.balance, 15));
}

#[test]
fn then_error_checks_the_domain_error() {
    AggregateTest::<BankAccount>::given([opened(10)])
        .when(Withdraw {
            account: "a".into(),
            amount: 50,
        })
        .then_error(BankError::InsufficientFunds {
            balance: 10,
            requested: 50,
        })
        .then_state(|account| assert_eq!(account.balance, 10));
}

#[test]
fn mixed_given_events_and_chained_commands() {
    let outcome = AggregateTest::<BankAccount>::given([
        BankAccountEvent::from(opened(0)),
        MoneyDeposited {
            account: "a".into(),
            amount: 7,
        }
        .into(),
    ])
    .when(Audit {
        account: "a".into(),
    })
    .then_no_events()
    .and_when(CloseAccount {
        account: "a".into(),
    })
    .then_events([AccountClosed {
        account: "a".into(),
    }]);
    assert_eq!(outcome.version(), 3);
}

#[test]
#[should_panic(expected = "produced other events than expected")]
fn then_events_fails_on_other_data() {
    AggregateTest::<BankAccount>::given([opened(10)])
        .when(Deposit {
            account: "a".into(),
            amount: 5,
        })
        .then_events([MoneyDeposited {
            account: "a".into(),
            amount: 6,
        }]);
}

#[test]
#[should_panic(expected = "expected a rejection")]
fn then_error_fails_when_the_command_succeeds() {
    AggregateTest::<BankAccount>::new()
        .when(OpenAccount {
            account: "a".into(),
            initial_balance: 1,
        })
        .then_error(BankError::NotOpen("a".into()));
}

#[test]
#[should_panic(expected = "was rejected")]
fn then_events_fails_when_the_command_is_rejected() {
    AggregateTest::<BankAccount>::new()
        .when(Deposit {
            account: "a".into(),
            amount: 1,
        })
        .then_events([MoneyDeposited {
            account: "a".into(),
            amount: 1,
        }]);
}
