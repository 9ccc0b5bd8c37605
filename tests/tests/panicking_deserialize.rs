//! An event type whose `Deserialize` impl panics on stored data of its current schema version
//! never panics the runtime: the panic is caught where the event is decoded, and every read
//! path reports it as the decode failure it is (docs/semantics.md §1.2, §3.8, §5.5, §10): a
//! decision, an aggregate's replay and the read-back of a resent command fail with
//! `Error::Decode` saying the type's `Deserialize` panicked; an event handler, a projection and
//! a saga dead-letter the event as undecodable (kind `Decode`) and go on with the next one.
//! The same holds for the state of an aggregate (a snapshot, a hibernated state) and of a
//! saga, whose `Serialize` and `Deserialize` are user code too.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use evoq::prelude::*;
use evoq::store::memory::InMemoryStore;
use evoq::{ErrorKind, ExpectedVersion, FailureKind, HandlerConfig, NewEvent, RetryStrategy};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::json;

/// The text that makes `Noted`'s `Deserialize` panic.
const POISON: &str = "poison";

/// An event whose hand-written `Deserialize` panics on the text [`POISON`] (a bug in user
/// code, met only on some stored data).
#[derive(Event, Serialize, Clone, Debug, PartialEq)]
struct Noted {
    #[tag("pad")]
    pad: String,
    text: String,
}

impl<'de> Deserialize<'de> for Noted {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Raw {
            pad: String,
            text: String,
        }
        let Raw { pad, text } = Raw::deserialize(deserializer)?;
        if text == POISON {
            panic!("a bug in Noted's Deserialize");
        }
        Ok(Noted { pad, text })
    }
}

/// A `Noted` of pad `pad` as the current code stores it (its tag included), with `text`.
fn noted(pad: &str, text: &str) -> NewEvent {
    let mut event = NewEvent {
        event_id: evoq::Uuid::now_v7(),
        event_type: "Noted".into(),
        schema_version: 1,
        data: serde_json::to_vec(&json!({ "pad": pad, "text": text })).unwrap(),
        metadata: Default::default(),
    };
    event.metadata.tags = vec![format!("pad:{pad}")].into();
    event
}

/// An in-memory store whose stream `stream` holds `events` (appended as a new stream).
async fn holding(stream: &str, events: Vec<NewEvent>) -> Arc<InMemoryStore> {
    let store = Arc::new(InMemoryStore::new());
    store
        .append(stream, ExpectedVersion::NoStream, events)
        .await
        .unwrap();
    store
}

/// A runtime with no handler on `store`.
async fn started(store: &Arc<InMemoryStore>) -> Evoq {
    Evoq::builder()
        .shared_store(store.clone())
        .start()
        .await
        .unwrap()
}

/// The decode error of `Noted`'s panic, as a dispatch reports it: `Error::Decode` naming the
/// stream and the type, whose message says the `Deserialize` impl panicked, with the panic's
/// message.
fn assert_decode_panic(error: &Error, stream: &str, path: &str) {
    match error {
        Error::Decode {
            stream: at,
            event_type,
            schema_version,
            ..
        } => assert_eq!(
            (at.as_str(), event_type.as_str(), *schema_version),
            (stream, "Noted", 1),
            "{path}: {error}"
        ),
        other => panic!("{path}: a decode error, not {other:?}"),
    }
    let text = error.to_string();
    assert!(
        text.contains("the `Deserialize` impl of `Noted` panicked")
            && text.contains("a bug in Noted's Deserialize"),
        "{path}: {text}"
    );
    assert_eq!(error.kind(), ErrorKind::StoredData, "{path}: {text}");
}

// ----- an aggregate -----

#[derive(Command, Debug, Clone)]
struct Note {
    #[aggregate_id]
    pad: String,
}

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

#[derive(Default)]
struct Pad {
    notes: u64,
}

#[aggregate]
impl Pad {
    #[handles]
    fn note(&self, command: &Note) -> Result<Noted, Never> {
        Ok(Noted {
            pad: command.pad.clone(),
            text: format!("note {}", self.notes + 1),
        })
    }

    #[apply]
    fn noted(&mut self, _: &Noted) {
        self.notes += 1;
    }
}

/// §1.2: the replay of an aggregate whose stream holds an event its `Deserialize` panics on
/// fails with `Error::Decode`, every time (no empty instance takes its place), and the
/// dispatch returns instead of panicking.
#[tokio::test]
async fn a_deserialize_that_panics_fails_an_aggregate_replay_with_a_decode_error() {
    let store = holding("Pad-p1", vec![noted("p1", POISON)]).await;
    let app = started(&store).await;
    for attempt in 0..2 {
        let dispatching = app.clone();
        let joined =
            tokio::spawn(async move { dispatching.dispatch(Note { pad: "p1".into() }).await })
                .await;
        let error = joined
            .expect("the dispatch returned instead of panicking")
            .expect_err("the stream does not decode");
        assert_decode_panic(&error, "Pad-p1", &format!("replay {attempt}"));
    }
    assert_eq!(
        store.stream_version("Pad-p1").await.unwrap(),
        1,
        "nothing appended"
    );
    app.stop().await;
}

/// §3.6: the first result of a resent command, read back from its stream, is the decode error
/// when its event's `Deserialize` panics (not a store failure).
#[tokio::test]
async fn a_deserialize_that_panics_fails_the_read_back_of_a_resent_command_with_a_decode_error() {
    let store = Arc::new(InMemoryStore::new());
    let command_id = evoq::Uuid::now_v7();
    let mut event = noted("p2", POISON);
    event.metadata.command_id = Some(command_id);
    let command = evoq::store::NewCommand {
        command_id,
        idempotency_key: None,
        command: "Note".into(),
        aggregate: "Pad".into(),
        deduplicate_since: Some(std::time::UNIX_EPOCH),
    };
    store
        .append_command("Pad-p2", ExpectedVersion::NoStream, vec![event], command)
        .await
        .unwrap();
    let app = started(&store).await;
    let error = app
        .command(Note { pad: "p2".into() })
        .command_id(command_id)
        .dispatch()
        .await
        .expect_err("the first result does not decode");
    assert_decode_panic(&error, "Pad-p2", "resent command");
    assert_eq!(
        store.stream_version("Pad-p2").await.unwrap(),
        1,
        "nothing appended"
    );
    app.stop().await;
}

/// A `Dispatched` read back from JSON (`serde`) whose event's `Deserialize` panics is an
/// error of that deserialization, not a panic.
#[test]
fn a_deserialize_that_panics_fails_reading_a_dispatched_back_from_json() {
    let json = json!({
        "aggregate": "Pad",
        "version": 1,
        "position": 1,
        "token": 1,
        "command_id": evoq::Uuid::now_v7(),
        "events": [{ "type": "Noted", "data": { "pad": "p3", "text": POISON } }],
    });
    let read = std::panic::catch_unwind(|| serde_json::from_value::<Dispatched<Pad>>(json));
    let error = read
        .expect("reading returned instead of panicking")
        .expect_err("the event does not decode");
    assert!(
        error
            .to_string()
            .contains("the `Deserialize` impl of `Noted` panicked: a bug in Noted's Deserialize"),
        "{error}"
    );
}

// ----- a decision -----

#[derive(Command, Debug, Clone)]
struct NoteOnce {
    #[aggregate_id]
    pad: String,
}

#[derive(Default)]
struct NotedOnce {
    noted: bool,
}

#[decision(name = "NotedOnce")]
impl NotedOnce {
    #[handles]
    #[query(all_of(types(Noted), tag("pad", &command.pad)))]
    fn note_once(&self, command: &NoteOnce) -> Result<Option<Noted>, Never> {
        Ok((!self.noted).then(|| Noted {
            pad: command.pad.clone(),
            text: "once".into(),
        }))
    }

    #[apply]
    fn noted(&mut self, _: &Noted) {
        self.noted = true;
    }
}

#[derive(Default)]
struct CachedNotedOnce {
    noted: bool,
}

#[derive(Command, Debug, Clone)]
struct NoteOnceCached {
    #[aggregate_id]
    pad: String,
}

#[decision(name = "CachedNotedOnce", cached)]
impl CachedNotedOnce {
    #[handles]
    #[query(all_of(types(Noted), tag("pad", &command.pad)))]
    fn note_once(&self, command: &NoteOnceCached) -> Result<Option<Noted>, Never> {
        Ok((!self.noted).then(|| Noted {
            pad: command.pad.clone(),
            text: "once".into(),
        }))
    }

    #[apply]
    fn noted(&mut self, _: &Noted) {
        self.noted = true;
    }
}

/// §3.8: a decision that reads an event its `Deserialize` panics on (while its model is built
/// from the events it read) fails with `Error::Decode`, appends nothing, and the panic does not
/// unwind out of `dispatch`; a cached decision keeps no model of it and fails the same way
/// again.
#[tokio::test]
async fn a_deserialize_that_panics_fails_a_decision_with_a_decode_error() {
    let store = holding("Pads-p4", vec![noted("p4", POISON)]).await;
    let app = started(&store).await;
    let dispatching = app.clone();
    let joined =
        tokio::spawn(async move { dispatching.dispatch(NoteOnce { pad: "p4".into() }).await })
            .await;
    let error = joined
        .expect("the dispatch returned instead of panicking")
        .expect_err("the context does not decode");
    assert_decode_panic(&error, "Pads-p4", "decision");
    for attempt in 0..2 {
        let dispatching = app.clone();
        let joined = tokio::spawn(async move {
            dispatching
                .dispatch(NoteOnceCached { pad: "p4".into() })
                .await
        })
        .await;
        let error = joined
            .expect("the dispatch returned instead of panicking")
            .expect_err("the context does not decode");
        assert_decode_panic(&error, "Pads-p4", &format!("cached decision {attempt}"));
    }
    assert_eq!(
        app.decision_models(),
        0,
        "no model kept of a context that does not decode"
    );
    assert_eq!(*store.head().borrow(), 1, "nothing appended");
    app.stop().await;
}

// ----- an event handler, a projection, a saga -----

/// Records the texts it decodes.
#[derive(Default)]
struct Notes {
    seen: Arc<Mutex<Vec<String>>>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Failed(String);

#[event_handler(name = "notes")]
impl Notes {
    #[handles]
    async fn noted(&mut self, e: &Noted, _: &EventMeta) -> Result<(), Failed> {
        self.seen.lock().unwrap().push(e.text.clone());
        Ok(())
    }
}

struct NoteTexts {
    model: InMemoryReadModel,
}

#[projection(name = "note_texts", read_model = model)]
impl NoteTexts {
    #[handles]
    async fn noted(&mut self, e: &Noted, meta: &EventMeta) -> Result<(), ProjectionError> {
        self.model
            .put(meta.global_position().to_string(), &e.text)?;
        Ok(())
    }
}

/// A saga of pads, which counts the notes of each.
#[derive(Default, Serialize, Deserialize)]
struct PadSaga {
    notes: u64,
}

#[saga(name = "pad_saga")]
impl PadSaga {
    #[starts(by = pad)]
    fn noted(&mut self, _: &Noted) -> Commands {
        self.notes += 1;
        Commands::none()
    }
}

async fn wait(app: &Evoq, name: &str, position: u64) {
    tokio::time::timeout(
        Duration::from_secs(10),
        app.wait_for_named(name, position).without_deadline(),
    )
    .await
    .expect("in time")
    .expect("running");
}

/// §5.5, §5.6: on the handler path (an event handler, a projection, a saga) an event whose
/// `Deserialize` panics is undecodable: it follows the error policy as a decode failure (a
/// dead letter of kind `Decode` saying the `Deserialize` panicked, the event as stored), not
/// a panic of the handler, which was never called; the next event goes through.
#[tokio::test]
async fn a_deserialize_that_panics_on_the_handler_path_dead_letters_a_decode_failure() {
    let store = holding("Pad-p5", vec![noted("p5", POISON), noted("p5", "fine")]).await;
    let notes = Notes::default();
    let seen = notes.seen.clone();
    let texts = InMemoryReadModel::new();
    let app = Evoq::builder()
        .shared_store(store.clone())
        .handler_defaults(HandlerConfig {
            retry: RetryStrategy::immediate(),
            max_attempts: 1,
            ..HandlerConfig::default()
        })
        .handler(notes)
        .projection(NoteTexts {
            model: texts.clone(),
        })
        .saga::<PadSaga>()
        .start()
        .await
        .unwrap();
    for name in ["notes", "note_texts", "pad_saga"] {
        wait(&app, name, 2).await;
        let dead = app.dead_letters(name).list(0, 10).await.unwrap();
        assert_eq!(dead.len(), 1, "{name}");
        assert_eq!(
            dead[0].kind,
            FailureKind::Decode,
            "{name}: {}",
            dead[0].error
        );
        assert!(
            dead[0].error.contains(
                "the `Deserialize` impl of `Noted` panicked: a bug in Noted's Deserialize"
            ),
            "{name}: {}",
            dead[0].error
        );
        assert_eq!(
            dead[0].event.global_position, 1,
            "{name}: the poisoned event"
        );
    }
    assert_eq!(
        seen.lock().unwrap()[..],
        ["fine".to_owned()],
        "the next event went through"
    );
    assert_eq!(texts.get::<String>("2").unwrap().as_deref(), Some("fine"));
    let state = app.saga_state::<PadSaga>("p5").await.unwrap();
    assert_eq!(state.map(|saga| saga.notes), Some(1));
    assert!(
        app.handler_stats().iter().all(|stats| stats.faults == 0),
        "no fault outside the handlers' code"
    );
    app.stop().await;
}

// ----- the state of an aggregate (snapshots, hibernation) and of a saga -----

/// A text field's `Deserialize` that panics on [`POISON`] (a bug in user code, met only on some
/// stored data): the state types below use it.
fn text_panicking_on_poison<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<String, D::Error> {
    let text = String::deserialize(deserializer)?;
    if text == POISON {
        panic!("a bug in a state's Deserialize");
    }
    Ok(text)
}

/// A state whose `Deserialize` panics when its `last` text is [`POISON`].
#[derive(Default, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Board {
    #[serde(deserialize_with = "text_panicking_on_poison")]
    last: String,
    count: u64,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Pinned {
    text: String,
    /// The board's count once applied: what the command saw of the state.
    count: u64,
}

#[derive(Command, Debug, Clone)]
struct Pin {
    #[aggregate_id]
    board: String,
    text: String,
}

#[aggregate(snapshot_every = 1, hibernate_after = "never")]
impl Board {
    #[handles]
    fn pin(&self, command: &Pin) -> Result<Pinned, Never> {
        Ok(Pinned {
            text: command.text.clone(),
            count: self.count + 1,
        })
    }

    #[apply]
    fn pinned(&mut self, event: &Pinned) {
        self.last = event.text.clone();
        self.count = event.count;
    }
}

/// §1.4: a snapshot whose state's `Deserialize` panics is set aside like one that no longer
/// decodes: the next activation (a new runtime on the same store) replays the whole stream,
/// and the command goes through with the right state.
#[tokio::test]
async fn a_snapshot_whose_deserialize_panics_is_set_aside_and_the_stream_replayed() {
    let store = Arc::new(InMemoryStore::new());
    let first = Evoq::builder()
        .shared_store(store.clone())
        .start()
        .await
        .unwrap();
    let pin = |text: &str| Pin {
        board: "b1".into(),
        text: text.into(),
    };
    first.dispatch(pin(POISON)).await.unwrap();
    first.stop().await;
    let snapshot = store.load_snapshot("Board-b1").await.unwrap();
    assert_eq!(
        snapshot.map(|snapshot| snapshot.version),
        Some(1),
        "the poisoned state was saved as a snapshot"
    );

    let second = Evoq::builder()
        .shared_store(store.clone())
        .start()
        .await
        .unwrap();
    let dispatching = second.clone();
    let joined = tokio::spawn(async move { dispatching.dispatch(pin("fine")).await }).await;
    let dispatched = joined
        .expect("the dispatch returned instead of panicking")
        .expect("the stream replayed past the snapshot");
    assert_eq!(dispatched.version, 2);
    assert_eq!(
        dispatched.events,
        [BoardEvent::Pinned(Pinned {
            text: "fine".into(),
            count: 2
        })],
        "the command saw the state of both events"
    );
    second.stop().await;
}

/// §1.3: a hibernated state whose `Deserialize` panics is rebuilt from the store, as one that
/// does not decode: the command that wakes it goes through.
#[tokio::test]
async fn a_hibernated_state_whose_deserialize_panics_is_rebuilt_from_the_store() {
    #[derive(Default, Serialize, Deserialize, Clone, Debug, PartialEq)]
    struct Napping {
        #[serde(deserialize_with = "text_panicking_on_poison")]
        last: String,
    }

    #[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
    struct Napped {
        text: String,
        /// The text before: what the command saw of the state.
        before: String,
    }

    #[derive(Command, Debug, Clone)]
    struct Nap {
        #[aggregate_id]
        id: String,
        text: String,
    }

    #[aggregate(hibernate_after = "20ms", idle_timeout = "1h")]
    impl Napping {
        #[handles]
        fn nap(&self, command: &Nap) -> Result<Napped, Never> {
            Ok(Napped {
                text: command.text.clone(),
                before: self.last.clone(),
            })
        }

        #[apply]
        fn napped(&mut self, event: &Napped) {
            self.last = event.text.clone();
        }
    }

    let app = Evoq::builder().start().await.unwrap();
    let nap = |text: &str| Nap {
        id: "n1".into(),
        text: text.into(),
    };
    app.dispatch(nap(POISON)).await.unwrap();
    // Long past `hibernate_after`: the state is kept serialized.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let dispatching = app.clone();
    let joined = tokio::spawn(async move { dispatching.dispatch(nap("fine")).await }).await;
    let dispatched = joined
        .expect("the dispatch returned instead of panicking")
        .expect("the state rebuilt from the store");
    assert_eq!(dispatched.version, 2);
    assert_eq!(
        dispatched.events,
        [NappingEvent::Napped(Napped {
            text: "fine".into(),
            before: POISON.into()
        })],
        "the command saw the state rebuilt from the store"
    );
    app.stop().await;
}

/// A saga whose state's `Deserialize` panics once its last note is [`POISON`].
#[derive(Default, Serialize, Deserialize)]
struct Fragile {
    #[serde(deserialize_with = "text_panicking_on_poison")]
    last: String,
}

#[saga(name = "fragile")]
impl Fragile {
    #[starts(by = pad)]
    fn noted(&mut self, noted: &Noted) -> Commands {
        self.last = noted.pad.clone();
        Commands::none()
    }
}

/// §6.3, §5.5: a saga whose saved state's `Deserialize` panics fails the event as a saved
/// state that does not decode (the dead letter says the `Deserialize` panicked), never as a
/// panic of the saga; and `saga_state` answers `Error::SagaState` instead of panicking in the
/// caller.
#[tokio::test]
async fn a_saga_state_whose_deserialize_panics_is_a_decode_failure_and_a_saga_state_error() {
    let store = holding(
        "Pad-poison",
        vec![noted(POISON, "one"), noted(POISON, "two")],
    )
    .await;
    let app = Evoq::builder()
        .shared_store(store.clone())
        .handler_defaults(HandlerConfig {
            retry: RetryStrategy::immediate(),
            max_attempts: 1,
            ..HandlerConfig::default()
        })
        .saga::<Fragile>()
        .start()
        .await
        .unwrap();
    wait(&app, "fragile", 2).await;
    let dead = app.dead_letters("fragile").list(0, 10).await.unwrap();
    assert_eq!(
        dead.len(),
        1,
        "the second event meets the saved poisoned state"
    );
    assert_eq!(
        dead[0].kind,
        FailureKind::HandlerError,
        "as a saved state that does not decode, not a panic: {}",
        dead[0].error
    );
    assert!(
        dead[0]
            .error
            .contains("the state of instance `poison` does not decode: the `Deserialize` impl of `Fragile` panicked: a bug in a state's Deserialize"),
        "{}",
        dead[0].error
    );
    assert_eq!(dead[0].event.global_position, 2);

    let reading = app.clone();
    let joined = tokio::spawn(async move { reading.saga_state::<Fragile>(POISON).await }).await;
    let error = joined
        .expect("saga_state returned instead of panicking")
        .err()
        .expect("the saved state does not decode");
    assert!(matches!(error, Error::SagaState { .. }), "{error:?}");
    assert!(
        error.to_string().contains("a bug in a state's Deserialize"),
        "{error}"
    );
    assert!(
        app.handler_stats().iter().all(|stats| stats.faults == 0),
        "no fault outside the saga's code"
    );
    app.stop().await;
}

/// §1.4: a state whose `Serialize` panics when a snapshot is taken (or the state hibernates)
/// never fails the command whose events are stored: the snapshot is skipped, logged, and the
/// next command goes through.
#[tokio::test]
async fn a_state_whose_serialize_panics_skips_the_snapshot_and_never_fails_the_command() {
    #[derive(Default, Deserialize, Clone, Debug)]
    struct Shy {
        last: String,
    }

    impl Serialize for Shy {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            if self.last == POISON {
                panic!("a bug in Shy's Serialize");
            }
            serializer.serialize_str(&self.last)
        }
    }

    #[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
    struct Said {
        text: String,
    }

    #[derive(Command, Debug, Clone)]
    struct Say {
        #[aggregate_id]
        id: String,
        text: String,
    }

    #[aggregate(snapshot_every = 1, hibernate_after = "10ms", idle_timeout = "1h")]
    impl Shy {
        #[handles]
        fn say(&self, command: &Say) -> Result<Said, Never> {
            Ok(Said {
                text: command.text.clone(),
            })
        }

        #[apply]
        fn said(&mut self, event: &Said) {
            self.last = event.text.clone();
        }
    }

    let store = Arc::new(InMemoryStore::new());
    let app = started(&store).await;
    let say = |text: &str| Say {
        id: "s1".into(),
        text: text.into(),
    };
    for text in [POISON, "fine"] {
        let dispatching = app.clone();
        let joined = tokio::spawn(async move { dispatching.dispatch(say(text)).await }).await;
        joined
            .expect("the dispatch returned instead of panicking")
            .expect("the events are stored: the command succeeded");
        // Past `hibernate_after`: the state was asked to serialize for hibernation too.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(store.stream_version("Shy-s1").await.unwrap(), 2);
    app.stop().await;
}
