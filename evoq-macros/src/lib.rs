//! Procedural macros of evoq (being written).
