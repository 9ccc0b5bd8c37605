//! Items the macros' generated code names. Not public API: no semver guarantee.

pub use ::core;
pub use ::serde;
pub use ::serde_json;
pub use ::std;

pub use evoq_runtime::handler::HandlerFuture;
pub use evoq_runtime::projection::{Projection, ReadModel};
pub use evoq_runtime::saga::{
    Commands, Correlate, CorrelationKey, FailedCommand, KeyCorrelation, OptionCorrelation, Saga,
    Step as SagaStep, StepKind as SagaStepKind,
};
pub use evoq_runtime::upcast::{DecodeError, UpcastError, UpcastFn, Upcaster};
pub use evoq_runtime::{
    Aggregate, AppliedBy, Command, DomainError, Event, EventHandler, EventMeta, EventSet,
    HandlerFailure, HandlerOptions, OnError, Rejection, RetryStrategy, Route,
};

/// Compares two strings in a const context (duplicate event name checks).
pub const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

// ----- used by the code `#[derive(Command)]` and `#[aggregate]` generate -----
//
// Each check below is a trait with a `#[diagnostic::do_not_recommend]` blanket impl, used as
// `<UserType as Check>::ITEM` with the path spanned at the user's type: a failure is one error,
// on the user's token, in the check's own words, with no note pointing into this file.

use std::fmt;

/// Turns an `#[aggregate_id]` field into the aggregate id; spanned at the field's type.
#[diagnostic::on_unimplemented(
    message = "the `#[aggregate_id]` field has type `{Self}`, which cannot be turned into an aggregate id",
    label = "`{Self}` does not implement `std::fmt::Display`",
    note = "an aggregate id is a string: use `String`, an integer, a `Uuid`, or a type that implements `std::fmt::Display`"
)]
pub trait AggregateId {
    /// The id string.
    fn to_aggregate_id(&self) -> String;
}

#[diagnostic::do_not_recommend]
impl<T: fmt::Display + ?Sized> AggregateId for T {
    fn to_aggregate_id(&self) -> String {
        self.to_string()
    }
}

/// What the generated event enum needs of one applied event type.
///
/// The enum's `Clone`, `Debug` and `EventSet` impls go through these function pointers, so the
/// only place that requires `E: Event` is one `<E as IsEvent>::VTABLE`, spanned at the user's
/// `#[apply]` parameter type: a type that is not an `Event` gives one error, not one per
/// generated method.
pub struct EventVTable<E> {
    /// `E::NAME`.
    pub name: &'static str,
    /// `E::VERSION`.
    pub version: u32,
    /// Serializes the event (JSON).
    pub encode: fn(&E) -> Result<Vec<u8>, serde_json::Error>,
    /// Deserializes the event (JSON) at the current version.
    pub decode: fn(&[u8]) -> Result<E, serde_json::Error>,
    /// Deserializes data stored at a schema version, through the upcasters.
    pub decode_stored: fn(u32, &[u8]) -> Result<E, DecodeError>,
    /// Whether an event stored under a name is one of these (its name or an old name).
    pub stored_as: fn(&str) -> bool,
    /// `E::UPCASTERS`.
    pub upcasters: &'static [Upcaster],
    /// `Clone::clone`.
    pub clone: fn(&E) -> E,
    /// `Debug::fmt`.
    pub debug: fn(&E, &mut fmt::Formatter<'_>) -> fmt::Result,
}

/// `value` as JSON in a vector of exactly its length (stores keep event data for good, and
/// `serde_json::to_vec` starts every vector at 128 bytes): written into a per-thread scratch
/// buffer, then copied once.
fn encode_exact<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
        Ok(mut scratch) => {
            scratch.clear();
            let written = serde_json::to_writer(&mut *scratch, value);
            let exact = written.map(|()| scratch.as_slice().to_vec());
            if scratch.capacity() > 64 * 1024 {
                *scratch = Vec::new();
            }
            exact
        }
        // A `Serialize` impl that encodes an event itself: no scratch for the inner one.
        Err(_) => serde_json::to_vec(value),
    })
}

/// An `#[apply]` parameter type is an [`Event`]; spanned at that type.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an evoq event",
    label = "not an `Event`",
    note = "add `#[derive(Event, Serialize, Deserialize, Clone, Debug)]` to the definition of `{Self}`"
)]
pub trait IsEvent: Sized {
    /// The operations of the event type.
    const VTABLE: EventVTable<Self>;
}

#[diagnostic::do_not_recommend]
impl<E: Event> IsEvent for E {
    const VTABLE: EventVTable<Self> = {
        fn encode<E: Event>(event: &E) -> Result<Vec<u8>, serde_json::Error> {
            encode_exact(event)
        }
        fn decode<E: Event>(data: &[u8]) -> Result<E, serde_json::Error> {
            serde_json::from_slice(data)
        }
        EventVTable {
            name: E::NAME,
            version: E::VERSION,
            encode: encode::<E>,
            decode: decode::<E>,
            decode_stored: evoq_runtime::upcast::decode::<E>,
            stored_as: evoq_runtime::upcast::stored_as::<E>,
            upcasters: E::UPCASTERS,
            clone: <E as Clone>::clone,
            debug: <E as fmt::Debug>::fmt,
        }
    };
}

/// Formats one variant of a generated event enum as `Variant(event)`.
pub fn debug_variant<E>(
    formatter: &mut fmt::Formatter<'_>,
    variant: &str,
    event: &E,
    debug: fn(&E, &mut fmt::Formatter<'_>) -> fmt::Result,
) -> fmt::Result {
    struct Via<'e, E>(&'e E, fn(&E, &mut fmt::Formatter<'_>) -> fmt::Result);
    impl<E> fmt::Debug for Via<'_, E> {
        fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            (self.1)(self.0, formatter)
        }
    }
    formatter
        .debug_tuple(variant)
        .field(&Via(event, debug))
        .finish()
}

/// Converts an event a command handler of the aggregate `A` returns into `A`'s event enum `S`;
/// spanned at the handler's return type, so an event that is not applied gives one error (the
/// sentence of [`AppliedBy`]).
#[diagnostic::on_unimplemented(
    message = "event `{Self}` is returned by a command handler of `{A}`, but `{A}` never applies it",
    label = "returned here, but there is no `#[apply]` method for `{Self}`",
    note = "add `#[apply] fn on_event(&mut self, event: &{Self}) {{ ... }}` to the `#[aggregate]` block of `{A}`"
)]
pub trait IntoEvent<A, S> {
    /// The event as a variant of the enum.
    fn into_event(self) -> S;
}

#[diagnostic::do_not_recommend]
impl<A, S: From<E>, E: AppliedBy<A>> IntoEvent<A, S> for E {
    fn into_event(self) -> S {
        S::from(self)
    }
}

/// A command handler's error type is a [`DomainError`]; spanned at that type.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the error of a command handler",
    label = "this error type does not implement `std::error::Error + Send + Sync + 'static`",
    note = "derive `thiserror::Error` (or implement `std::error::Error` and `Display`) for `{Self}`"
)]
pub trait HandlerError {
    /// The error as a rejection.
    fn into_rejection(self) -> Rejection;
}

#[diagnostic::do_not_recommend]
impl<E: DomainError> HandlerError for E {
    fn into_rejection(self) -> Rejection {
        Rejection::new(self)
    }
}

/// `Self` and `T` are the same type: the type named in `#[handles(T)]` / `#[apply(T)]` is the
/// one the method takes. Used as `<Named as SameType<Taken>>::OK`, spanned at the named type.
#[diagnostic::on_unimplemented(
    message = "the attribute names `{Self}`, but the method takes `{T}`",
    label = "this is not `{T}`",
    note = "write `{T}` in the attribute, or leave the attribute bare (`#[handles]`, `#[apply]`) to take the type from the signature"
)]
pub trait SameType<T: ?Sized> {
    /// Names the proof in a const.
    const OK: () = ();
}

impl<T: ?Sized> SameType<T> for T {}

/// Makes the lifespan named in `#[aggregate(lifespan = L)]`; spanned at `L`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the lifespan of the aggregate `{A}`",
    label = "`{Self}` must implement `evoq::Lifespan<{A}>` and `Default`",
    note = "write `#[derive(Default)] struct MyLifespan;` and `impl evoq::Lifespan<{A}> for MyLifespan {{}}`, overriding the hooks you need"
)]
pub trait LifespanOf<A: Aggregate> {
    /// A new lifespan.
    fn make() -> Box<dyn evoq_runtime::Lifespan<A>>;
}

#[diagnostic::do_not_recommend]
impl<A: Aggregate, L: evoq_runtime::Lifespan<A> + Default> LifespanOf<A> for L {
    fn make() -> Box<dyn evoq_runtime::Lifespan<A>> {
        Box::new(L::default())
    }
}

pub use evoq_runtime::Lifespan;

/// The state codec of snapshots and hibernation, chosen on the concrete state type by autoref:
/// [`ViaSerde`](state_codec::ViaSerde) when the state implements `Serialize` and `Deserialize`,
/// [`NotSerde`](state_codec::NotSerde) (no snapshots, no hibernation) otherwise.
pub mod state_codec {
    use std::marker::PhantomData;

    use serde::Serialize;
    use serde::de::DeserializeOwned;

    /// The probe the generated code calls `encode` / `decode` on.
    pub struct Probe<T>(PhantomData<fn() -> T>);

    impl<T> Probe<T> {
        /// A probe for `T`.
        pub const fn new() -> Self {
            Probe(PhantomData)
        }
    }

    impl<T> Default for Probe<T> {
        fn default() -> Self {
            Self::new()
        }
    }

    /// Chosen when the state is serializable.
    pub trait ViaSerde<T> {
        /// The state as JSON.
        fn encode(&self, state: &T) -> Option<Result<Vec<u8>, serde_json::Error>>;
        /// The state from JSON.
        fn decode(&self, data: &[u8]) -> Option<Result<T, serde_json::Error>>;
    }

    impl<T: Serialize + DeserializeOwned> ViaSerde<T> for Probe<T> {
        fn encode(&self, state: &T) -> Option<Result<Vec<u8>, serde_json::Error>> {
            Some(super::encode_exact(state))
        }

        fn decode(&self, data: &[u8]) -> Option<Result<T, serde_json::Error>> {
            Some(serde_json::from_slice(data))
        }
    }

    /// Chosen when the state is not serializable: no codec.
    pub trait NotSerde<T> {
        /// No encoding.
        fn encode(&self, state: &T) -> Option<Result<Vec<u8>, serde_json::Error>> {
            let _ = state;
            None
        }
        /// No decoding.
        fn decode(&self, data: &[u8]) -> Option<Result<T, serde_json::Error>> {
            let _ = data;
            None
        }
    }

    impl<T> NotSerde<T> for &Probe<T> {}
}

// ----- used by the code `#[event_handler]` generates -----

/// Decodes the stored data of `event` with `decode` (an event type's
/// `EventVTable::decode_stored`, which upcasts); data that does not decode is a
/// [`HandlerFailure`], never a panic.
pub fn decode_event<E>(
    event: &EventMeta,
    decode: fn(u32, &[u8]) -> Result<E, DecodeError>,
) -> Result<E, HandlerFailure> {
    decode(event.schema_version(), &event.record().data)
        .map_err(|error| HandlerFailure::from_decode(event, error))
}

/// The metadata a `#[handles]` method of the type named `current` gets when it is not the
/// event's own: `None` for an event stored under that name (the metadata is passed as it is),
/// and for one stored under a name the type was renamed from, the metadata whose
/// [`EventMeta::current_type`] says `current`.
pub fn renamed_meta(event: &EventMeta, current: &'static str) -> Option<EventMeta> {
    (event.event_type() != current).then(|| event.clone().decoded_as(current))
}

/// A delivery that failed before the handler ran.
pub fn failed_event<'a>(failure: HandlerFailure) -> HandlerFuture<'a> {
    Box::pin(std::future::ready(Err(failure)))
}

/// A delivery of an event type the handler has no method for.
pub fn unhandled_event(event: &EventMeta) -> HandlerFuture<'_> {
    failed_event(HandlerFailure::unhandled(event))
}

/// An event handler method's error type is an error; spanned at that type.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the error of an event handler",
    label = "this error type does not implement `std::error::Error + Send + Sync + 'static`",
    note = "derive `thiserror::Error` (or implement `std::error::Error` and `Display`) for `{Self}`"
)]
pub trait EventHandlerError {
    /// The error as a failed delivery.
    fn into_failure(self) -> HandlerFailure;
}

#[diagnostic::do_not_recommend]
impl<E: std::error::Error + Send + Sync + 'static> EventHandlerError for E {
    fn into_failure(self) -> HandlerFailure {
        HandlerFailure::new(self)
    }
}

/// The last parameter of an event handler method is `&EventMeta`; spanned at its type.
#[diagnostic::on_unimplemented(
    message = "the last parameter of an event handler method is `&EventMeta`, not `&{Self}`",
    label = "expected `EventMeta`",
    note = "write `meta: &EventMeta` (`EventMeta` is in `evoq::prelude`)"
)]
pub trait IsEventMeta {
    /// `meta` as the parameter's type.
    fn from_meta(meta: &EventMeta) -> &Self;
}

#[diagnostic::do_not_recommend]
impl<T: Same<EventMeta>> IsEventMeta for T {
    fn from_meta(meta: &EventMeta) -> &Self {
        T::same(meta)
    }
}

/// `Self` is `T` (the blanket impl keeps [`IsEventMeta`]'s error free of impl listings).
pub trait Same<T> {
    /// The same reference.
    fn same(value: &T) -> &Self;
}

impl<T> Same<T> for T {
    fn same(value: &T) -> &Self {
        value
    }
}

// ----- used by the code `#[saga]` generates -----

/// A new instance of a saga whose `#[saga]` block has no `#[init]` method: `Default`. Used as
/// `<State as SagaDefault>::saga_default()` spanned at the state type of `impl State`, so a
/// state with neither gives one error there.
#[diagnostic::on_unimplemented(
    message = "the saga `{Self}` cannot make a new instance: derive `Default` for `{Self}`, or add an `#[init] fn init(instance: &str) -> Self` method",
    label = "`{Self}` does not implement `Default`, and its `#[saga]` block has no `#[init]` method",
    note = "a new instance is `Default::default()`, or what the `#[init]` method returns for the instance id"
)]
pub trait SagaDefault: Sized {
    /// The state of a new instance.
    fn saga_default() -> Self;
}

#[diagnostic::do_not_recommend]
impl<S: Default> SagaDefault for S {
    fn saga_default() -> Self {
        S::default()
    }
}

// ----- used by the code `#[upcaster]` and `#[derive(Event)]` generate -----

/// One step of an event type's upcaster chain: `#[upcaster(E, from = FROM)]` implements it for
/// `E`, and `#[derive(Event)]` lists the steps from every older version in `Event::UPCASTERS`.
#[diagnostic::on_unimplemented(
    message = "the event `{Self}` has a newer schema version than this upcaster chain reaches: an upcaster is missing",
    label = "no `#[upcaster({Self}, from = {FROM})]` function for this step",
    note = "an event at version N needs one upcaster from each older version: write `#[upcaster({Self}, from = {FROM})] fn ...(data: serde_json::Value) -> Result<serde_json::Value, UpcastError>` (it may return the data unchanged)"
)]
pub trait UpcastStep<const FROM: u32> {
    /// The step.
    const STEP: Upcaster;
}

/// The function of a step whose `#[upcaster]` had an error (never called: the build failed).
pub fn upcast_stub(_: serde_json::Value) -> Result<serde_json::Value, UpcastError> {
    unreachable!("an upcaster with a compile error")
}

#[cfg(test)]
mod encode_tests {
    #[test]
    fn encoded_values_have_no_spare_capacity_and_match_serde_json() {
        #[derive(serde::Serialize)]
        struct Deposited {
            amount: i64,
            note: String,
        }
        for note in ["", "x", &"long ".repeat(40_000)] {
            let value = Deposited {
                amount: 100,
                note: note.to_owned(),
            };
            let exact = super::encode_exact(&value).expect("encodes");
            assert_eq!(exact, serde_json::to_vec(&value).expect("encodes"));
            assert_eq!(exact.capacity(), exact.len());
        }
    }
}
