//! Helpers with no domain: backoff, catching panics, time and deadlines, compact byte strings, ids,
//! stable hashes and durations. Every other layer may use them; they use nothing of the crate.

pub(crate) mod backoff;
pub(crate) mod bounds;
pub(crate) mod compact;
pub(crate) mod duration;
pub(crate) mod hash;
pub(crate) mod ids;
pub(crate) mod panic;
pub(crate) mod time;
pub(crate) mod trace_context;
