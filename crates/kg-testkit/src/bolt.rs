//! The Bolt test database: from the environment, or a container.
//!
//! Order of preference: `NEO4J_URI` when set (what `cargo xtask test` and CI
//! provide: a shared ArcadeDB), else a Neo4j 5 container when a Docker engine
//! answers, else an error saying how to get a server. The connection is
//! checked with a query before it is handed out, so a test fails at its first
//! line, with a clear message, rather than in the middle of its logic.

use crate::error::TestkitError;
use crate::tag::RunTag;
use neo4rs::{query, ConfigBuilder, Graph};
use std::path::Path;
use testcontainers_modules::neo4j::{Neo4j, Neo4jImage};
use testcontainers_modules::testcontainers::runners::AsyncRunner;
use testcontainers_modules::testcontainers::ContainerAsync;

/// Where a Bolt server is and how to log in.
#[derive(Clone, PartialEq, Eq)]
pub struct BoltSettings {
    /// `bolt://host:port` (or `neo4j://...`).
    pub uri: String,
    /// The user.
    pub user: String,
    /// The password (never printed by `Debug`).
    pub password: String,
    /// The database; `None` is the server's default.
    pub database: Option<String>,
}

impl std::fmt::Debug for BoltSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoltSettings")
            .field("uri", &self.uri)
            .field("user", &self.user)
            .field("password", &"<hidden>")
            .field("database", &self.database)
            .finish()
    }
}

impl BoltSettings {
    /// The settings from `NEO4J_URI`, `NEO4J_USER` (default `neo4j`),
    /// `NEO4J_PASSWORD` (required with a URI) and `NEO4J_DATABASE`
    /// (optional); `Ok(None)` when `NEO4J_URI` is unset.
    pub fn from_env() -> Result<Option<Self>, TestkitError> {
        Self::from_lookup(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }

    /// [`Self::from_env`] over any variable source (tests use a map).
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, TestkitError> {
        let Some(uri) = lookup("NEO4J_URI") else {
            return Ok(None);
        };
        let scheme_ok = [
            "bolt://",
            "bolt+s://",
            "bolt+ssc://",
            "neo4j://",
            "neo4j+s://",
            "neo4j+ssc://",
        ]
        .iter()
        .any(|scheme| uri.starts_with(scheme));
        if !scheme_ok {
            return Err(TestkitError::InvalidEnv {
                name: "NEO4J_URI",
                reason: format!("{uri:?} is not a bolt:// or neo4j:// URI"),
            });
        }
        let password = lookup("NEO4J_PASSWORD").ok_or(TestkitError::InvalidEnv {
            name: "NEO4J_PASSWORD",
            reason: "unset, but NEO4J_URI is set: the test server needs a password".into(),
        })?;
        Ok(Some(Self {
            uri,
            user: lookup("NEO4J_USER").unwrap_or_else(|| "neo4j".into()),
            password,
            database: lookup("NEO4J_DATABASE"),
        }))
    }

    /// Connects and checks the connection with `RETURN 1`.
    pub async fn connect(&self) -> Result<Graph, TestkitError> {
        let connect_error = |source| TestkitError::Connect {
            uri: self.uri.clone(),
            user: self.user.clone(),
            source,
        };
        let mut config = ConfigBuilder::default()
            .uri(self.uri.as_str())
            .user(self.user.as_str())
            .password(self.password.as_str())
            .max_connections(8);
        if let Some(database) = &self.database {
            config = config.db(database.as_str());
        }
        let graph = Graph::connect(config.build().map_err(connect_error)?)
            .await
            .map_err(connect_error)?;
        let mut rows = graph
            .execute(query("RETURN 1 AS one"))
            .await
            .map_err(connect_error)?;
        let row = rows.next().await.map_err(connect_error)?;
        let one = row.and_then(|row| row.get::<i64>("one").ok());
        if one != Some(1) {
            return Err(TestkitError::InvalidEnv {
                name: "NEO4J_URI",
                reason: format!("{} answered RETURN 1 with {one:?}", self.uri),
            });
        }
        Ok(graph)
    }
}

/// Where the test database came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerSource {
    /// `NEO4J_URI` (xtask's ArcadeDB, or any server the developer chose).
    Environment,
    /// A Neo4j container started for this test.
    Container,
}

/// A live connection to the test database, and the container behind it when
/// there is one (kept alive as long as this value).
pub struct TestBolt {
    graph: Graph,
    settings: BoltSettings,
    source: ServerSource,
    _container: Option<ContainerAsync<Neo4jImage>>,
}

impl std::fmt::Debug for TestBolt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestBolt")
            .field("settings", &self.settings)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl TestBolt {
    /// The connection (a pool: clone it freely).
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// How to reach the server, e.g. to hand to the code under test.
    pub fn settings(&self) -> &BoltSettings {
        &self.settings
    }

    /// Where the server came from.
    pub fn source(&self) -> ServerSource {
        self.source
    }

    /// Deletes every `label` node whose `key` property is `tag` (with its
    /// relationships); returns how many went. `label` and `key` must be plain
    /// identifiers (`[A-Za-z_][A-Za-z0-9_]*`): they are checked, then pasted,
    /// because Cypher takes neither as a parameter.
    pub async fn delete_tagged(
        &self,
        label: &str,
        key: &str,
        tag: &RunTag,
    ) -> Result<i64, TestkitError> {
        for (what, name) in [("label", label), ("property key", key)] {
            if !is_plain_identifier(name) {
                return Err(TestkitError::InvalidEnv {
                    name: "delete_tagged",
                    reason: format!("{what} {name:?} is not a plain identifier"),
                });
            }
        }
        let cypher = format!(
            "MATCH (n:{label}) WHERE n.{key} = $tag WITH collect(n) AS doomed \
             UNWIND doomed AS n DETACH DELETE n RETURN size(doomed) AS deleted"
        );
        let mut rows = self
            .graph
            .execute(query(&cypher).param("tag", tag.as_str()))
            .await?;
        let mut deleted = 0;
        while let Some(row) = rows.next().await? {
            deleted = row.get::<i64>("deleted").unwrap_or(deleted);
        }
        Ok(deleted)
    }
}

pub(crate) fn is_plain_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The test database: `NEO4J_*` from the environment, else a Neo4j container
/// when a Docker engine answers, else [`TestkitError::NoServer`] (which says
/// how to get one). Never skips.
pub async fn bolt_graph() -> Result<TestBolt, TestkitError> {
    if let Some(settings) = BoltSettings::from_env()? {
        let graph = settings.connect().await?;
        return Ok(TestBolt {
            graph,
            settings,
            source: ServerSource::Environment,
            _container: None,
        });
    }
    if !docker_engine_answers() {
        return Err(TestkitError::NoServer);
    }
    tracing::info!("NEO4J_URI is unset and Docker answers: starting a Neo4j container");
    let password = "kg-testkit-password";
    let container = Neo4j::default()
        .with_password(password)
        .start()
        .await
        .map_err(|e| TestkitError::Container(e.to_string()))?;
    let host = container
        .get_host()
        .await
        .map_err(|e| TestkitError::Container(e.to_string()))?;
    let port = container
        .image()
        .bolt_port_ipv4()
        .map_err(|e| TestkitError::Container(e.to_string()))?;
    let settings = BoltSettings {
        uri: format!("bolt://{host}:{port}"),
        user: "neo4j".into(),
        password: password.into(),
        database: None,
    };
    let graph = settings.connect().await?;
    Ok(TestBolt {
        graph,
        settings,
        source: ServerSource::Container,
        _container: Some(container),
    })
}

/// Whether a Docker engine accepts connections: `DOCKER_HOST` (unix:// or
/// tcp://) when set, else the default socket. A `docker` binary alone is not
/// an engine.
fn docker_engine_answers() -> bool {
    match std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()) {
        Some(host) => {
            if let Some(path) = host.strip_prefix("unix://") {
                std::os::unix::net::UnixStream::connect(path).is_ok()
            } else if let Some(addr) = host.strip_prefix("tcp://") {
                std::net::TcpStream::connect(addr.trim_end_matches('/')).is_ok()
            } else {
                false
            }
        }
        None => std::os::unix::net::UnixStream::connect(Path::new("/var/run/docker.sock")).is_ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn settings_come_from_the_neo4j_variables() {
        let settings = BoltSettings::from_lookup(lookup(&[
            ("NEO4J_URI", "bolt://127.0.0.1:7687"),
            ("NEO4J_USER", "root"),
            ("NEO4J_PASSWORD", "kgtestpass"),
            ("NEO4J_DATABASE", "neo4j"),
        ]))
        .expect("valid settings")
        .expect("a URI is set");
        assert_eq!(settings.uri, "bolt://127.0.0.1:7687");
        assert_eq!(settings.user, "root");
        assert_eq!(settings.password, "kgtestpass");
        assert_eq!(settings.database.as_deref(), Some("neo4j"));
        assert!(!format!("{settings:?}").contains("kgtestpass"));
    }

    #[test]
    fn user_defaults_to_neo4j_and_database_to_the_servers() {
        let settings = BoltSettings::from_lookup(lookup(&[
            ("NEO4J_URI", "neo4j://db:7687"),
            ("NEO4J_PASSWORD", "secret"),
        ]))
        .expect("valid")
        .expect("set");
        assert_eq!(settings.user, "neo4j");
        assert_eq!(settings.database, None);
    }

    #[test]
    fn no_uri_means_no_settings() {
        assert_eq!(
            BoltSettings::from_lookup(lookup(&[])).expect("no error"),
            None
        );
    }

    #[test]
    fn a_uri_without_password_or_with_a_bad_scheme_is_an_error() {
        let missing_password = BoltSettings::from_lookup(lookup(&[("NEO4J_URI", "bolt://h:1")]));
        assert!(matches!(
            missing_password,
            Err(TestkitError::InvalidEnv {
                name: "NEO4J_PASSWORD",
                ..
            })
        ));
        let bad_scheme = BoltSettings::from_lookup(lookup(&[
            ("NEO4J_URI", "http://h:7474"),
            ("NEO4J_PASSWORD", "x"),
        ]));
        assert!(matches!(
            bad_scheme,
            Err(TestkitError::InvalidEnv {
                name: "NEO4J_URI",
                ..
            })
        ));
    }

    #[test]
    fn the_no_server_error_says_how_to_get_one() {
        let message = TestkitError::NoServer.to_string();
        assert!(message.contains("cargo xtask server start"), "{message}");
        assert!(message.contains("NEO4J_URI"), "{message}");
    }

    #[test]
    fn only_plain_identifiers_reach_cypher() {
        assert!(is_plain_identifier("Document"));
        assert!(is_plain_identifier("_run_tag2"));
        assert!(!is_plain_identifier("Doc`) DETACH DELETE (x"));
        assert!(!is_plain_identifier("2nd"));
        assert!(!is_plain_identifier(""));
    }
}
