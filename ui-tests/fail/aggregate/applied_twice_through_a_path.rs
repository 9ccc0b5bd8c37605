//! One event type applied twice, once by its imported name and once through its path: the
//! macro cannot tell one type from two, and its message says what to do in either case.
use evoq::prelude::*;

mod ev {
    use evoq::prelude::*;
    use serde::{Deserialize, Serialize};

    #[derive(Event, Serialize, Deserialize, Clone, Debug)]
    pub struct Deposited {
        pub account: String,
    }
}

use ev::Deposited;

#[derive(Default)]
struct Account;

#[aggregate]
impl Account {
    #[apply]
    fn deposited(&mut self, _: &Deposited) {}

    #[apply]
    fn deposited_again(&mut self, _: &crate::ev::Deposited) {}
}

fn main() {}
