//! The `Saga` trait, the routed step of one event, and how a `by` field correlates.

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::commands::{Commands, FailedCommand};
use crate::delivery::consumer::{EventMeta, HandlerFailure};
use crate::delivery::policy::HandlerOptions;
use crate::event::upcast::Upcaster;

/// A saga: implemented by `#[saga(name = "...")]` on the impl block of its state.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an evoq saga",
    label = "not a `Saga`",
    note = "put `#[saga(name = \"...\")]` on an `impl {Self}` block with `#[starts(by = field)]`, `#[continues(by = field)]` and `#[stops(by = field)]` methods"
)]
pub trait Saga: Serialize + DeserializeOwned + Send + 'static {
    /// The saga's stable name: it keys its checkpoint, dead letters and instance states.
    const NAME: &'static str;
    /// The wire names of the event types its methods take.
    const EVENT_TYPES: &'static [&'static str];
    /// The options given in the attribute.
    const OPTIONS: HandlerOptions = HandlerOptions::new();
    /// The upcasters of each type of [`EVENT_TYPES`](Self::EVENT_TYPES), in the same order.
    const UPCASTERS: &'static [&'static [Upcaster]] = &[];

    /// The state of a new instance, whose id is `instance`: the block's `#[init]` method, or
    /// `Default::default()` when it has none (generated).
    fn init(instance: &str) -> Self;

    /// Decodes the event and says which method takes it, for which instance: `Ok(None)` for
    /// an event that correlates to nothing.
    fn route(event: &EventMeta) -> Result<Option<Step<Self>>, HandlerFailure>;

    /// The compensating commands for a failed command (none by default).
    fn compensate(&mut self, failed: &FailedCommand) -> Commands {
        let _ = failed;
        Commands::none()
    }
}

/// What a saga method does to its instance.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum StepKind {
    /// `#[starts]`: creates the instance, or routes to the existing one.
    Starts,
    /// `#[continues]`: routes to the instance, or creates it.
    Continues,
    /// `#[stops]`: runs on the instance and removes it; ignored when there is none.
    Stops,
}

type StepFn<S> = Box<dyn FnOnce(&mut S) -> Commands + Send>;

/// One routed event: the instance it correlates to and the method call (generated code).
pub struct Step<S> {
    pub(super) kind: StepKind,
    pub(super) instance: String,
    pub(super) run: StepFn<S>,
}

impl<S> Step<S> {
    /// A step for the instance `instance` (`None` or empty: the event correlates to nothing).
    pub fn new(kind: StepKind, instance: Option<String>, run: StepFn<S>) -> Option<Self> {
        let instance = instance.filter(|key| !key.is_empty())?;
        Some(Step {
            kind,
            instance,
            run,
        })
    }
}

/// The value of a `by` field, as an instance id. A field of type `Option<T>` correlates
/// through its value, a `T` that implements this trait; `None` correlates to nothing (see
/// [`Correlate`]).
#[diagnostic::on_unimplemented(
    message = "the correlation field (or the value in its `Option`) has type `{Self}`, which cannot identify a saga instance",
    label = "`{Self}` does not implement `std::fmt::Display`",
    note = "a correlation value is a string: use `String`, an integer, a `Uuid`, an `Option` of one, or a type that implements `std::fmt::Display`"
)]
pub trait CorrelationKey {
    /// The instance id; `None` when the value correlates to nothing.
    fn correlation_key(&self) -> Option<String>;
}

#[diagnostic::do_not_recommend]
impl<T: fmt::Display + ?Sized> CorrelationKey for T {
    fn correlation_key(&self) -> Option<String> {
        Some(self.to_string())
    }
}

/// Generated code: a `by` field's value, wrapped to pick how it correlates. Method resolution
/// picks [`OptionCorrelation`] for an `Option<T>` (the impl on the value) before
/// [`KeyCorrelation`] for any other type (the impl on a reference, one autoref away), so an
/// `Option` needs no `Display` of its own; the tag returned then requires `CorrelationKey` of
/// the key, which names the field's type in the error when it has none.
#[doc(hidden)]
pub struct Correlate<'a, T: ?Sized>(pub &'a T);

/// Generated code: an `Option<T>` field correlates through its value.
#[doc(hidden)]
pub trait OptionCorrelation {
    /// The tag that reads the key in the `Option`.
    fn correlation(&self) -> OptionKey;
}

impl<T> OptionCorrelation for Correlate<'_, Option<T>> {
    fn correlation(&self) -> OptionKey {
        OptionKey
    }
}

/// Generated code: any other field is the key itself.
#[doc(hidden)]
pub trait KeyCorrelation {
    /// The tag that reads the field as the key.
    fn correlation(&self) -> PlainKey;
}

impl<T: ?Sized> KeyCorrelation for &Correlate<'_, T> {
    fn correlation(&self) -> PlainKey {
        PlainKey
    }
}

/// Generated code: reads the key of an `Option<T>` field (`None`: no instance).
#[doc(hidden)]
#[derive(Copy, Clone, Debug)]
pub struct OptionKey;

impl OptionKey {
    /// The instance id of `value`: `None` for `None` or an empty key.
    pub fn key<T: CorrelationKey>(self, value: &Option<T>) -> Option<String> {
        value.as_ref()?.correlation_key()
    }
}

/// Generated code: reads the key of a field that is not an `Option`.
#[doc(hidden)]
#[derive(Copy, Clone, Debug)]
pub struct PlainKey;

impl PlainKey {
    /// The instance id of `value`.
    pub fn key<T: CorrelationKey + ?Sized>(self, value: &T) -> Option<String> {
        value.correlation_key()
    }
}
