//! Compile-time checks: the rules the macros' generated code requires of your types.
//!
//! You never implement nor call these traits. Each is implemented for every type that follows
//! its rule (a blanket impl), and the code `#[derive(Event)]`, `#[aggregate]`,
//! `#[event_handler]`, `#[projection]`, `#[saga]`, `#[upcaster]` and `commands!` generate
//! requires it of your type, at your token. A type that breaks the rule is one compile error
//! there, in the check's own words, and the compiler names the check in its last lines:
//!
//! ```text
//! error[E0277]: `BankError` cannot be the error of a command handler: it does not implement `std::error::Error`
//!   --> src/account.rs:29:64
//!    |
//! 29 |     fn deposit(&self, cmd: &Deposit) -> Result<MoneyDeposited, BankError> {
//!    |                                                                ^^^^^^^^^ ...
//!    |
//! help: the trait `CommandError` is not implemented for `BankError`
//! ```
//!
//! Each trait's documentation states its rule; the guide's
//! [compile errors](crate::guide::compile_errors) page lists every rule with its message. The
//! names and the rules are stable; the traits' items exist for the generated code and are not
//! API.

use std::error::Error as StdError;
use std::fmt;

use evoq_runtime::saga::{Commands, FailedCommand};
use evoq_runtime::{
    Aggregate, AppliedBy, DomainError, Event, EventMeta, HandlerFailure, Lifespan, Rejection,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::__private::{EventVTable, Same, Upcaster, encode_exact};

#[doc(inline)]
pub use evoq_runtime::saga::SagaCommand;

// ----- events (`#[derive(Event)]`, and every block that takes an event) -----

/// An event is stored as JSON: it implements serde's `Serialize` and `Deserialize`.
///
/// Required by `#[derive(Event)]`, at the type's name.
#[diagnostic::on_unimplemented(
    message = "events are stored as JSON: add `#[derive(Serialize, Deserialize)]` to `{Self}`",
    label = "`{Self}` derives `Event`, so it must implement `Serialize` and `Deserialize`",
    note = "`Serialize` and `Deserialize` are serde's: `use serde::{{Deserialize, Serialize}};` (with serde's `derive` feature)"
)]
pub trait StoredAsJson {
    #[doc(hidden)]
    const OK: () = ();
}

#[diagnostic::do_not_recommend]
impl<T: Serialize + DeserializeOwned> StoredAsJson for T {}

/// An event is shared between the runtime's tasks: it is `Send` and `Sync`.
///
/// Required by `#[derive(Event)]`, at the type's name.
#[diagnostic::on_unimplemented(
    message = "the event `{Self}` is not `Send` and `Sync`: events are shared between the runtime's tasks",
    label = "`{Self}` holds a field that is not `Send` or not `Sync`",
    note = "keep every field of an event `Send + Sync`: plain data (`String`, numbers, `Vec`, `Uuid`, ...), `Arc` rather than `Rc`, no `Cell` or `RefCell`"
)]
pub trait SharedEvent {
    #[doc(hidden)]
    const OK: () = ();
}

#[diagnostic::do_not_recommend]
impl<T: Send + Sync + 'static> SharedEvent for T {}

/// The value of a `#[tag]` field is written with `Display`: the tag is `"<prefix>:<value>"`
/// (see [`evoq::decision::tag`](crate::decision::tag)).
///
/// Required by `#[derive(Event)]`, at the type of each field marked `#[tag]`.
#[diagnostic::on_unimplemented(
    message = "the `#[tag]` field's type `{Self}` does not implement `Display`",
    label = "a tag's value is written with `Display`",
    note = "tag a field of a type with `Display` (`String`, integers, `Uuid`, ...), or implement `std::fmt::Display` for `{Self}`"
)]
pub trait TagValue {
    /// The tag `"<prefix>:<value>"`.
    #[doc(hidden)]
    fn tag(&self, prefix: &str) -> String;
}

#[diagnostic::do_not_recommend]
impl<T: std::fmt::Display + ?Sized> TagValue for T {
    fn tag(&self, prefix: &str) -> String {
        evoq_runtime::decision::tag(prefix, self)
    }
}

/// A type taken as an event (by an `#[apply]`, a `#[handles]` method of an event handler or a
/// projection, a saga method, an `#[upcaster]`) is an [`Event`].
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an evoq event",
    label = "not an `Event`",
    note = "add `#[derive(Event, Serialize, Deserialize, Clone, Debug)]` to the definition of `{Self}`"
)]
pub trait IsEvent: Sized {
    #[doc(hidden)]
    const VTABLE: EventVTable<Self>;
}

#[diagnostic::do_not_recommend]
impl<E: Event> IsEvent for E {
    const VTABLE: EventVTable<Self> = {
        fn encode<E: Event>(event: &E) -> Result<Vec<u8>, serde_json::Error> {
            encode_exact(event)
        }
        EventVTable {
            name: E::NAME,
            version: E::VERSION,
            encode: encode::<E>,
            // Both catch a panic of `E`'s `Deserialize` impl: it is a decode error.
            decode: evoq_runtime::upcast::decode_current::<E>,
            decode_stored: evoq_runtime::upcast::decode::<E>,
            stored_as: evoq_runtime::upcast::stored_as::<E>,
            upcasters: E::UPCASTERS,
            tags: <E as Event>::tags,
            clone: <E as Clone>::clone,
            debug: <E as fmt::Debug>::fmt,
        }
    };
}

/// The type named in an attribute (`#[handles(T)]`, `#[apply(T)]`) is the type the method
/// takes.
#[diagnostic::on_unimplemented(
    message = "the attribute names `{Self}`, but the method takes `{T}`",
    label = "this is not `{T}`",
    note = "write `{T}` in the attribute, or leave the attribute bare (`#[handles]`, `#[apply]`) to take the type from the signature"
)]
pub trait SameType<T: ?Sized> {
    #[doc(hidden)]
    const OK: () = ();
}

impl<T: ?Sized> SameType<T> for T {}

/// A decision's handler that takes the context's events takes them as `&[E]`, `E` the
/// decision's event enum (checked on the slice's element type, `Self`).
#[diagnostic::on_unimplemented(
    message = "a decision's handler takes the context's events as `&[{E}]` (the decision's events), not `&[{Self}]`",
    label = "this is not `{E}`",
    note = "write `context: &[{E}]`: the events the query selected that the decision applies, oldest first; or leave the parameter out to decide on the model alone"
)]
pub trait DecisionContext<E>: Sized {
    #[doc(hidden)]
    fn of(events: &[E]) -> &[Self];
}

impl<E> DecisionContext<E> for E {
    fn of(events: &[E]) -> &[Self] {
        events
    }
}

// ----- commands and aggregates (`#[derive(Command)]`, `#[aggregate]`) -----

/// The `#[aggregate_id]` field of a command has a type that becomes the aggregate id: it
/// implements `Display`.
#[diagnostic::on_unimplemented(
    message = "the `#[aggregate_id]` field has type `{Self}`, which cannot be turned into an aggregate id",
    label = "`{Self}` does not implement `std::fmt::Display`",
    note = "an aggregate id is a string: use `String`, an integer, a `Uuid`, or a type that implements `std::fmt::Display`"
)]
pub trait AggregateId {
    #[doc(hidden)]
    fn to_aggregate_id(&self) -> String;
}

#[diagnostic::do_not_recommend]
impl<T: fmt::Display + ?Sized> AggregateId for T {
    fn to_aggregate_id(&self) -> String {
        self.to_string()
    }
}

/// A command is handled by exactly one aggregate.
///
/// `#[aggregate]` implements it for the command of every `#[handles]` method, at the
/// aggregate's `impl State` header, beside the command's [`Route`](crate::Route). Two
/// aggregates handling one command are two implementations: the compiler reports them as
/// conflicting (error E0119, whose text no library can change) at the two aggregates, next to
/// the conflicting `Route`s at the two `#[handles]` methods. Remove one of the `#[handles]`
/// methods.
pub trait HandledByOneAggregate {}

/// An aggregate is one `#[aggregate]` impl block: its event enum, its routing and its
/// `Aggregate` impl are generated from that one block.
///
/// `#[aggregate]` implements it for the state type, at the block's `impl State` header. A
/// second `#[aggregate]` block for the same type is a second implementation: among the
/// conflicts of the generated items (the event enum defined twice, `Aggregate` implemented
/// twice), the compiler reports this one at the two headers (error E0119). Merge the blocks
/// into one; a plain `impl State` block beside it (no attribute) holds other methods.
pub trait OneImplBlockPerAggregate {}

/// The return type of a `#[handles]` method of an `#[aggregate]` block is a `Result`: written
/// out (`Result<Events, Error>`) or through an alias (`type Result<T> = std::result::Result<T,
/// BankError>`), whose `Ok` and `Err` types the compiler sees through this trait.
#[diagnostic::on_unimplemented(
    message = "a `#[handles]` method of an `#[aggregate]` block returns `Result<Events, Error>`, not `{Self}`",
    label = "not a `Result`",
    note = "return `Result<Events, Error>` (or an alias of it): the events are `()`, an event, `Option<E>`, `Vec<E>` or a tuple of events; the error is your domain error"
)]
pub trait CommandResult {
    #[doc(hidden)]
    type Ok;
    #[doc(hidden)]
    type Err;
    #[doc(hidden)]
    fn into_result(self) -> Result<Self::Ok, Self::Err>;
}

#[diagnostic::do_not_recommend]
impl<T, E> CommandResult for Result<T, E> {
    type Ok = T;
    type Err = E;

    fn into_result(self) -> Result<T, E> {
        self
    }
}

/// An event a command handler of the aggregate `A` returns is applied by `A`: its
/// `#[aggregate]` block has an `#[apply]` method for it.
#[diagnostic::on_unimplemented(
    message = "event `{Self}` is returned by a command handler of `{A}`, but `{A}` never applies it",
    label = "returned here, but there is no `#[apply]` method for `{Self}`",
    note = "add `#[apply] fn on_event(&mut self, event: &{Self}) {{ ... }}` to the `#[aggregate]` block of `{A}`"
)]
pub trait EventOf<A: Aggregate> {
    #[doc(hidden)]
    fn into_event(self) -> A::Event;
}

#[diagnostic::do_not_recommend]
impl<A: Aggregate, E: AppliedBy<A>> EventOf<A> for E
where
    A::Event: From<E>,
{
    fn into_event(self) -> A::Event {
        A::Event::from(self)
    }
}

/// What a command handler of the aggregate `A` returns on success are events `A` applies: `()`,
/// an applied event, an `Option` or a `Vec` of one, a tuple of them, or `A`'s event enum.
///
/// Checked through this trait when the `Ok` type is not written out in the signature (a
/// `Result` alias); `#[aggregate]` implements it for each applied event and for the enum.
#[diagnostic::on_unimplemented(
    message = "a command handler of `{A}` returns `{Self}`: not events that `{A}` applies",
    label = "`{A}` has no `#[apply]` method for what this returns",
    note = "a command handler returns `()`, an event, `Option<E>`, `Vec<E>`, a tuple of events, or the aggregate's event enum, and every event it returns has an `#[apply]` method in the `#[aggregate]` block of `{A}`"
)]
pub trait EventsOf<A> {
    /// `A`'s event enum.
    #[doc(hidden)]
    type Enum;
    #[doc(hidden)]
    fn into_events(self) -> Vec<Self::Enum>;
}

#[diagnostic::do_not_recommend]
impl<A: Aggregate> EventsOf<A> for () {
    type Enum = A::Event;

    fn into_events(self) -> Vec<A::Event> {
        Vec::new()
    }
}

#[diagnostic::do_not_recommend]
impl<A: Aggregate, E: EventOf<A>> EventsOf<A> for Option<E> {
    type Enum = A::Event;

    fn into_events(self) -> Vec<A::Event> {
        self.into_iter().map(E::into_event).collect()
    }
}

#[diagnostic::do_not_recommend]
impl<A: Aggregate, E: EventOf<A>> EventsOf<A> for Vec<E> {
    type Enum = A::Event;

    fn into_events(self) -> Vec<A::Event> {
        self.into_iter().map(E::into_event).collect()
    }
}

macro_rules! tuple_events {
    ($(($($event:ident $value:ident),+))*) => {$(
        #[diagnostic::do_not_recommend]
        impl<A: Aggregate, $($event: EventOf<A>),+> EventsOf<A> for ($($event,)+) {
            type Enum = A::Event;

            fn into_events(self) -> Vec<A::Event> {
                let ($($value,)+) = self;
                vec![$($value.into_event()),+]
            }
        }
    )*};
}

tuple_events! {
    (E1 e1)
    (E1 e1, E2 e2)
    (E1 e1, E2 e2, E3 e3)
    (E1 e1, E2 e2, E3 e3, E4 e4)
    (E1 e1, E2 e2, E3 e3, E4 e4, E5 e5)
    (E1 e1, E2 e2, E3 e3, E4 e4, E5 e5, E6 e6)
    (E1 e1, E2 e2, E3 e3, E4 e4, E5 e5, E6 e6, E7 e7)
    (E1 e1, E2 e2, E3 e3, E4 e4, E5 e5, E6 e6, E7 e7, E8 e8)
}

/// The error type of a command handler is a [`DomainError`]: it implements
/// `std::error::Error + Send + Sync + 'static` (derive `thiserror::Error`).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the error of a command handler: it does not implement `std::error::Error`",
    label = "the error of a `#[handles]` method implements `std::error::Error + Send + Sync + 'static`",
    note = "derive `thiserror::Error` for `{Self}` (`#[derive(Debug, thiserror::Error)]`, with an `#[error(\"...\")]` message), or implement `std::error::Error` and `Display` for it"
)]
pub trait CommandError {
    #[doc(hidden)]
    fn into_rejection(self) -> Rejection;
}

#[diagnostic::do_not_recommend]
impl<E: DomainError> CommandError for E {
    fn into_rejection(self) -> Rejection {
        Rejection::new(self)
    }
}

/// The error type of a `#[handles]` method is a type of its own that implements
/// `std::error::Error`: `String`, `&str`, `Box<dyn Error>` and the like are not error types.
///
/// Checked instead of [`CommandError`] and [`EventHandlerError`] when the error type is
/// written as one of those.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the error of a `#[handles]` method: it is not an error type",
    label = "`{Self}` does not implement `std::error::Error + Send + Sync + 'static`",
    note = "the error of a `#[handles]` method is a type that implements `std::error::Error`: define one with thiserror, like `#[derive(Debug, thiserror::Error)] enum BookError {{ #[error(\"the book is already lent\")] AlreadyLent }}`, or wrap the message: `#[derive(Debug, thiserror::Error)] #[error(\"{{0}}\")] struct Refused(String);`"
)]
pub trait ErrorType {
    #[doc(hidden)]
    fn into_rejection(self) -> Rejection;
    #[doc(hidden)]
    fn into_failure(self) -> HandlerFailure;
}

#[diagnostic::do_not_recommend]
impl<E: StdError + Send + Sync + 'static> ErrorType for E {
    fn into_rejection(self) -> Rejection {
        Rejection::new(self)
    }

    fn into_failure(self) -> HandlerFailure {
        HandlerFailure::new(self)
    }
}

/// The lifespan named in `#[aggregate(lifespan = L)]` implements [`Lifespan`] of the
/// aggregate, and `Default`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the lifespan of the aggregate `{A}`",
    label = "`{Self}` must implement `evoq::Lifespan<{A}>` and `Default`",
    note = "write `#[derive(Default)] struct MyLifespan;` and `impl evoq::Lifespan<{A}> for MyLifespan {{}}`, overriding the hooks you need"
)]
pub trait LifespanOf<A: Aggregate> {
    #[doc(hidden)]
    fn make() -> Box<dyn Lifespan<A>>;
}

#[diagnostic::do_not_recommend]
impl<A: Aggregate, L: Lifespan<A> + Default> LifespanOf<A> for L {
    fn make() -> Box<dyn Lifespan<A>> {
        Box::new(L::default())
    }
}

// ----- event handlers and projections (`#[event_handler]`, `#[projection]`) -----

/// The return type of a `#[handles]` method of an `#[event_handler]` or `#[projection]` block
/// is `Result<(), Error>`: written out, or through an alias whose `Err` type the compiler sees
/// through this trait.
#[diagnostic::on_unimplemented(
    message = "a `#[handles]` method of an `#[event_handler]` or `#[projection]` block returns `Result<(), Error>`, not `{Self}`",
    label = "not `Result<(), Error>`",
    note = "return `Result<(), Error>` (or an alias of it): the method reacts to the event and returns nothing on success"
)]
pub trait EventHandlerResult {
    #[doc(hidden)]
    type Err;
    #[doc(hidden)]
    fn into_result(self) -> Result<(), Self::Err>;
}

#[diagnostic::do_not_recommend]
impl<E> EventHandlerResult for Result<(), E> {
    type Err = E;

    fn into_result(self) -> Result<(), E> {
        self
    }
}

/// The error type of an event handler's (or a projection's) `#[handles]` method implements
/// `std::error::Error + Send + Sync + 'static` (derive `thiserror::Error`).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the error of an event handler: it does not implement `std::error::Error`",
    label = "the error of a `#[handles]` method implements `std::error::Error + Send + Sync + 'static`",
    note = "derive `thiserror::Error` for `{Self}` (`#[derive(Debug, thiserror::Error)]`, with an `#[error(\"...\")]` message), or implement `std::error::Error` and `Display` for it"
)]
pub trait EventHandlerError {
    #[doc(hidden)]
    fn into_failure(self) -> HandlerFailure;
}

#[diagnostic::do_not_recommend]
impl<E: StdError + Send + Sync + 'static> EventHandlerError for E {
    fn into_failure(self) -> HandlerFailure {
        HandlerFailure::new(self)
    }
}

/// The last parameter of an event handler's `#[handles]` method is `&EventMeta`.
#[diagnostic::on_unimplemented(
    message = "the last parameter of an event handler method is `&EventMeta`, not `&{Self}`",
    label = "expected `EventMeta`",
    note = "write `meta: &EventMeta` (`EventMeta` is in `evoq::prelude`)"
)]
pub trait IsEventMeta {
    #[doc(hidden)]
    fn from_meta(meta: &EventMeta) -> &Self;
}

#[diagnostic::do_not_recommend]
impl<T: Same<EventMeta>> IsEventMeta for T {
    fn from_meta(meta: &EventMeta) -> &Self {
        T::same(meta)
    }
}

// ----- sagas (`#[saga]`, `commands!`) -----

/// A saga's instance states are stored as JSON between events: the state type implements
/// serde's `Serialize` and `Deserialize`.
///
/// Required by `#[saga]`, at the state type of the block's `impl`.
#[diagnostic::on_unimplemented(
    message = "saga instance states are stored as JSON: add `#[derive(Serialize, Deserialize)]` to `{Self}`",
    label = "`{Self}` is the state of a `#[saga]`, so it must implement `Serialize` and `Deserialize`",
    note = "`Serialize` and `Deserialize` are serde's: `use serde::{{Deserialize, Serialize}};` (with serde's `derive` feature)"
)]
pub trait SagaState {
    #[doc(hidden)]
    const OK: () = ();
}

#[diagnostic::do_not_recommend]
impl<T: Serialize + DeserializeOwned> SagaState for T {}

/// A saga method returns the commands to dispatch, [`Commands`].
///
/// Required by `#[saga]`, at the return type of each `#[starts]`, `#[continues]`, `#[stops]`
/// and `#[compensates]` method.
#[diagnostic::on_unimplemented(
    message = "a saga method returns `Commands`, not `{Self}`",
    label = "expected `Commands`",
    note = "return `commands![a, b]` or `Commands::none()`: a saga method does not fail, and a command it sends that fails goes to its `#[compensates]` method"
)]
pub trait SagaOutput {
    #[doc(hidden)]
    fn into_commands(self) -> Commands;
}

#[diagnostic::do_not_recommend]
impl<T: Same<Commands>> SagaOutput for T {
    fn into_commands(self) -> Commands {
        self.into_same()
    }
}

/// A saga's `#[compensates]` method takes the command that failed, `&FailedCommand`.
///
/// Required by `#[saga]`, at the type of the `#[compensates]` method's parameter.
#[diagnostic::on_unimplemented(
    message = "a `#[compensates]` method takes the command that failed, `&FailedCommand`, not `&{Self}`",
    label = "expected `FailedCommand`",
    note = "write `#[compensates] fn name(&mut self, failed: &FailedCommand) -> Commands` (`FailedCommand` is in `evoq::prelude`); an event goes to a `#[starts]`, `#[continues]` or `#[stops]` method"
)]
pub trait IsFailedCommand {
    #[doc(hidden)]
    fn from_failed(failed: &FailedCommand) -> &Self;
}

#[diagnostic::do_not_recommend]
impl<T: Same<FailedCommand>> IsFailedCommand for T {
    fn from_failed(failed: &FailedCommand) -> &Self {
        T::same(failed)
    }
}

/// A saga whose block has no `#[init]` method makes a new instance with `Default`.
#[diagnostic::on_unimplemented(
    message = "the saga `{Self}` cannot make a new instance: derive `Default` for `{Self}`, or add an `#[init] fn init(instance: &str) -> Self` method",
    label = "`{Self}` does not implement `Default`, and its `#[saga]` block has no `#[init]` method",
    note = "a new instance is `Default::default()`, or what the `#[init]` method returns for the instance id"
)]
pub trait SagaDefault: Sized {
    #[doc(hidden)]
    fn saga_default() -> Self;
}

#[diagnostic::do_not_recommend]
impl<S: Default> SagaDefault for S {
    fn saga_default() -> Self {
        S::default()
    }
}

// ----- upcasters (`#[upcaster]`, `#[derive(Event)]`) -----

/// One step of an event type's upcaster chain: `#[upcaster(E, from = FROM)]` implements it for
/// `E`, and `#[derive(Event)]` requires one step from every older version. A missing step does
/// not compile; two upcasters from one version are conflicting implementations.
#[diagnostic::on_unimplemented(
    message = "the event `{Self}` has a newer schema version than this upcaster chain reaches: an upcaster is missing",
    label = "no `#[upcaster({Self}, from = {FROM})]` function for this step",
    note = "an event at version N needs one upcaster from each older version: write `#[upcaster({Self}, from = {FROM})] fn ...(data: serde_json::Value) -> Result<serde_json::Value, UpcastError>` (it may return the data unchanged)"
)]
pub trait UpcastStep<const FROM: u32> {
    #[doc(hidden)]
    const STEP: Upcaster;
}
