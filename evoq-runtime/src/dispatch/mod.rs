//! Dispatch: the path of every command from the caller to its aggregate's live instance and
//! back, under one deadline: [`idempotency`], [`middleware`], the instance, and the result.
//! The runtime's dispatcher owns it.

pub(crate) mod dispatcher;
pub mod idempotency;
mod in_flight;
mod metric;
pub mod middleware;

pub use self::middleware::{Assigns, Middleware, Pipeline, Stage};
pub use crate::aggregate::context::{CommandContext, DispatchOptions, Dispatched};
