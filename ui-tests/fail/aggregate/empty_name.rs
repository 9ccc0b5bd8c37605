use evoq::prelude::*;

#[derive(Default)]
struct Counter;

#[aggregate(name = "")]
impl Counter {}

fn main() {}
