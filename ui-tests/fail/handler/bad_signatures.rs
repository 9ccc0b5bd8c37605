use evoq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct A;
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct B;
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct C;
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct D;
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct E;
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct F;

#[derive(Debug, thiserror::Error)]
#[error("failed")]
struct Failed;

#[derive(Default)]
struct Notifier;

#[event_handler(name = "notifier")]
impl Notifier {
    #[handles]
    fn not_async(&mut self, _: &A, _: &EventMeta) -> Result<(), Failed> {
        Ok(())
    }

    #[handles]
    async fn shared_self(&self, _: &B, _: &EventMeta) -> Result<(), Failed> {
        Ok(())
    }

    #[handles]
    async fn no_meta(&mut self, _: &C) -> Result<(), Failed> {
        Ok(())
    }

    #[handles]
    async fn meta_by_value(&mut self, _: &D, _: EventMeta) -> Result<(), Failed> {
        Ok(())
    }

    #[handles]
    async fn returns_a_value(&mut self, _: &E, _: &EventMeta) -> Result<u32, Failed> {
        Ok(1)
    }

    #[handles]
    async fn returns_nothing(&mut self, _: &F, _: &EventMeta, _: u8) {}
}

fn main() {}
