//! PostgreSQL for tests: a schema of its own per test, dropped at the end.
//!
//! Tests read `EVOQ_TEST_PG_URL` (default `postgres://postgres@127.0.0.1:5432/test`). When no
//! server answers they are skipped with a printed reason, unless `EVOQ_REQUIRE_PG=1` (set by
//! `.ci/run`), which makes them fail instead.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::NoTls;

/// The URL of the test server.
pub fn url() -> String {
    std::env::var("EVOQ_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A fresh schema name, unique to one test.
fn fresh_schema(label: &str) -> String {
    format!("evoq_test_{label}_{}", uuid::Uuid::now_v7().simple())
}

/// A schema name for one test, dropped (with everything in it) when dropped.
pub struct PgSchema {
    pub url: String,
    pub schema: String,
}

impl PgSchema {
    /// A fresh schema name on the test server; `None` (after printing why) when no server
    /// answers and `EVOQ_REQUIRE_PG` is not `1`. The schema itself is created by the store.
    pub async fn new(label: &str) -> Option<PgSchema> {
        let url = url();
        match tokio_postgres::connect(&url, NoTls).await {
            Ok((client, connection)) => {
                drop(client);
                drop(connection);
                Some(PgSchema {
                    url,
                    schema: fresh_schema(label),
                })
            }
            Err(error) => {
                let message = format!(
                    "PostgreSQL does not answer at {} ({error})",
                    evoq_redacted(&url)
                );
                if std::env::var("EVOQ_REQUIRE_PG").as_deref() == Ok("1") {
                    panic!("{message}; EVOQ_REQUIRE_PG=1 makes this a failure");
                }
                // Straight to stderr, past the test harness's capture, so the skip is seen.
                use std::io::Write;
                let _ = writeln!(
                    std::io::stderr(),
                    "SKIPPED ({label}): {message}; set EVOQ_TEST_PG_URL to run this test"
                );
                None
            }
        }
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let url = self.url.clone();
        let sql = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.schema);
        // Drop may run inside a runtime: use a thread with a runtime of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async move {
                let (client, connection) = tokio_postgres::connect(&url, NoTls).await.ok()?;
                let driver = tokio::spawn(connection);
                let _ = client.batch_execute(&sql).await;
                drop(client);
                let _ = driver.await;
                Some(())
            })
        })
        .join();
    }
}

/// The URL with any password hidden.
fn evoq_redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if url[scheme + 3..at].contains(':') => {
            let user_end = scheme + 3 + url[scheme + 3..at].find(':').unwrap_or(0);
            format!("{}:***{}", &url[..user_end], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// A lock on one table of a test's schema, held by a session of its own (as an operator's
/// `LOCK TABLE` in a transaction left open) until [`release`](Self::release) or drop.
pub struct TableLock {
    client: tokio_postgres::Client,
    driver: tokio::task::JoinHandle<()>,
    /// The backend (process id) of the session that holds it.
    pub pid: i32,
}

impl TableLock {
    /// Takes `mode` (`ACCESS EXCLUSIVE`, `EXCLUSIVE`, ...) on `table` of `schema`, in a
    /// transaction left open.
    pub async fn hold(schema: &PgSchema, table: &str, mode: &str) -> TableLock {
        let (client, connection) = tokio_postgres::connect(&schema.url, NoTls)
            .await
            .expect("a session for the lock");
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        client
            .batch_execute(&format!(
                "BEGIN; LOCK TABLE \"{}\".\"{table}\" IN {mode} MODE",
                schema.schema
            ))
            .await
            .expect("take the lock");
        let pid = client
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .expect("the session's pid")
            .get(0);
        TableLock {
            client,
            driver,
            pid,
        }
    }

    /// Ends the transaction, which frees the lock.
    pub async fn release(self) {
        self.client
            .batch_execute("ROLLBACK")
            .await
            .expect("release the lock");
        drop(self.client);
        let _ = self.driver.await;
    }
}

/// A TCP proxy in front of the test server that can lose a reply: armed with a marker, it
/// forwards the first message a client sends that holds the marker (the statement reaches the
/// server, which runs and commits it), then closes that connection, both ways, as soon as the
/// server answers, without passing the answer on: the client's connection breaks after its
/// statement was committed.
pub struct Proxy {
    /// The test server's URL, through the proxy.
    pub url: String,
    marker: Arc<std::sync::Mutex<Option<Vec<u8>>>>,
    cuts: Arc<std::sync::atomic::AtomicUsize>,
    listener: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// A proxy to the server of `url` (`postgres://user@host:port/db`).
    pub async fn start(url: &str) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let port = listener.local_addr().expect("its address").port();
        let at = url.rfind('@').expect("a URL with a user");
        let end = url[at..].find('/').map_or(url.len(), |slash| at + slash);
        let server = url[at + 1..end].to_owned();
        let proxied = format!("{}@127.0.0.1:{port}{}", &url[..at], &url[end..]);
        let marker: Arc<std::sync::Mutex<Option<Vec<u8>>>> = Arc::default();
        let cuts: Arc<AtomicUsize> = Arc::default();
        let (armed, counted) = (Arc::clone(&marker), Arc::clone(&cuts));
        let listener = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(upstream) = tokio::net::TcpStream::connect(&server).await else {
                    continue;
                };
                tokio::spawn(relay(
                    client,
                    upstream,
                    Arc::clone(&armed),
                    Arc::clone(&counted),
                ));
            }
        });
        Proxy {
            url: proxied,
            marker,
            cuts,
            listener,
        }
    }

    /// Arms the proxy: the next connection that sends `marker` loses the server's answer.
    pub fn cut_reply_after(&self, marker: &[u8]) {
        *self.marker.lock().unwrap() = Some(marker.to_vec());
    }

    /// How many answers the proxy lost so far.
    pub fn cuts(&self) -> usize {
        self.cuts.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

/// Relays one connection both ways, until either side closes or the connection is cut.
async fn relay(
    client: tokio::net::TcpStream,
    server: tokio::net::TcpStream,
    marker: Arc<std::sync::Mutex<Option<Vec<u8>>>>,
    cuts: Arc<AtomicUsize>,
) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let cut = Arc::new(AtomicBool::new(false));
    let sending = Arc::clone(&cut);
    let mut upward = tokio::spawn(async move {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let read = match client_read.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(read) => read,
            };
            let chunk = &buffer[..read];
            {
                let mut armed = marker.lock().unwrap();
                if armed.as_ref().is_some_and(|marker| {
                    chunk
                        .windows(marker.len())
                        .any(|window| window == &marker[..])
                }) {
                    *armed = None;
                    sending.store(true, Ordering::SeqCst);
                }
            }
            if server_write.write_all(chunk).await.is_err() {
                return;
            }
        }
    });
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        tokio::select! {
            _ = &mut upward => break,
            read = server_read.read(&mut buffer) => {
                let read = match read {
                    Ok(0) | Err(_) => break,
                    Ok(read) => read,
                };
                if cut.load(Ordering::SeqCst) {
                    // The answer to the marked statement: lost, and the connection with it.
                    cuts.fetch_add(1, Ordering::SeqCst);
                    break;
                }
                if client_write.write_all(&buffer[..read]).await.is_err() {
                    break;
                }
            }
        }
    }
    upward.abort();
    let _ = client_write.shutdown().await;
}
