//! Catching panics: the one future that turns a panic while polling into an error, and the
//! text of a caught panic. User code (command handlers, `#[apply]`, middleware, event handlers)
//! and the stores run under it, so that no panic reaches a caller or ends a task.

use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

/// A caught panic's payload.
pub(crate) type Panic = Box<dyn Any + Send>;

pin_project_lite::pin_project! {
    /// A future whose panics become `Err` with the panic's payload.
    pub(crate) struct CatchPanic<F> {
        #[pin]
        future: F,
    }
}

impl<F> CatchPanic<F> {
    pub(crate) fn new(future: F) -> Self {
        CatchPanic { future }
    }
}

impl<F: Future> Future for CatchPanic<F> {
    type Output = Result<F::Output, Panic>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let future = self.project().future;
        match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

/// The text of a caught panic.
pub(crate) fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(message) = panic.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = panic.downcast_ref::<String>() {
        message.clone()
    } else {
        "a panic with a non-string payload".to_owned()
    }
}

/// `value` as text, or, when its `Display` panics (user code: a handler's error type, a
/// rejection), a text that says so: never a panic in the runtime's own code.
pub(crate) fn displayed(value: &dyn std::fmt::Display) -> String {
    catch_unwind(AssertUnwindSafe(|| value.to_string())).unwrap_or_else(|panic| {
        format!(
            "(its text could not be shown: its `Display` panicked: {})",
            panic_message(&*panic)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_while_polling_becomes_an_error_with_its_message() {
        let caught = CatchPanic::new(async {
            tokio::task::yield_now().await;
            panic!("boom {}", 7);
        })
        .await;
        let Err(panic) = caught;
        assert_eq!(panic_message(&*panic), "boom 7");
        assert_eq!(CatchPanic::new(async { 3 }).await.ok(), Some(3));
        let Err(panic) = CatchPanic::new(async { std::panic::panic_any(5_u8) }).await;
        assert_eq!(panic_message(&*panic), "a panic with a non-string payload");
    }
}
