// `&str` is not an error type: the sentence says what an error type is.
use evoq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct BookLent;

#[derive(Default)]
struct Notifier;

#[event_handler(name = "notifier")]
impl Notifier {
    #[handles]
    async fn lent(&mut self, _: &BookLent, _: &EventMeta) -> Result<(), &'static str> {
        Err("the mail server is down")
    }
}

fn main() {}
