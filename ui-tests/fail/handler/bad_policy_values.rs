use evoq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Opened;

#[derive(Debug, thiserror::Error)]
#[error("failed")]
struct Failed;

struct A;
#[event_handler(name = "a", max_attempts = 0, on_error = ignore)]
impl A {
    #[handles]
    async fn opened(&mut self, _: &Opened, _: &EventMeta) -> Result<(), Failed> {
        Ok(())
    }
}

struct B;
#[event_handler(name = "b", retry = linear("1s"), strong = true)]
impl B {
    #[handles]
    async fn opened(&mut self, _: &Opened, _: &EventMeta) -> Result<(), Failed> {
        Ok(())
    }
}

struct C;
#[event_handler(name = "", retry = fixed(1000))]
impl C {
    #[handles]
    async fn opened(&mut self, _: &Opened, _: &EventMeta) -> Result<(), Failed> {
        Ok(())
    }
}

struct D;
#[event_handler(name = "d", retry = exponential("1s", "10ms"))]
impl D {
    #[handles]
    async fn opened(&mut self, _: &Opened, _: &EventMeta) -> Result<(), Failed> {
        Ok(())
    }
}

struct E;
#[event_handler(name = "e", retry = exponential_jitter("100ms"), max_attempts = "3")]
impl E {
    #[handles]
    async fn opened(&mut self, _: &Opened, _: &EventMeta) -> Result<(), Failed> {
        Ok(())
    }
}

fn main() {}
