//! Aggregates: the trait `#[aggregate]` implements and its lifespan, commands and their routes,
//! what a dispatch carries and returns, replay decoding, and the given / when / then test helper.
//! Nothing here runs anything: the live instances are in the host layer.

pub mod command;
pub(crate) mod context;
pub(crate) mod definition;
#[cfg(test)]
pub(crate) mod fixture;
pub mod lifespan;
pub(crate) mod recorded;
pub(crate) mod replay;
pub mod testing;

pub use self::definition::Aggregate;
