//! The in-memory event store (placeholder: being written).
