//! PostgreSQL for tests: a schema of its own per test, dropped at the end.
//!
//! Tests read `EVOQ_TEST_PG_URL` (default `postgres://postgres@127.0.0.1:5432/test`). When no
//! server answers they are skipped with a printed reason, unless `EVOQ_REQUIRE_PG=1` (set by
//! `.ci/run`), which makes them fail instead.

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
