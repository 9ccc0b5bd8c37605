//! The aggregate lives in a module that shadows the primitive type names the generated code
//! uses (`str`, `u8`, `u32`, `u64`) and the prelude's `Result`, `Option`, `Vec`, `String`.
#![deny(warnings)]

mod events {
    use evoq::prelude::*;
    use serde::{Deserialize, Serialize};

    #[derive(Event, Serialize, Deserialize, Clone, Debug)]
    pub(crate) struct Counted {
        pub(crate) by: u64,
    }

    #[derive(Event, Serialize, Deserialize, Clone, Debug)]
    pub(crate) struct Reset;

    #[derive(Command)]
    pub(crate) struct Count {
        #[aggregate_id]
        pub(crate) id: u64,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("never")]
    pub(crate) struct Never;
}

mod counter {
    #![allow(non_camel_case_types)]

    use evoq::prelude::*;

    use super::events::{Count, Counted, Never, Reset};

    #[allow(dead_code)]
    struct str;
    #[allow(dead_code)]
    struct u8;
    #[allow(dead_code)]
    struct u32;
    #[allow(dead_code)]
    struct u64;
    #[allow(dead_code)]
    struct Result;
    #[allow(dead_code)]
    struct Option;
    #[allow(dead_code)]
    struct Vec;
    #[allow(dead_code)]
    struct String;
    #[allow(dead_code)]
    struct Some;
    #[allow(dead_code)]
    struct Ok;

    #[derive(core::default::Default)]
    pub(crate) struct Counter {
        pub(crate) total: core::primitive::u64,
    }

    #[aggregate]
    impl Counter {
        #[handles]
        fn count(&self, cmd: &Count) -> core::result::Result<Counted, Never> {
            core::result::Result::Ok(Counted { by: cmd.id })
        }

        #[apply]
        fn counted(&mut self, event: &Counted) {
            self.total += event.by;
        }

        // `#[cfg]`s are copied onto everything generated for a method.
        #[cfg(panic = "unwind")]
        #[apply]
        fn reset(&mut self, _: &Reset) {
            self.total = 0;
        }

        #[cfg(any())]
        #[apply]
        fn never(&mut self, _: &DoesNotExist) {}

        #[cfg(any())]
        #[handles]
        fn never_handled(&self, _: &DoesNotExist) -> core::result::Result<(), Never> {
            core::result::Result::Ok(())
        }
    }
}

use evoq::{Aggregate, EventSet, Route};

pub(crate) fn main() {
    let mut counter = counter::Counter::default();
    let events = events::Count::handle(&counter, &events::Count { id: 2 }).expect("accepted");
    assert_eq!(events[0].event_type(), "Counted");
    counter.apply(&events[0]);
    assert_eq!(counter.total, 2);
    assert_eq!(counter::CounterEvent::EVENT_TYPES, ["Counted", "Reset"]);
    counter.apply(&counter::CounterEvent::from(events::Reset));
    assert_eq!(counter.total, 0);
}
