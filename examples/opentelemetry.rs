//! One OpenTelemetry trace from a request to a saga's command: a request span dispatches
//! `OpenAccount`; the `welcome` saga takes the `AccountOpened` event and dispatches a welcome
//! `Deposit`. With evoq's feature `opentelemetry` and a `tracing-opentelemetry` layer, the
//! dispatch carries its trace context into the event's metadata, so the saga's span and its
//! command's span join the request's trace. The spans are collected in memory and printed as
//! one tree per trace (an application would export them to a collector instead).
//!
//! Run it with `cargo run --example opentelemetry`.

/// The bank-account domain: events, commands, `BankError` and the `BankAccount` aggregate
/// (this example withdraws nothing).
#[path = "bank/domain.rs"]
#[allow(dead_code)]
mod domain;

use std::collections::BTreeMap;

use domain::*;
use evoq::prelude::*;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use serde::{Deserialize, Serialize};
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

/// Gives every new account a welcome deposit of 10.
#[derive(Default, Serialize, Deserialize)]
struct Welcome {
    welcomed: bool,
}

#[saga(name = "welcome")]
impl Welcome {
    #[starts(by = account)]
    fn opened(&mut self, e: &AccountOpened) -> Commands {
        commands![Deposit {
            account: e.account.clone(),
            amount: 10,
        }]
    }

    #[stops(by = account)]
    fn deposited(&mut self, _: &MoneyDeposited) -> Commands {
        self.welcomed = true;
        Commands::none()
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    // evoq's spans are at DEBUG: let them through to the OpenTelemetry layer.
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::filter::LevelFilter::DEBUG)
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("bank")));
    tracing::subscriber::set_global_default(subscriber)?;

    let app = Evoq::builder().saga::<Welcome>().start().await?;
    let request = tracing::info_span!("POST /accounts");
    let opened = app
        .dispatch(OpenAccount {
            account: "acc-1".into(),
            initial_balance: 100,
        })
        .instrument(request)
        .await?;
    // The saga's welcome deposit lands after the account's opening.
    let after = opened.token + 1;
    app.wait_for_named("welcome", after).await?;
    app.stop().await;
    provider.force_flush()?;

    let spans = exporter.get_finished_spans()?;
    let mut traces: BTreeMap<String, Vec<&SpanData>> = BTreeMap::new();
    for span in &spans {
        traces
            .entry(span.span_context.trace_id().to_string())
            .or_default()
            .push(span);
    }
    for (trace, spans) in &traces {
        println!("trace {trace}: {} spans", spans.len());
        print_children(spans, opentelemetry::trace::SpanId::INVALID, 1);
    }
    Ok(())
}

/// Prints the spans whose parent is `parent`, indented by `depth`, in start order.
fn print_children(spans: &[&SpanData], parent: opentelemetry::trace::SpanId, depth: usize) {
    let mut children: Vec<&&SpanData> = spans
        .iter()
        .filter(|span| span.parent_span_id == parent)
        .collect();
    children.sort_by_key(|span| span.start_time);
    for span in children {
        let took = span
            .end_time
            .duration_since(span.start_time)
            .unwrap_or_default();
        let attributes: Vec<String> = span
            .attributes
            .iter()
            .filter(|kv| ["command", "saga", "handler", "event_type"].contains(&kv.key.as_str()))
            .map(|kv| format!("{}={}", kv.key, kv.value))
            .collect();
        println!(
            "{}{} ({took:?}) {}",
            "  ".repeat(depth),
            span.name,
            attributes.join(" ")
        );
        print_children(spans, span.span_context.span_id(), depth + 1);
    }
}
