use evoq::prelude::*;

#[derive(Default)]
struct Empty;

#[event_handler(name = "empty")]
impl Empty {
    fn helper(&self) {}
}

struct Wrapper<T>(T);

#[event_handler(name = "generic")]
impl<T> Wrapper<T> {}

#[event_handler(name = "on_a_struct")]
struct NotAnImpl;

fn main() {}
