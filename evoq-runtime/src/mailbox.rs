//! The mailbox of an aggregate actor: an unbounded FIFO queue with one receiver, closable by
//! the receiver, ended when every sender is gone.
//!
//! It is much smaller than a `tokio::sync::mpsc` channel (which allocates a block of slots up
//! front), and an idle aggregate's memory is mostly its mailbox and its task: this keeps a live
//! idle aggregate under a kibibyte.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

struct Shared<J> {
    state: Mutex<State<J>>,
    senders: AtomicUsize,
    wake: Notify,
}

struct State<J> {
    queue: VecDeque<J>,
    closed: bool,
}

impl<J> Shared<J> {
    fn state(&self) -> MutexGuard<'_, State<J>> {
        // The queue holds no invariant a panic could break halfway.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A new mailbox.
pub(crate) fn mailbox<J>() -> (Sender<J>, Receiver<J>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            closed: false,
        }),
        senders: AtomicUsize::new(1),
        wake: Notify::new(),
    });
    (
        Sender {
            shared: Arc::clone(&shared),
        },
        Receiver { shared },
    )
}

/// Sends jobs to an actor.
pub(crate) struct Sender<J> {
    shared: Arc<Shared<J>>,
}

impl<J> Sender<J> {
    /// Queues `job`; gives it back when the receiver closed the mailbox.
    pub(crate) fn send(&self, job: J) -> Result<(), J> {
        {
            let mut state = self.shared.state();
            if state.closed {
                return Err(job);
            }
            state.queue.push_back(job);
        }
        self.shared.wake.notify_one();
        Ok(())
    }

    /// Whether the receiver closed the mailbox.
    pub(crate) fn is_closed(&self) -> bool {
        self.shared.state().closed
    }
}

impl<J> Clone for Sender<J> {
    fn clone(&self) -> Self {
        self.shared.senders.fetch_add(1, Ordering::Relaxed);
        Sender {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<J> Drop for Sender<J> {
    fn drop(&mut self) {
        if self.shared.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.wake.notify_one();
        }
    }
}

/// The actor's end.
pub(crate) struct Receiver<J> {
    shared: Arc<Shared<J>>,
}

impl<J> Receiver<J> {
    /// The next job; `None` once the queue is empty and every sender is gone.
    pub(crate) async fn recv(&mut self) -> Option<J> {
        loop {
            if let Some(job) = self.try_recv() {
                return Some(job);
            }
            if self.shared.senders.load(Ordering::Acquire) == 0 {
                // A job sent just before the last sender went is still taken.
                return self.try_recv();
            }
            // `notify_one` stores a permit when nobody waits, so a job pushed between the check
            // above and this wait is not missed.
            self.shared.wake.notified().await;
        }
    }

    /// The next job, if one is queued.
    pub(crate) fn try_recv(&mut self) -> Option<J> {
        self.shared.state().queue.pop_front()
    }

    /// Refuses further jobs; the ones already queued can still be taken.
    pub(crate) fn close(&mut self) {
        self.shared.state().closed = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_arrive_in_order_and_the_mailbox_ends_with_its_senders() {
        let (sender, mut receiver) = mailbox();
        let other = sender.clone();
        sender.send(1).unwrap();
        other.send(2).unwrap();
        drop(sender);
        assert_eq!(receiver.recv().await, Some(1));
        other.send(3).unwrap();
        drop(other);
        assert_eq!(receiver.recv().await, Some(2));
        assert_eq!(receiver.recv().await, Some(3));
        assert_eq!(receiver.recv().await, None);
    }

    #[tokio::test]
    async fn a_closed_mailbox_gives_jobs_back_and_keeps_the_queued_ones() {
        let (sender, mut receiver) = mailbox();
        sender.send("queued").unwrap();
        receiver.close();
        assert!(sender.is_closed());
        assert_eq!(sender.send("late"), Err("late"));
        assert_eq!(receiver.try_recv(), Some("queued"));
        assert_eq!(receiver.try_recv(), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_waiting_receiver_wakes_for_jobs_from_other_tasks() {
        let (sender, mut receiver) = mailbox::<u32>();
        let producer = tokio::spawn(async move {
            for i in 0..10_000 {
                sender.send(i).unwrap();
                if i % 100 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        });
        for expected in 0..10_000 {
            assert_eq!(receiver.recv().await, Some(expected));
        }
        producer.await.unwrap();
        assert_eq!(receiver.recv().await, None);
    }
}
