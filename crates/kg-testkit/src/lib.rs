//! kg-testkit: what kg's tests need to reach the outside world for real.
//!
//! - [`bolt_graph`]: a live Bolt connection (neo4rs) to the test database,
//!   from `NEO4J_URI`/`NEO4J_USER`/`NEO4J_PASSWORD`/`NEO4J_DATABASE`, or a
//!   Neo4j container when those are unset and a Docker engine answers.
//! - [`RunTag`]: a unique tag per test, so tests running in parallel against
//!   one shared database only ever see their own data.
//! - [`PrivateServer`]: an ArcadeDB of the test's own, on a free port, for
//!   tests that kill and restart the server mid-write.
//! - [`model_dir`]: the local embedding model folder (`KG_TEST_MODEL_DIR`).
//!
//! What it must never do: skip. When a test cannot get what it needs, these
//! functions return an error that says how to get it, and the test fails.
//! A test that silently passes without a database proves nothing.
//!
//! # Where the server comes from
//!
//! `cargo xtask test` (and `ci`, `it`, `bench`) start a fresh ArcadeDB Bolt
//! server and give the tests this environment:
//!
//! | variable | meaning |
//! |---|---|
//! | `NEO4J_URI`, `NEO4J_USER`, `NEO4J_PASSWORD`, `NEO4J_DATABASE` | the shared test server |
//! | `KG_TEST_MODEL_DIR` | the all-MiniLM-L6-v2 model folder |
//! | `KG_TEST_SERVER_PIDFILE`, `KG_TEST_SERVER_PID` | the shared server's process: see [`shared_server_pid_file`]; do not kill it, other tests use it |
//! | `KG_XTASK` | the xtask binary; [`PrivateServer`] runs `$KG_XTASK server start\|stop --port N` |
//! | `KG_CACHE_DIR` | where xtask keeps the server install, data and logs |
//!
//! To run tests by hand: `cargo xtask server start` prints the `export` line
//! for the NEO4J_* variables; `cargo xtask install` prints the model folder.
//!
//! # Naming convention: Bolt-backed tests
//!
//! `cargo xtask it` runs only the tests that need a Bolt server. It selects
//! them by name (the nextest filter `binary(/bolt|neo4j/) | test(/bolt|neo4j/)`):
//! put them in an integration-test file whose name contains `bolt` or `neo4j`
//! (`tests/bolt_writer.rs`), or give the test function such a name
//! (`writes_a_batch_over_bolt`). Without nextest the fallback filters on test
//! names only, so prefer both.
//!
//! # Example
//!
//! ```no_run
//! # async fn example() -> Result<(), kg_testkit::TestkitError> {
//! use kg_testkit::{bolt_graph, RunTag};
//! use neo4rs::query;
//!
//! let bolt = bolt_graph().await?;
//! let tag = RunTag::new("writes_documents_over_bolt");
//! bolt.graph()
//!     .run(query("CREATE (:Document {id: 'd1', run: $run})").param("run", tag.as_str()))
//!     .await?;
//! // ... assert, then optionally clean up what carries this tag:
//! bolt.delete_tagged("Document", "run", &tag).await?;
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

mod bolt;
mod error;
mod paths;
mod server;
mod tag;

pub use bolt::{bolt_graph, BoltSettings, ServerSource, TestBolt};
pub use error::TestkitError;
pub use paths::{model_dir, shared_server_pid_file};
pub use server::PrivateServer;
pub use tag::RunTag;

/// Re-exported so tests use the same neo4rs as the testkit.
pub use neo4rs;
