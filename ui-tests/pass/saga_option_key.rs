//! A saga correlated by `Option` fields: `Option<String>`, `Option<u64>` and `Option<Uuid>`
//! (an `Option` of every key type) compile, and `None` correlates to nothing.
use evoq::Uuid;
use evoq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct TicketOpened {
    ticket_id: Option<String>,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct TicketAnswered {
    ticket_id: Option<u64>,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct TicketClosed {
    ticket_id: Option<Uuid>,
}

#[derive(Default, Serialize, Deserialize)]
struct Support {
    answers: u32,
}

#[saga(name = "support")]
impl Support {
    #[starts(by = ticket_id)]
    fn opened(&mut self, _: &TicketOpened) -> Commands {
        Commands::none()
    }

    #[continues(by = ticket_id)]
    fn answered(&mut self, _: &TicketAnswered) -> Commands {
        self.answers += 1;
        Commands::none()
    }

    #[stops(by = ticket_id)]
    fn closed(&mut self, _: &TicketClosed) -> Commands {
        Commands::none()
    }
}

pub(crate) fn main() {
    assert_eq!(
        <Support as Saga>::EVENT_TYPES,
        ["TicketOpened", "TicketAnswered", "TicketClosed"]
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let app = Evoq::builder()
            .saga::<Support>()
            .start()
            .await
            .expect("starts");
        app.stop().await;
    });
}
