//! Settings: flag > environment > `kg.toml` > default.
//!
//! Every setting has one dotted key (`llm.model`), one environment variable
//! and, where it has one, one default. The layers are plain maps from key to
//! text, merged in precedence order and parsed once into [`Settings`]; that
//! keeps the precedence rule in one place ([`resolve`]) and lets `kg config`
//! say where each value came from. The `kg.toml` file uses the same keys,
//! the part before the dot being a table:
//!
//! ```toml
//! data_dir = "kg-data"
//! [llm]
//! model = "gpt-4o-mini"
//! [neo4j]
//! uri = "bolt://localhost:7687"
//! ```
//!
//! Secrets (API key, Neo4j password) are masked whenever settings are
//! printed; [`Settings`] implements `Debug` by hand for the same reason.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// One setting kg knows: its key, environment variable and default.
#[derive(Debug, Clone, Copy)]
pub struct SettingSpec {
    /// Dotted key, as in `kg.toml` (`llm.model`).
    pub key: &'static str,
    /// Environment variable that sets it, if any.
    pub env: Option<&'static str>,
    /// Default value, if any.
    pub default: Option<&'static str>,
    /// Whether the value is a secret (masked when printed).
    pub secret: bool,
    /// One line of help for `kg config`.
    pub help: &'static str,
}

const fn spec(
    key: &'static str,
    env: Option<&'static str>,
    default: Option<&'static str>,
    secret: bool,
    help: &'static str,
) -> SettingSpec {
    SettingSpec {
        key,
        env,
        default,
        secret,
        help,
    }
}

/// Every setting, in the order `kg config` prints them.
pub const SETTINGS: &[SettingSpec] = &[
    spec(
        "data_dir",
        Some("KG_DATA_DIR"),
        Some("kg-data"),
        false,
        "embedded store and run state",
    ),
    spec(
        "log_format",
        Some("KG_LOG_FORMAT"),
        Some("text"),
        false,
        "text or json",
    ),
    spec(
        "log_level",
        Some("KG_LOG"),
        Some("info,pdf_oxide=error,kg_store::writer=warn"),
        false,
        "tracing filter (e.g. debug,kg_store=trace)",
    ),
    spec(
        "progress_secs",
        Some("KG_PROGRESS_SECS"),
        Some("10"),
        false,
        "seconds between progress lines when there are no progress bars",
    ),
    spec(
        "metrics_addr",
        Some("KG_METRICS_ADDR"),
        None,
        false,
        "serve Prometheus /metrics on HOST:PORT",
    ),
    spec(
        "ingest.chunk_tokens",
        Some("KG_CHUNK_TOKENS"),
        Some("512"),
        false,
        "chunk size in tokens",
    ),
    spec(
        "ingest.chunk_overlap",
        Some("KG_CHUNK_OVERLAP"),
        Some("64"),
        false,
        "overlap between chunks in tokens",
    ),
    spec(
        "ingest.csv_mapping",
        Some("KG_CSV_MAPPING"),
        None,
        false,
        "CSV-to-graph mapping file (TOML)",
    ),
    spec(
        "llm.base_url",
        Some("OPENAI_BASE_URL"),
        None,
        false,
        "OpenAI-compatible API base URL",
    ),
    spec("llm.api_key", Some("OPENAI_API_KEY"), None, true, "API key"),
    spec(
        "llm.model",
        Some("KG_MODEL"),
        Some("gpt-4o-mini"),
        false,
        "chat model for extraction",
    ),
    spec(
        "llm.concurrency",
        Some("KG_CONCURRENCY"),
        Some("5"),
        false,
        "LLM requests in flight",
    ),
    spec(
        "extract.schema_file",
        Some("KG_SCHEMA_FILE"),
        None,
        false,
        "extraction schema file (TOML; replaces kg.toml's [extract.schema])",
    ),
    spec(
        "llm.max_completion_tokens",
        Some("KG_MAX_COMPLETION_TOKENS"),
        None,
        false,
        "cap on each answer's tokens (unset: 2 x chunk tokens + 256, within 512..4096)",
    ),
    spec(
        "llm.rpm",
        Some("KG_RPM"),
        None,
        false,
        "requests per minute limit",
    ),
    spec(
        "llm.tpm",
        Some("KG_TPM"),
        None,
        false,
        "tokens per minute limit",
    ),
    spec(
        "llm.input_price_per_mtok",
        Some("KG_INPUT_PRICE_PER_MTOK"),
        Some("0.15"),
        false,
        "USD per million prompt tokens (cost estimates)",
    ),
    spec(
        "llm.output_price_per_mtok",
        Some("KG_OUTPUT_PRICE_PER_MTOK"),
        Some("0.60"),
        false,
        "USD per million completion tokens (cost estimates)",
    ),
    spec(
        "embed.embedder",
        Some("KG_EMBEDDER"),
        Some("local"),
        false,
        "openai or local",
    ),
    spec(
        "embed.model",
        Some("KG_EMBED_MODEL"),
        None,
        false,
        "embedding model name (openai) or folder (local)",
    ),
    spec(
        "embed.batch",
        Some("KG_EMBED_BATCH"),
        Some("32"),
        false,
        "chunks per embedding batch",
    ),
    spec(
        "embed.concurrency",
        Some("KG_EMBED_CONCURRENCY"),
        Some("4"),
        false,
        "embedding requests in flight (API embedder)",
    ),
    spec(
        "embed.base_url",
        Some("KG_EMBED_BASE_URL"),
        None,
        false,
        "embeddings API base URL (default: llm.base_url)",
    ),
    spec(
        "neo4j.uri",
        Some("NEO4J_URI"),
        None,
        false,
        "Bolt URI; unset = embedded store in data_dir",
    ),
    spec(
        "neo4j.user",
        Some("NEO4J_USER"),
        Some("neo4j"),
        false,
        "Neo4j user",
    ),
    spec(
        "neo4j.password",
        Some("NEO4J_PASSWORD"),
        None,
        true,
        "Neo4j password",
    ),
    spec(
        "neo4j.database",
        Some("NEO4J_DATABASE"),
        None,
        false,
        "Neo4j database (default: the server's)",
    ),
    spec(
        "resolve.mode",
        Some("KG_RESOLVE_MODE"),
        Some("fuzzy"),
        false,
        "entity resolution after a run: off, exact (names' keys only) or fuzzy",
    ),
    spec(
        "resolve.threshold",
        Some("KG_RESOLVE_THRESHOLD"),
        Some("0.85"),
        false,
        "name score (0..1) at which two entities of one type are one",
    ),
    spec(
        "resolve.window",
        Some("KG_RESOLVE_WINDOW"),
        Some("30"),
        false,
        "entities each one is compared with in each sorted blocking key",
    ),
    spec(
        "descriptions.max_distinct",
        Some("KG_DESCRIPTIONS_MAX_DISTINCT"),
        Some("4"),
        false,
        "distinct descriptions an entity or relation keeps as they are; past it the LLM \
         summarises them into one (0: never)",
    ),
];

/// Settings that are paths: relative ones in `kg.toml` are relative to it.
const PATH_KEYS: &[&str] = &["data_dir", "ingest.csv_mapping", "extract.schema_file"];

/// Where a setting's effective value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A command-line flag.
    Flag,
    /// An environment variable.
    Env,
    /// The `kg.toml` file.
    File,
    /// kg's default.
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::Flag => "flag",
            Source::Env => "env",
            Source::File => "kg.toml",
            Source::Default => "default",
        })
    }
}

/// A configuration that cannot be used; exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        error: std::io::Error,
    },
    /// The config file is not valid TOML.
    #[error("config file {path} is not valid TOML: {error}")]
    Toml {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        error: Box<toml::de::Error>,
    },
    /// A key in the config file kg does not know.
    #[error("config file {path}: unknown setting `{key}` (see `kg config` for the list)")]
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
    },
    /// An extraction schema that cannot be used.
    #[error("extraction schema in {origin}: {error}")]
    Schema {
        /// The file (and table) it was read from.
        origin: String,
        /// What is wrong, and on which line.
        #[source]
        error: kg_extract::SchemaFileError,
    },
    /// A value that does not parse.
    #[error("setting `{key}` (from {origin}) = {value:?}: {expected}")]
    BadValue {
        /// The setting.
        key: &'static str,
        /// Where the value came from.
        origin: Source,
        /// The value, or `***` for secrets.
        value: String,
        /// What was expected.
        expected: &'static str,
    },
}

/// The raw layers before merging: key → text.
#[derive(Debug, Default, Clone)]
pub struct Layers {
    /// Values from command-line flags.
    pub flags: BTreeMap<&'static str, String>,
    /// Values from the environment.
    pub env: BTreeMap<&'static str, String>,
    /// Values from `kg.toml`.
    pub file: BTreeMap<&'static str, String>,
    /// The config file read, if any.
    pub file_path: Option<PathBuf>,
    /// The `[extract.schema]` table of the config file, if it has one.
    pub file_schema: Option<kg_extract::ExtractSchema>,
}

impl Layers {
    /// Reads the environment through `lookup` (so tests need not touch the
    /// process environment). Empty variables count as unset.
    pub fn read_env(&mut self, lookup: impl Fn(&str) -> Option<String>) {
        for s in SETTINGS {
            if let Some(var) = s.env {
                if let Some(v) = lookup(var).filter(|v| !v.is_empty()) {
                    self.env.insert(s.key, v);
                }
            }
        }
    }

    /// Reads `path`, or `./kg.toml` if `path` is `None` and it exists.
    pub fn read_file(&mut self, path: Option<&Path>) -> Result<(), ConfigError> {
        let path = match path {
            Some(p) => p.to_path_buf(),
            None => {
                let p = PathBuf::from("kg.toml");
                if !p.is_file() {
                    return Ok(());
                }
                p
            }
        };
        let text = std::fs::read_to_string(&path).map_err(|error| ConfigError::Read {
            path: path.clone(),
            error,
        })?;
        self.file = parse_toml(&path, &text)?;
        self.file_schema = kg_extract::ExtractSchema::from_config_toml(&text).map_err(|error| {
            ConfigError::Schema {
                origin: format!("{} [extract.schema]", path.display()),
                error,
            }
        })?;
        // Paths in the file are relative to the file, so that
        // `--config examples/kg.toml` works from any directory.
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        for key in PATH_KEYS {
            if let Some(v) = self.file.get_mut(key) {
                let p = Path::new(v.as_str());
                if p.is_relative() {
                    *v = base.join(p).display().to_string();
                }
            }
        }
        self.file_path = Some(path);
        Ok(())
    }
}

fn parse_toml(path: &Path, text: &str) -> Result<BTreeMap<&'static str, String>, ConfigError> {
    let table: toml::Table = text.parse().map_err(|error| ConfigError::Toml {
        path: path.to_path_buf(),
        error: Box::new(error),
    })?;
    let mut flat = Vec::new();
    flatten("", &toml::Value::Table(table), &mut flat);
    let mut out = BTreeMap::new();
    for (key, value) in flat {
        let spec =
            SETTINGS
                .iter()
                .find(|s| s.key == key)
                .ok_or_else(|| ConfigError::UnknownKey {
                    path: path.to_path_buf(),
                    key: key.clone(),
                })?;
        out.insert(spec.key, value);
    }
    Ok(out)
}

/// The `kg.toml` table that holds the extraction schema.
const SCHEMA_TABLE: &str = "extract.schema";

fn flatten(prefix: &str, value: &toml::Value, out: &mut Vec<(String, String)>) {
    match value {
        // The schema is structured; ExtractSchema reads it (with lines).
        toml::Value::Table(_) if prefix == SCHEMA_TABLE => {}
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        toml::Value::String(s) => out.push((prefix.to_string(), s.clone())),
        other => out.push((prefix.to_string(), other.to_string())),
    }
}

/// One effective setting: value and where it came from.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The setting.
    pub spec: SettingSpec,
    /// Its value, if any layer set it.
    pub value: Option<String>,
    /// The layer that won.
    pub source: Source,
}

/// Merges the layers: flag > environment > kg.toml > default.
pub fn resolve(layers: &Layers) -> Vec<Resolved> {
    SETTINGS
        .iter()
        .map(|spec| {
            let (value, source) = if let Some(v) = layers.flags.get(spec.key) {
                (Some(v.clone()), Source::Flag)
            } else if let Some(v) = layers.env.get(spec.key) {
                (Some(v.clone()), Source::Env)
            } else if let Some(v) = layers.file.get(spec.key) {
                (Some(v.clone()), Source::File)
            } else {
                (spec.default.map(str::to_string), Source::Default)
            };
            Resolved {
                spec: *spec,
                value,
                source,
            }
        })
        .collect()
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Which embedder to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbedderKind {
    /// An OpenAI-compatible embeddings API.
    OpenAi,
    /// A local sentence-transformers model folder.
    Local,
}

pub use kg_core::Secret;

/// The effective, typed settings of one kg invocation.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Embedded store and run state.
    pub data_dir: PathBuf,
    /// Log format.
    pub log_format: LogFormat,
    /// tracing filter directive.
    pub log_level: String,
    /// Seconds between progress log lines (no terminal).
    pub progress_secs: u64,
    /// Prometheus listener.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Chunk size in tokens.
    pub chunk_tokens: usize,
    /// Chunk overlap in tokens.
    pub chunk_overlap: usize,
    /// CSV mapping file.
    pub csv_mapping: Option<PathBuf>,
    /// LLM API base URL.
    pub llm_base_url: Option<String>,
    /// LLM API key.
    pub llm_api_key: Option<Secret>,
    /// Chat model.
    pub model: String,
    /// LLM requests in flight.
    pub concurrency: usize,
    /// Cap on each answer's tokens; `None` sizes it from the chunk.
    pub max_completion_tokens: Option<u32>,
    /// Requests per minute.
    pub rpm: Option<u32>,
    /// Tokens per minute.
    pub tpm: Option<u32>,
    /// USD per million prompt tokens.
    pub input_price_per_mtok: f64,
    /// USD per million completion tokens.
    pub output_price_per_mtok: f64,
    /// Embedder kind.
    pub embedder: EmbedderKind,
    /// Embedding model name or folder.
    pub embed_model: Option<String>,
    /// Chunks per embedding batch.
    pub embed_batch: usize,
    /// Embedding requests in flight (API embedder).
    pub embed_concurrency: usize,
    /// Embeddings API base URL.
    pub embed_base_url: Option<String>,
    /// Neo4j URI; `None` = embedded store.
    pub neo4j_uri: Option<String>,
    /// Neo4j user.
    pub neo4j_user: String,
    /// Neo4j password.
    pub neo4j_password: Option<Secret>,
    /// Neo4j database.
    pub neo4j_database: Option<String>,
    /// Entity resolution (`[resolve]`).
    pub resolve: kg_resolve::ResolveConfig,
    /// The extraction schema (open unless [`Settings::load_schema`] found
    /// one).
    pub schema: kg_extract::ExtractSchema,
    /// Where the schema came from: a file, `kg.toml [extract.schema]`, or
    /// `None` for the open default.
    pub schema_origin: Option<String>,
    /// `extract.schema_file`, if set.
    pub schema_file: Option<PathBuf>,
    /// Distinct descriptions kept as they are before the LLM summarises
    /// them (`[descriptions] max_distinct`; 0: never).
    pub max_distinct_descriptions: usize,
}

impl Settings {
    /// Whether an LLM endpoint is configured (an API key or a base URL).
    pub fn llm_configured(&self) -> bool {
        self.llm_api_key.is_some() || self.llm_base_url.is_some()
    }

    /// Parses the merged layers.
    pub fn from_resolved(resolved: &[Resolved]) -> Result<Self, ConfigError> {
        // A key missing from `resolved` takes its default from SETTINGS, the
        // one place defaults are written.
        let defaults = resolve(&Layers::default());
        let get = |key: &str| -> Option<&Resolved> {
            resolved
                .iter()
                .find(|r| r.spec.key == key)
                .or_else(|| defaults.iter().find(|r| r.spec.key == key))
        };
        let text = |key: &str| -> Option<String> { get(key).and_then(|r| r.value.clone()) };
        let parse = |key: &'static str, expected: &'static str| {
            move |r: &Resolved| -> Result<Option<u64>, ConfigError> {
                match &r.value {
                    None => Ok(None),
                    Some(v) => {
                        v.trim()
                            .parse::<u64>()
                            .map(Some)
                            .map_err(|_| ConfigError::BadValue {
                                key,
                                origin: r.source,
                                value: v.clone(),
                                expected,
                            })
                    }
                }
            }
        };
        let num = |key: &'static str, min: u64| -> Result<Option<u64>, ConfigError> {
            let Some(r) = get(key) else { return Ok(None) };
            let n = parse(key, "a whole number")(r)?;
            match n {
                Some(n) if n < min => Err(ConfigError::BadValue {
                    key,
                    origin: r.source,
                    value: n.to_string(),
                    expected: if min == 1 {
                        "at least 1"
                    } else {
                        "a whole number"
                    },
                }),
                other => Ok(other),
            }
        };
        let float = |key: &'static str| -> Result<f64, ConfigError> {
            let Some(r) = get(key) else { return Ok(0.0) };
            match &r.value {
                None => Ok(0.0),
                Some(v) => v.trim().parse::<f64>().ok().filter(|f| *f >= 0.0).ok_or(
                    ConfigError::BadValue {
                        key,
                        origin: r.source,
                        value: v.clone(),
                        expected: "a non-negative number",
                    },
                ),
            }
        };
        let bad = |key: &'static str, expected: &'static str| -> ConfigError {
            let r = get(key);
            ConfigError::BadValue {
                key,
                origin: r.map(|r| r.source).unwrap_or(Source::Default),
                value: r.and_then(|r| r.value.clone()).unwrap_or_default(),
                expected,
            }
        };
        let log_format = match text("log_format").as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(_) => return Err(bad("log_format", "`text` or `json`")),
        };
        let embedder = match text("embed.embedder").as_deref() {
            None | Some("local") => EmbedderKind::Local,
            Some("openai") => EmbedderKind::OpenAi,
            Some(_) => return Err(bad("embed.embedder", "`openai` or `local`")),
        };
        let metrics_addr = match text("metrics_addr") {
            None => None,
            Some(a) => Some(
                a.parse()
                    .map_err(|_| bad("metrics_addr", "HOST:PORT, e.g. 127.0.0.1:9000"))?,
            ),
        };
        let chunk_tokens = num("ingest.chunk_tokens", 1)?.unwrap_or_default() as usize;
        let chunk_overlap = num("ingest.chunk_overlap", 0)?.unwrap_or_default() as usize;
        if chunk_overlap >= chunk_tokens {
            return Err(bad(
                "ingest.chunk_overlap",
                "smaller than ingest.chunk_tokens",
            ));
        }
        // Ranges checked here, before anything runs: `kg config` and every
        // command refuse a value the stages would refuse later.
        let ranged =
            |key: &'static str, max: u64, expected: &'static str| -> Result<usize, ConfigError> {
                let n = num(key, 1)?.unwrap_or_default();
                if n > max {
                    return Err(bad(key, expected));
                }
                Ok(n as usize)
            };
        let to_u32 = |key: &'static str| -> Result<Option<u32>, ConfigError> {
            num(key, 1)?
                .map(|n| u32::try_from(n).map_err(|_| bad(key, "at most 4294967295")))
                .transpose()
        };
        let resolve = kg_resolve::ResolveConfig {
            mode: match text("resolve.mode").as_deref() {
                None | Some("fuzzy") => kg_resolve::Mode::Fuzzy,
                Some("exact") => kg_resolve::Mode::Exact,
                Some("off") => kg_resolve::Mode::Off,
                Some(_) => return Err(bad("resolve.mode", "`off`, `exact` or `fuzzy`")),
            },
            threshold: match text("resolve.threshold") {
                None => kg_resolve::ResolveConfig::default().threshold,
                Some(v) => v
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|t| (0.0..=1.0).contains(t))
                    .ok_or_else(|| bad("resolve.threshold", "a number from 0 to 1"))?,
            },
            window: ranged("resolve.window", 10_000, "from 1 to 10000")?,
            ..kg_resolve::ResolveConfig::default()
        };
        Ok(Settings {
            data_dir: PathBuf::from(text("data_dir").unwrap_or_default()),
            log_format,
            log_level: text("log_level").unwrap_or_default(),
            metrics_addr,
            progress_secs: num("progress_secs", 1)?.unwrap_or(10),
            chunk_tokens,
            chunk_overlap,
            csv_mapping: text("ingest.csv_mapping").map(PathBuf::from),
            llm_base_url: text("llm.base_url"),
            llm_api_key: text("llm.api_key").map(Secret::new),
            model: text("llm.model").unwrap_or_default(),
            concurrency: ranged("llm.concurrency", 50, "1 to 50")?,
            max_completion_tokens: to_u32("llm.max_completion_tokens")?,
            rpm: to_u32("llm.rpm")?,
            tpm: to_u32("llm.tpm")?,
            input_price_per_mtok: float("llm.input_price_per_mtok")?,
            output_price_per_mtok: float("llm.output_price_per_mtok")?,
            embedder,
            embed_model: text("embed.model"),
            embed_batch: num("embed.batch", 1)?.unwrap_or_default() as usize,
            embed_concurrency: ranged("embed.concurrency", 50, "1 to 50")?,
            embed_base_url: text("embed.base_url"),
            neo4j_uri: text("neo4j.uri"),
            neo4j_user: text("neo4j.user").unwrap_or_default(),
            neo4j_password: text("neo4j.password").map(Secret::new),
            neo4j_database: text("neo4j.database"),
            resolve,
            schema: kg_extract::ExtractSchema::open(),
            schema_origin: None,
            schema_file: text("extract.schema_file").map(PathBuf::from),
            max_distinct_descriptions: usize::try_from(
                num("descriptions.max_distinct", 0)?.unwrap_or_default(),
            )
            .map_err(|_| bad("descriptions.max_distinct", "a whole number"))?,
        })
    }

    /// Sets [`Self::schema`]: from `extract.schema_file` (flag `--schema`,
    /// `KG_SCHEMA_FILE` or kg.toml) if set, else from the config file's
    /// `[extract.schema]` table, else open.
    pub fn load_schema(&mut self, layers: &Layers) -> Result<(), ConfigError> {
        if let Some(path) = &self.schema_file {
            let origin = path.display().to_string();
            let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
                path: path.clone(),
                error,
            })?;
            self.schema = kg_extract::ExtractSchema::from_toml(&text).map_err(|error| {
                ConfigError::Schema {
                    origin: origin.clone(),
                    error,
                }
            })?;
            self.schema_origin = Some(origin);
        } else if let Some(schema) = &layers.file_schema {
            self.schema = schema.clone();
            self.schema_origin = Some(match &layers.file_path {
                Some(p) => format!("{} [extract.schema]", p.display()),
                None => "[extract.schema]".into(),
            });
        }
        Ok(())
    }
}

/// Masks a secret for display: `***` and its length, so the user can tell
/// a key is set (and spot an empty or truncated one) without any of it
/// being shown.
pub fn mask(secret: &str) -> String {
    format!("***({} chars)", secret.chars().count())
}

/// Settings whose value is a URL: shown with any user info masked.
const URL_KEYS: &[&str] = &["llm.base_url", "embed.base_url", "neo4j.uri"];

/// Renders the effective settings for `kg config`, secrets masked.
pub fn render(resolved: &[Resolved], file: Option<&Path>, settings: &Settings) -> String {
    let mut out = String::new();
    match file {
        Some(p) => out.push_str(&format!("# config file: {}\n", p.display())),
        None => out.push_str("# config file: none (no ./kg.toml, no --config)\n"),
    }
    let width = SETTINGS.iter().map(|s| s.key.len()).max().unwrap_or(0);
    for r in resolved {
        let value = match (&r.value, r.spec.secret) {
            (None, _) => "(unset)".to_string(),
            (Some(v), true) => mask(v),
            (Some(v), false) if URL_KEYS.contains(&r.spec.key) => kg_core::secret::redact_url(v),
            (Some(v), false) => v.clone(),
        };
        let env = r.spec.env.map(|e| format!(" ${e}")).unwrap_or_default();
        out.push_str(&format!(
            "{:<width$} = {:<28} # {}{}: {}\n",
            r.spec.key, value, r.source, env, r.spec.help
        ));
    }
    match &settings.schema_origin {
        None => out.push_str("\n# extraction schema: open (none given: the LLM names the types)\n"),
        Some(origin) => {
            out.push_str(&format!(
                "\n# extraction schema, from {origin} (prompt version {}):\n{}",
                kg_extract::prompt_version(&settings.schema),
                settings.schema.to_config_toml()
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layers(flags: &[(&'static str, &str)], env: &[(&str, &str)], file: &str) -> Layers {
        let mut l = Layers::default();
        for (k, v) in flags {
            l.flags.insert(k, v.to_string());
        }
        let env: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        l.read_env(|k| env.get(k).cloned());
        l.file = parse_toml(Path::new("kg.toml"), file).unwrap();
        l
    }

    /// Settings read from nothing at all take every default from SETTINGS,
    /// exactly as the resolved defaults do.
    #[test]
    fn defaults_come_from_settings_only() {
        let from_nothing = Settings::from_resolved(&[]).unwrap();
        let resolved = Settings::from_resolved(&resolve(&Layers::default())).unwrap();
        assert_eq!(format!("{from_nothing:?}"), format!("{resolved:?}"));
        assert_eq!(from_nothing.chunk_tokens, 512);
        assert_eq!(from_nothing.chunk_overlap, 64);
        assert_eq!(from_nothing.concurrency, 5);
        assert_eq!(from_nothing.data_dir, PathBuf::from("kg-data"));
    }

    #[test]
    fn flag_beats_env_beats_file_beats_default() {
        let file = "[llm]\nmodel = \"from-file\"\nconcurrency = 9\n[embed]\nbatch = 7\n";
        let l = layers(
            &[("llm.model", "from-flag")],
            &[("KG_MODEL", "from-env"), ("KG_CONCURRENCY", "3")],
            file,
        );
        let r = resolve(&l);
        let s = Settings::from_resolved(&r).unwrap();
        assert_eq!(s.model, "from-flag");
        assert_eq!(s.concurrency, 3);
        assert_eq!(s.embed_batch, 7);
        assert_eq!(s.chunk_tokens, 512);
        let src = |k: &str| r.iter().find(|x| x.spec.key == k).unwrap().source;
        assert_eq!(src("llm.model"), Source::Flag);
        assert_eq!(src("llm.concurrency"), Source::Env);
        assert_eq!(src("embed.batch"), Source::File);
        assert_eq!(src("ingest.chunk_tokens"), Source::Default);
    }

    #[test]
    fn secrets_are_masked_in_render_and_debug() {
        let l = layers(
            &[],
            &[
                ("OPENAI_API_KEY", "sk-verysecretkey123456"),
                ("NEO4J_PASSWORD", "pw"),
            ],
            "",
        );
        let r = resolve(&l);
        let settings = Settings::from_resolved(&r).unwrap();
        let text = render(&r, None, &settings);
        assert!(!text.contains("verysecret"), "{text}");
        assert!(!text.contains("sk-"), "not even the start of a key: {text}");
        assert!(text.contains("***(22 chars)"), "{text}");
        assert!(!text.contains("= pw "), "{text}");
        let s = Settings::from_resolved(&r).unwrap();
        let dbg = format!("{s:?}");
        assert!(
            !dbg.contains("verysecret") && !dbg.contains("\"pw\""),
            "{dbg}"
        );
        assert!(s.llm_configured());
    }

    #[test]
    fn bad_values_and_unknown_keys_are_errors_naming_the_setting() {
        let l = layers(&[("llm.concurrency", "lots")], &[], "");
        let err = Settings::from_resolved(&resolve(&l))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("llm.concurrency") && err.contains("flag"),
            "{err}"
        );
        let err = parse_toml(Path::new("x.toml"), "[llm]\nmodle = \"x\"\n").unwrap_err();
        assert!(err.to_string().contains("llm.modle"), "{err}");
        let l = layers(&[("ingest.chunk_overlap", "600")], &[], "");
        assert!(Settings::from_resolved(&resolve(&l)).is_err());
        let l = layers(&[], &[("KG_EMBEDDER", "word2vec")], "");
        let err = Settings::from_resolved(&resolve(&l))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("embed.embedder") && err.contains("env"),
            "{err}"
        );
    }

    #[test]
    fn credentials_in_urls_are_masked_in_kg_config() {
        let l = layers(
            &[],
            &[
                ("OPENAI_BASE_URL", "https://bob:hunter2@llm.example.com/v1"),
                ("NEO4J_URI", "neo4j+s://neo4j:pw2@db.example.com:7687"),
            ],
            "",
        );
        let r = resolve(&l);
        let text = render(&r, None, &Settings::from_resolved(&r).unwrap());
        assert!(!text.contains("hunter2") && !text.contains("pw2"), "{text}");
        assert!(text.contains("https://***@llm.example.com/v1"), "{text}");
        assert!(text.contains("neo4j+s://***@db.example.com:7687"), "{text}");
    }

    #[test]
    fn resolve_section_parses_and_refuses_bad_values() {
        let l = layers(
            &[],
            &[("KG_RESOLVE_WINDOW", "12")],
            "[resolve]\nmode = \"exact\"\nthreshold = 0.9\n",
        );
        let s = Settings::from_resolved(&resolve(&l)).unwrap();
        assert_eq!(s.resolve.mode, kg_resolve::Mode::Exact);
        assert_eq!(s.resolve.threshold, 0.9);
        assert_eq!(s.resolve.window, 12);
        let d = Settings::from_resolved(&[]).unwrap();
        assert_eq!(d.resolve, kg_resolve::ResolveConfig::default());
        for (key, value) in [
            ("resolve.mode", "maybe"),
            ("resolve.threshold", "1.5"),
            ("resolve.window", "0"),
        ] {
            let l = layers(&[(key, value)], &[], "");
            let err = Settings::from_resolved(&resolve(&l))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{err}");
        }
    }

    #[test]
    fn descriptions_bound_defaults_to_four_takes_zero_and_refuses_words() {
        assert_eq!(
            Settings::from_resolved(&[])
                .unwrap()
                .max_distinct_descriptions,
            4
        );
        let l = layers(&[], &[], "[descriptions]\nmax_distinct = 0\n");
        let s = Settings::from_resolved(&resolve(&l)).unwrap();
        assert_eq!(s.max_distinct_descriptions, 0);
        let l = layers(&[], &[("KG_DESCRIPTIONS_MAX_DISTINCT", "many")], "");
        let err = Settings::from_resolved(&resolve(&l))
            .unwrap_err()
            .to_string();
        assert!(err.contains("descriptions.max_distinct"), "{err}");
    }

    #[test]
    fn out_of_range_concurrency_is_refused_before_anything_runs() {
        for (key, value) in [("llm.concurrency", "51"), ("embed.concurrency", "0")] {
            let l = layers(&[(key, value)], &[], "");
            let err = Settings::from_resolved(&resolve(&l))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{err}");
        }
        let l = layers(&[("llm.concurrency", "50")], &[], "");
        assert_eq!(
            Settings::from_resolved(&resolve(&l)).unwrap().concurrency,
            50
        );
    }

    #[test]
    fn empty_env_counts_as_unset_and_numbers_in_toml_work() {
        let l = layers(
            &[],
            &[("OPENAI_API_KEY", "")],
            "[ingest]\nchunk_tokens = 256\n",
        );
        let s = Settings::from_resolved(&resolve(&l)).unwrap();
        assert!(!s.llm_configured());
        assert_eq!(s.chunk_tokens, 256);
    }
}
