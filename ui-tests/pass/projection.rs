//! A projection with every attribute argument, the explicit `#[handles(Event)]` form, a `#[cfg]`
//! on a method, an event renamed and upcast from version 1; it runs, reads its own writes and
//! rebuilds.
#![deny(warnings)]

use evoq::prelude::*;
use evoq::{HandlerOptions, OnError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
#[event(version = 2)]
struct Registered {
    id: String,
    email: String,
}

#[upcaster(Registered, from = 1, renamed_from = "SignedUp")]
fn registered_v1(mut data: Value) -> Result<Value, UpcastError> {
    data["email"] = Value::from("unknown");
    Ok(data)
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Left {
    id: String,
}

#[derive(Command)]
struct Register {
    #[aggregate_id]
    id: String,
}

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

#[derive(Default)]
struct Member;

#[aggregate]
impl Member {
    #[handles]
    fn register(&self, cmd: &Register) -> Result<Registered, Never> {
        Ok(Registered {
            id: cmd.id.clone(),
            email: format!("{}@example.com", cmd.id),
        })
    }

    #[apply]
    fn registered(&mut self, _: &Registered) {}

    #[apply]
    fn left(&mut self, _: &Left) {}
}

struct Directory {
    entries: InMemoryReadModel,
}

#[projection(
    name = "directory",
    read_model = entries,
    strong,
    retry = fixed("10ms"),
    max_attempts = 2,
    on_error = skip
)]
impl Directory {
    #[handles]
    async fn registered(&mut self, e: &Registered, _: &EventMeta) -> Result<(), ProjectionError> {
        self.entries.put(format!("member/{}", e.id), &e.email)?;
        Ok(())
    }

    #[handles(Left)]
    async fn left(&mut self, e: &Left, _: &EventMeta) -> Result<(), ProjectionError> {
        self.entries.delete(&format!("member/{}", e.id));
        Ok(())
    }

    #[cfg(any())]
    #[handles]
    async fn never(&mut self, e: &Never, _: &EventMeta) -> Result<(), ProjectionError> {
        Ok(())
    }
}

pub(crate) fn main() {
    assert_eq!(<Directory as EventHandler>::NAME, "directory");
    assert_eq!(Directory::EVENT_TYPES, ["Registered", "Left"]);
    assert_eq!(
        Directory::OPTIONS,
        HandlerOptions::new()
            .retry(evoq::RetryStrategy::fixed(
                std::time::Duration::from_millis(10)
            ))
            .max_attempts(2)
            .on_error(OnError::Skip)
            .strong(true)
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let entries = InMemoryReadModel::new();
        let app = Evoq::builder()
            .projection(Directory {
                entries: entries.clone(),
            })
            .start()
            .await
            .expect("starts");
        let old = evoq::NewEvent {
            event_id: evoq::Uuid::now_v7(),
            event_type: "SignedUp".into(),
            schema_version: 1,
            data: br#"{"id":"old"}"#.to_vec(),
            metadata: Default::default(),
        };
        app.store()
            .append("Member-old", evoq::ExpectedVersion::NoStream, vec![old])
            .await
            .expect("appends");
        app.command(Register { id: "new".into() })
            .consistency(Consistency::Strong)
            .dispatch()
            .await
            .expect("dispatches");
        let members: Vec<(String, String)> = entries.list("member/").expect("reads");
        assert_eq!(
            members,
            [
                ("member/new".to_owned(), "new@example.com".to_owned()),
                ("member/old".to_owned(), "unknown".to_owned()),
            ]
        );
        assert_eq!(app.rebuild("directory").await.expect("rebuilds"), 2);
        assert_eq!(entries.len(), 2);
        app.stop().await;
    });
}
