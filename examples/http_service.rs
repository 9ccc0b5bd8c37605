//! A small library as an HTTP service on axum: commands over POST and DELETE, the catalog (a
//! projection) over GET, errors as problem documents with no hand-written mapping, the
//! consistency token for reading one's own writes, probes, and a graceful shutdown.
//!
//! ```sh
//! cargo run --example http_service                        # SQLite file library.db, 127.0.0.1:3000
//! cargo run --example http_service -- --db /tmp/lib.db --addr 127.0.0.1:8080
//! cargo run --example http_service -- --postgres postgres://postgres@127.0.0.1:5432/test --schema library
//! ```
//!
//! The same through the environment: `EVOQ_HTTP_DB`, `EVOQ_HTTP_POSTGRES`, `EVOQ_HTTP_SCHEMA`,
//! `EVOQ_HTTP_ADDR`, and `EVOQ_HTTP_CATALOG_DELAY_MS` (a slow read side, to see the token at
//! work). Then, in another terminal:
//!
//! ```sh
//! curl -i localhost:3000/books -H 'content-type: application/json' \
//!      -d '{"isbn": "978-0201633610", "title": "Design Patterns", "author": "Gamma et al."}'
//! # 201, evoq-token: 1
//! curl -i localhost:3000/books/978-0201633610 -H 'evoq-token: 1'     # sees the book
//! curl -i localhost:3000/books/978-0201633610/loan -H 'content-type: application/json' -d '{"member": "ann"}'
//! curl -i localhost:3000/books/978-0201633610/loan -H 'content-type: application/json' -d '{"member": "bob"}'
//! # 422 application/problem+json
//! # {"type":"/problems/already-lent","title":"Unprocessable Entity","status":422,
//! #  "detail":"book `978-0201633610` is already lent to `ann`","kind":"rejected"}
//! curl -i -X DELETE localhost:3000/books/978-0201633610/loan
//! curl -i localhost:3000/ready
//! ```
//!
//! Ctrl-C (or SIGTERM) stops accepting connections, lets the requests in flight finish, then
//! stops the runtime.

/// The library domain: events, commands, `LibraryError` (with its HTTP statuses) and `Book`.
#[path = "library/domain.rs"]
mod domain;
/// The catalog projection, the router and its handlers, and how the service starts.
#[path = "library/service.rs"]
mod service;

use std::time::Duration;

use service::{Backend, Settings};

/// The command line, then the environment, then the defaults.
struct Args {
    backend: Backend,
    addr: String,
    settings: Settings,
}

fn args() -> Result<Args, String> {
    let env = |name: &str| std::env::var(name).ok();
    let mut db = env("EVOQ_HTTP_DB");
    let mut postgres = env("EVOQ_HTTP_POSTGRES");
    let mut schema = env("EVOQ_HTTP_SCHEMA");
    let mut addr = env("EVOQ_HTTP_ADDR");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("`{arg}` needs a value"));
        match arg.as_str() {
            "--db" => db = Some(value()?),
            "--postgres" => postgres = Some(value()?),
            "--schema" => schema = Some(value()?),
            "--addr" => addr = Some(value()?),
            other => {
                return Err(format!(
                    "unknown argument `{other}`; use --db PATH, --postgres URL [--schema NAME], --addr HOST:PORT"
                ));
            }
        }
    }
    let backend = match postgres {
        Some(url) => Backend::Postgres {
            url,
            schema: schema.unwrap_or_else(|| "library".to_owned()),
        },
        None => Backend::Sqlite(db.unwrap_or_else(|| "library.db".to_owned()).into()),
    };
    let mut settings = Settings::default();
    if let Some(delay) = env("EVOQ_HTTP_CATALOG_DELAY_MS") {
        let millis = delay.parse().map_err(|_| {
            format!("EVOQ_HTTP_CATALOG_DELAY_MS must be milliseconds, not `{delay}`")
        })?;
        settings.catalog_delay = Duration::from_millis(millis);
    }
    Ok(Args {
        backend,
        addr: addr.unwrap_or_else(|| "127.0.0.1:3000".to_owned()),
        settings,
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let args = args()?;
    let service = service::start(&args.backend, &args.settings).await?;
    let listener = tokio::net::TcpListener::bind(&args.addr).await?;
    match &args.backend {
        Backend::Sqlite(path) => println!("events in {}", path.display()),
        Backend::Postgres { schema, .. } => println!("events in PostgreSQL schema `{schema}`"),
    }
    println!("listening on http://{}", listener.local_addr()?);
    evoq::axum::serve(
        listener,
        service.router,
        service.app,
        evoq::axum::shutdown_signal(),
    )
    .await?;
    println!("stopped");
    Ok(())
}
