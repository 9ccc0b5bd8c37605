//! evoq (being written).

pub use evoq_runtime::*;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;
