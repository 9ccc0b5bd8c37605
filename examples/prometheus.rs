//! evoq's metrics in Prometheus: install an exporter before the runtime starts, run a small
//! workload with an event handler, and print what a scrape of the endpoint shows (dispatches
//! by outcome, the handler's events, position, lag and status, the aggregates in memory).
//!
//! Run it with `cargo run --example prometheus` (the endpoint listens on 127.0.0.1:9464, or
//! on the address in `EVOQ_METRICS_ADDR`). With `--serve`, it keeps serving the endpoint until
//! Ctrl-C, for a Prometheus server to scrape.

/// The bank-account domain: events, commands, `BankError` and the `BankAccount` aggregate.
#[path = "bank/domain.rs"]
mod domain;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use domain::*;
use evoq::prelude::*;
use metrics_exporter_prometheus::PrometheusBuilder;

/// Counts deposits: an event handler, so that the scrape shows its position, lag and status.
#[derive(Default)]
struct Deposits {
    count: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

#[event_handler(name = "deposits")]
impl Deposits {
    #[handles]
    async fn deposited(&mut self, _: &MoneyDeposited, _: &EventMeta) -> Result<(), Never> {
        self.count += 1;
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = std::env::var("EVOQ_METRICS_ADDR")
        .unwrap_or_else(|_| "127.0.0.1:9464".to_owned())
        .parse()?;
    // The recorder first: the runtime registers its handlers' metrics when it starts.
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()?;

    let app = Evoq::builder().handler(Deposits::default()).start().await?;
    app.dispatch(OpenAccount {
        account: "acc-1".into(),
        initial_balance: 100,
    })
    .await?;
    let mut token = 0;
    for _ in 0..10 {
        token = app
            .dispatch(Deposit {
                account: "acc-1".into(),
                amount: 5,
            })
            .await?
            .token;
    }
    // The handler has seen every deposit: its gauges say so.
    app.wait_for::<Deposits>(token).await?;
    let overdrawn = app
        .dispatch(Withdraw {
            account: "acc-1".into(),
            amount: 1_000,
        })
        .await;
    println!("a withdrawal of 1000: {}", overdrawn.unwrap_err().kind());

    let scraped = tokio::task::spawn_blocking(move || scrape(addr)).await??;
    println!("GET http://{addr}/metrics (evoq's samples):");
    for line in scraped.lines().filter(|line| line.starts_with("evoq_")) {
        println!("  {line}");
    }
    if std::env::args().any(|arg| arg == "--serve") {
        println!("serving http://{addr}/metrics until Ctrl-C");
        tokio::signal::ctrl_c().await?;
    }
    app.stop().await;
    Ok(())
}

/// The text a scrape of `addr` returns.
fn scrape(addr: SocketAddr) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(addr)?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, body)| body.to_owned()))
}
