//! Every macro used in a module without the implicit prelude: the generated code names
//! everything by absolute path, so it compiles with nothing in scope but what the user wrote.

mod no_prelude {
    #![no_implicit_prelude]

    use ::evoq::{
        Command, Commands, Event, EventMeta, FailedCommand, InMemoryReadModel, ProjectionError,
        UpcastError, aggregate, commands, event_handler, projection, saga, upcaster,
    };
    use ::serde::{Deserialize, Serialize};

    #[derive(Event, Serialize, Deserialize, ::core::clone::Clone, ::core::fmt::Debug)]
    pub(crate) struct Opened {
        pub(crate) id: ::std::string::String,
    }

    #[derive(Event, Serialize, Deserialize, ::core::clone::Clone, ::core::fmt::Debug)]
    #[event(name = "hygiene.Renamed", version = 2)]
    pub(crate) struct Renamed {
        pub(crate) name: ::std::string::String,
    }

    #[upcaster(Renamed, from = 1, renamed_from = "hygiene.Named")]
    fn renamed_v1(
        data: ::serde_json::Value,
    ) -> ::core::result::Result<::serde_json::Value, UpcastError> {
        ::core::result::Result::Ok(data)
    }

    #[derive(Event, Serialize, Deserialize, ::core::clone::Clone, ::core::fmt::Debug)]
    pub(crate) struct Touched;

    pub(crate) struct Names {
        pub(crate) model: InMemoryReadModel,
    }

    #[projection(name = "hygiene.names", read_model = model)]
    impl Names {
        #[handles]
        async fn renamed(
            &mut self,
            event: &Renamed,
            meta: &EventMeta,
        ) -> ::core::result::Result<(), ProjectionError> {
            self.model.put(meta.stream_id(), &event.name)?;
            ::core::result::Result::Ok(())
        }
    }

    #[derive(Command)]
    pub(crate) struct Open {
        #[aggregate_id]
        pub(crate) id: ::std::string::String,
    }

    #[derive(Command)]
    #[command(name = "hygiene.Rename")]
    pub(crate) struct Rename(
        #[aggregate_id] pub(crate) u64,
        pub(crate) ::std::string::String,
    );

    #[derive(Command)]
    pub(crate) struct Touch {
        #[aggregate_id]
        pub(crate) id: u64,
        pub(crate) times: usize,
    }

    #[derive(Command)]
    pub(crate) struct Inspect {
        #[aggregate_id]
        pub(crate) id: u64,
    }

    #[derive(Command)]
    pub(crate) struct Reset {
        #[aggregate_id]
        pub(crate) id: u64,
    }

    #[derive(::core::fmt::Debug)]
    pub(crate) struct Refused;

    impl ::core::fmt::Display for Refused {
        fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
            f.write_str("refused")
        }
    }

    impl ::std::error::Error for Refused {}

    /// A `Result` alias: its `Ok` and `Err` are reached through `evoq::checks`.
    pub(crate) type Refusable<T> = ::core::result::Result<T, Refused>;

    #[derive(::core::default::Default)]
    pub(crate) struct Thing {
        pub(crate) name: ::std::string::String,
        pub(crate) touched: usize,
    }

    #[aggregate(name = "hygiene.Thing", snapshot_every = 5)]
    impl Thing {
        #[handles]
        fn open(&self, cmd: &Open) -> ::core::result::Result<Opened, Refused> {
            ::core::result::Result::Ok(Opened {
                id: ::core::clone::Clone::clone(&cmd.id),
            })
        }

        #[handles(Rename)]
        fn rename(
            &self,
            cmd: &Rename,
        ) -> ::core::result::Result<::core::option::Option<Renamed>, Refused> {
            ::core::result::Result::Ok(::core::option::Option::Some(Renamed {
                name: ::core::clone::Clone::clone(&cmd.1),
            }))
        }

        #[handles]
        fn touch(&self, cmd: &Touch) -> ::core::result::Result<::std::vec::Vec<Touched>, Refused> {
            let mut events = ::std::vec::Vec::new();
            for _ in 0..cmd.times {
                events.push(Touched);
            }
            ::core::result::Result::Ok(events)
        }

        #[handles]
        fn inspect(&self, _: &Inspect) -> Refusable<()> {
            ::core::result::Result::Err(Refused)
        }

        #[handles]
        fn reset(&self, _: &Reset) -> ::core::result::Result<(Touched, ThingEvent), Refused> {
            ::core::result::Result::Ok((Touched, ThingEvent::Touched(Touched)))
        }

        #[apply]
        fn opened(&mut self, event: &Opened) {
            self.name = ::core::clone::Clone::clone(&event.id);
        }

        #[apply(Renamed)]
        fn renamed(&mut self, event: &Renamed) {
            self.name = ::core::clone::Clone::clone(&event.name);
        }

        #[apply]
        fn touched(&mut self, _: &Touched) {
            self.touched += 1;
        }
    }

    #[derive(::core::default::Default)]
    pub(crate) struct Watcher {
        pub(crate) seen: ::std::vec::Vec<::std::string::String>,
    }

    #[event_handler(name = "hygiene.watcher", strong, retry = fixed("10ms"), max_attempts = 2, on_error = stop)]
    impl Watcher {
        #[handles]
        async fn opened(&mut self, event: &Opened, meta: &EventMeta) -> Refusable<()> {
            self.seen
                .push(::std::format!("{} {}", event.id, meta.global_position()));
            ::core::result::Result::Ok(())
        }

        #[evoq::handles(Renamed)]
        async fn renamed(
            &mut self,
            event: &Renamed,
            _: &EventMeta,
        ) -> ::core::result::Result<(), Refused> {
            if event.name.is_empty() {
                return ::core::result::Result::Err(Refused);
            }
            self.seen.push(::core::clone::Clone::clone(&event.name));
            ::core::result::Result::Ok(())
        }
    }

    #[derive(::core::default::Default, Serialize, Deserialize)]
    pub(crate) struct Tracker {
        pub(crate) steps: u32,
    }

    #[saga(name = "hygiene.tracker")]
    impl Tracker {
        #[starts(by = id)]
        pub(crate) fn opened(&mut self, event: &Opened) -> Commands {
            self.steps += 1;
            commands![
                Touch { id: 1, times: 1 },
                Rename(1, ::core::clone::Clone::clone(&event.id))
            ]
        }

        #[stops(by = name)]
        fn renamed(&mut self, _: &Renamed) -> Commands {
            Commands::none().push(Inspect { id: 1 })
        }

        #[compensates]
        fn failed(&mut self, _: &FailedCommand) -> Commands {
            commands![]
        }
    }
}

use evoq::{Aggregate, Command, EventHandler, EventSet, Route};
use no_prelude::*;

fn run<C: Route>(state: &mut C::Aggregate, command: C) -> Vec<<C::Aggregate as Aggregate>::Event> {
    let events = C::handle(state, &command).expect("accepted");
    for event in &events {
        state.apply(event);
    }
    events
}

#[test]
fn macros_expand_without_the_prelude() {
    assert_eq!(Thing::NAME, "hygiene.Thing");
    assert_eq!(Thing::SNAPSHOT_EVERY, ::std::option::Option::Some(5));
    assert_eq!(
        ThingEvent::EVENT_TYPES,
        ["Opened", "hygiene.Renamed", "Touched"]
    );
    assert_eq!(<Rename as Command>::NAME, "hygiene.Rename");
    assert_eq!(Rename(7, "x".into()).aggregate_id(), "7");

    let mut thing = Thing::default();
    run(&mut thing, Open { id: "t-1".into() });
    assert_eq!(thing.name, "t-1");
    let renamed = run(&mut thing, Rename(7, "t-2".into()));
    assert_eq!(renamed[0].schema_version(), 2);
    assert_eq!(thing.name, "t-2");
    assert_eq!(run(&mut thing, Touch { id: 7, times: 3 }).len(), 3);
    assert_eq!(run(&mut thing, Reset { id: 7 }).len(), 2);
    assert_eq!(thing.touched, 5);
    let refused = Inspect::handle(&thing, &Inspect { id: 7 }).unwrap_err();
    assert!(refused.downcast_ref::<Refused>().is_some());

    let data = renamed[0].encode().expect("encodes");
    let old = ThingEvent::decode_stored("hygiene.Named", 1, &data).expect("upcasts");
    ::std::assert!(old.is_some());
    let back = ThingEvent::decode("hygiene.Renamed", &data).expect("decodes");
    assert_eq!(
        format!("{back:?}"),
        "Some(Renamed(Renamed { name: \"t-2\" }))"
    );
}

#[test]
fn event_handlers_expand_without_the_prelude() {
    assert_eq!(Watcher::NAME, "hygiene.watcher");
    assert_eq!(Watcher::EVENT_TYPES, ["Opened", "hygiene.Renamed"]);
    assert_eq!(Watcher::OPTIONS.max_attempts, Some(2));
    assert_eq!(Watcher::OPTIONS.strong, Some(true));

    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut watcher = Watcher::default();
        let opened = ThingEvent::Opened(Opened { id: "w".into() });
        let record = std::sync::Arc::new(evoq::RecordedEvent {
            event_id: evoq::Uuid::now_v7(),
            stream_id: "Thing-w".into(),
            stream_version: 1,
            global_position: 7,
            event_type: opened.event_type().into(),
            schema_version: 1,
            data: opened.encode().expect("encodes"),
            metadata: Default::default(),
            recorded_at: std::time::SystemTime::now(),
        });
        let meta = evoq::EventMeta::new(record);
        watcher.handle(&meta).await.expect("handled");
        assert_eq!(watcher.seen, ["w 7"]);
    });
}

#[test]
fn projections_and_upcasters_expand_without_the_prelude() {
    use evoq::Projection;
    assert_eq!(<Names as EventHandler>::NAME, "hygiene.names");
    assert_eq!(<Renamed as evoq::Event>::UPCASTERS.len(), 1);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let model = evoq::InMemoryReadModel::new();
        let names = Names {
            model: model.clone(),
        };
        assert_eq!(names.read_model().clear().await.ok(), Some(()));
        let app = evoq::Evoq::builder()
            .projection(names)
            .start()
            .await
            .expect("starts");
        // Stored at version 1 under the name the event had before.
        let appended = app
            .store()
            .append(
                "Thing-1",
                evoq::ExpectedVersion::NoStream,
                vec![evoq::NewEvent {
                    event_id: evoq::Uuid::now_v7(),
                    event_type: "hygiene.Named".into(),
                    schema_version: 1,
                    data: br#"{"name":"old"}"#.to_vec(),
                    metadata: Default::default(),
                }],
            )
            .await
            .expect("appends");
        app.wait_for_named("hygiene.names", appended.last_position)
            .without_deadline()
            .await
            .expect("projected");
        assert_eq!(
            model.get::<String>("Thing-1").expect("reads").as_deref(),
            Some("old")
        );
        app.stop().await;
    });
}

#[test]
fn sagas_expand_without_the_prelude() {
    use evoq::Saga;
    assert_eq!(<Tracker as Saga>::NAME, "hygiene.tracker");
    assert_eq!(
        <Tracker as Saga>::EVENT_TYPES,
        ["Opened", "hygiene.Renamed"]
    );
    let mut tracker = Tracker::default();
    let commands = tracker.opened(&Opened { id: "a".into() });
    assert_eq!(commands.names(), ["Touch", "hygiene.Rename"]);
    assert_eq!(tracker.steps, 1);
}
