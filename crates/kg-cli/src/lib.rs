//! kg-cli: the `kg` binary's parts, as a library so that they can be tested
//! one by one (the binary itself is `src/main.rs`, a thin shell over
//! [`main_with`]).
//!
//! `kg ingest|extract|embed|store` run one stage over JSON Lines;
//! `kg run` streams every stage in one process through bounded channels
//! ([`pipeline`]); `kg search` queries the result; `kg config` shows the
//! effective settings. The command-line contract is docs/cli.md.
//!
//! What this crate must never do: put a secret in a log line, an error or
//! `kg config`'s output; hold the corpus in memory (every channel is
//! bounded); call the LLM for a chunk whose extraction is cached; pretend a
//! stage ran when it did not (no LLM configured means extraction is skipped
//! and the summary says so).
//!
//! ```
//! use kg_cli::config::{resolve, Layers, Settings};
//! let mut layers = Layers::default();
//! layers.flags.insert("llm.model", "llama3.1".into());
//! layers.read_env(|var| (var == "KG_MODEL").then(|| "ignored: the flag wins".into()));
//! let settings = Settings::from_resolved(&resolve(&layers)).unwrap();
//! assert_eq!(settings.model, "llama3.1");
//! ```

#![warn(missing_docs)]

pub mod build;
pub mod cli;
pub mod commands;
pub mod config;
pub mod descriptions;
pub mod entity_vectors;
pub mod jsonl_io;
pub mod lock;
pub mod logging;
pub mod metrics_export;
pub mod pipeline;
pub mod query;
pub mod resolution;
pub mod state;
pub mod stats;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use tokio_util::sync::CancellationToken;

use crate::cli::{Cli, Command};
use crate::commands::{App, Exit};
use crate::config::{resolve, Layers, Settings};

/// Runs `kg` with these arguments and environment; returns the exit code.
pub fn main_with(
    args: impl IntoIterator<Item = std::ffi::OsString>,
    env: impl Fn(&str) -> Option<String>,
) -> ExitCode {
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            // --help and --version are "errors" that exit 0.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                Exit::Usage.code()
            } else {
                0
            });
        }
    };
    let mut layers = Layers {
        flags: cli.flag_layer(),
        ..Layers::default()
    };
    layers.read_env(env);
    if let Err(e) = layers.read_file(cli.config.as_deref()) {
        eprintln!("kg: {e}");
        return ExitCode::from(Exit::Usage.code());
    }
    let resolved = resolve(&layers);
    let settings = match Settings::from_resolved(&resolved).and_then(|mut s| {
        s.load_schema(&layers)?;
        Ok(s)
    }) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kg: {e}");
            return ExitCode::from(Exit::Usage.code());
        }
    };
    if let Command::Config { .. } = cli.command {
        print!(
            "{}",
            config::render(&resolved, layers.file_path.as_deref(), &settings)
        );
        return ExitCode::SUCCESS;
    }
    let logging = logging::init(settings.log_format, &settings.log_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kg: cannot start the async runtime: {e}");
            return ExitCode::from(Exit::Failed.code());
        }
    };
    let progress = logging.progress.clone();
    let code = runtime.block_on(async move {
        let cancel = CancellationToken::new();
        spawn_ctrl_c(cancel.clone());
        progress.spawn_reporter(std::time::Duration::from_secs(settings.progress_secs));
        if let Some(addr) = settings.metrics_addr {
            if let Err(e) = metrics_export::serve(addr) {
                eprintln!("kg: {e}");
                return Exit::Failed;
            }
            tracing::info!(%addr, "serving Prometheus metrics at http://{addr}/metrics");
        }
        let mut app = App {
            settings,
            stats: Arc::new(stats::RunStats::default()),
            progress,
            cancel,
            started: Instant::now(),
            notes: Vec::new(),
            wait_for_locks: !cli.no_wait,
        };
        let result = match cli.command {
            Command::Ingest { paths, output, .. } => {
                commands::ingest(&mut app, paths, output).await
            }
            Command::Extract {
                input,
                output,
                extract,
            } => commands::extract(&mut app, input, output, extract.dry_run).await,
            Command::Embed { input, output, .. } => commands::embed(&mut app, input, output).await,
            Command::Store {
                input,
                from_embedded,
                ..
            } => commands::store(&mut app, input, from_embedded).await,
            Command::Run { paths, extract, .. } => {
                commands::run(&mut app, paths, extract.dry_run).await
            }
            Command::Search {
                text,
                k,
                json,
                retrieval,
                questions,
                candidates,
                ..
            } => {
                let args = commands::SearchArgs {
                    options: retrieval.options(kg_query::Mode::Hybrid, usize::from(k)),
                    json,
                    questions,
                    candidates,
                };
                commands::search(&mut app, &text, args).await
            }
            Command::Ask {
                question,
                k,
                json,
                retrieval,
                extract,
                ..
            } => {
                let options = retrieval.options(kg_query::Mode::Graph, usize::from(k));
                commands::ask(&mut app, &question, options, json, extract.dry_run).await
            }
            Command::Resolve { dry_run, .. } => commands::resolve(&mut app, dry_run).await,
            Command::Delete {
                paths,
                document_id,
                dry_run,
                ..
            } => commands::delete(&mut app, paths, document_id, dry_run).await,
            Command::Prune { paths, dry_run, .. } => {
                commands::prune(&mut app, paths, dry_run).await
            }
            Command::Schema {
                action:
                    cli::SchemaAction::Suggest {
                        paths,
                        sample,
                        min_chunks,
                        extract,
                        ..
                    },
            } => {
                commands::schema_suggest(&mut app, paths, sample, min_chunks, extract.dry_run).await
            }
            Command::Config { .. } => Ok(Exit::Done),
        };
        match result {
            Ok(exit) => exit,
            Err(e) => {
                app.progress.clear();
                let usage = e
                    .downcast_ref::<pipeline::StageError>()
                    .is_some_and(pipeline::StageError::is_config);
                tracing::error!(error = %format!("{e:#}"), "kg failed");
                eprintln!("kg: error: {e:#}");
                if usage {
                    Exit::Usage
                } else {
                    Exit::Failed
                }
            }
        }
    });
    // A PDF engine still parsing a file ingest gave up on (Ctrl-C) runs on
    // a blocking thread that cannot be stopped: do not wait for it.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    // Let in-flight log lines out before exiting.
    drop(logging);
    ExitCode::from(code.code())
}

/// First Ctrl-C: finish in-flight work, then exit with the summary. Second:
/// exit at once.
fn spawn_ctrl_c(cancel: CancellationToken) {
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_err() {
            return;
        }
        tracing::warn!("interrupted: finishing in-flight work (Ctrl-C again to abort at once)");
        cancel.cancel();
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("kg: aborted");
            std::process::exit(130);
        }
    });
}
