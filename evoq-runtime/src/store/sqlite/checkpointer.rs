//! The background checkpointer: moves committed pages from the WAL into the database file on a
//! thread and a connection of its own, so that the writer seldom stops between two commits to
//! copy pages and sync the database file.
//!
//! SQLite checkpoints on the connection that commits, inside its commit call, once the WAL holds
//! 1,000 pages: with one writer for every append, each such checkpoint (a read of the pages, a
//! write into the database file, two syncs) delays every append waiting for the next commit.
//! The writer's connection instead reports the WAL's size after each commit (a WAL hook, which
//! replaces SQLite's automatic checkpoint on that connection) and wakes this thread past
//! [`WAKE_AT_PAGES`]; its `PASSIVE` checkpoint runs beside the writer's next commits (in WAL mode
//! a checkpoint does not block the writer).
//!
//! The WAL starts again from its beginning only at a write transaction that finds every page of
//! it checkpointed. Under a steady load the writer commits while the checkpointer works, so that
//! never happens on its own: past [`WRITER_CHECKPOINT_AT_PAGES`] the writer checkpoints itself,
//! which copies only the pages committed since the checkpointer's last checkpoint, and its next
//! transaction starts the WAL again. The `-wal` file so stays under about 16 MB (of 4 KB pages),
//! also when the checkpointer fails.
//!
//! Checkpoints of the store are in-process exclusive ([`Checkpointer::exclusive`]): the writer's
//! own (a flush, the catch-up above) wait for the checkpointer's instead of failing as busy.
//! Closing stops the checkpointer before the writer's final `TRUNCATE` checkpoint.

use std::cell::Cell;
use std::ffi::c_int;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self as std_mpsc, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use rusqlite::Connection;
use rusqlite::hooks::Wal;

use super::BACKEND;

/// The WAL's size, in pages, from which a commit wakes the checkpointer: SQLite's own threshold
/// for its automatic checkpoint.
pub(super) const WAKE_AT_PAGES: u32 = 1_000;

/// The WAL's size, in pages, from which the writer checkpoints itself after a commit, so that
/// the WAL starts again: 16 MB of 4 KB pages.
pub(super) const WRITER_CHECKPOINT_AT_PAGES: u32 = 4 * WAKE_AT_PAGES;

thread_local! {
    /// The WAL's size in pages after the last commit of the writer's connection on this thread.
    static WAL_PAGES: Cell<u32> = const { Cell::new(0) };
}

/// The WAL hook of the writer's connection: SQLite calls it on the committing thread after each
/// commit, with the number of pages in the WAL, those just committed included.
fn note_wal_pages(_: &Wal, pages: c_int) -> rusqlite::Result<()> {
    WAL_PAGES.set(u32::try_from(pages).unwrap_or(0));
    Ok(())
}

/// Makes `conn` report its WAL's size after each commit ([`wal_pages`]) instead of checkpointing
/// itself.
pub(super) fn watch_wal(conn: &Connection) {
    conn.wal_hook(Some(note_wal_pages));
}

/// The WAL's size in pages after the last commit made on this thread by a connection given to
/// [`watch_wal`].
pub(super) fn wal_pages() -> u32 {
    WAL_PAGES.get()
}

/// The checkpointer's thread, the way to wake it, and the lock every checkpoint of the store
/// takes.
pub(super) struct Checkpointer {
    wake: SyncSender<()>,
    thread: JoinHandle<()>,
    lock: Arc<Mutex<()>>,
    #[cfg_attr(not(test), allow(dead_code))]
    done: Arc<AtomicU64>,
}

impl Checkpointer {
    /// Starts the thread, which checkpoints through `conn` (a read-write connection to the
    /// store's file) each time it is woken.
    pub(super) fn start(conn: Connection, path: PathBuf) -> std::io::Result<Checkpointer> {
        // One pending wake is enough: a checkpoint moves every page committed before it starts.
        let (wake, woken) = std_mpsc::sync_channel::<()>(1);
        let lock = Arc::new(Mutex::new(()));
        let done = Arc::new(AtomicU64::new(0));
        let thread = {
            let lock = Arc::clone(&lock);
            let done = Arc::clone(&done);
            std::thread::Builder::new()
                .name("evoq-sqlite-checkpointer".into())
                .spawn(move || {
                    while woken.recv().is_ok() {
                        let _exclusive = lock.lock().unwrap_or_else(PoisonError::into_inner);
                        match checkpoint(&conn) {
                            Ok(()) => {
                                done.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(error) => tracing::warn!(
                                name: "evoq.store.checkpoint",
                                stage = "exception",
                                path = %path.display(),
                                error = %error,
                                "evoq.store.checkpoint",
                            ),
                        }
                    }
                })?
        };
        Ok(Checkpointer {
            wake,
            thread,
            lock,
            done,
        })
    }

    /// After a commit that left `pages` pages in the WAL: wakes the checkpointer from
    /// [`WAKE_AT_PAGES`] on. Never blocks.
    pub(super) fn committed(&self, pages: u32) {
        if pages >= WAKE_AT_PAGES {
            // A wake already pending covers this commit too; a stopped thread wakes no more.
            let _: Result<(), TrySendError<()>> = self.wake.try_send(());
        }
    }

    /// Held by the writer for a checkpoint of its own, which then never meets the
    /// checkpointer's.
    pub(super) fn exclusive(&self) -> MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The checkpoints the thread has completed.
    #[cfg(test)]
    pub(super) fn completed(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Stops the thread once its checkpoint in progress, if any, is over; its connection
    /// closes with it.
    pub(super) fn stop(self) {
        drop(self.wake);
        let _ = self.thread.join();
    }
}

/// A `PASSIVE` checkpoint through `conn`: as many committed pages as no reader still needs,
/// without waiting for any connection.
pub(super) fn checkpoint(conn: &Connection) -> rusqlite::Result<()> {
    let started = std::time::Instant::now();
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
    metrics::histogram!("evoq_store_checkpoint_seconds", "backend" => BACKEND)
        .record(started.elapsed().as_secs_f64());
    Ok(())
}
