use evoq::prelude::*;

#[derive(Default)]
struct Counter;

// With id `1`, its stream would be `Counter-X-1`: the stream of `Counter` with id `X-1`.
#[aggregate(name = "Counter-X")]
impl Counter {}

// The same name passed through a `macro_rules!` literal is refused too, at the literal.
macro_rules! named_aggregate {
    ($state:ident, $name:literal) => {
        #[derive(Default)]
        struct $state;

        #[aggregate(name = $name)]
        impl $state {}
    };
}

named_aggregate!(Tally, "tally-");

fn main() {}
