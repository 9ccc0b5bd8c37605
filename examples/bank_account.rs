//! The bank account: open an account, deposit, withdraw, and see a withdrawal rejected.
//!
//! Run it with `cargo run --example bank_account`.

/// The bank-account domain: events, commands, `BankError` and the `BankAccount` aggregate.
#[path = "bank/domain.rs"]
mod domain;

use domain::*;
use evoq::prelude::*;

#[tokio::main]
async fn main() -> Result<(), evoq::Error> {
    // The in-memory store is the default; see the docs of `evoq` for SQLite and PostgreSQL.
    let app = Evoq::builder().start().await?;
    let account = "acc-1".to_owned();

    let opened = app
        .dispatch(OpenAccount {
            account: account.clone(),
            initial_balance: 100,
        })
        .await?;
    println!(
        "opened {account}: version {} {:?}",
        opened.version, opened.events
    );

    let deposited = app
        .command(Deposit {
            account: account.clone(),
            amount: 50,
        })
        .metadata("user", "alice")
        .dispatch()
        .await?;
    println!(
        "deposited 50: version {}, global position {:?}",
        deposited.version, deposited.position
    );

    let withdrawn = app
        .dispatch(Withdraw {
            account: account.clone(),
            amount: 120,
        })
        .await?;
    println!("withdrew 120: version {}", withdrawn.version);

    match app
        .dispatch(Withdraw {
            account: account.clone(),
            amount: 1_000,
        })
        .await
    {
        Err(error) if error.is_rejection() => {
            let reason = error.rejection::<BankError>();
            println!("withdrawing 1000 was rejected: {error}");
            println!("  the domain error: {reason:?}");
        }
        other => println!("unexpected outcome: {other:?}"),
    }

    let stream = evoq::stream_id("BankAccount", &account);
    let stored = app
        .store()
        .read_stream(&stream, 1, evoq::store::Direction::Forward, 100)
        .await?;
    println!("stream `{stream}` holds {} events:", stored.len());
    for event in stored {
        println!(
            "  v{} @{} {} {}",
            event.stream_version,
            event.global_position,
            event.event_type,
            String::from_utf8_lossy(&event.data)
        );
    }
    app.stop().await;
    Ok(())
}
