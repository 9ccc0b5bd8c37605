//! A stream id is `<name>-<id>`: two aggregate (or decision) types of one runtime with one name
//! would write and replay each other's streams. The first type used keeps the name; every
//! command of the other fails with a typed error naming both, and appends nothing.

use evoq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Ticked {
    #[tag("clock")]
    id: String,
}

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

mod kitchen {
    use super::*;

    #[derive(Command, Debug)]
    pub(crate) struct Tick {
        #[aggregate_id]
        pub(crate) id: String,
    }

    #[derive(Default)]
    pub(crate) struct Clock {
        pub(crate) ticks: u64,
    }

    #[aggregate]
    impl Clock {
        #[handles]
        fn tick(&self, c: &Tick) -> Result<Ticked, Never> {
            Ok(Ticked { id: c.id.clone() })
        }

        #[apply]
        fn ticked(&mut self, _: &Ticked) {
            self.ticks += 1;
        }
    }
}

mod garage {
    use super::*;

    #[derive(Command, Debug)]
    pub(crate) struct Tick {
        #[aggregate_id]
        pub(crate) id: String,
    }

    #[derive(Default)]
    pub(crate) struct Clock {
        pub(crate) ticks: u64,
    }

    #[aggregate]
    impl Clock {
        #[handles]
        fn tick(&self, c: &Tick) -> Result<Ticked, Never> {
            Ok(Ticked { id: c.id.clone() })
        }

        #[apply]
        fn ticked(&mut self, _: &Ticked) {
            self.ticks += 1;
        }
    }
}

mod desk {
    use super::*;

    #[derive(Command, Debug)]
    pub(crate) struct Chime {
        #[aggregate_id]
        pub(crate) id: String,
    }

    #[derive(Default)]
    pub(crate) struct Chimes {
        pub(crate) ticks: u64,
    }

    #[decision(name = "Clock")]
    impl Chimes {
        #[handles]
        #[query(all_of(types(Ticked), tag("clock", &command.id)))]
        fn chime(&self, command: &Chime) -> Result<Ticked, Never> {
            Ok(Ticked {
                id: command.id.clone(),
            })
        }

        #[apply]
        fn ticked(&mut self, _: &Ticked) {
            self.ticks += 1;
        }
    }
}

fn names_both(error: &evoq::Error, other: &str, this: &str) -> bool {
    let text = error.to_string();
    matches!(error, evoq::Error::Config { key, .. } if key == "aggregate name")
        && text.contains("`Clock` names two types")
        && text.contains(other)
        && text.contains(this)
}

#[tokio::test]
async fn a_second_aggregate_type_with_the_same_name_is_refused_and_appends_nothing() {
    let app = Evoq::builder().start().await.unwrap();
    let first = app
        .dispatch(kitchen::Tick { id: "1".into() })
        .await
        .unwrap();
    assert_eq!(first.version, 1);
    for _ in 0..2 {
        let refused = app
            .dispatch(garage::Tick { id: "1".into() })
            .await
            .unwrap_err();
        assert!(
            names_both(&refused, "kitchen::Clock", "garage::Clock"),
            "{refused}"
        );
        assert_eq!(refused.kind(), evoq::ErrorKind::Config);
    }
    assert_eq!(app.store().stream_version("Clock-1").await.unwrap(), 1);
    // The first type goes on, on its own stream.
    let second = app
        .dispatch(kitchen::Tick { id: "1".into() })
        .await
        .unwrap();
    assert_eq!(second.version, 2);
    app.stop().await;
}

#[tokio::test]
async fn a_decision_named_like_an_aggregate_is_refused_and_appends_nothing() {
    let app = Evoq::builder().start().await.unwrap();
    app.dispatch(kitchen::Tick { id: "1".into() })
        .await
        .unwrap();
    let refused = app
        .dispatch(desk::Chime { id: "1".into() })
        .await
        .unwrap_err();
    assert!(
        names_both(&refused, "kitchen::Clock", "desk::Chimes"),
        "{refused}"
    );
    assert_eq!(app.store().stream_version("Clock-1").await.unwrap(), 1);
    app.stop().await;
}

#[tokio::test]
async fn whichever_type_comes_first_keeps_the_name() {
    let app = Evoq::builder().start().await.unwrap();
    app.dispatch(desk::Chime { id: "7".into() }).await.unwrap();
    let refused = app
        .dispatch(garage::Tick { id: "7".into() })
        .await
        .unwrap_err();
    assert!(
        names_both(&refused, "desk::Chimes", "garage::Clock"),
        "{refused}"
    );
    // Another runtime is another set of names.
    let other = Evoq::builder().start().await.unwrap();
    other
        .dispatch(garage::Tick { id: "7".into() })
        .await
        .unwrap();
    other.stop().await;
    app.stop().await;
}
