//! The metric of every dispatch, `evoq_dispatch_seconds`: a histogram by command and outcome
//! (`ok`, or the error's [`ErrorKind`](crate::error::ErrorKind) name). Its count is the number of
//! dispatches: one histogram, not a counter beside it, keeps the dispatch path to one record.

use std::marker::PhantomData;
use std::time::Instant;

use metrics::{Key, Label, Level, Metadata};

use crate::aggregate::command::Command;
use crate::error::Error;

/// The histogram's name.
const NAME: &str = "evoq_dispatch_seconds";

/// Where the metric comes from, as `metrics::histogram!` would say at this module.
static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// The key of a successful dispatch of `C`: a constant, so recording a success registers no
/// freshly allocated labels (the `histogram!` macro builds a `Vec` of them for labels that are
/// not literals, on every call, recorder or not).
struct Success<C>(PhantomData<C>);

impl<C: Command> Success<C> {
    const LABELS: &'static [Label] = &[
        Label::from_static_parts("command", C::NAME),
        Label::from_static_parts("outcome", "ok"),
    ];
    const KEY: Key = Key::from_static_parts(NAME, Self::LABELS);
}

/// Records one dispatch of `C` that started at `started` and failed with `error`, if it did.
pub(crate) fn record<C: Command>(error: Option<&Error>, started: Instant) {
    let seconds = started.elapsed().as_secs_f64();
    match error {
        None => metrics::with_recorder(|recorder| {
            recorder.register_histogram(&Success::<C>::KEY, &METADATA)
        })
        .record(seconds),
        Some(error) => {
            metrics::histogram!(NAME, "command" => C::NAME, "outcome" => error.kind().as_str())
                .record(seconds);
        }
    }
}
