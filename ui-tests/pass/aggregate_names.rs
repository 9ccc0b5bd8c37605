//! Aggregate names and ids: names without `-` (the type's name, one given with `name = "..."`,
//! and one passed through a `macro_rules!` literal) and ids that contain `-` compile, and each
//! aggregate keeps its own streams: `Counter` with id `X-1` and `CounterX` with id `1` do not
//! share one. It must compile without a single warning.
#![deny(warnings)]

use evoq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Counted;

#[derive(Command, Debug)]
struct Count {
    #[aggregate_id]
    id: String,
}

#[derive(Command, Debug)]
struct Tally {
    #[aggregate_id]
    id: String,
}

#[derive(Command, Debug)]
struct Mark {
    #[aggregate_id]
    id: String,
}

#[derive(Debug, thiserror::Error)]
#[error("never returned")]
struct Never;

/// Named after its type: `Counter`.
#[derive(Default)]
struct Counter;

#[aggregate]
impl Counter {
    #[handles]
    fn count(&self, _: &Count) -> Result<Counted, Never> {
        Ok(Counted)
    }

    #[apply]
    fn counted(&mut self, _: &Counted) {}
}

/// Named `CounterX`: its stream for id `1` is `CounterX-1`, not `Counter-X-1`.
#[derive(Default)]
struct Tallier;

#[aggregate(name = "CounterX")]
impl Tallier {
    #[handles]
    fn tally(&self, _: &Tally) -> Result<Counted, Never> {
        Ok(Counted)
    }

    #[apply]
    fn counted(&mut self, _: &Counted) {}
}

/// An aggregate whose name arrives as a `$name:literal` fragment.
macro_rules! named_aggregate {
    ($state:ident, $command:ident, $name:literal) => {
        #[derive(Default)]
        struct $state;

        #[aggregate(name = $name)]
        impl $state {
            #[handles]
            fn mark(&self, _: &$command) -> Result<Counted, Never> {
                Ok(Counted)
            }

            #[apply]
            fn counted(&mut self, _: &Counted) {}
        }
    };
}

named_aggregate!(Marker, Mark, "marker");

pub(crate) fn main() {
    assert_eq!(Counter::NAME, "Counter");
    assert_eq!(Tallier::NAME, "CounterX");
    assert_eq!(Marker::NAME, "marker");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let app = Evoq::builder().start().await.expect("starts");
        for _ in 0..2 {
            app.dispatch(Count { id: "X-1".into() })
                .await
                .expect("count");
        }
        app.dispatch(Tally { id: "1".into() }).await.expect("tally");
        app.dispatch(Mark { id: "a-b-c".into() })
            .await
            .expect("mark");

        let store = app.store();
        let version = |stream| store.stream_version(stream);
        assert_eq!(version("Counter-X-1").await.expect("reads"), 2);
        assert_eq!(version("CounterX-1").await.expect("reads"), 1);
        assert_eq!(version("marker-a-b-c").await.expect("reads"), 1);
    });
}
