//! Registering a type that is not a projection.
use evoq::prelude::*;

struct Plain;

async fn start() {
    let _ = Evoq::builder().projection(Plain);
}

fn main() {}
