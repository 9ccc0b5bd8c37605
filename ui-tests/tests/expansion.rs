//! The pass cases compiled as modules of this test crate: the expansion must be clean under the
//! workspace lints and `cargo clippy --all-targets -- -D warnings`, and must run.

#[path = "../pass/bank_account.rs"]
mod bank_account;

#[path = "../pass/shadowed_primitives.rs"]
mod shadowed_primitives;

#[path = "../pass/event_handler.rs"]
mod event_handler;

#[path = "../pass/projection.rs"]
mod projection;

#[path = "../pass/decision.rs"]
mod decision;

#[test]
fn decision_expansion_is_clean() {
    decision::main();
}

#[test]
fn bank_account_behaves() {
    bank_account::main();
}

#[test]
fn shadowed_primitives_behave() {
    shadowed_primitives::main();
}

#[test]
fn event_handler_behaves() {
    event_handler::main();
}

#[test]
fn projection_behaves() {
    projection::main();
}

#[path = "../pass/aggregate_names.rs"]
mod aggregate_names;

#[test]
fn aggregate_names_keep_their_own_streams() {
    aggregate_names::main();
}

#[path = "../pass/saga_option_key.rs"]
mod saga_option_key;

#[test]
fn saga_option_keys_compile_and_run() {
    saga_option_key::main();
}

#[path = "../pass/saga_init.rs"]
mod saga_init;

#[test]
fn saga_init_methods_make_new_instances_from_their_id() {
    saga_init::main();
}

#[path = "../pass/result_aliases.rs"]
mod result_aliases;

#[test]
fn result_aliases_compile_and_run_in_every_block() {
    result_aliases::main();
}

#[path = "../pass/macro_literals.rs"]
mod macro_literals;

#[test]
fn macro_literal_fragments_are_literals() {
    macro_literals::main();
}
