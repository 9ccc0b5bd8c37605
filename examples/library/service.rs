//! The library as an HTTP service: the catalog projection (the read side), the router and its
//! handlers, and how the service starts on a SQLite file or a PostgreSQL schema.
//!
//! | route | what |
//! |---|---|
//! | `POST /books` `{"isbn", "title", "author"}` | `AddBook`: 201, `Location`, the dispatch result, `evoq-token` |
//! | `POST /books/{isbn}/loan` `{"member", "expected_version"?}` | `LendBook`: 200, the dispatch result, `evoq-token` |
//! | `DELETE /books/{isbn}/loan` | `ReturnBook`: 200, the dispatch result, `evoq-token` |
//! | `GET /books/{isbn}` | the book as the catalog has it (waits for the catalog when given `evoq-token`) |
//! | `GET /books` | every book, by ISBN (idem) |
//! | `GET /ready`, `GET /live` | the probes |
//!
//! No handler maps an error by hand: `?` turns evoq's errors into problem documents, and a
//! refusal of the `Book` aggregate answers with the status `LibraryError` chooses.

use std::path::PathBuf;
use std::time::Duration;

use axum::Router;
use axum::extract::{FromRef, Path, State};
use axum::http::StatusCode;
use axum::http::header::LOCATION;
use axum::routing::{get, post};
// Commands are read with evoq's `Json`: a body that is not the command answers with a problem
// document, like every other error of the service.
use evoq::axum::{ApiResult, CommandResponse, Consistent, HttpStatus, Json, ReadYourWrites};
use evoq::prelude::*;
use evoq::store::postgres::{PostgresOptions, PostgresStore};
use evoq::store::sqlite::SqliteStore;
use serde::{Deserialize, Serialize};

use crate::domain::*;

/// Where the events are kept.
#[derive(Clone, Debug)]
pub(crate) enum Backend {
    /// One SQLite file: one process on one machine.
    Sqlite(PathBuf),
    /// A schema of a PostgreSQL database.
    Postgres { url: String, schema: String },
}

/// How the service behaves beyond its store.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    /// How long a read given a token waits for the catalog.
    pub(crate) read_timeout: Duration,
    /// A pause in the catalog before each event: a slow read side, to watch read-your-writes at
    /// work (`EVOQ_HTTP_CATALOG_DELAY_MS`; the tests use it).
    pub(crate) catalog_delay: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            read_timeout: Duration::from_secs(5),
            catalog_delay: Duration::ZERO,
        }
    }
}

/// A book as `GET /books/{isbn}` shows it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub(crate) struct BookView {
    pub(crate) isbn: String,
    pub(crate) title: String,
    pub(crate) author: String,
    /// The member who has it.
    pub(crate) lent_to: Option<String>,
    /// How many times it was lent.
    pub(crate) loans: u64,
    /// The version of its stream: what `expected_version` of a loan compares with.
    pub(crate) version: u64,
}

/// The catalog: one `BookView` per ISBN, in memory. The in-memory read model replays every
/// event at start (a restarted service serves the same catalog once it has caught up, and a
/// token from before the restart waits for that). For several nodes on one PostgreSQL
/// database, keep it in tables with a `PostgresReadModel` instead (see the `sql_read_model`
/// example): every node then reads what the node running the projection wrote.
#[derive(Clone)]
pub(crate) struct Catalog {
    books: InMemoryReadModel,
    delay: Duration,
}

impl Catalog {
    async fn update(
        &self,
        isbn: &str,
        meta: &EventMeta,
        change: impl FnOnce(&mut BookView),
    ) -> Result<(), ProjectionError> {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let mut book: BookView = self.books.get(isbn)?.ok_or_else(|| {
            ProjectionError::new(format!("book `{isbn}` lent before it was added"))
        })?;
        change(&mut book);
        book.version = meta.stream_version();
        self.books.put(isbn, &book)?;
        Ok(())
    }
}

#[projection(name = "catalog", read_model = books)]
impl Catalog {
    #[handles]
    async fn added(&mut self, e: &BookAdded, meta: &EventMeta) -> Result<(), ProjectionError> {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let book = BookView {
            isbn: e.isbn.clone(),
            title: e.title.clone(),
            author: e.author.clone(),
            lent_to: None,
            loans: 0,
            version: meta.stream_version(),
        };
        self.books.put(&e.isbn, &book)?;
        Ok(())
    }

    #[handles]
    async fn lent(&mut self, e: &BookLent, meta: &EventMeta) -> Result<(), ProjectionError> {
        self.update(&e.isbn, meta, |book| {
            book.lent_to = Some(e.member.clone());
            book.loans += 1;
        })
        .await
    }

    #[handles]
    async fn returned(
        &mut self,
        e: &BookReturned,
        meta: &EventMeta,
    ) -> Result<(), ProjectionError> {
        self.update(&e.isbn, meta, |book| book.lent_to = None).await
    }
}

/// What the handlers share.
#[derive(Clone)]
struct AppState {
    app: Evoq,
    catalog: InMemoryReadModel,
    /// What a `Consistent` read waits for: the catalog.
    reads: ReadYourWrites,
}

impl FromRef<AppState> for ReadYourWrites {
    fn from_ref(state: &AppState) -> Self {
        state.reads.clone()
    }
}

/// What the handlers return: a value, or an error answered as a problem document, the
/// refusals of `Book` with the status `LibraryError` chooses.
type Reply<T> = ApiResult<T, LibraryError>;

/// The result of a command on a book, with its token.
type Done = CommandResponse<Dispatched<Book>>;

/// `POST /books`: the body is the command.
async fn add_book(
    State(state): State<AppState>,
    Json(command): Json<AddBook>,
) -> Reply<(StatusCode, [(axum::http::HeaderName, String); 1], Done)> {
    let location = format!("/books/{}", command.isbn);
    let done = state.app.dispatch(command).await?;
    Ok((StatusCode::CREATED, [(LOCATION, location)], done.into()))
}

/// The body of `POST /books/{isbn}/loan`.
#[derive(Deserialize)]
struct Loan {
    member: String,
    /// The version the book must be at (as `GET /books/{isbn}` showed it): another loan or
    /// return since then answers 409.
    expected_version: Option<u64>,
}

/// `POST /books/{isbn}/loan`.
async fn lend_book(
    State(state): State<AppState>,
    Path(isbn): Path<String>,
    Json(loan): Json<Loan>,
) -> Reply<Done> {
    let mut command = state.app.command(LendBook {
        isbn,
        member: loan.member,
    });
    if let Some(version) = loan.expected_version {
        command = command.expected_version(version);
    }
    Ok(command.dispatch().await?.into())
}

/// `DELETE /books/{isbn}/loan`.
async fn return_book(State(state): State<AppState>, Path(isbn): Path<String>) -> Reply<Done> {
    Ok(state.app.dispatch(ReturnBook { isbn }).await?.into())
}

/// `GET /books/{isbn}`: 404 with the same problem as a command on an unknown book.
async fn book(
    _: Consistent,
    State(state): State<AppState>,
    Path(isbn): Path<String>,
) -> Reply<Json<BookView>> {
    match state.catalog.get::<BookView>(&isbn)? {
        Some(book) => Ok(Json(book)),
        None => Err(LibraryError::NotInCatalog(isbn).problem().into()),
    }
}

/// `GET /books`.
async fn books(_: Consistent, State(state): State<AppState>) -> Reply<Json<Vec<BookView>>> {
    let books = state.catalog.list::<BookView>("")?;
    Ok(Json(books.into_iter().map(|(_, book)| book).collect()))
}

/// A started service: the runtime and the router that serves it.
pub(crate) struct Service {
    pub(crate) app: Evoq,
    pub(crate) router: Router,
}

/// Opens the store, starts the runtime with the catalog, and builds the router.
pub(crate) async fn start(
    backend: &Backend,
    settings: &Settings,
) -> Result<Service, Box<dyn std::error::Error + Send + Sync>> {
    let builder = match backend {
        Backend::Sqlite(path) => Evoq::builder().store(SqliteStore::open(path).await?),
        Backend::Postgres { url, schema } => Evoq::builder().store(
            PostgresStore::connect_with(url, PostgresOptions::default().schema(schema.as_str()))
                .await?,
        ),
    };
    let catalog = Catalog {
        books: InMemoryReadModel::new(),
        delay: settings.catalog_delay,
    };
    let app = builder.projection(catalog.clone()).start().await?;
    let reads = ReadYourWrites::new(app.clone())
        .projection::<Catalog>()
        .timeout(settings.read_timeout);
    let state = AppState {
        app: app.clone(),
        catalog: catalog.books,
        reads,
    };
    let router = Router::new()
        .route("/books", post(add_book).get(books))
        .route("/books/{isbn}", get(book))
        .route("/books/{isbn}/loan", post(lend_book).delete(return_book))
        .with_state(state)
        .merge(evoq::axum::health_routes(app.clone()));
    Ok(Service { app, router })
}
