//! kg's cross-crate integration tests; they live in `tests/tests/`.
//!
//! This library is empty on purpose: the package exists so that tests which
//! exercise several crates together (and the Bolt round trip of the test
//! infrastructure itself) have a home that no single stage crate owns.
//!
//! What it must never hold: production code. Test support shared by several
//! crates belongs in kg-testkit.
//!
//! Bolt-backed tests follow kg-testkit's naming convention (a file or test
//! name containing `bolt` or `neo4j`) so that `cargo xtask it` selects them:
//!
//! ```text
//! cargo xtask it      # tests/tests/bolt_roundtrip.rs and its kind
//! ```
#![warn(missing_docs)]
