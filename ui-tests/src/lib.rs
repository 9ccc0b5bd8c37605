//! Compile-time guarantees of evoq, checked with trybuild (see tests/ui.rs).
