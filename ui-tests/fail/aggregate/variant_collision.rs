use evoq::prelude::*;

mod checking {
    use evoq::prelude::*;
    use serde::{Deserialize, Serialize};

    #[derive(Event, Serialize, Deserialize, Clone, Debug)]
    #[event(name = "checking.Opened")]
    pub struct Opened;
}

mod savings {
    use evoq::prelude::*;
    use serde::{Deserialize, Serialize};

    #[derive(Event, Serialize, Deserialize, Clone, Debug)]
    #[event(name = "savings.Opened")]
    pub struct Opened;
}

#[derive(Default)]
struct Customer;

#[aggregate]
impl Customer {
    #[apply]
    fn checking(&mut self, _: &checking::Opened) {}

    #[apply]
    fn savings(&mut self, _: &savings::Opened) {}
}

fn main() {}
