use evoq::prelude::*;

struct Plain;

fn main() {
    let _ = Evoq::builder().handler(Plain);
}
