use evoq::prelude::*;

#[derive(Debug)]
struct NotAnEvent;

#[derive(Debug, thiserror::Error)]
#[error("failed")]
struct Failed;

#[derive(Default)]
struct Notifier;

#[event_handler(name = "notifier")]
impl Notifier {
    #[handles]
    async fn seen(&mut self, _: &NotAnEvent, _: &EventMeta) -> Result<(), Failed> {
        Ok(())
    }
}

fn main() {}
