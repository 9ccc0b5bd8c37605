//! Time helpers: a deadline that costs no timer until it has to wait, and durations for
//! telemetry.
//!
//! A dispatch's deadline: like `tokio::time::timeout_at`, except that the timer is made (and
//! registered with the runtime's timer wheel) only when the dispatch has to wait. A command
//! that completes in its first poll (an uncontended aggregate on the in-memory store) costs no
//! timer at all. Every step of a dispatch runs under it: idempotency, middleware, the actor,
//! and the wait for strongly consistent handlers.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// Microseconds since `started` (0 when it was not taken).
pub(crate) fn micros_since(started: Option<std::time::Instant>) -> u64 {
    started.map_or(0, |started| started.elapsed().as_micros() as u64)
}

/// `timeout` from now, or a far future for durations too long to add.
pub(crate) fn deadline_after(timeout: Duration) -> Instant {
    deadline_from(Instant::now(), timeout)
}

/// `timeout` from `now`, or a far future for durations too long to add: for a caller that
/// needs the time it read for something else too (a clock read costs as much as a small step
/// of a dispatch).
pub(crate) fn deadline_from(now: Instant, timeout: Duration) -> Instant {
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365 * 30))
}

/// Runs `future` until `deadline`: `None` when the deadline passed first.
pub(crate) fn within<F: Future>(deadline: Instant, future: F) -> Within<F> {
    Within {
        future,
        deadline,
        sleep: None,
    }
}

pin_project_lite::pin_project! {
    /// The future of [`within`].
    pub(crate) struct Within<F> {
        #[pin]
        future: F,
        deadline: Instant,
        sleep: Option<Pin<Box<Sleep>>>,
    }
}

impl<F: Future> Future for Within<F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(output) = this.future.poll(cx) {
            return Poll::Ready(Some(output));
        }
        let deadline = *this.deadline;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        sleep.as_mut().poll(cx).map(|()| None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_ready_future_completes_without_a_timer() {
        let mut within = std::pin::pin!(within(Instant::now(), async { 7 }));
        // Even with its deadline passed, a future that is ready at once completes.
        assert_eq!(within.as_mut().await, Some(7));
    }

    #[tokio::test]
    async fn a_waiting_future_stops_at_its_deadline() {
        let deadline = Instant::now() + Duration::from_millis(20);
        let never = within(deadline, std::future::pending::<()>());
        assert_eq!(never.await, None);
        assert!(Instant::now() >= deadline);
    }

    #[tokio::test]
    async fn a_waiting_future_that_completes_in_time_gives_its_output() {
        let deadline = Instant::now() + Duration::from_secs(5);
        let later = within(deadline, async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            "done"
        });
        assert_eq!(later.await, Some("done"));
    }
}
