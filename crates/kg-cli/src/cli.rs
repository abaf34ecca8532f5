//! The command line, as in docs/cli.md (extend it, never change it).
//!
//! Every flag that is also a setting is an `Option` here with no default:
//! the default lives in [`crate::config::SETTINGS`], so that a flag the user
//! did not give never hides an environment variable or a `kg.toml` value.
//! [`Cli::flag_layer`] turns the given flags into the top config layer.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Turn documents (PDF, text, Markdown, CSV) into a knowledge graph.
#[derive(Debug, Parser)]
#[command(name = "kg", version, about, long_about = None)]
pub struct Cli {
    /// Settings file (default: ./kg.toml if present).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data dir: embedded store and run state (default: ./kg-data).
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Log format.
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormatArg>,
    /// Serve Prometheus metrics at http://HOST:PORT/metrics while running.
    #[arg(long, global = true, value_name = "HOST:PORT")]
    pub metrics_addr: Option<String>,
    /// When another kg is writing to the same data dir, exit 1 at once
    /// instead of waiting for it.
    #[arg(long, global = true)]
    pub no_wait: bool,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormatArg {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `--embedder`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum EmbedderArg {
    /// An OpenAI-compatible embeddings API.
    Openai,
    /// A local sentence-transformers model folder.
    Local,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Read files into documents and chunks (JSON Lines).
    Ingest {
        /// Files or directories to read.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Output file (default: stdout).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Chunking options.
        #[command(flatten)]
        ingest: IngestArgs,
    },
    /// Extract entities and relations from chunks with an LLM.
    Extract {
        /// Input file (default: stdin).
        #[arg(short, long)]
        input: Option<PathBuf>,
        /// Output file (default: stdout).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// LLM options.
        #[command(flatten)]
        extract: ExtractArgs,
    },
    /// Embed chunks.
    Embed {
        /// Input file (default: stdin).
        #[arg(short, long)]
        input: Option<PathBuf>,
        /// Output file (default: stdout).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Embedder options.
        #[command(flatten)]
        embed: EmbedArgs,
    },
    /// Write records to Neo4j or the embedded store.
    Store {
        /// Input files (default: stdin); any mix of record kinds.
        #[arg(short, long)]
        input: Vec<PathBuf>,
        /// Copy the embedded store (in the data dir) to Neo4j instead.
        #[arg(long, conflicts_with = "input")]
        from_embedded: bool,
        /// Store options.
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Run every stage, streaming, over files or directories.
    Run {
        /// Files or directories to read.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Chunking options.
        #[command(flatten)]
        ingest: IngestArgs,
        /// LLM options.
        #[command(flatten)]
        extract: ExtractArgs,
        /// Embedder options.
        #[command(flatten)]
        embed: EmbedArgs,
        /// Store options.
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Search the graph: the chunks that best match a text, and why.
    Search {
        /// The query text.
        #[arg(required_unless_present = "questions", default_value = "")]
        text: String,
        /// How many chunks (at least 1).
        #[arg(short = 'k', default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..))]
        k: u16,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Retrieval options.
        #[command(flatten)]
        retrieval: RetrievalArgs,
        /// Run every question of a JSON Lines file (`{"id", "question"}`)
        /// and print one JSON line of hits per question.
        #[arg(long, value_name = "FILE", hide = true)]
        questions: Option<PathBuf>,
        /// With --questions: print each question's lists before fusion
        /// (vector, fulltext, graph; ids and scores) and the text of every
        /// chunk in them, for the evaluation's fusion sweep.
        #[arg(long, requires = "questions", hide = true)]
        candidates: bool,
        /// Embedder options (must match the one that embedded the chunks).
        #[command(flatten)]
        embed: EmbedArgs,
        /// Store options.
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Answer a question from the graph with the chat model, citing sources.
    Ask {
        /// The question.
        question: String,
        /// How many chunks to give the model (at least 1).
        #[arg(short = 'k', default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..))]
        k: u16,
        /// Print JSON (question, answer, citations, context, tokens, cost).
        /// (`--dry-run`: print the prompt and its token count; call nothing.)
        #[arg(long)]
        json: bool,
        /// Retrieval options (default mode for ask: graph).
        #[command(flatten)]
        retrieval: RetrievalArgs,
        /// LLM options.
        #[command(flatten)]
        extract: ExtractArgs,
        /// Embedder options (must match the one that embedded the chunks).
        #[command(flatten)]
        embed: EmbedArgs,
        /// Store options.
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Merge entities of one type whose names are spellings of one entity
    /// (over the whole graph).
    Resolve {
        /// Print the merge plan (groups and scores) and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Resolution options.
        #[command(flatten)]
        resolve: ResolveArgs,
        /// Store options.
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Remove documents from the graph by source path (files, or every
    /// document under a folder), or by id.
    Delete {
        /// Source files or folders, as given to `kg run`.
        #[arg(required_unless_present = "document_id")]
        paths: Vec<PathBuf>,
        /// Document ids (as `kg store` and the graph know them).
        #[arg(long, value_name = "ID")]
        document_id: Vec<String>,
        /// Print what would go and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Store options.
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Remove the documents under these folders whose source file no
    /// longer exists.
    Prune {
        /// Folders (or files) to check.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Print what would go and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Store options.
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Work with the extraction schema.
    Schema {
        /// What to do.
        #[command(subcommand)]
        action: SchemaAction,
    },
    /// Print the effective settings (secrets masked) and where each came
    /// from, and the extraction schema.
    Config {
        /// Check and show this extraction schema file instead of kg.toml's.
        #[arg(long, value_name = "FILE")]
        schema: Option<PathBuf>,
    },
}

/// `kg schema ...`.
#[derive(Debug, Subcommand)]
pub enum SchemaAction {
    /// Extract a sample of the chunks with the open schema and print a
    /// proposed `[extract.schema]` block, with how often each type was seen.
    Suggest {
        /// Files or directories to sample.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Chunks to send to the LLM (the same ones on every run).
        #[arg(long, value_name = "N", default_value_t = 20,
              value_parser = clap::value_parser!(u32).range(1..=10_000))]
        sample: u32,
        /// Keep a type when it was seen in at least this many sampled chunks.
        #[arg(long, value_name = "N", default_value_t = 2)]
        min_chunks: u64,
        /// Chunking options.
        #[command(flatten)]
        ingest: IngestArgs,
        /// LLM options (`--dry-run`: the sample's tokens and cost only).
        #[command(flatten)]
        extract: ExtractArgs,
    },
}

/// Resolution flags.
#[derive(Debug, Clone, Default, Args)]
pub struct ResolveArgs {
    /// Name score (0..1) at which two entities of one type are one.
    #[arg(long, value_name = "SCORE")]
    pub threshold: Option<f64>,
}

/// Chunking flags.
#[derive(Debug, Clone, Default, Args)]
pub struct IngestArgs {
    /// Chunk size in tokens.
    #[arg(long, value_name = "N")]
    pub chunk_tokens: Option<u64>,
    /// Overlap between consecutive chunks in tokens.
    #[arg(long, value_name = "N")]
    pub chunk_overlap: Option<u64>,
    /// CSV-to-graph mapping (TOML).
    #[arg(long, value_name = "FILE")]
    pub csv_mapping: Option<PathBuf>,
}

/// LLM flags.
#[derive(Debug, Clone, Default, Args)]
pub struct ExtractArgs {
    /// OpenAI-compatible API base URL (Ollama, vLLM, llama.cpp, OpenAI...).
    #[arg(long, value_name = "URL")]
    pub llm_base_url: Option<String>,
    /// Chat model.
    #[arg(long, value_name = "NAME")]
    pub model: Option<String>,
    /// LLM requests in flight.
    #[arg(long, value_name = "N")]
    pub concurrency: Option<u64>,
    /// Requests per minute.
    #[arg(long, value_name = "N")]
    pub rpm: Option<u64>,
    /// Tokens per minute.
    #[arg(long, value_name = "N")]
    pub tpm: Option<u64>,
    /// Extraction schema file (TOML; replaces kg.toml's [extract.schema]).
    #[arg(long, value_name = "FILE")]
    pub schema: Option<PathBuf>,
    /// Estimate tokens and cost, call nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Retrieval modes of `kg search` and `kg ask`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeArg {
    /// Cosine over chunk vectors.
    Vector,
    /// BM25 over chunk text.
    Fulltext,
    /// Vector and fulltext fused (sum of min-max normalised scores).
    Hybrid,
    /// Hybrid plus the chunks of the question's entities and their
    /// neighbours.
    Graph,
}

impl From<ModeArg> for kg_query::Mode {
    fn from(m: ModeArg) -> Self {
        match m {
            ModeArg::Vector => kg_query::Mode::Vector,
            ModeArg::Fulltext => kg_query::Mode::Fulltext,
            ModeArg::Hybrid => kg_query::Mode::Hybrid,
            ModeArg::Graph => kg_query::Mode::Graph,
        }
    }
}

/// Retrieval flags.
#[derive(Debug, Clone, Default, Args)]
pub struct RetrievalArgs {
    /// Retrieval mode (search: hybrid; ask: graph).
    #[arg(long, value_enum)]
    pub mode: Option<ModeArg>,
    /// Graph mode: relationships to follow from an entity (0, 1 or 2).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(0..=2))]
    pub hops: Option<u8>,
    /// Graph mode: neighbours followed per entity.
    #[arg(long, value_name = "N")]
    pub max_neighbours: Option<usize>,
    /// Graph mode: chunks taken per entity.
    #[arg(long, value_name = "N")]
    pub per_entity: Option<usize>,
}

impl RetrievalArgs {
    /// kg-query's options, from these flags over the defaults.
    pub fn options(&self, default_mode: kg_query::Mode, k: usize) -> kg_query::SearchOptions {
        let d = kg_query::SearchOptions::default();
        kg_query::SearchOptions {
            mode: self.mode.map_or(default_mode, Into::into),
            k,
            hops: self.hops.unwrap_or(d.hops),
            max_neighbours: self.max_neighbours.unwrap_or(d.max_neighbours),
            per_entity: self.per_entity.unwrap_or(d.per_entity),
            ..d
        }
    }
}

/// Embedder flags.
#[derive(Debug, Clone, Default, Args)]
pub struct EmbedArgs {
    /// Which embedder.
    #[arg(long, value_enum)]
    pub embedder: Option<EmbedderArg>,
    /// Model name (openai) or model folder (local).
    #[arg(long, value_name = "NAME_OR_DIR")]
    pub embed_model: Option<String>,
    /// Chunks per embedding batch.
    #[arg(long, value_name = "N")]
    pub embed_batch: Option<u64>,
}

/// Store flags.
#[derive(Debug, Clone, Default, Args)]
pub struct StoreArgs {
    /// Bolt URI of Neo4j (default: the embedded store in the data dir).
    #[arg(long, value_name = "URI")]
    pub neo4j_uri: Option<String>,
    /// Neo4j database.
    #[arg(long, value_name = "NAME")]
    pub database: Option<String>,
}

impl Cli {
    /// The flags given, as the top config layer (key → value).
    pub fn flag_layer(&self) -> BTreeMap<&'static str, String> {
        let mut m = BTreeMap::new();
        let mut put = |k: &'static str, v: Option<String>| {
            if let Some(v) = v {
                m.insert(k, v);
            }
        };
        put(
            "data_dir",
            self.data_dir.as_ref().map(|p| p.display().to_string()),
        );
        put(
            "log_format",
            self.log_format.map(|f| match f {
                LogFormatArg::Text => "text".into(),
                LogFormatArg::Json => "json".into(),
            }),
        );
        put("metrics_addr", self.metrics_addr.clone());
        let (ingest, extract, embed, store) = match &self.command {
            Command::Ingest { ingest, .. } => (Some(ingest), None, None, None),
            Command::Extract { extract, .. } => (None, Some(extract), None, None),
            Command::Embed { embed, .. } => (None, None, Some(embed), None),
            Command::Store { store, .. } => (None, None, None, Some(store)),
            Command::Run {
                ingest,
                extract,
                embed,
                store,
                ..
            } => (Some(ingest), Some(extract), Some(embed), Some(store)),
            Command::Search { embed, store, .. } => (None, None, Some(embed), Some(store)),
            Command::Ask {
                extract,
                embed,
                store,
                ..
            } => (None, Some(extract), Some(embed), Some(store)),
            Command::Resolve { store, resolve, .. } => {
                put(
                    "resolve.threshold",
                    resolve.threshold.map(|t| t.to_string()),
                );
                (None, None, None, Some(store))
            }
            Command::Delete { store, .. } | Command::Prune { store, .. } => {
                (None, None, None, Some(store))
            }
            Command::Schema {
                action:
                    SchemaAction::Suggest {
                        ingest, extract, ..
                    },
            } => (Some(ingest), Some(extract), None, None),
            Command::Config { schema } => {
                put(
                    "extract.schema_file",
                    schema.as_ref().map(|p| p.display().to_string()),
                );
                (None, None, None, None)
            }
        };
        if let Some(a) = ingest {
            put("ingest.chunk_tokens", a.chunk_tokens.map(|n| n.to_string()));
            put(
                "ingest.chunk_overlap",
                a.chunk_overlap.map(|n| n.to_string()),
            );
            put(
                "ingest.csv_mapping",
                a.csv_mapping.as_ref().map(|p| p.display().to_string()),
            );
        }
        if let Some(a) = extract {
            put("llm.base_url", a.llm_base_url.clone());
            put("llm.model", a.model.clone());
            put("llm.concurrency", a.concurrency.map(|n| n.to_string()));
            put("llm.rpm", a.rpm.map(|n| n.to_string()));
            put("llm.tpm", a.tpm.map(|n| n.to_string()));
            put(
                "extract.schema_file",
                a.schema.as_ref().map(|p| p.display().to_string()),
            );
        }
        if let Some(a) = embed {
            put(
                "embed.embedder",
                a.embedder.map(|e| match e {
                    EmbedderArg::Openai => "openai".into(),
                    EmbedderArg::Local => "local".into(),
                }),
            );
            put("embed.model", a.embed_model.clone());
            put("embed.batch", a.embed_batch.map(|n| n.to_string()));
        }
        if let Some(a) = store {
            put("neo4j.uri", a.neo4j_uri.clone());
            put("neo4j.database", a.database.clone());
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    /// `kg search -k 0` is a usage error (exit 2) naming the flag, not a
    /// search that finds nothing.
    #[test]
    fn search_k_zero_is_refused_naming_the_flag() {
        let err = Cli::try_parse_from(["kg", "search", "who", "-k", "0"])
            .err()
            .map(|e| (e.exit_code(), e.to_string()));
        let (code, text) = err.expect("-k 0 was accepted");
        assert_eq!(code, 2);
        assert!(text.contains("-k"), "{text}");
        assert!(Cli::try_parse_from(["kg", "search", "who", "-k", "1"]).is_ok());
    }

    #[test]
    fn run_flags_become_the_flag_layer() {
        let cli = Cli::try_parse_from([
            "kg",
            "run",
            "docs/",
            "--model",
            "llama3",
            "--concurrency",
            "8",
            "--embedder",
            "local",
            "--neo4j-uri",
            "bolt://x:7687",
            "--data-dir",
            "/tmp/d",
            "--chunk-tokens",
            "256",
        ])
        .unwrap();
        let m = cli.flag_layer();
        assert_eq!(m["llm.model"], "llama3");
        assert_eq!(m["llm.concurrency"], "8");
        assert_eq!(m["embed.embedder"], "local");
        assert_eq!(m["neo4j.uri"], "bolt://x:7687");
        assert_eq!(m["data_dir"], "/tmp/d");
        assert_eq!(m["ingest.chunk_tokens"], "256");
        assert!(!m.contains_key("llm.rpm"));
    }

    #[test]
    fn usage_errors_are_clap_errors() {
        assert!(Cli::try_parse_from(["kg", "ingest"]).is_err());
        assert!(Cli::try_parse_from(["kg", "store", "--from-embedded", "-i", "x"]).is_err());
        assert!(Cli::try_parse_from(["kg", "embed", "--embedder", "word2vec"]).is_err());
        assert!(Cli::try_parse_from(["kg", "delete"]).is_err());
        assert!(Cli::try_parse_from(["kg", "delete", "--document-id", "abc"]).is_ok());
        assert!(Cli::try_parse_from(["kg", "prune"]).is_err());
        let cli =
            Cli::try_parse_from(["kg", "resolve", "--dry-run", "--threshold", "0.9"]).unwrap();
        assert_eq!(cli.flag_layer()["resolve.threshold"], "0.9");
    }
}
