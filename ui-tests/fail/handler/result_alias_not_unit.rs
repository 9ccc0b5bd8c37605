// An event handler's `Result` alias whose `Ok` type is not `()`.
use evoq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct BookLent;

type Handled<T> = std::result::Result<T, std::io::Error>;

#[derive(Default)]
struct Notifier;

#[event_handler(name = "notifier")]
impl Notifier {
    #[handles]
    async fn lent(&mut self, _: &BookLent, _: &EventMeta) -> Handled<u32> {
        Ok(1)
    }
}

fn main() {}
