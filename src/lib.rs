//! The parts of the `ordertrail` binary that the `stack-check` binary runs too. The binary's
//! other commands live in its own modules (`src/main.rs`).

pub mod forget;
