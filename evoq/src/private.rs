//! Items the macros' generated code names. Not public API: no semver guarantee.
//!
//! Generated code names every runtime item through this module, the check traits of
//! [`crate::checks`] included (re-exported here), so the macro crate spells one path.

pub use ::core;
pub use ::serde;
pub use ::serde_json;
pub use ::std;

pub use evoq_runtime::decision::{EventQuery, Tags, tag};
pub use evoq_runtime::handler::HandlerFuture;
pub use evoq_runtime::projection::{Projection, ReadModel};
pub use evoq_runtime::saga::{
    Commands, Correlate, CorrelationKey, FailedCommand, KeyCorrelation, OptionCorrelation, Saga,
    Step as SagaStep, StepKind as SagaStepKind,
};
pub use evoq_runtime::upcast::{DecodeError, UpcastError, UpcastFn, Upcaster};
pub use evoq_runtime::{
    Aggregate, AppliedBy, Command, DomainError, Event, EventHandler, EventMeta, EventSet,
    HandlerFailure, HandlerOptions, Lifespan, OnError, Rejection, RetryStrategy, Route,
};

// The compile-time checks. Each is a trait with a `#[diagnostic::do_not_recommend]` blanket
// impl, used as `<UserType as Check>::ITEM` with the path spanned at the user's type: a failure
// is one error, on the user's token, in the check's own words, with no note pointing into the
// facade. They live in the public, documented `evoq::checks`, so the compiler's line naming the
// check ("the trait `CommandError` is not implemented for `BankError`") reads as a sentence
// about the user's type.
pub use crate::checks::{
    AggregateId, CommandError, CommandResult, DecisionContext, ErrorType, EventHandlerError,
    EventHandlerResult, EventOf, EventsOf, HandledByOneAggregate, IsEvent, IsEventMeta,
    IsFailedCommand, LifespanOf, OneImplBlockPerAggregate, SagaDefault, SagaOutput, SagaState,
    SameType, SharedEvent, StoredAsJson, TagValue, UpcastStep,
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

/// Whether `name` is one of `names`, in a const context (a decision's model applies only the
/// event types its queries select).
pub const fn str_among(name: &str, names: &[&str]) -> bool {
    let mut i = 0;
    while i < names.len() {
        if str_eq(name, names[i]) {
            return true;
        }
        i += 1;
    }
    false
}

// ----- used by the code `#[aggregate]` generates -----

use std::fmt;

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
    /// Deserializes the event (JSON) at the current version (a panic of its `Deserialize` is an
    /// error).
    pub decode: fn(&[u8]) -> Result<E, serde_json::Error>,
    /// Deserializes data stored at a schema version, through the upcasters (a panic of an
    /// upcaster or of its `Deserialize` is an error).
    pub decode_stored: fn(u32, &[u8]) -> Result<E, DecodeError>,
    /// Whether an event stored under a name is one of these (its name or an old name).
    pub stored_as: fn(&str) -> bool,
    /// `E::UPCASTERS`.
    pub upcasters: &'static [Upcaster],
    /// `Event::tags`.
    pub tags: fn(&E) -> Tags,
    /// `Clone::clone`.
    pub clone: fn(&E) -> E,
    /// `Debug::fmt`.
    pub debug: fn(&E, &mut fmt::Formatter<'_>) -> fmt::Result,
}

/// `value` as JSON in a vector of exactly its length (stores keep event data for good, and
/// `serde_json::to_vec` starts every vector at 128 bytes): written into a per-thread scratch
/// buffer, then copied once.
pub(crate) fn encode_exact<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
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

// ----- used by the code `#[derive(Command)]` generates -----

/// The id of a command borrowed from its `#[aggregate_id]` field, chosen on the field's
/// concrete type by autoref: [`AsStr`](borrowed_id::AsStr) answers the field itself when it is
/// a string whose `Display` is the string ([`StrId`](borrowed_id::StrId)), and
/// [`NotStr`](borrowed_id::NotStr) answers `None` for every other type (no bound: a field that
/// is no aggregate id at all fails once, in `aggregate_id`, not here too).
pub mod borrowed_id {
    use std::borrow::Cow;
    use std::sync::Arc;

    /// The probe the generated code calls `borrowed` on.
    pub struct Probe<'a, T: ?Sized>(pub &'a T);

    /// A string type whose `Display` writes exactly [`as_id`](Self::as_id): the id it
    /// formats to is the string it holds.
    pub trait StrId {
        /// The string.
        fn as_id(&self) -> &str;
    }

    impl StrId for str {
        fn as_id(&self) -> &str {
            self
        }
    }

    impl StrId for String {
        fn as_id(&self) -> &str {
            self
        }
    }

    impl StrId for Box<str> {
        fn as_id(&self) -> &str {
            self
        }
    }

    impl StrId for Arc<str> {
        fn as_id(&self) -> &str {
            self
        }
    }

    impl StrId for Cow<'_, str> {
        fn as_id(&self) -> &str {
            self
        }
    }

    impl<T: StrId + ?Sized> StrId for &T {
        fn as_id(&self) -> &str {
            (**self).as_id()
        }
    }

    /// Chosen when the field is a [`StrId`]: the field.
    pub trait AsStr<'a> {
        /// The id, borrowed.
        fn borrowed(&self) -> Option<&'a str>;
    }

    impl<'a, T: StrId + ?Sized> AsStr<'a> for Probe<'a, T> {
        fn borrowed(&self) -> Option<&'a str> {
            Some(self.0.as_id())
        }
    }

    /// Chosen otherwise: no borrowed id (the command's `aggregate_id` formats one).
    pub trait NotStr<'a> {
        /// No id.
        fn borrowed(&self) -> Option<&'a str> {
            None
        }
    }

    impl<'a, T: ?Sized> NotStr<'a> for &Probe<'a, T> {}
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

/// `Self` is `T` (the blanket impl keeps [`IsEventMeta`]'s error free of impl listings).
pub trait Same<T> {
    /// The same reference.
    fn same(value: &T) -> &Self;

    /// The same value, as `T`.
    fn into_same(self) -> T
    where
        Self: Sized;
}

impl<T> Same<T> for T {
    fn same(value: &T) -> &Self {
        value
    }

    fn into_same(self) -> T {
        self
    }
}

// ----- used by the code `#[upcaster]` and `#[derive(Event)]` generate -----

/// The function of a step whose `#[upcaster]` had an error (never called: the build failed).
pub fn upcast_stub(_: serde_json::Value) -> Result<serde_json::Value, UpcastError> {
    unreachable!("an upcaster with a compile error")
}

// ----- used by the code `#[decision]` generates -----

/// The query of the events of these types (each vtable's name and the names its upcasters
/// renamed it from): what `types(A, B)` in a `#[query(...)]` means.
pub fn query_types(types: &[(&'static str, &'static [Upcaster])]) -> EventQuery {
    let names = types.iter().flat_map(|&(name, upcasters)| {
        std::iter::once(name).chain(evoq_runtime::upcast::renamed_from(upcasters))
    });
    EventQuery::types(names)
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
