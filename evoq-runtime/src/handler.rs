//! Event handlers: the [`EventHandler`] trait that `#[event_handler]` implements, [`EventMeta`]
//! (what a handler learns about an event besides its data) and [`HandlerFailure`] (why a
//! delivery failed).
//!
//! The subscription engine runs each handler in a task of its own and
//! owns delivery, checkpoints, retries and dead letters; a handler only says which event types
//! it takes ([`EventHandler::EVENT_TYPES`]) and handles one event at a time.

pub use crate::delivery::consumer::{EventMeta, HandlerFailure, HandlerFuture};

use crate::delivery::consumer::Consumer;
use crate::delivery::policy::HandlerOptions;
use crate::delivery::subscribers::Registration;
use crate::event::upcast::Upcaster;

/// A reactor to events: it subscribes to event types (never to streams) and gets, in global
/// order and at least once, every stored event of those types.
///
/// Implemented by `#[event_handler(name = "...")]` on an impl block whose `#[handles]` async
/// methods each take one event type:
///
/// ```ignore
/// #[event_handler(name = "notifier")]
/// impl Notifier {
///     #[handles]
///     async fn opened(&mut self, e: &AccountOpened, meta: &EventMeta) -> Result<(), NotifyError> {
///         /* ... */
///     }
/// }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an evoq event handler",
    label = "not an `EventHandler`",
    note = "put `#[event_handler(name = \"...\")]` on an `impl {Self}` block with `#[handles]` async methods"
)]
pub trait EventHandler: Send + 'static {
    /// The handler's stable name: it keys its checkpoint and its dead letters in the store.
    const NAME: &'static str;
    /// The wire names of the event types it handles, from its `#[handles]` signatures.
    const EVENT_TYPES: &'static [&'static str];
    /// The options given in the attribute (`retry`, `max_attempts`, `on_error`, `strong`);
    /// options given to the builder take precedence, the runtime's defaults fill the rest.
    const OPTIONS: HandlerOptions = HandlerOptions::new();
    /// The upcasters of each type of [`EVENT_TYPES`](Self::EVENT_TYPES), in the same order:
    /// the names a type was renamed from join the subscription.
    const UPCASTERS: &'static [&'static [Upcaster]] = &[];
    /// Whether the type is a projection (`#[projection]` sets it): registered as a plain
    /// handler, it would keep no read-model checkpoint and could not be rebuilt, so the
    /// builder refuses it there. Not part of the public API.
    #[doc(hidden)]
    const IS_PROJECTION: bool = false;

    /// Handles one event: decodes it as the type its method takes and runs the method. An
    /// event that does not decode is a failure, never a panic.
    fn handle<'a>(&'a mut self, event: &'a EventMeta) -> HandlerFuture<'a>;
}

impl<H: EventHandler> Consumer for H {
    fn consume<'a>(&'a mut self, event: &'a EventMeta) -> HandlerFuture<'a> {
        self.handle(event)
    }
}

/// The engine's registration of the handler `H`, with the builder's `options`: its name, its
/// event types and the names they were renamed from (read too).
pub(crate) fn registration<H: EventHandler, C: Consumer>(
    consumer: C,
    options: HandlerOptions,
) -> Registration {
    Registration::new(
        H::NAME,
        H::EVENT_TYPES,
        H::UPCASTERS,
        H::OPTIONS,
        options,
        consumer,
    )
    .of_type::<H>()
}
