//! `cargo xtask`: kg's developer workflow as Rust code.
//!
//! ```text
//! cargo xtask server start|stop|status [--port N] ...   the local Bolt test server
//! cargo xtask ci        fmt --check, clippy -D warnings, then `test`
//! cargo xtask test      every test (nextest + doctests) against a fresh server
//! cargo xtask it        only the Bolt-backed integration tests
//! cargo xtask bench     criterion benches, then a table of their `kg-bench:` lines
//! cargo xtask fake-llm [ARGS...]   the fake OpenAI-compatible server
//! cargo xtask demo      kg run on examples/, then kg search (the README's main job)
//! ```
//!
//! Dependencies stay at std + anyhow: argument parsing for a handful of flags
//! and a Bolt handshake are a few lines each. `eval` alone scores with
//! kg-query, behind the `eval` feature (see Cargo.toml).

mod bolt;
#[cfg(feature = "eval")]
mod eval;
mod install;
mod server;
mod tasks;

use anyhow::{bail, Context, Result};
use server::{Detach, ServerConfig, Status, StopMode};
use std::time::Duration;

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  server start [--port N] [--http-port N] [--password P] [--timeout SECS] [--fresh]
               start ArcadeDB (Bolt) on 127.0.0.1:N (default 7687), detached;
               installs it under $KG_CACHE_DIR (default ~/.cache/kg) on first use
  server stop [--port N] [--kill]
               SIGTERM (SIGKILL after 20 s) the server started on that port;
               --kill sends SIGKILL at once (crash tests)
  server status [--port N]
  server env [--port N]   print the export line for that server
  install      install the test server and the embedding model, print their paths
  ci [--port N]     cargo fmt --check, clippy -D warnings, then `test`
  test [--port N]   all tests (nextest, doctests) with a fresh server
  it [--port N]     Bolt-backed integration tests only (names containing bolt or neo4j)
  bench [--port N]  cargo bench --workspace, then the kg-bench: summary
  fake-llm [ARGS...]  cargo run --release -p kg-fake-llm -- ARGS
  demo         kg run on examples/ (embedded store, local model), then kg search
";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(error) = run(&args) {
        eprintln!("xtask: error: {error:#}");
        std::process::exit(1);
    }
}

fn run(args: &[String]) -> Result<()> {
    let Some((command, rest)) = args.split_first() else {
        print!("{USAGE}");
        bail!("no command given");
    };
    match command.as_str() {
        "server" => server_command(rest),
        "install" => {
            expect_no_flags(&Flags::parse(rest)?)?;
            let installation = install::ensure_installed(&install::cache_dir()?)?;
            println!("arcadedb: {}", installation.arcadedb_home.display());
            println!("model:    {}", installation.model_dir.display());
            Ok(())
        }
        "ci" => tasks::ci(Flags::parse(rest)?.take_port()?),
        "test" => tasks::test(Flags::parse(rest)?.take_port()?),
        "it" => tasks::integration(Flags::parse(rest)?.take_port()?),
        "bench" => tasks::bench(Flags::parse(rest)?.take_port()?),
        "fake-llm" => tasks::fake_llm(rest),
        #[cfg(feature = "eval")]
        "eval" => eval::eval(rest),
        #[cfg(not(feature = "eval"))]
        "eval" => tasks::eval_with_feature(rest),
        "demo" => {
            expect_no_flags(&Flags::parse(rest)?)?;
            tasks::demo()
        }
        "help" | "-h" | "--help" => {
            print!("{USAGE}");
            Ok(())
        }
        other => {
            eprint!("{USAGE}");
            bail!("unknown command {other:?}")
        }
    }
}

fn server_command(args: &[String]) -> Result<()> {
    let Some((action, rest)) = args.split_first() else {
        bail!("usage: cargo xtask server start|stop|status|env [--port N]");
    };
    let mut flags = Flags::parse(rest)?;
    let cache = install::cache_dir()?;
    let mut config = ServerConfig::new(&cache, flags.take_port()?.unwrap_or(server::DEFAULT_PORT));
    match action.as_str() {
        "start" => {
            if let Some(port) = flags.take_value("--http-port")? {
                config.http_port = Some(parse_port(&port)?);
            }
            if let Some(password) = flags.take_value("--password")? {
                config.password = password;
            }
            if let Some(timeout) = flags.take_value("--timeout")? {
                let seconds: u64 = timeout
                    .parse()
                    .with_context(|| format!("--timeout {timeout}"))?;
                config.start_timeout = Duration::from_secs(seconds);
            }
            config.fresh = flags.take_switch("--fresh");
            expect_no_flags(&flags)?;
            let running = server::start(&config, Detach::Session)?;
            if let Some(pid) = running.pid {
                println!(
                    "xtask: pid file {} (pid {pid})",
                    config.pid_file().display()
                );
            }
            println!("{}", config.export_line());
            // The child handle is dropped without killing: it runs on, detached.
            Ok(())
        }
        "stop" => {
            let mode = if flags.take_switch("--kill") {
                StopMode::Kill
            } else {
                StopMode::Graceful
            };
            expect_no_flags(&flags)?;
            server::stop(&config, mode).map(|_| ())
        }
        "status" => {
            expect_no_flags(&flags)?;
            match server::status(&config) {
                Status::Running { pid, version } => {
                    println!(
                        "running: pid {pid}, Bolt v{version} on {}, pid file {}, log {}",
                        config.uri(),
                        config.pid_file().display(),
                        config.log_file().display()
                    );
                    Ok(())
                }
                Status::NotAnswering { pid, reason } => bail!(
                    "pid {pid} runs but Bolt does not answer on {} ({reason}); log {}",
                    config.uri(),
                    config.log_file().display()
                ),
                Status::Foreign { version } => {
                    println!(
                        "a Bolt v{version} server answers on {}, not started by cargo xtask \
                         (no live pid in {})",
                        config.uri(),
                        config.pid_file().display()
                    );
                    Ok(())
                }
                Status::Stopped => bail!("no server on {}", config.uri()),
            }
        }
        "env" => {
            expect_no_flags(&flags)?;
            println!("{}", config.export_line());
            Ok(())
        }
        other => bail!("unknown server action {other:?}: start, stop, status or env"),
    }
}

/// `--name value` flags and `--switch`es, consumed by name.
#[derive(Debug, Default)]
struct Flags {
    pairs: Vec<(String, Option<String>)>,
}

impl Flags {
    fn parse(args: &[String]) -> Result<Self> {
        let mut pairs = Vec::new();
        let mut iter = args.iter().peekable();
        while let Some(arg) = iter.next() {
            if !arg.starts_with("--") {
                bail!("unexpected argument {arg:?}");
            }
            if let Some((name, value)) = arg.split_once('=') {
                pairs.push((name.to_owned(), Some(value.to_owned())));
            } else if iter.peek().is_some_and(|next| !next.starts_with("--")) {
                pairs.push((arg.clone(), iter.next().cloned()));
            } else {
                pairs.push((arg.clone(), None));
            }
        }
        Ok(Self { pairs })
    }

    fn take_value(&mut self, name: &str) -> Result<Option<String>> {
        match self.pairs.iter().position(|(n, _)| n == name) {
            Some(index) => match self.pairs.remove(index).1 {
                Some(value) => Ok(Some(value)),
                None => bail!("{name} needs a value"),
            },
            None => Ok(None),
        }
    }

    fn take_switch(&mut self, name: &str) -> bool {
        match self
            .pairs
            .iter()
            .position(|(n, v)| n == name && v.is_none())
        {
            Some(index) => {
                self.pairs.remove(index);
                true
            }
            None => false,
        }
    }

    fn take_port(&mut self) -> Result<Option<u16>> {
        self.take_value("--port")?
            .map(|p| parse_port(&p))
            .transpose()
    }
}

fn expect_no_flags(flags: &Flags) -> Result<()> {
    match flags.pairs.first() {
        Some((name, _)) => bail!("unknown flag {name}"),
        None => Ok(()),
    }
}

fn parse_port(text: &str) -> Result<u16> {
    match text.parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => bail!("not a TCP port: {text:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flags_take_values_in_both_spellings_and_switches() {
        let mut flags =
            Flags::parse(&args(&["--port", "7700", "--fresh", "--password=a b"])).unwrap();
        assert_eq!(flags.take_port().unwrap(), Some(7700));
        assert_eq!(
            flags.take_value("--password").unwrap().as_deref(),
            Some("a b")
        );
        assert!(flags.take_switch("--fresh"));
        assert!(!flags.take_switch("--kill"));
        assert!(expect_no_flags(&flags).is_ok());
    }

    #[test]
    fn unknown_flags_and_bad_ports_are_errors() {
        let flags = Flags::parse(&args(&["--prot", "7700"])).unwrap();
        assert!(expect_no_flags(&flags).is_err());
        assert!(Flags::parse(&args(&["start"])).is_err());
        assert!(parse_port("0").is_err());
        assert!(parse_port("65536").is_err());
        assert!(Flags::parse(&args(&["--port"]))
            .unwrap()
            .take_port()
            .is_err());
    }
}
