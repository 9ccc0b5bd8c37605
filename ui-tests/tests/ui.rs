//! Every compile-time guarantee of evoq has a compile-fail case with a committed `.stderr`, and
//! good code has pass cases. Regenerate the snapshots with `TRYBUILD=overwrite`, then read them.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.pass("pass/*.rs");
    cases.compile_fail("fail/*/*.rs");
}
