//! One trace from a request to a saga's command: with the feature `opentelemetry` and a
//! `tracing-opentelemetry` layer, the dispatch carries its trace context into the events'
//! metadata, and the spans of the handlers, projections and sagas that take those events, and
//! of the commands they dispatch in turn, join that trace.

use std::collections::BTreeSet;
use std::time::Duration;

use evoq::prelude::*;
use evoq_tests::steps::*;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

#[tokio::test(flavor = "current_thread")]
async fn a_request_its_command_the_saga_and_the_sagas_commands_are_one_trace() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::filter::LevelFilter::DEBUG)
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("evoq-test")));
    let _guard = tracing::subscriber::set_default(subscriber);

    let app = Evoq::builder().saga::<Checkout>().start().await.unwrap();
    let request = tracing::info_span!("http.request", path = "/orders");
    app.dispatch(PlaceOrder {
        order: "traced".to_owned(),
        fail_at: None,
    })
    .instrument(request)
    .await
    .unwrap();
    settle(&app, "checkout", Duration::from_secs(10)).await;
    app.stop().await;
    provider.force_flush().unwrap();

    let spans = exporter.get_finished_spans().unwrap();
    let root = spans
        .iter()
        .find(|span| span.name == "http.request")
        .expect("the request's span");
    let trace = root.span_context.trace_id();
    let in_trace = |name: &str| {
        spans
            .iter()
            .filter(|span| span.name == name && span.span_context.trace_id() == trace)
            .count()
    };
    // The request's command, then the saga's: RunStep 1, 2, 3, CloseOrder, two notices.
    assert!(
        in_trace("evoq.dispatch") >= 7,
        "every dispatch joins the request's trace: {}",
        in_trace("evoq.dispatch")
    );
    assert!(
        in_trace("evoq.handler.event") >= 5,
        "every delivery to the saga joins it: {}",
        in_trace("evoq.handler.event")
    );
    let traces: BTreeSet<_> = spans
        .iter()
        .filter(|span| span.name.starts_with("evoq."))
        .map(|span| span.span_context.trace_id().to_string())
        .collect();
    assert_eq!(
        traces.len(),
        1,
        "one trace, the request's, holds every span of the runtime"
    );
}
