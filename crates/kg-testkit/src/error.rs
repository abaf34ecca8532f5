//! The testkit's errors: each says what is missing and how to get it.

use std::path::PathBuf;

/// How to get a Bolt server, appended to every "no server" error.
pub(crate) const HOW_TO_GET_A_SERVER: &str = "\
to get one: run the tests through `cargo xtask test` (or `cargo xtask it`), which start \
a server and set the environment; or run `cargo xtask server start` and paste the \
`export NEO4J_URI=... NEO4J_USER=... NEO4J_PASSWORD=... NEO4J_DATABASE=...` line it prints; \
or point NEO4J_URI (with NEO4J_USER, NEO4J_PASSWORD) at any Neo4j 5; \
or start a Docker engine and the testkit starts a Neo4j container itself";

/// Everything that can keep a test from its database, model or server.
///
/// `Debug` prints the same text as `Display`: a test returning
/// `Result<(), TestkitError>` reports its error through `Debug`, and the
/// instructions must reach the person reading the test output.
#[derive(thiserror::Error)]
pub enum TestkitError {
    /// No NEO4J_URI and no Docker engine.
    #[error("no Bolt test database: NEO4J_URI is not set and no Docker engine answers; {HOW_TO_GET_A_SERVER}")]
    NoServer,
    /// An environment variable is set but unusable.
    #[error("environment variable {name} is not usable: {reason}")]
    InvalidEnv {
        /// The variable.
        name: &'static str,
        /// Why.
        reason: String,
    },
    /// The server does not accept the connection or the first query.
    #[error(
        "cannot use the Bolt database at {uri} (user {user}): {source}; {HOW_TO_GET_A_SERVER}"
    )]
    Connect {
        /// The URI (never the password).
        uri: String,
        /// The user.
        user: String,
        /// The driver's error.
        #[source]
        source: neo4rs::Error,
    },
    /// A query of the testkit itself (cleanup, counting) failed.
    #[error("query on the test database failed: {0}")]
    Query(#[from] neo4rs::Error),
    /// Starting the Neo4j container failed.
    #[error("cannot start the Neo4j test container: {0}")]
    Container(String),
    /// `KG_TEST_MODEL_DIR` is unset.
    #[error(
        "KG_TEST_MODEL_DIR is not set: run the tests through `cargo xtask test`, or \
         `cargo xtask install` and export KG_TEST_MODEL_DIR=<the model folder it prints>"
    )]
    ModelDirUnset,
    /// `KG_TEST_MODEL_DIR` names a folder without the model.
    #[error("KG_TEST_MODEL_DIR={} holds no {missing}: run `cargo xtask install` and use the folder it prints", path.display())]
    ModelDirIncomplete {
        /// The folder.
        path: PathBuf,
        /// The file that is missing.
        missing: &'static str,
    },
    /// `KG_TEST_SERVER_PIDFILE` is unset.
    #[error(
        "KG_TEST_SERVER_PIDFILE is not set: only `cargo xtask test|it|ci` know the shared \
         server's process; for a server a test may kill, use kg_testkit::PrivateServer"
    )]
    PidFileUnset,
    /// The xtask binary (for private servers) is nowhere to be found.
    #[error(
        "cannot find the xtask binary to start a private server: KG_XTASK is unset and \
         {} does not exist; run the tests through `cargo xtask test`, or `cargo build -p xtask`",
        looked_at.display()
    )]
    XtaskMissing {
        /// Where we looked besides KG_XTASK.
        looked_at: PathBuf,
    },
    /// An xtask server command failed.
    #[error("`xtask {command}` failed ({status}): {output}")]
    Xtask {
        /// The xtask arguments.
        command: String,
        /// Its exit status.
        status: String,
        /// Its output (the server log tail on start failures).
        output: String,
    },
    /// An I/O error around a file or process, with what was being done.
    #[error("{context}: {source}")]
    Io {
        /// What failed.
        context: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl std::fmt::Debug for TestkitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}
