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

/// Runs `run`, user code that is not a future, catching its panic: `Err` with its text.
pub(crate) fn caught<T>(run: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(run)).map_err(|panic| panic_message(&*panic))
}

/// The error of a `Serialize` or `Deserialize` impl (`which`) of `type_name` (user code) that
/// panicked with `message`: the data does not (de)serialize, and each caller reports that as
/// it reports any data that does not, never as a panic.
pub(crate) fn serde_panicked(which: Serde, type_name: &str, message: &str) -> serde_json::Error {
    let text = format!("the `{which:?}` impl of `{type_name}` panicked: {message}");
    match which {
        Serde::Serialize => serde::ser::Error::custom(text),
        Serde::Deserialize => serde::de::Error::custom(text),
    }
}

/// Runs `run`, in which the `Serialize` or `Deserialize` impl (`which`) of `T` (user code)
/// runs: its panic is the error [`serde_panicked`] words, naming `T` without its path.
pub(crate) fn serde_guarded<T: ?Sized, R>(
    which: Serde,
    run: impl FnOnce() -> Result<R, serde_json::Error>,
) -> Result<R, serde_json::Error> {
    caught(run).unwrap_or_else(|panic| Err(serde_panicked(which, short_type_name::<T>(), &panic)))
}

/// Which half of serde's user code ran: see [`serde_panicked`].
#[derive(Clone, Copy, Debug)]
pub(crate) enum Serde {
    Serialize,
    Deserialize,
}

/// The name of `T` without its module path, as its user wrote it (`Order`, not
/// `shop::orders::Order`; the arguments of a generic type keep theirs).
pub(crate) fn short_type_name<T: ?Sized>() -> &'static str {
    let full = std::any::type_name::<T>();
    let outer = full.split('<').next().unwrap_or(full);
    outer.rfind("::").map_or(full, |at| &full[at + 2..])
}

/// `value` as text, or, when its `Display` panics (user code: a handler's error type, a
/// rejection), a text that says so: never a panic in the runtime's own code.
pub(crate) fn displayed(value: &dyn std::fmt::Display) -> String {
    caught(|| value.to_string()).unwrap_or_else(|panic| {
        format!("(its text could not be shown: its `Display` panicked: {panic})")
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

    #[test]
    fn a_short_type_name_drops_the_module_path_of_the_outer_type_only() {
        struct Order;
        struct Box2<T>(T);
        assert_eq!(short_type_name::<Order>(), "Order");
        assert_eq!(short_type_name::<u64>(), "u64");
        assert!(short_type_name::<Box2<Order>>().starts_with("Box2<"));
        assert!(short_type_name::<Box2<Order>>().ends_with("::Order>"));
    }

    #[test]
    fn a_serde_panic_is_an_error_that_names_the_impl_the_type_and_the_panic() {
        let error = serde_panicked(Serde::Deserialize, "Order", "boom");
        assert_eq!(
            error.to_string(),
            "the `Deserialize` impl of `Order` panicked: boom"
        );
        assert_eq!(caught(|| 3), Ok(3));
        assert_eq!(
            caught(|| panic!("no {}", 4)),
            Err::<(), _>("no 4".to_owned())
        );
    }
}
