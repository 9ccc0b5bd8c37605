//! The application handle: [`Evoq`], its builder, and [`CommandBuilder`]. The top layer:
//! nothing else in the crate imports it.

pub(crate) mod builder;
pub(crate) mod evoq;
pub(crate) mod wait;

pub use self::builder::EvoqBuilder;
pub use self::evoq::{CommandBuilder, DispatchFuture, Evoq};
pub use self::wait::WaitFor;
