use evoq::prelude::*;

#[derive(Command)]
struct Deposit {
    #[aggregate_id]
    account: String,
}

async fn deposit(app: &Evoq) -> Result<(), evoq::Error> {
    app.dispatch(Deposit { account: "acc-1".into() }).await?;
    Ok(())
}

fn main() {
    drop(deposit);
}
