//! The metric of every dispatch, `evoq_dispatch_seconds`: a histogram by command and outcome
//! (`ok`, or the error's [`ErrorKind`] name). Its count is the number of dispatches: one
//! histogram, not a counter beside it, keeps the dispatch path to one record.

use std::marker::PhantomData;

use tokio::time::Instant;

use metrics::{Key, Label, Level, Metadata};

use crate::aggregate::command::Command;
use crate::error::{Error, ErrorKind};

/// The histogram's name.
const NAME: &str = "evoq_dispatch_seconds";

/// Where the metric comes from, as `metrics::histogram!` would say at this module.
static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// The keys of the routine outcomes of a dispatch of `C`, a success and a rejection:
/// constants, so recording them registers no freshly allocated labels (the `histogram!` macro
/// builds a `Vec` of them for labels that are not literals, on every call, recorder or not).
struct Keys<C>(PhantomData<C>);

impl<C: Command> Keys<C> {
    const fn labels(outcome: &'static str) -> [Label; 2] {
        [
            Label::from_static_parts("command", C::NAME),
            Label::from_static_parts("outcome", outcome),
        ]
    }

    const OK_LABELS: &'static [Label] = &Self::labels("ok");
    const OK: Key = Key::from_static_parts(NAME, Self::OK_LABELS);
    const REJECTED_LABELS: &'static [Label] = &Self::labels(ErrorKind::Rejected.as_str());
    const REJECTED: Key = Key::from_static_parts(NAME, Self::REJECTED_LABELS);
}

/// Records one dispatch of `C` that started at `started` and failed with `error`, if it did.
pub(crate) fn record<C: Command>(error: Option<&Error>, started: Instant) {
    let seconds = started.elapsed().as_secs_f64();
    let key = match error.map(Error::kind) {
        None => Keys::<C>::OK,
        Some(ErrorKind::Rejected) => Keys::<C>::REJECTED,
        Some(kind) => {
            metrics::histogram!(NAME, "command" => C::NAME, "outcome" => kind.as_str())
                .record(seconds);
            return;
        }
    };
    metrics::with_recorder(|recorder| recorder.register_histogram(&key, &METADATA)).record(seconds);
}
