//! The query selects `a::Opened`; the model applies `b::Opened`, another type of the same name
//! (stored under another wire name): the model would never see one.
use evoq::prelude::*;

mod a {
    use evoq::prelude::*;

    #[derive(Event, serde::Serialize, serde::Deserialize, Clone, Debug)]
    pub struct Opened {
        #[tag]
        pub book: String,
    }
}

mod b {
    use evoq::prelude::*;

    #[derive(Event, serde::Serialize, serde::Deserialize, Clone, Debug)]
    #[event(name = "b.Opened")]
    pub struct Opened {
        #[tag]
        pub book: String,
    }
}

#[derive(Command)]
struct Open {
    #[aggregate_id]
    book: String,
}

#[derive(Debug, thiserror::Error)]
#[error("already open")]
struct AlreadyOpen;

#[derive(Default)]
struct Shelf {
    opened: u32,
}

#[decision]
impl Shelf {
    #[handles]
    #[query(all_of(types(a::Opened), tag("book", &command.book)))]
    fn open(&self, command: &Open) -> Result<(), AlreadyOpen> {
        let _ = command;
        Ok(())
    }

    #[apply]
    fn opened(&mut self, _: &b::Opened) {
        self.opened += 1;
    }
}

fn main() {}
