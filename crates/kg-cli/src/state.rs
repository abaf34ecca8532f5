//! The run state kept in the data dir, so that a killed run can be resumed.
//!
//! One SQLite file, `<data_dir>/run-state.sqlite3`, in WAL mode:
//!
//! - `documents`: per-document status. A document is `done` only once every
//!   record of it (document, chunks, extractions, embeddings) has been
//!   committed by the store; a re-run skips `done` documents whose content
//!   hash (the document id is a content address) is unchanged.
//! - `extraction_cache` / `embedding_cache`: keyed by model, prompt version
//!   and chunk id (itself a hash of the chunk's text and document), written
//!   as soon as an answer arrives, before it is stored. A run killed with
//!   SIGKILL and started again finds every chunk already extracted here and
//!   makes no LLM call for it; the store MERGEs on content-addressed ids, so
//!   writing it again adds nothing.
//! - `dead_letters`: inputs set aside, with reason and detail; a later run
//!   that handles the item clears its row.
//!
//! Why SQLite and not the store: the state must exist whatever the store is
//! (Neo4j or embedded), and must survive SIGKILL (WAL commits are durable at
//! `synchronous=NORMAL` against process death, which is what matters here).
//! All calls are short; they run under a mutex on the caller's thread.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use kg_core::{ChunkId, DocumentId, Embedding, Extraction, SetAside};
use rusqlite::{params, Connection, OptionalExtension};

use crate::stats::stage_name;

/// The run state cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The database could not be opened or a statement failed.
    #[error("run state {path}: {error}")]
    Sqlite {
        /// The state file.
        path: PathBuf,
        /// Why.
        #[source]
        error: rusqlite::Error,
    },
    /// The data dir could not be created.
    #[error("cannot create data dir {path}: {error}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        error: std::io::Error,
    },
}

/// What a run does to a document's chunks, as recorded with `done`:
/// `extract=<model>@<prompt version>` (or `extract=none`) and
/// `embed=<model>` (or `embed=none`).
pub fn stages_key(extract: Option<(&str, &str)>, embed: Option<&str>) -> String {
    let extract = match extract {
        Some((model, version)) => format!("extract={model}@{version}"),
        None => "extract=none".into(),
    };
    let embed = match embed {
        Some(model) => format!("embed={model}"),
        None => "embed=none".into(),
    };
    format!("{extract};{embed}")
}

/// Status of a document in the run state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocStatus {
    /// Started, not every record committed yet.
    InProgress,
    /// Every record committed.
    Done,
}

/// The run state of one data dir.
pub struct RunState {
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl std::fmt::Debug for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunState")
            .field("path", &self.path)
            .finish()
    }
}

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
CREATE TABLE IF NOT EXISTS documents (
    id TEXT PRIMARY KEY, source TEXT NOT NULL, status TEXT NOT NULL,
    chunks INTEGER NOT NULL DEFAULT 0, updated_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS extraction_cache (
    key TEXT PRIMARY KEY, extraction TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS embedding_cache (
    key TEXT PRIMARY KEY, embedding TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS dead_letters (
    stage TEXT NOT NULL, item TEXT NOT NULL, reason TEXT NOT NULL, detail TEXT NOT NULL,
    updated_at INTEGER NOT NULL, PRIMARY KEY (stage, item));
CREATE INDEX IF NOT EXISTS dead_letters_item ON dead_letters (item);
";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl RunState {
    /// Opens (creating if needed) the run state in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self, StateError> {
        std::fs::create_dir_all(data_dir).map_err(|error| StateError::DataDir {
            path: data_dir.to_path_buf(),
            error,
        })?;
        let path = data_dir.join("run-state.sqlite3");
        let err = |error| StateError::Sqlite {
            path: path.clone(),
            error,
        };
        let conn = Connection::open(&path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        // Added after the first release of the schema: which stages a done
        // document went through (see `document_done`).
        let has_stages: bool = conn
            .query_row(
                "SELECT COUNT(*) FROM pragma_table_info('documents') WHERE name = 'stages'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map_err(err)?
            > 0;
        if !has_stages {
            match conn.execute_batch("ALTER TABLE documents ADD COLUMN stages TEXT") {
                Ok(()) => tracing::info!(
                    state = %path.display(),
                    "run state upgraded: documents done before are processed once more \
                     (from the caches: no LLM call for an unchanged model and prompt)"
                ),
                // Another process opening the same old state added it first.
                Err(e) if e.to_string().contains("duplicate column") => {}
                Err(e) => return Err(err(e)),
            }
        }
        Ok(Self {
            conn: Mutex::new(conn),
            path,
        })
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StateError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&conn).map_err(|error| StateError::Sqlite {
            path: self.path.clone(),
            error,
        })
    }

    /// Forgets a document (its graph was removed as an earlier version of a
    /// changed file): if the file goes back to that content, the next run
    /// processes it again instead of skipping it as done.
    pub fn forget_document(&self, id: &DocumentId) -> Result<(), StateError> {
        self.with(|c| {
            c.execute("DELETE FROM documents WHERE id = ?1", params![id.as_str()])
                .map(drop)
        })
    }

    /// The status of a document, if it was seen before.
    pub fn document_status(&self, id: &DocumentId) -> Result<Option<DocStatus>, StateError> {
        self.with(|c| {
            c.query_row(
                "SELECT status FROM documents WHERE id = ?1",
                params![id.as_str()],
                |r| r.get::<_, String>(0),
            )
            .optional()
        })
        .map(|s| {
            s.map(|s| {
                if s == "done" {
                    DocStatus::Done
                } else {
                    DocStatus::InProgress
                }
            })
        })
    }

    /// Marks a document as started (or restarted).
    pub fn document_started(&self, id: &DocumentId, source: &str) -> Result<(), StateError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO documents (id, source, status, updated_at) VALUES (?1, ?2, 'in_progress', ?3)
                 ON CONFLICT(id) DO UPDATE SET status = 'in_progress', source = ?2, updated_at = ?3",
                params![id.as_str(), source, now()],
            )
        })
        .map(|_| ())
    }

    /// Marks a document as done: every record of it is committed, after
    /// going through `stages` (which extractor and embedder, see
    /// [`stages_key`]).
    pub fn document_done(
        &self,
        id: &DocumentId,
        chunks: u64,
        stages: &str,
    ) -> Result<(), StateError> {
        self.with(|c| {
            c.execute(
                "UPDATE documents SET status = 'done', chunks = ?2, updated_at = ?3, stages = ?4 \
                 WHERE id = ?1",
                params![id.as_str(), chunks as i64, now(), stages],
            )
        })
        .map(|_| ())
    }

    /// The source a document was last recorded under.
    pub fn document_source(&self, id: &DocumentId) -> Result<Option<String>, StateError> {
        self.with(|c| {
            c.query_row(
                "SELECT source FROM documents WHERE id = ?1",
                params![id.as_str()],
                |r| r.get::<_, String>(0),
            )
            .optional()
        })
    }

    /// Records that a document's file is now at `source` (moved or
    /// renamed, same content).
    pub fn set_document_source(&self, id: &DocumentId, source: &str) -> Result<(), StateError> {
        self.with(|c| {
            c.execute(
                "UPDATE documents SET source = ?2, updated_at = ?3 WHERE id = ?1",
                params![id.as_str(), source, now()],
            )
        })
        .map(|_| ())
    }

    /// Whether a document is done through the same `stages`: a document
    /// done without an LLM is not done for a run with one (its entities
    /// were never extracted), nor one embedded by another model.
    pub fn is_done_with(&self, id: &DocumentId, stages: &str) -> Result<bool, StateError> {
        self.with(|c| {
            c.query_row(
                "SELECT status = 'done' AND stages IS ?2 FROM documents WHERE id = ?1",
                params![id.as_str(), stages],
                |r| r.get::<_, bool>(0),
            )
            .optional()
        })
        .map(|done| done.unwrap_or(false))
    }

    /// Number of documents in each status: (done, in progress).
    pub fn document_counts(&self) -> Result<(u64, u64), StateError> {
        self.with(|c| {
            c.query_row(
                "SELECT COALESCE(SUM(status = 'done'), 0), COALESCE(SUM(status != 'done'), 0) FROM documents",
                [],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
            )
        })
    }

    /// A cached extraction of `chunk` by `model` under `prompt_version`.
    pub fn cached_extraction(
        &self,
        model: &str,
        prompt_version: &str,
        chunk: &ChunkId,
    ) -> Result<Option<Extraction>, StateError> {
        let key = format!("{model}\u{1f}{prompt_version}\u{1f}{chunk}");
        let text: Option<String> = self.with(|c| {
            c.query_row(
                "SELECT extraction FROM extraction_cache WHERE key = ?1",
                params![key],
                |r| r.get(0),
            )
            .optional()
        })?;
        // A row that no longer parses (kg-core types changed) is a miss.
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
    }

    /// Caches an extraction.
    pub fn cache_extraction(
        &self,
        model: &str,
        prompt_version: &str,
        extraction: &Extraction,
    ) -> Result<(), StateError> {
        let key = format!("{model}\u{1f}{prompt_version}\u{1f}{}", extraction.chunk_id);
        let text = serde_json::to_string(extraction).unwrap_or_default();
        self.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO extraction_cache (key, extraction) VALUES (?1, ?2)",
                params![key, text],
            )
        })
        .map(|_| ())
    }

    /// Number of cached extractions.
    pub fn extraction_cache_len(&self) -> Result<u64, StateError> {
        self.with(|c| {
            c.query_row("SELECT COUNT(*) FROM extraction_cache", [], |r| {
                r.get::<_, i64>(0)
            })
        })
        .map(|n| n as u64)
    }

    /// A cached embedding of `id` by `model`.
    pub fn cached_embedding(&self, model: &str, id: &str) -> Result<Option<Embedding>, StateError> {
        let key = format!("{model}\u{1f}{id}");
        let text: Option<String> = self.with(|c| {
            c.query_row(
                "SELECT embedding FROM embedding_cache WHERE key = ?1",
                params![key],
                |r| r.get(0),
            )
            .optional()
        })?;
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
    }

    /// Caches embeddings (one transaction).
    pub fn cache_embeddings(
        &self,
        model: &str,
        embeddings: &[Embedding],
    ) -> Result<(), StateError> {
        self.with(|c| {
            let tx = c.unchecked_transaction()?;
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT OR REPLACE INTO embedding_cache (key, embedding) VALUES (?1, ?2)",
                )?;
                for e in embeddings {
                    let key = format!("{model}\u{1f}{}", e.id);
                    stmt.execute(params![key, serde_json::to_string(e).unwrap_or_default()])?;
                }
            }
            tx.commit()
        })
    }

    /// Records an input set aside.
    pub fn dead_letter(&self, item: &SetAside) -> Result<(), StateError> {
        self.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO dead_letters (stage, item, reason, detail, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    stage_name(item.stage),
                    item.item,
                    item.reason.code(),
                    item.detail,
                    now()
                ],
            )
        })
        .map(|_| ())
    }

    /// Clears the dead letters of a document's source that was now handled.
    pub fn clear_dead_letters_of(&self, item_prefix: &str) -> Result<(), StateError> {
        self.with(|c| {
            c.execute(
                // `item:` and anything after it: the range [`item:`, `item;`)
                // (';' follows ':'), which the index on `item` answers.
                "DELETE FROM dead_letters WHERE item = ?1 OR (item >= ?1 || ':' AND item < ?1 || ';')",
                params![item_prefix],
            )
        })
        .map(|_| ())
    }

    /// Number of dead letters.
    pub fn dead_letter_count(&self) -> Result<u64, StateError> {
        self.with(|c| {
            c.query_row("SELECT COUNT(*) FROM dead_letters", [], |r| {
                r.get::<_, i64>(0)
            })
        })
        .map(|n| n as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kg_core::{ExtractedEntity, Label, Stage};

    fn extraction(chunk: &ChunkId) -> Extraction {
        let label = Label::new("Person").unwrap();
        Extraction {
            chunk_id: chunk.clone(),
            entities: vec![ExtractedEntity {
                id: kg_core::EntityId::new(&label, "Ian Murdock"),
                name: "Ian Murdock".into(),
                entity_type: label,
                description: "founder".into(),
            }],
            relations: vec![],
            model: "m".into(),
        }
    }

    #[test]
    fn state_survives_reopen_and_tracks_documents_caches_and_dead_letters() {
        let dir = tempfile::tempdir().unwrap();
        let doc = DocumentId::from_content_sha256(&kg_core::sha256_hex(b"doc"));
        let chunk = ChunkId::new(&doc, 0, "Ian Murdock founded Debian.");
        {
            let s = RunState::open(dir.path()).unwrap();
            assert_eq!(s.document_status(&doc).unwrap(), None);
            s.document_started(&doc, "a.pdf").unwrap();
            assert_eq!(
                s.document_status(&doc).unwrap(),
                Some(DocStatus::InProgress)
            );
            s.cache_extraction("m", "v1", &extraction(&chunk)).unwrap();
            s.cache_embeddings(
                "mini",
                &[Embedding {
                    id: chunk.to_string(),
                    target: kg_core::EmbeddingTarget::Chunk,
                    vector: vec![0.5, 0.25],
                    model: "mini".into(),
                }],
            )
            .unwrap();
            s.dead_letter(&SetAside {
                stage: Stage::Ingest,
                item: "x.csv:3".into(),
                reason: kg_core::SetAsideReason::BadCsvRow,
                detail: "d".into(),
            })
            .unwrap();
        }
        let s = RunState::open(dir.path()).unwrap();
        assert_eq!(
            s.document_status(&doc).unwrap(),
            Some(DocStatus::InProgress)
        );
        let with_llm = stages_key(Some(("m", "v1")), Some("e"));
        s.document_done(&doc, 1, &with_llm).unwrap();
        assert_eq!(s.document_status(&doc).unwrap(), Some(DocStatus::Done));
        // Done for the same stages only: not for a run with another model,
        // nor for one that would extract where this one did not.
        assert!(s.is_done_with(&doc, &with_llm).unwrap());
        assert!(!s
            .is_done_with(&doc, &stages_key(Some(("m", "v2")), Some("e")))
            .unwrap());
        assert!(!s.is_done_with(&doc, &stages_key(None, Some("e"))).unwrap());
        s.document_done(&doc, 1, &stages_key(None, Some("e")))
            .unwrap();
        assert!(!s.is_done_with(&doc, &with_llm).unwrap());
        s.forget_document(&doc).unwrap();
        assert_eq!(s.document_status(&doc).unwrap(), None);
        assert!(!s.is_done_with(&doc, &with_llm).unwrap());
        assert_eq!(s.document_counts().unwrap(), (0, 0));
        assert_eq!(
            s.cached_extraction("m", "v1", &chunk).unwrap(),
            Some(extraction(&chunk))
        );
        assert_eq!(s.cached_extraction("m", "v2", &chunk).unwrap(), None);
        assert_eq!(s.cached_extraction("other", "v1", &chunk).unwrap(), None);
        let e = s.cached_embedding("mini", chunk.as_str()).unwrap().unwrap();
        assert_eq!(e.vector, vec![0.5, 0.25]);
        assert_eq!(s.dead_letter_count().unwrap(), 1);
        s.clear_dead_letters_of("x.csv").unwrap();
        assert_eq!(s.dead_letter_count().unwrap(), 0);
    }
}
