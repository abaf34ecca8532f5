//! Where the graph goes and how to talk to it.
//!
//! [`StoreConfig`] picks the backend: Neo4j over Bolt when a URI is given
//! (flag or `NEO4J_URI`), else the embedded SQLite store under `./kg-data/`.
//! The password is a [`Secret`] (kg-core's, re-exported: one type for the
//! whole workspace): its `Debug` and `Display` print `***`, so a config can
//! be logged whole.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub use kg_core::Secret;

use crate::error::StoreError;

/// Connection settings for a Neo4j (or Bolt-speaking) server. `Debug`
/// prints the URI without any user info and the password as `***`.
#[derive(Clone)]
pub struct Neo4jConfig {
    /// `bolt://`, `bolt+s://`, `bolt+ssc://`, `neo4j://`, `neo4j+s://` or
    /// `neo4j+ssc://` URI with host and port.
    pub uri: String,
    /// User name.
    pub user: String,
    /// Password (never printed).
    pub password: Secret,
    /// Database name (`neo4j` by default).
    pub database: String,
    /// Most connections in the pool (default 50).
    pub max_pool_size: usize,
    /// Rows fetched per PULL when reading (default 1,000).
    pub fetch_size: usize,
    /// Longest wait to open one connection, TLS and handshake included
    /// (default 5 s): a wrong host fails within this.
    pub connect_timeout: Duration,
    /// Longest wait for a pooled connection (default 30 s).
    pub acquire_timeout: Duration,
}

impl fmt::Debug for Neo4jConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Neo4jConfig")
            .field("uri", &self.display_uri())
            .field("user", &self.user)
            .field("password", &self.password)
            .field("database", &self.database)
            .field("max_pool_size", &self.max_pool_size)
            .field("fetch_size", &self.fetch_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("acquire_timeout", &self.acquire_timeout)
            .finish()
    }
}

impl Neo4jConfig {
    /// Settings with defaults for everything but the URI and credentials.
    pub fn new(uri: impl Into<String>, user: impl Into<String>, password: Secret) -> Self {
        Self {
            uri: uri.into(),
            user: user.into(),
            password,
            database: "neo4j".into(),
            max_pool_size: 50,
            fetch_size: 1_000,
            connect_timeout: Duration::from_secs(5),
            acquire_timeout: Duration::from_secs(30),
        }
    }

    /// Reads `NEO4J_URI`, `NEO4J_USER` (default `neo4j`), `NEO4J_PASSWORD`
    /// and `NEO4J_DATABASE` (default `neo4j`); `None` when `NEO4J_URI` is
    /// unset or empty.
    pub fn from_env() -> Option<Self> {
        let uri = std::env::var("NEO4J_URI").ok().filter(|u| !u.is_empty())?;
        let user = std::env::var("NEO4J_USER").unwrap_or_else(|_| "neo4j".into());
        let password = Secret::new(std::env::var("NEO4J_PASSWORD").unwrap_or_default());
        let mut cfg = Self::new(uri, user, password);
        if let Ok(db) = std::env::var("NEO4J_DATABASE") {
            if !db.is_empty() {
                cfg.database = db;
            }
        }
        Some(cfg)
    }

    /// The URI with any `user:password@` part removed, fit for messages.
    pub fn display_uri(&self) -> String {
        redact_uri(&self.uri)
    }

    /// Checks the scheme and the numbers before anything connects.
    pub fn validate(&self) -> Result<(), StoreError> {
        const SCHEMES: &[&str] = &[
            "bolt://",
            "bolt+s://",
            "bolt+ssc://",
            "neo4j://",
            "neo4j+s://",
            "neo4j+ssc://",
        ];
        if !SCHEMES.iter().any(|s| self.uri.starts_with(s)) {
            return Err(StoreError::Config(format!(
                "URI {} must start with one of {}",
                self.display_uri(),
                SCHEMES.join(", ")
            )));
        }
        if self.max_pool_size == 0 || self.fetch_size == 0 {
            return Err(StoreError::Config(
                "max pool size and fetch size must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// Removes `user:password@` from a URI.
pub(crate) fn redact_uri(uri: &str) -> String {
    match (uri.find("://"), uri.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}{}", &uri[..scheme_end + 3], &uri[at + 1..])
        }
        _ => uri.to_owned(),
    }
}

/// Settings of the embedded store.
#[derive(Debug, Clone)]
pub struct EmbeddedConfig {
    /// The directory holding `graph.sqlite` (default `./kg-data`).
    pub data_dir: PathBuf,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("kg-data"),
        }
    }
}

/// Which backend to write to.
#[derive(Debug, Clone)]
pub enum StoreConfig {
    /// A Neo4j (or Bolt-speaking) server.
    Neo4j(Neo4jConfig),
    /// The embedded SQLite store.
    Embedded(EmbeddedConfig),
}

impl StoreConfig {
    /// Neo4j when `NEO4J_URI` is set, else the embedded store in `data_dir`.
    pub fn from_env_or_embedded(data_dir: PathBuf) -> Self {
        match Neo4jConfig::from_env() {
            Some(cfg) => Self::Neo4j(cfg),
            None => Self::Embedded(EmbeddedConfig { data_dir }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_never_printed() {
        let cfg = Neo4jConfig::new("bolt://kg:hunter2@db:7687", "kg", Secret::new("hunter2"));
        let shown = format!("{cfg:?} {}", cfg.password);
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(cfg.display_uri(), "bolt://db:7687");
        assert!(!format!("{:?}", cfg.password).contains("hunter2"));
    }

    #[test]
    fn schemes_are_checked() {
        let ok = Neo4jConfig::new("neo4j+s://db:7687", "u", Secret::new("p"));
        assert!(ok.validate().is_ok());
        let bad = Neo4jConfig::new("http://db:7474", "u", Secret::new("p"));
        assert!(matches!(bad.validate(), Err(StoreError::Config(_))));
    }
}
