//! Benchmarks of evoq, one binary each in `src/bin/`; see BENCHMARKS.md for the figures.
