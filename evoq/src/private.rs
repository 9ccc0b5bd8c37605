//! Items the macros' generated code names. Not public API: no semver guarantee.

pub use ::core;
pub use ::serde;
pub use ::serde_json;
pub use ::std;

pub use evoq_runtime::{
    Aggregate, AppliedBy, Command, DomainError, Event, EventSet, Rejection, Route,
};

/// Proves `T` is an [`Event`]; the macros call it spanned at the user's type.
pub const fn assert_event<T: Event>() {}

/// Proves `T` is a [`Command`]; the macros call it spanned at the user's type.
pub const fn assert_command<T: Command>() {}

/// Proves `E` may be a command handler's error; spanned at the user's error type.
pub const fn assert_domain_error<E: DomainError>() {}

/// Proves the aggregate `A` applies the event `T`; spanned at the handler's return type.
pub const fn assert_applied_by<T: AppliedBy<A>, A>() {}

/// Proves an `#[aggregate_id]` field can be turned into an id string.
pub const fn assert_aggregate_id<T: core::fmt::Display + ?Sized>() {}

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
