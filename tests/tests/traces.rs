//! One trace from an HTTP request to a saga's commands: with the feature `opentelemetry` and a
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

/// The span of one HTTP request, as a tracing middleware (tower-http's `TraceLayer`) opens it.
async fn place_order(
    axum::extract::State(app): axum::extract::State<Evoq>,
    axum::extract::Path(order): axum::extract::Path<String>,
) -> axum::http::StatusCode {
    let span = tracing::info_span!("http.request", method = "POST", path = "/orders/{order}");
    match app
        .dispatch(PlaceOrder {
            order,
            fail_at: None,
        })
        .instrument(span)
        .await
    {
        Ok(_) => axum::http::StatusCode::CREATED,
        Err(_) => axum::http::StatusCode::INTERNAL_SERVER_ERROR,
    }
}

#[tokio::test(flavor = "current_thread")]
async fn one_http_request_through_the_saga_and_its_commands_is_one_trace() {
    use std::io::{Read, Write};

    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::filter::LevelFilter::DEBUG)
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("evoq-test")));
    let _guard = tracing::subscriber::set_default(subscriber);

    let app = Evoq::builder().saga::<Checkout>().start().await.unwrap();
    let router = axum::Router::new()
        .route("/orders/{order}", axum::routing::post(place_order))
        .with_state(app.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    // A real HTTP client on a thread of its own (this runtime serves the request).
    let response = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .write_all(
                b"POST /orders/http-1 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    })
    .await
    .unwrap();
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
    settle(&app, "checkout", Duration::from_secs(10)).await;
    app.stop().await;
    server.abort();
    provider.force_flush().unwrap();

    let spans = exporter.get_finished_spans().unwrap();
    let root = spans
        .iter()
        .find(|span| span.name == "http.request")
        .expect("the request's span");
    let trace = root.span_context.trace_id();
    let commands: BTreeSet<String> = spans
        .iter()
        .filter(|span| span.name == "evoq.dispatch" && span.span_context.trace_id() == trace)
        .filter_map(|span| {
            span.attributes
                .iter()
                .find(|kv| kv.key.as_str() == "command")
                .map(|kv| kv.value.to_string())
        })
        .collect();
    assert!(
        ["PlaceOrder", "RunStep", "CloseOrder", "Notify"]
            .iter()
            .all(|command| commands.contains(*command)),
        "the request's command and the saga's commands are in the request's trace: {commands:?}"
    );
    assert!(
        spans
            .iter()
            .any(|span| span.name == "evoq.handler.event" && span.span_context.trace_id() == trace),
        "the saga's deliveries are in it"
    );
}

/// The OpenTelemetry layer filtered at INFO on its own while another layer takes DEBUG: the
/// dispatch span is enabled but unknown to OpenTelemetry, so the event carries the caller's
/// span context instead, and the saga's commands stay in the request's trace.
#[tokio::test(flavor = "current_thread")]
async fn an_opentelemetry_layer_with_its_own_info_filter_still_gets_the_request_trace() {
    use tracing_subscriber::Layer;
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("evoq-test"))
                .with_filter(tracing_subscriber::filter::LevelFilter::INFO),
        )
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::sink)
                .with_filter(tracing_subscriber::filter::LevelFilter::DEBUG),
        );
    let _guard = tracing::subscriber::set_default(subscriber);

    let app = Evoq::builder().saga::<Checkout>().start().await.unwrap();
    let request = tracing::info_span!("http.request", path = "/orders");
    app.dispatch(PlaceOrder {
        order: "filtered".to_owned(),
        fail_at: None,
    })
    .instrument(request)
    .await
    .unwrap();
    settle(&app, "checkout", Duration::from_secs(10)).await;
    let placed = app
        .store()
        .read_stream("Order-filtered", 1, evoq::store::Direction::Forward, 1)
        .await
        .unwrap()
        .remove(0);
    app.stop().await;
    provider.force_flush().unwrap();

    let spans = exporter.get_finished_spans().unwrap();
    let root = spans
        .iter()
        .find(|span| span.name == "http.request")
        .expect("the request's span");
    let carried = placed
        .metadata
        .user
        .get("traceparent")
        .expect("the event carries a trace context");
    assert_eq!(
        carried.split('-').nth(1),
        Some(root.span_context.trace_id().to_string().as_str()),
        "the request's trace is carried in the event"
    );
}
