//! `kg`: the command-line tool. See ../shared/CLI.md for the contract.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Turn documents (PDF, text, Markdown, CSV) into a knowledge graph.
#[derive(Debug, Parser)]
#[command(name = "kg", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Read files into documents and chunks (JSON Lines).
    Ingest {
        /// Files or directories to read.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Output file (default: stdout).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Extract entities and relations from chunks with an LLM.
    Extract {
        /// Input file (default: stdin).
        #[arg(short, long)]
        input: Option<PathBuf>,
        /// Output file (default: stdout).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Embed chunks.
    Embed {
        /// Input file (default: stdin).
        #[arg(short, long)]
        input: Option<PathBuf>,
        /// Output file (default: stdout).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Write records to Neo4j or the embedded store.
    Store {
        /// Input files (default: stdin).
        #[arg(short, long)]
        input: Vec<PathBuf>,
    },
    /// Run every stage, streaming, over files or directories.
    Run {
        /// Files or directories to read.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Search the graph: nearest chunks, their entities and neighbours.
    Search {
        /// The query text.
        text: String,
        /// How many chunks.
        #[arg(short = 'k', default_value_t = 5)]
        k: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    eprintln!("kg: `{:?}` is not implemented yet", cli.command);
    ExitCode::from(1)
}
