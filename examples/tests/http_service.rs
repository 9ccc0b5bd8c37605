//! The HTTP service example, served on 127.0.0.1:0 and called through a real HTTP client:
//! statuses and problem documents, the token header, read-your-writes, the probes, a graceful
//! shutdown, a restart on the same SQLite file, and the main flow on PostgreSQL.
//!
//! The PostgreSQL test reads `EVOQ_TEST_PG_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`) and makes a schema of its own; when no server
//! answers it is skipped with a printed reason, unless `EVOQ_REQUIRE_PG=1`, which makes it fail.

#[path = "../library/domain.rs"]
mod domain;
#[path = "../library/service.rs"]
mod service;

use std::path::PathBuf;
use std::time::Duration;

use evoq::Evoq;
use reqwest::StatusCode;
use serde_json::{Value, json};
use service::{Backend, Settings};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The service, served on a port of its own until `shutdown`.
struct Server {
    base: String,
    app: Evoq,
    client: reqwest::Client,
    stop: oneshot::Sender<()>,
    served: JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(backend: &Backend, settings: Settings) -> Server {
        let service = service::start(backend, &settings)
            .await
            .expect("the service starts");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(evoq::axum::serve(
            listener,
            service.router,
            service.app.clone(),
            async {
                stopped.await.ok();
            },
        ));
        Server {
            base,
            app: service.app,
            client: reqwest::Client::new(),
            stop,
            served,
        }
    }

    /// The signal: stop accepting, drain, stop the runtime; returns once all is done.
    async fn shutdown(self) {
        self.stop.send(()).expect("the server is running");
        self.served
            .await
            .expect("the server task")
            .expect("the server ends cleanly");
        assert!(self.app.is_stopped(), "the runtime stops after the drain");
    }

    async fn post(&self, path: &str, body: Value) -> Answer {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send();
        Answer::of(response.await.expect("POST")).await
    }

    /// A POST of `body` as it is, sent as `content_type`.
    async fn post_raw(&self, path: &str, body: &'static str, content_type: &str) -> Answer {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", content_type)
            .body(body)
            .send();
        Answer::of(response.await.expect("POST")).await
    }

    async fn delete(&self, path: &str) -> Answer {
        let response = self.client.delete(format!("{}{path}", self.base)).send();
        Answer::of(response.await.expect("DELETE")).await
    }

    async fn get(&self, path: &str, token: Option<u64>) -> Answer {
        let mut request = self.client.get(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.header("evoq-token", token.to_string());
        }
        Answer::of(request.send().await.expect("GET")).await
    }
}

/// A response, read whole.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Answer {
    async fn of(response: reqwest::Response) -> Answer {
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("a body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Answer {
            status,
            headers,
            body,
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|value| value.to_str().expect("ASCII"))
    }

    /// The `evoq-token` header, which must be there.
    fn token(&self) -> u64 {
        self.header("evoq-token")
            .expect("an evoq-token header")
            .parse()
            .expect("a position")
    }

    /// Checks a problem document: its status, content type, type and kind; returns its detail.
    fn problem(&self, status: u16, problem_type: &str, kind: Option<&str>) -> String {
        assert_eq!(self.status.as_u16(), status, "{self:#?}");
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json")
        );
        assert_eq!(self.body["status"], status, "{self:#?}");
        assert_eq!(self.body["type"], problem_type, "{self:#?}");
        assert!(self.body["title"].is_string(), "{self:#?}");
        assert_eq!(self.body["kind"].as_str(), kind, "{self:#?}");
        self.body["detail"].as_str().expect("a detail").to_owned()
    }
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(label: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("evoq-{label}-{}", evoq::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).expect("create a temporary directory");
        TempDir(dir)
    }

    fn sqlite(&self) -> Backend {
        Backend::Sqlite(self.0.join("library.db"))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn book(isbn: &str) -> Value {
    json!({"isbn": isbn, "title": "Design Patterns", "author": "Gamma et al."})
}

/// Commands, their results and tokens, each kind of refusal, and reads with the token.
async fn main_flow(server: &Server) {
    // A command: 201, where the book is, the dispatch result, and its token in the header.
    let added = server.post("/books", book("978-1")).await;
    assert_eq!(added.status, StatusCode::CREATED, "{added:#?}");
    assert_eq!(added.header("location"), Some("/books/978-1"));
    assert_eq!(added.header("content-type"), Some("application/json"));
    let token = added.token();
    assert!(token >= 1);
    assert_eq!(added.body["token"], token);
    assert_eq!(added.body["aggregate"], "Book");
    assert_eq!(added.body["version"], 1);
    assert_eq!(added.body["events"][0]["type"], "BookAdded");
    assert_eq!(added.body["events"][0]["data"]["title"], "Design Patterns");

    // A domain refusal with a status of its own: 409, the domain's message alone.
    let again = server.post("/books", book("978-1")).await;
    let detail = again.problem(409, "/problems/already-in-catalog", Some("rejected"));
    assert_eq!(detail, "book `978-1` is already in the catalog");

    // An id the runtime refuses: 400.
    let nameless = server.post("/books", book("")).await;
    let detail = nameless.problem(400, "about:blank", Some("invalid_input"));
    assert!(detail.contains("AddBook"), "{detail}");

    // A domain refusal with the default status: 422.
    let untitled = server
        .post(
            "/books",
            json!({"isbn": "978-2", "title": " ", "author": "x"}),
        )
        .await;
    let detail = untitled.problem(422, "/problems/missing-details", Some("rejected"));
    assert_eq!(detail, "a book needs a title and an author");

    let lent = server
        .post("/books/978-1/loan", json!({"member": "ann"}))
        .await;
    assert_eq!(lent.status, StatusCode::OK, "{lent:#?}");
    assert_eq!(lent.body["version"], 2);
    assert_eq!(lent.body["events"][0]["type"], "BookLent");
    assert!(lent.token() > token);

    // A rejection: 422 with the domain's message, without the runtime's prefix.
    let taken = server
        .post("/books/978-1/loan", json!({"member": "bob"}))
        .await;
    let detail = taken.problem(422, "/problems/already-lent", Some("rejected"));
    assert_eq!(detail, "book `978-1` is already lent to `ann`");
    assert!(!detail.contains("rejected by"), "{detail}");
    assert_eq!(taken.body["title"], "Unprocessable Entity");
    assert!(taken.header("evoq-token").is_none());

    let returned = server.delete("/books/978-1/loan").await;
    assert_eq!(returned.status, StatusCode::OK, "{returned:#?}");
    assert_eq!(returned.body["version"], 3);
    let last = returned.token();

    // A version conflict (the runtime's, not the domain's): 409.
    let stale = server
        .post(
            "/books/978-1/loan",
            json!({"member": "bob", "expected_version": 2}),
        )
        .await;
    let detail = stale.problem(409, "about:blank", Some("conflict"));
    assert!(detail.contains("expected version 2"), "{detail}");

    // An unknown book: 404, as a command and as a read.
    let unknown = server
        .post("/books/978-9/loan", json!({"member": "ann"}))
        .await;
    let detail = unknown.problem(404, "/problems/not-in-catalog", Some("rejected"));
    assert_eq!(detail, "book `978-9` is not in the catalog");
    let missing = server.get("/books/978-9", Some(last)).await;
    let detail = missing.problem(404, "/problems/not-in-catalog", None);
    assert_eq!(detail, "book `978-9` is not in the catalog");
    let detail = server.delete("/books/978-9/loan").await.problem(
        404,
        "/problems/not-in-catalog",
        Some("rejected"),
    );
    assert_eq!(detail, "book `978-9` is not in the catalog");

    // Reads with the last token see every write.
    let read = server.get("/books/978-1", Some(last)).await;
    assert_eq!(read.status, StatusCode::OK, "{read:#?}");
    assert_eq!(
        read.body,
        json!({"isbn": "978-1", "title": "Design Patterns", "author": "Gamma et al.",
               "lent_to": null, "loans": 1, "version": 3})
    );
    let all = server.get("/books", Some(last)).await;
    assert_eq!(all.status, StatusCode::OK);
    assert_eq!(all.body.as_array().map(Vec::len), Some(1), "{all:#?}");

    // A token that is not a position: 400.
    let request = server
        .client
        .get(format!("{}/books/978-1", server.base))
        .header("evoq-token", "soon");
    let garbled = Answer::of(request.send().await.expect("GET")).await;
    let detail = garbled.problem(400, "about:blank", Some("invalid_input"));
    assert!(detail.contains("evoq-token"), "{detail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_problems_and_tokens_on_sqlite() {
    let dir = TempDir::new("http-flow");
    let server = Server::start(&dir.sqlite(), Settings::default()).await;
    main_flow(&server).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_is_not_the_command_answers_with_a_problem_document_and_runs_nothing() {
    let dir = TempDir::new("http-bodies");
    let server = Server::start(&dir.sqlite(), Settings::default()).await;
    // Not JSON at all: 400, axum's explanation as the detail.
    let garbled = server
        .post_raw("/books", "{\"isbn\": ", "application/json")
        .await;
    let detail = garbled.problem(400, "about:blank", None);
    assert!(!detail.is_empty(), "{garbled:#?}");

    // JSON, but not an `AddBook`: 422, naming the missing field.
    let missing = server
        .post_raw(
            "/books",
            r#"{"isbn": "978-9", "title": "Refactoring"}"#,
            "application/json",
        )
        .await;
    let detail = missing.problem(422, "about:blank", None);
    assert!(detail.contains("author"), "{detail}");

    // A field of the wrong type: 422, naming it.
    let wrong = server
        .post_raw(
            "/books",
            r#"{"isbn": 978, "title": "t", "author": "a"}"#,
            "application/json",
        )
        .await;
    let detail = wrong.problem(422, "about:blank", None);
    assert!(detail.contains("isbn"), "{detail}");

    // Not sent as JSON: 415.
    let plain = server
        .post_raw(
            "/books",
            r#"{"isbn": "978-9", "title": "t", "author": "a"}"#,
            "text/plain",
        )
        .await;
    plain.problem(415, "about:blank", None);

    // None of them ran: the book is not in the catalog, and the first real add succeeds.
    let read = server.get("/books/978-9", None).await;
    assert_eq!(read.status, StatusCode::NOT_FOUND, "{read:#?}");
    let added = server
        .post(
            "/books",
            json!({"isbn": "978-9", "title": "Refactoring", "author": "Fowler"}),
        )
        .await;
    assert_eq!(added.status, StatusCode::CREATED, "{added:#?}");
    assert_eq!(added.body["version"], 1, "{added:#?}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_with_the_token_sees_the_write_one_without_may_not() {
    let dir = TempDir::new("http-ryw");
    let settings = Settings {
        catalog_delay: Duration::from_millis(400),
        ..Settings::default()
    };
    let server = Server::start(&dir.sqlite(), settings).await;
    let added = server.post("/books", book("978-1")).await;
    assert_eq!(added.status, StatusCode::CREATED);

    // The catalog takes 400 ms per event: a read without the token does not wait for it.
    let early = server.get("/books/978-1", None).await;
    early.problem(404, "/problems/not-in-catalog", None);
    // With the token, the read waits until the catalog has the book.
    let read = server.get("/books/978-1", Some(added.token())).await;
    assert_eq!(read.status, StatusCode::OK, "{read:#?}");
    assert_eq!(read.body["title"], "Design Patterns");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_whose_catalog_is_too_late_answers_503() {
    let dir = TempDir::new("http-late");
    let settings = Settings {
        catalog_delay: Duration::from_millis(1_500),
        read_timeout: Duration::from_millis(100),
    };
    let server = Server::start(&dir.sqlite(), settings).await;
    let added = server.post("/books", book("978-1")).await;
    let late = server.get("/books/978-1", Some(added.token())).await;
    let detail = late.problem(503, "about:blank", Some("timeout"));
    assert!(detail.contains("catalog"), "{detail}");
    assert_eq!(late.header("retry-after"), Some("1"));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_is_200_until_the_runtime_stops() {
    let dir = TempDir::new("http-ready");
    let server = Server::start(&dir.sqlite(), Settings::default()).await;
    let ready = server.get("/ready", None).await;
    assert_eq!(ready.status, StatusCode::OK, "{ready:#?}");
    assert_eq!(ready.body["ready"], true);
    assert_eq!(ready.body["runtime"], "running");
    assert_eq!(ready.body["handlers"][0]["name"], "catalog");
    assert_eq!(ready.body["handlers"][0]["status"], "running");
    assert_eq!(server.get("/live", None).await.status, StatusCode::OK);

    // The runtime stops while the server still answers: not ready, and commands are refused.
    server.app.stop().await;
    let stopped = server.get("/ready", None).await;
    assert_eq!(
        stopped.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{stopped:#?}"
    );
    assert_eq!(stopped.body["ready"], false);
    assert_eq!(stopped.body["runtime"], "stopped");
    assert_eq!(stopped.body["handlers"][0]["status"], "stopped");
    let problems = stopped.body["problems"].to_string();
    assert!(problems.contains("the runtime is stopped"), "{problems}");
    assert!(
        problems.contains("handler `catalog` has stopped"),
        "{problems}"
    );
    assert_eq!(server.get("/live", None).await.status, StatusCode::OK);

    let refused = server.post("/books", book("978-1")).await;
    refused.problem(503, "about:blank", Some("unavailable"));
    assert_eq!(refused.header("retry-after"), Some("1"));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_drains_the_requests_in_flight_then_stops_the_runtime() {
    let dir = TempDir::new("http-drain");
    let settings = Settings {
        catalog_delay: Duration::from_millis(600),
        ..Settings::default()
    };
    let server = Server::start(&dir.sqlite(), settings).await;
    let added = server.post("/books", book("978-1")).await;
    // A read that waits for the slow catalog is in flight when the signal comes.
    let request = server
        .client
        .get(format!("{}/books/978-1", server.base))
        .header("evoq-token", added.token().to_string())
        .send();
    let in_flight = tokio::spawn(async move { Answer::of(request.await.expect("GET")).await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(!in_flight.is_finished());
    let (base, app) = (server.base.clone(), server.app.clone());
    server.shutdown().await;

    // It was answered in full before the runtime stopped.
    let read = in_flight.await.expect("the read");
    assert_eq!(read.status, StatusCode::OK, "{read:#?}");
    assert_eq!(read.body["title"], "Design Patterns");
    assert!(app.is_stopped());
    // And nothing is accepted any more.
    let refused = reqwest::Client::new()
        .get(format!("{base}/live"))
        .send()
        .await;
    assert!(refused.is_err(), "{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_service_serves_the_same_catalog() {
    let dir = TempDir::new("http-restart");
    let server = Server::start(&dir.sqlite(), Settings::default()).await;
    for isbn in ["978-1", "978-2"] {
        assert_eq!(
            server.post("/books", book(isbn)).await.status,
            StatusCode::CREATED
        );
    }
    let lent = server
        .post("/books/978-2/loan", json!({"member": "ann"}))
        .await;
    let token = lent.token();
    let before = server.get("/books", Some(token)).await.body;
    server.shutdown().await;

    // A new runtime on the same file, whose catalog replays the events (slowly): a read with the
    // token from before the restart waits for the replay, then sees the same catalog.
    let settings = Settings {
        catalog_delay: Duration::from_millis(100),
        ..Settings::default()
    };
    let server = Server::start(&dir.sqlite(), settings).await;
    let after = server.get("/books", Some(token)).await;
    assert_eq!(after.status, StatusCode::OK, "{after:#?}");
    assert_eq!(after.body, before);
    assert_eq!(after.body[1]["lent_to"], "ann");
    // The aggregate is rebuilt from the store too.
    let taken = server
        .post("/books/978-2/loan", json!({"member": "bob"}))
        .await;
    let detail = taken.problem(422, "/problems/already-lent", Some("rejected"));
    assert_eq!(detail, "book `978-2` is already lent to `ann`");
    server.shutdown().await;
}

/// A schema of its own on the test server, dropped at the end; `None` (after printing why)
/// when no server answers and `EVOQ_REQUIRE_PG` is not `1`.
struct PgSchema {
    url: String,
    schema: String,
}

impl PgSchema {
    async fn new() -> Option<PgSchema> {
        let url = std::env::var("EVOQ_TEST_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        if let Err(error) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
            let message = format!("PostgreSQL does not answer ({error})");
            if std::env::var("EVOQ_REQUIRE_PG").as_deref() == Ok("1") {
                panic!("{message}; EVOQ_REQUIRE_PG=1 makes this a failure");
            }
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED (http_service on PostgreSQL): {message}; set EVOQ_TEST_PG_URL to run this test"
            );
            return None;
        }
        let schema = format!("evoq_test_http_{}", evoq::Uuid::now_v7().simple());
        Some(PgSchema { url, schema })
    }

    async fn drop_schema(self) {
        let (client, connection) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        let driver = tokio::spawn(connection);
        client
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS \"{}\" CASCADE",
                self.schema
            ))
            .await
            .expect("drop the schema");
        drop(client);
        let _ = driver.await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_problems_and_tokens_on_postgres() {
    let Some(pg) = PgSchema::new().await else {
        return;
    };
    let backend = Backend::Postgres {
        url: pg.url.clone(),
        schema: pg.schema.clone(),
    };
    let server = Server::start(&backend, Settings::default()).await;
    main_flow(&server).await;
    server.shutdown().await;
    pg.drop_schema().await;
}
