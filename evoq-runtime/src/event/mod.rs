//! Events: what an event is ([`Event`], the aggregate's closed set [`EventSet`]) and how data
//! stored at an older schema version is read ([`upcast`]).

pub(crate) mod definition;
pub mod upcast;
pub(crate) mod upcaster;

pub use self::definition::{AppliedBy, Event, EventSet};
