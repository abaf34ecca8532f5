//! Private test servers: an ArcadeDB of one test's own, which it may kill.
//!
//! The shared server of `cargo xtask test` serves every test at once; a test
//! of crash recovery (kill the server mid-write, restart it, check nothing
//! was lost or duplicated) needs one nobody else uses. [`PrivateServer`]
//! drives xtask (`$KG_XTASK server start|stop --port N`), so the install,
//! the readiness check (a Bolt handshake plus ArcadeDB's ready endpoint) and
//! the PID file handling are the same code as for the shared server. Its
//! data survives [`PrivateServer::kill`] and [`PrivateServer::restart`], and
//! is deleted when the value is dropped.

use crate::bolt::BoltSettings;
use crate::error::TestkitError;
use crate::paths::cache_dir;
use neo4rs::Graph;
use std::path::PathBuf;
use std::process::Output;

/// The password xtask gives its servers.
const PASSWORD: &str = "kgtestpass";

/// An ArcadeDB Bolt server on a free port, for this test only. Stopped (and
/// its data deleted) on drop.
#[derive(Debug)]
pub struct PrivateServer {
    port: u16,
    xtask: PathBuf,
    settings: BoltSettings,
}

impl PrivateServer {
    /// Starts a fresh server (empty database) on a free port and waits until
    /// it answers.
    pub async fn start() -> Result<Self, TestkitError> {
        let xtask = xtask_binary()?;
        let port = free_port()?;
        let server = Self {
            port,
            xtask,
            settings: BoltSettings {
                uri: format!("bolt://127.0.0.1:{port}"),
                user: "root".into(),
                password: PASSWORD.into(),
                database: Some("neo4j".into()),
            },
        };
        server
            .xtask(&["server", "start", "--port", &port.to_string(), "--fresh"])
            .await?;
        Ok(server)
    }

    /// How to reach it.
    pub fn settings(&self) -> &BoltSettings {
        &self.settings
    }

    /// Its Bolt port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A checked connection to it.
    pub async fn connect(&self) -> Result<Graph, TestkitError> {
        self.settings.connect().await
    }

    /// Its PID file (written by xtask; gone while the server is down).
    pub fn pid_file(&self) -> Option<PathBuf> {
        cache_dir().map(|cache| self.dir_in(cache).join("server.pid"))
    }

    /// Its current process id, if it runs.
    pub fn pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.pid_file()?).ok()?;
        text.trim().parse().ok()
    }

    /// SIGKILL, as in a crash: no shutdown hook runs. Returns once the
    /// process is gone.
    pub async fn kill(&self) -> Result<(), TestkitError> {
        self.xtask(&["server", "stop", "--port", &self.port.to_string(), "--kill"])
            .await
    }

    /// SIGTERM (SIGKILL after a grace period): a clean shutdown.
    pub async fn stop(&self) -> Result<(), TestkitError> {
        self.xtask(&["server", "stop", "--port", &self.port.to_string()])
            .await
    }

    /// Starts it again on the same port with the same data (after
    /// [`Self::kill`] or [`Self::stop`]); waits until it answers.
    pub async fn restart(&self) -> Result<(), TestkitError> {
        self.xtask(&["server", "start", "--port", &self.port.to_string()])
            .await
    }

    fn dir_in(&self, cache: PathBuf) -> PathBuf {
        cache.join(format!("arcadedb-{}", self.port))
    }

    async fn xtask(&self, args: &[&str]) -> Result<(), TestkitError> {
        let output = tokio::process::Command::new(&self.xtask)
            .args(args)
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|source| TestkitError::Io {
                context: format!("cannot run {}", self.xtask.display()),
                source,
            })?;
        check(args, output)
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        let port = self.port.to_string();
        let stopped = std::process::Command::new(&self.xtask)
            .args(["server", "stop", "--port", &port, "--kill"])
            .output();
        match stopped {
            Ok(output) if output.status.success() => {
                if let Some(cache) = cache_dir() {
                    let _ = std::fs::remove_dir_all(self.dir_in(cache));
                }
            }
            Ok(output) => tracing::warn!(
                port = self.port,
                "could not stop the private test server: {}",
                String::from_utf8_lossy(&output.stderr)
            ),
            Err(error) => tracing::warn!(port = self.port, %error, "could not run xtask"),
        }
    }
}

fn check(args: &[&str], output: Output) -> Result<(), TestkitError> {
    if output.status.success() {
        return Ok(());
    }
    Err(TestkitError::Xtask {
        command: args.join(" "),
        status: output.status.to_string(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    })
}

/// `$KG_XTASK`, else `xtask` in the target folder this test binary runs from
/// (`target/<profile>/deps/<test>` → `target/<profile>/xtask`).
fn xtask_binary() -> Result<PathBuf, TestkitError> {
    if let Some(path) = std::env::var_os("KG_XTASK").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().map_err(|source| TestkitError::Io {
        context: "cannot locate the test binary".into(),
        source,
    })?;
    let beside = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("xtask"))
        .unwrap_or_else(|| PathBuf::from("target/debug/xtask"));
    if beside.is_file() {
        Ok(beside)
    } else {
        Err(TestkitError::XtaskMissing { looked_at: beside })
    }
}

fn free_port() -> Result<u16, TestkitError> {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|source| TestkitError::Io {
            context: "cannot find a free port".into(),
            source,
        })
}
