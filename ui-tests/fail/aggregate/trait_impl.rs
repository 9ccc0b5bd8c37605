use evoq::prelude::*;

#[derive(Default)]
struct BankAccount;

trait Audited {}

#[aggregate]
impl Audited for BankAccount {}

fn main() {}
