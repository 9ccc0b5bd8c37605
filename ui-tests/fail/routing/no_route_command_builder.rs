use evoq::prelude::*;

#[derive(Command)]
struct Deposit {
    #[aggregate_id]
    account: String,
}

async fn deposit(app: &Evoq) -> Result<(), evoq::Error> {
    app.command(Deposit { account: "acc-1".into() }).metadata("user", "alice").dispatch().await?;
    Ok(())
}

fn main() {
    drop(deposit);
}
