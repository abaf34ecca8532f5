//! Run statistics and the end-of-run summary.
//!
//! Every stage task bumps counters in one shared [`RunStats`] (atomics: the
//! hot path takes no lock). Set-aside inputs are counted by reason; the first
//! [`MAX_LISTED_SET_ASIDE`] of them are kept verbatim for the summary so that a
//! run over a million bad rows does not keep a million strings (memory must
//! not grow with the input). The rest are in the run state's dead-letter
//! table ([`crate::state`]).

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kg_core::{EmbeddingTarget, Record, SetAside, Stage};

/// Set-aside items kept verbatim for the summary; the rest are counted.
pub const MAX_LISTED_SET_ASIDE: usize = 50;

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The stages [`RunStats::touch`] times, in the order the summary lists them.
const SPAN_STAGES: [&str; 4] = ["embed", "extract", "ingest", "store"];

/// When a stage saw its first and last item: nanoseconds after the stats
/// were created, plus one (0: no item yet). Atomics, because every record
/// touches its stage.
#[derive(Debug, Default)]
struct StageSpan {
    first: AtomicU64,
    last: AtomicU64,
}

/// When the stats were created.
#[derive(Debug)]
struct Created(Instant);

impl Default for Created {
    fn default() -> Self {
        Self(Instant::now())
    }
}

/// Counters of one run, shared by every stage task.
#[derive(Debug, Default)]
pub struct RunStats {
    /// Documents read.
    pub documents: Counter,
    /// Documents skipped because unchanged since a finished run.
    pub documents_unchanged: Counter,
    /// Earlier versions of changed documents removed from the graph.
    pub documents_replaced: Counter,
    /// Chunks of those earlier versions.
    pub chunks_replaced: Counter,
    /// Pages read (paged formats).
    pub pages: Counter,
    /// Chunks produced.
    pub chunks: Counter,
    /// CSV-mapped nodes.
    pub nodes: Counter,
    /// CSV-mapped relations.
    pub edges: Counter,
    /// Chunks extracted (by the LLM or from the cache).
    pub extractions: Counter,
    /// Entity mentions extracted (one per entity per chunk).
    pub entities: Counter,
    /// Relations extracted (one per relation per chunk).
    pub relations: Counter,
    /// Chunks embedded.
    pub embeddings: Counter,
    /// Records written to the store.
    pub records_stored: Counter,
    /// Store batches committed.
    pub batches: Counter,
    /// Store batches that failed after retries.
    pub failed_batches: Counter,
    /// Windows the store's writer cut its input into.
    pub store_windows: Counter,
    /// LLM calls that reached the server (retries included).
    pub llm_calls: Counter,
    /// LLM retries.
    pub llm_retries: Counter,
    /// Attempts that never reached the LLM server (refused, DNS, TLS).
    pub connection_failures: Counter,
    /// Answers cut off at the completion cap and repaired.
    pub repaired_answers: Counter,
    /// Extractions served from the cache.
    pub extraction_cache_hits: Counter,
    /// Embeddings served from the cache.
    pub embedding_cache_hits: Counter,
    /// Prompt tokens.
    pub prompt_tokens: Counter,
    /// Completion tokens.
    pub completion_tokens: Counter,
    /// Estimated cost in micro-dollars.
    pub cost_micro_usd: Counter,
    set_aside: Mutex<SetAsideLog>,
    dropped_by_schema: Mutex<kg_extract::SchemaDrops>,
    created: Created,
    spans: [StageSpan; 4],
    distinct: Mutex<Distinct>,
}

/// Distinct entities and relations stored, as 64-bit hashes of their ids
/// (8 bytes each: a million entities cost ~16 MB with the set's overhead,
/// where keeping the ids would cost ten times that). Two ids colliding in
/// 64 bits among a million has a chance of about 3 in 100 million; the
/// count would then be one short.
#[derive(Debug, Default)]
struct Distinct {
    entities: HashSet<u64>,
    relations: HashSet<u64>,
}

fn hash64(parts: &[&str]) -> u64 {
    let mut h = DefaultHasher::new();
    for p in parts {
        p.hash(&mut h);
    }
    h.finish()
}

#[derive(Debug, Default)]
struct SetAsideLog {
    by_reason: BTreeMap<(String, String), u64>,
    listed: Vec<SetAside>,
    total: u64,
}

/// The name of a stage in summaries and metrics labels.
pub fn stage_name(stage: Stage) -> &'static str {
    match stage {
        Stage::Ingest => "ingest",
        Stage::Extract => "extract",
        Stage::Embed => "embed",
        Stage::Store => "store",
    }
}

/// What one record adds to the summary once it is committed: computed when
/// the record is handed to the store, applied when the store acknowledges
/// it ([`RunStats::add_tally`]).
#[derive(Debug, Clone)]
pub enum Tally {
    /// A document and its pages.
    Document {
        /// Pages (paged formats).
        pages: u32,
    },
    /// A chunk.
    Chunk,
    /// An extraction: its entity mentions and relations, by id hash.
    Extraction {
        /// Hashes of the entity ids.
        entities: Vec<u64>,
        /// Hashes of (source, type, target).
        relations: Vec<u64>,
    },
    /// A resolved entity, by id hash.
    Entity(u64),
    /// A resolved relation, by hash of (source, type, target).
    Relation(u64),
    /// A chunk vector.
    ChunkEmbedding,
    /// A CSV-mapped node.
    Node,
    /// A CSV-mapped relation.
    Edge,
    /// Nothing to count (entity vectors, set-asides).
    Nothing,
}

impl Tally {
    /// The tally of `record`.
    pub fn of(record: &Record) -> Self {
        match record {
            Record::Document(d) => Tally::Document {
                pages: d.pages.unwrap_or(0),
            },
            Record::Chunk(_) => Tally::Chunk,
            Record::Extraction(x) => Tally::Extraction {
                entities: x
                    .entities
                    .iter()
                    .map(|e| hash64(&[e.id.as_str()]))
                    .collect(),
                relations: x
                    .relations
                    .iter()
                    .map(|r| {
                        hash64(&[
                            r.source_id.as_str(),
                            r.rel_type.as_str(),
                            r.target_id.as_str(),
                        ])
                    })
                    .collect(),
            },
            Record::Entity(e) => Tally::Entity(hash64(&[e.id.as_str()])),
            Record::Relation(r) => Tally::Relation(hash64(&[
                r.source_id.as_str(),
                r.rel_type.as_str(),
                r.target_id.as_str(),
            ])),
            Record::Embedding(e) if e.target == EmbeddingTarget::Chunk => Tally::ChunkEmbedding,
            Record::Node(_) => Tally::Node,
            Record::Edge(_) => Tally::Edge,
            Record::Embedding(_) | Record::SetAside(_) => Tally::Nothing,
        }
    }
}

impl RunStats {
    /// Records an input set aside.
    pub fn set_aside(&self, item: &SetAside) {
        let mut log = self.set_aside.lock().unwrap_or_else(|p| p.into_inner());
        *log.by_reason
            .entry((
                stage_name(item.stage).to_string(),
                item.reason.code().to_string(),
            ))
            .or_default() += 1;
        log.total += 1;
        if log.listed.len() < MAX_LISTED_SET_ASIDE {
            log.listed.push(item.clone());
        }
    }

    /// Counts a record (its [`Tally`]) as done: committed by the store, or
    /// written to a one-stage command's output.
    pub fn add_tally(&self, tally: &Tally) {
        let distinct = |entities: &[u64], relations: &[u64]| {
            let mut d = self.distinct.lock().unwrap_or_else(|p| p.into_inner());
            d.entities.extend(entities);
            d.relations.extend(relations);
        };
        match tally {
            Tally::Document { pages } => {
                self.documents.add(1);
                self.pages.add(u64::from(*pages));
            }
            Tally::Chunk => self.chunks.add(1),
            Tally::Extraction {
                entities,
                relations,
            } => {
                self.extractions.add(1);
                self.entities.add(entities.len() as u64);
                self.relations.add(relations.len() as u64);
                distinct(entities, relations);
            }
            Tally::Entity(h) => {
                self.entities.add(1);
                distinct(&[*h], &[]);
            }
            Tally::Relation(h) => {
                self.relations.add(1);
                distinct(&[], &[*h]);
            }
            Tally::ChunkEmbedding => self.embeddings.add(1),
            Tally::Node => self.nodes.add(1),
            Tally::Edge => self.edges.add(1),
            Tally::Nothing => {}
        }
    }

    /// Counts a record as done (see [`Self::add_tally`]).
    pub fn count(&self, record: &Record) {
        self.add_tally(&Tally::of(record));
    }

    /// Adds an extraction run's calls, tokens, cache hits and cost.
    pub fn add_llm_usage(&self, used: &kg_extract::ExtractSummary) {
        self.llm_calls.add(used.llm_calls);
        self.llm_retries.add(used.retries);
        self.connection_failures.add(used.connection_failures);
        self.repaired_answers.add(used.repaired_answers);
        self.extraction_cache_hits.add(used.cache_hits);
        self.prompt_tokens.add(used.prompt_tokens);
        self.completion_tokens.add(used.completion_tokens);
        if let Some(usd) = used.cost_usd {
            self.cost_micro_usd.add((usd * 1e6).round() as u64);
        }
        if !used.dropped_by_schema.is_empty() {
            self.dropped_by_schema
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .add(&used.dropped_by_schema);
        }
    }

    /// Adds a description step's summary calls, tokens and cost.
    pub fn add_summary_usage(&self, used: &kg_extract::SummaryStats, cost_usd: Option<f64>) {
        self.llm_calls.add(used.llm_calls);
        self.prompt_tokens.add(used.prompt_tokens);
        self.completion_tokens.add(used.completion_tokens);
        if let Some(usd) = cost_usd {
            self.cost_micro_usd.add((usd * 1e6).round() as u64);
        }
    }

    /// Entities and relations the strict schema dropped, per type.
    pub fn dropped_by_schema(&self) -> kg_extract::SchemaDrops {
        self.dropped_by_schema
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Adds a store write's batch counts.
    pub fn record_write(&self, report: &kg_store::WriteReport) {
        self.batches.add(report.batches);
        self.failed_batches.add(report.failed_batches.len() as u64);
        self.store_windows.add(report.windows);
    }

    /// Whether this run stored (or extracted into the store) the entity
    /// `id` (by its 64-bit hash: a collision counts an untouched entity as
    /// touched, which only costs a comparison).
    pub fn stored_entity(&self, id: &str) -> bool {
        let d = self.distinct.lock().unwrap_or_else(|p| p.into_inner());
        d.entities.contains(&hash64(&[id]))
    }

    /// Distinct entities and relations stored so far.
    pub fn distinct_counts(&self) -> (u64, u64) {
        let d = self.distinct.lock().unwrap_or_else(|p| p.into_inner());
        (d.entities.len() as u64, d.relations.len() as u64)
    }

    /// How many inputs were set aside.
    pub fn set_aside_total(&self) -> u64 {
        self.set_aside
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .total
    }

    /// Notes that `stage` handled an item now.
    pub fn touch(&self, stage: &'static str) {
        let Some(i) = SPAN_STAGES.iter().position(|s| *s == stage) else {
            return;
        };
        let Some(span) = self.spans.get(i) else {
            return;
        };
        let now = u64::try_from(self.created.0.elapsed().as_nanos()).unwrap_or(u64::MAX - 1) + 1;
        let _ = span
            .first
            .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
        span.last.fetch_max(now, Ordering::Relaxed);
    }

    /// From the first to the last item `stage` handled ([`Self::touch`]):
    /// the `time <stage>` row of the summary; `None` before its first item.
    pub fn stage_time(&self, stage: &str) -> Option<Duration> {
        let i = SPAN_STAGES.iter().position(|s| *s == stage)?;
        let span = self.spans.get(i)?;
        let (a, b) = (
            span.first.load(Ordering::Relaxed),
            span.last.load(Ordering::Relaxed),
        );
        (a > 0 && b >= a).then(|| Duration::from_nanos(b - a))
    }

    /// Renders the summary table.
    pub fn render_summary(&self, elapsed: Duration, notes: &[String]) -> String {
        let mut rows: Vec<(String, String)> = Vec::new();
        let mut row = |k: &str, v: String| rows.push((k.to_string(), v));
        let docs = self.documents.get();
        let unchanged = self.documents_unchanged.get();
        row(
            "documents",
            if unchanged > 0 {
                format!("{docs} ({unchanged} unchanged, skipped)")
            } else {
                docs.to_string()
            },
        );
        let replaced = self.documents_replaced.get();
        if replaced > 0 {
            row(
                "replaced",
                format!(
                    "{replaced} earlier version(s) of changed documents ({} chunks removed)",
                    self.chunks_replaced.get()
                ),
            );
        }
        row("pages", self.pages.get().to_string());
        row("chunks", self.chunks.get().to_string());
        if self.nodes.get() + self.edges.get() > 0 {
            row("csv nodes", self.nodes.get().to_string());
            row("csv relations", self.edges.get().to_string());
        }
        let (entities, relations) = self.distinct_counts();
        row(
            "entities",
            format!("{entities} distinct ({} mentions)", self.entities.get()),
        );
        row(
            "relations",
            format!("{relations} distinct ({} extracted)", self.relations.get()),
        );
        let dropped = self.dropped_by_schema();
        if !dropped.is_empty() {
            row("dropped by schema", dropped.to_string());
        }
        row("embeddings", self.embeddings.get().to_string());
        row("records stored", self.records_stored.get().to_string());
        row(
            "store batches",
            format!(
                "{} ({} failed) in {} windows",
                self.batches.get(),
                self.failed_batches.get(),
                self.store_windows.get()
            ),
        );
        let mut calls = format!(
            "{} ({} retries",
            self.llm_calls.get(),
            self.llm_retries.get()
        );
        if self.connection_failures.get() > 0 {
            calls.push_str(&format!(
                ", {} attempts never reached the server",
                self.connection_failures.get()
            ));
        }
        if self.repaired_answers.get() > 0 {
            calls.push_str(&format!(
                ", {} answers cut at the cap and repaired",
                self.repaired_answers.get()
            ));
        }
        calls.push(')');
        row("LLM calls", calls);
        row(
            "cached hits",
            format!(
                "{} extractions, {} embeddings",
                self.extraction_cache_hits.get(),
                self.embedding_cache_hits.get()
            ),
        );
        row(
            "tokens",
            format!(
                "{} ({} prompt + {} completion)",
                self.prompt_tokens.get() + self.completion_tokens.get(),
                self.prompt_tokens.get(),
                self.completion_tokens.get()
            ),
        );
        row(
            "estimated cost",
            format!("${:.4}", self.cost_micro_usd.get() as f64 / 1e6),
        );
        let log = self.set_aside.lock().unwrap_or_else(|p| p.into_inner());
        row("set aside", log.total.to_string());
        for ((stage, reason), n) in &log.by_reason {
            row(&format!("  {stage}: {reason}"), n.to_string());
        }
        for stage in SPAN_STAGES {
            if let Some(t) = self.stage_time(stage) {
                row(&format!("time {stage}"), format!("{:.2}s", t.as_secs_f64()));
            }
        }
        row("time total", format!("{:.2}s", elapsed.as_secs_f64()));
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut out = String::from("kg summary\n");
        for (k, v) in &rows {
            let _ = writeln!(out, "  {k:<width$}  {v}");
        }
        if !log.listed.is_empty() {
            let _ = writeln!(out, "set aside (a re-run retries them):");
            for s in &log.listed {
                let _ = writeln!(
                    out,
                    "  [{}] {} ({}): {}",
                    stage_name(s.stage),
                    s.item,
                    s.reason,
                    s.detail
                );
            }
            if log.total > log.listed.len() as u64 {
                let _ = writeln!(
                    out,
                    "  ... and {} more (all listed in the run state's dead letters)",
                    log.total - log.listed.len() as u64
                );
            }
        }
        for n in notes {
            let _ = writeln!(out, "note: {n}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aside(i: usize, reason: &str) -> SetAside {
        SetAside {
            stage: Stage::Ingest,
            item: format!("bad.csv:{i}"),
            reason: reason.parse().unwrap(),
            detail: "column `id` is empty".into(),
        }
    }

    #[test]
    fn summary_counts_set_asides_by_reason_and_caps_the_list() {
        let s = RunStats::default();
        for i in 0..(MAX_LISTED_SET_ASIDE + 10) {
            s.set_aside(&aside(i, "bad_csv_row"));
        }
        s.set_aside(&aside(0, "encrypted_pdf"));
        s.documents.add(2);
        s.prompt_tokens.add(1000);
        s.completion_tokens.add(200);
        s.cost_micro_usd.add(750_000);
        let text = s.render_summary(Duration::from_secs(1), &["extraction skipped".into()]);
        assert_eq!(s.set_aside_total(), MAX_LISTED_SET_ASIDE as u64 + 11);
        assert!(
            text.lines()
                .any(|l| l.trim_start().starts_with("ingest: bad_csv_row") && l.ends_with(" 60")),
            "{text}"
        );
        assert!(text.contains("ingest: encrypted_pdf"), "{text}");
        assert!(text.contains("and 11 more"), "{text}");
        assert!(text.contains("$0.7500"), "{text}");
        assert!(
            text.contains("1200 (1000 prompt + 200 completion)"),
            "{text}"
        );
        assert!(text.contains("note: extraction skipped"), "{text}");
    }

    #[test]
    fn summary_counts_distinct_entities_and_relations_beside_mentions() {
        let s = RunStats::default();
        // Three chunks mention Debian, two mention Ian Murdock; FOUNDED is
        // extracted twice.
        for (entities, relations) in [
            (
                vec!["org:debian", "person:ian"],
                vec![("person:ian", "FOUNDED", "org:debian")],
            ),
            (
                vec!["org:debian", "person:ian"],
                vec![("person:ian", "FOUNDED", "org:debian")],
            ),
            (
                vec!["org:debian", "org:fsf"],
                vec![("org:fsf", "SPONSORED", "org:debian")],
            ),
        ] {
            s.add_tally(&Tally::Extraction {
                entities: entities.iter().map(|e| hash64(&[e])).collect(),
                relations: relations
                    .iter()
                    .map(|(a, t, b)| hash64(&[a, t, b]))
                    .collect(),
            });
        }
        assert_eq!(s.distinct_counts(), (3, 2));
        let text = s.render_summary(Duration::from_secs(1), &[]);
        assert!(text.contains("3 distinct (6 mentions)"), "{text}");
        assert!(text.contains("2 distinct (3 extracted)"), "{text}");
    }
}
