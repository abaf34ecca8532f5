//! The run state kept in the data dir, so that a killed run can be resumed.
//!
//! One SQLite file, `<data_dir>/run-state.sqlite3`, in WAL mode:
//!
//! - `documents`: per-document status. A document is `done` only once every
//!   record of it (document, chunks, extractions, embeddings) has been
//!   committed by the store; a re-run skips `done` documents whose content
//!   hash (the document id is a content address) is unchanged.
//! - `dead_letters`: inputs set aside, with reason and detail; a later run
//!   that handles the item clears its row.
//! - `meta`: the store this state describes: its identity (an id the store
//!   keeps for itself, see `kg_store::GraphStore::identity`) and a
//!   description (backend, URI, database). A run against another store, or
//!   one that was emptied, does not trust the `done` rows: it forgets them
//!   and processes every document again, from the caches (no LLM call for
//!   a chunk answered before), so the new store gets the full graph.
//!
//! The LLM answers and vectors are not kept here but in the stage crates'
//! own caches under `<data_dir>/cache/` (kg-extract's response cache and
//! kg-embed's vector cache), keyed by content (model, prompt version,
//! schema and the chunk's normalised text; model and text), and written as
//! soon as an answer arrives: a run killed with SIGKILL and started again
//! makes no call for what it had, and an edited document costs only the
//! chunks whose text changed. Run states of kg versions before that kept
//! per-chunk-id caches in `extraction_cache` and `embedding_cache`; those
//! tables are dropped on first open (the content-defined chunker gives new
//! chunk texts, so no entry of them would be hit again). Done documents
//! stay done.
//!
//! Why SQLite and not the store: the state must exist whatever the store is
//! (Neo4j or embedded), and must survive SIGKILL (WAL commits are durable at
//! `synchronous=NORMAL` against process death, which is what matters here).
//! All calls are short; they run under a mutex on the caller's thread.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use kg_core::{DocumentId, SetAside};
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
pub fn stages_key(extract: Option<(String, String)>, embed: Option<&str>) -> String {
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
    chunks INTEGER NOT NULL DEFAULT 0, updated_at INTEGER NOT NULL, stages TEXT);
CREATE TABLE IF NOT EXISTS dead_letters (
    stage TEXT NOT NULL, item TEXT NOT NULL, reason TEXT NOT NULL, detail TEXT NOT NULL,
    updated_at INTEGER NOT NULL, PRIMARY KEY (stage, item));
CREATE INDEX IF NOT EXISTS dead_letters_item ON dead_letters (item);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
";

/// How the store of a run relates to the one the run state describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreMatch {
    /// The same store: the `done` rows hold.
    Same,
    /// The state had no store recorded (a new state, or one of a kg
    /// before store identities): this one is recorded now.
    Adopted,
    /// Another store, or the same one emptied: `forgotten` done documents
    /// are processed again.
    Other {
        /// The description recorded for the earlier store.
        was: String,
        /// Documents the state had as done.
        forgotten: u64,
    },
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Brings a run state written by an earlier kg up to date; silent on a
/// fresh one.
fn upgrade(conn: &Connection, path: &Path) -> rusqlite::Result<()> {
    let has_column = |table: &str, column: &str| -> rusqlite::Result<bool> {
        conn.query_row(
            "SELECT COUNT(*) FROM pragma_table_info(?1) WHERE name = ?2",
            params![table, column],
            |r| r.get::<_, i64>(0),
        )
        .map(|n| n > 0)
    };
    // `stages` (which extractor and embedder a done document went through)
    // came after the first release of the schema.
    if !has_column("documents", "stages")? {
        match conn.execute_batch("ALTER TABLE documents ADD COLUMN stages TEXT") {
            Ok(()) => tracing::info!(
                state = %path.display(),
                "run state upgraded: documents done before are processed once more"
            ),
            // Another process opening the same old state added it first.
            Err(e) if e.to_string().contains("duplicate column") => {}
            Err(e) => return Err(e),
        }
    }
    // The per-chunk-id caches of earlier versions (see the module docs).
    for table in ["extraction_cache", "embedding_cache"] {
        if has_column(table, "key")? {
            let rows: i64 =
                conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))?;
            conn.execute_batch(&format!("DROP TABLE IF EXISTS {table}"))?;
            if rows > 0 {
                tracing::info!(
                    state = %path.display(),
                    "run state upgraded: dropped {rows} entries of the per-chunk {table} of an \
                     earlier kg (answers are now cached by content in the cache folder); \
                     documents done before stay done"
                );
            }
        }
    }
    Ok(())
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
        upgrade(&conn, &path).map_err(err)?;
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

    /// A random id of this data dir's runs, drawn on first use: the holder
    /// of the store's writer lease (`kg_store::lease`). Runs from the same
    /// data dir share it (the data-dir lock keeps them one at a time), so a
    /// run after a killed one takes its lease back at once.
    pub fn holder_id(&self) -> Result<String, StateError> {
        let fresh = {
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos()),
            );
            h.write_u32(std::process::id());
            let a = h.finish();
            h.write_u64(a);
            format!("{a:016x}{:016x}", h.finish())
        };
        self.with(|c| {
            c.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('holder_id', ?1)",
                [&fresh],
            )?;
            c.query_row("SELECT value FROM meta WHERE key = 'holder_id'", [], |r| {
                r.get(0)
            })
        })
    }

    /// Ties the state to the store with `identity` (described by
    /// `description`, credentials removed), forgetting what it knew of any
    /// other store; see the module docs.
    pub fn check_store(&self, identity: &str, description: &str) -> Result<StoreMatch, StateError> {
        self.with(|c| {
            let tx = c.unchecked_transaction()?;
            let get = |key: &str| -> rusqlite::Result<Option<String>> {
                tx.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                    .optional()
            };
            let recorded = get("store_identity")?;
            let was = get("store_description")?.unwrap_or_else(|| "an unknown store".into());
            let outcome = match recorded.as_deref() {
                Some(id) if id == identity => StoreMatch::Same,
                None => StoreMatch::Adopted,
                Some(_) => {
                    let forgotten: i64 = tx.query_row(
                        "SELECT COUNT(*) FROM documents WHERE status = 'done'",
                        [],
                        |r| r.get(0),
                    )?;
                    tx.execute("DELETE FROM documents", [])?;
                    StoreMatch::Other {
                        was,
                        forgotten: forgotten as u64,
                    }
                }
            };
            for (key, value) in [
                ("store_identity", identity),
                ("store_description", description),
            ] {
                tx.execute(
                    "INSERT INTO meta (key, value) VALUES (?1, ?2) \
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    params![key, value],
                )?;
            }
            tx.commit()?;
            Ok(outcome)
        })
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
    use kg_core::Stage;

    #[test]
    fn a_state_forgets_its_done_documents_when_the_store_is_another() {
        let dir = tempfile::tempdir().unwrap();
        let doc = DocumentId::from_content_sha256(&kg_core::sha256_hex(b"doc"));
        let s = RunState::open(dir.path()).unwrap();
        assert_eq!(
            s.check_store("id-1", "embedded a").unwrap(),
            StoreMatch::Adopted
        );
        s.document_started(&doc, "a.pdf").unwrap();
        s.document_done(&doc, 1, "k").unwrap();
        assert_eq!(
            s.check_store("id-1", "embedded a").unwrap(),
            StoreMatch::Same
        );
        assert!(s.is_done_with(&doc, "k").unwrap());
        // Reopened (a later run) against an emptied or other store.
        drop(s);
        let s = RunState::open(dir.path()).unwrap();
        assert_eq!(
            s.check_store("id-2", "neo4j bolt://db:7687 database x")
                .unwrap(),
            StoreMatch::Other {
                was: "embedded a".into(),
                forgotten: 1
            }
        );
        assert!(!s.is_done_with(&doc, "k").unwrap());
        assert_eq!(s.document_status(&doc).unwrap(), None);
        // The new store is now the recorded one.
        assert_eq!(
            s.check_store("id-2", "neo4j bolt://db:7687 database x")
                .unwrap(),
            StoreMatch::Same
        );
    }

    #[test]
    fn state_survives_reopen_and_tracks_documents_and_dead_letters() {
        let dir = tempfile::tempdir().unwrap();
        let doc = DocumentId::from_content_sha256(&kg_core::sha256_hex(b"doc"));
        {
            let s = RunState::open(dir.path()).unwrap();
            assert_eq!(s.document_status(&doc).unwrap(), None);
            s.document_started(&doc, "a.pdf").unwrap();
            assert_eq!(
                s.document_status(&doc).unwrap(),
                Some(DocStatus::InProgress)
            );
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
        let with_llm = stages_key(Some(("m".into(), "v1".into())), Some("e"));
        s.document_done(&doc, 1, &with_llm).unwrap();
        assert_eq!(s.document_status(&doc).unwrap(), Some(DocStatus::Done));
        // Done for the same stages only: not for a run with another model,
        // nor for one that would extract where this one did not.
        assert!(s.is_done_with(&doc, &with_llm).unwrap());
        assert!(!s
            .is_done_with(
                &doc,
                &stages_key(Some(("m".into(), "v2".into())), Some("e"))
            )
            .unwrap());
        assert!(!s.is_done_with(&doc, &stages_key(None, Some("e"))).unwrap());
        s.document_done(&doc, 1, &stages_key(None, Some("e")))
            .unwrap();
        assert!(!s.is_done_with(&doc, &with_llm).unwrap());
        s.forget_document(&doc).unwrap();
        assert_eq!(s.document_status(&doc).unwrap(), None);
        assert!(!s.is_done_with(&doc, &with_llm).unwrap());
        assert_eq!(s.document_counts().unwrap(), (0, 0));
        assert_eq!(s.dead_letter_count().unwrap(), 1);
        s.clear_dead_letters_of("x.csv").unwrap();
        assert_eq!(s.dead_letter_count().unwrap(), 0);
    }
}

#[cfg(test)]
mod upgrade_tests {
    use super::*;

    fn open_logging(dir: &Path) -> (RunState, String) {
        let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let writer = {
            let buf = buf.clone();
            move || LogBuf(buf.clone())
        };
        let subscriber = tracing_subscriber::fmt()
            .with_writer(writer)
            .with_ansi(false)
            .finish();
        let state = tracing::subscriber::with_default(subscriber, || RunState::open(dir).unwrap());
        let text = String::from_utf8_lossy(&buf.lock().unwrap()).into_owned();
        (state, text)
    }

    struct LogBuf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for LogBuf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_fresh_state_says_nothing_about_upgrades() {
        let dir = tempfile::tempdir().unwrap();
        let (_, log) = open_logging(dir.path());
        assert!(!log.contains("upgraded"), "{log}");
        let (_, log) = open_logging(dir.path());
        assert!(log.is_empty(), "{log}");
    }

    #[test]
    fn an_old_state_keeps_its_done_documents_and_drops_per_chunk_caches() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run-state.sqlite3");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                "CREATE TABLE documents (id TEXT PRIMARY KEY, source TEXT NOT NULL, status TEXT NOT NULL,
                    chunks INTEGER NOT NULL DEFAULT 0, updated_at INTEGER NOT NULL, stages TEXT);
                 CREATE TABLE extraction_cache (key TEXT PRIMARY KEY, extraction TEXT NOT NULL);
                 CREATE TABLE embedding_cache (key TEXT PRIMARY KEY, embedding TEXT NOT NULL);
                 INSERT INTO documents VALUES ('d1', '/a.pdf', 'done', 3, 0, 'extract=m@kg-extract-v1;embed=e');
                 INSERT INTO extraction_cache VALUES ('k', '{}');",
            )
            .unwrap();
        }
        let (state, log) = open_logging(dir.path());
        assert!(
            log.contains("dropped 1 entries of the per-chunk extraction_cache"),
            "{log}"
        );
        let d1 = DocumentId::from_raw("d1".to_string());
        assert!(state
            .is_done_with(&d1, "extract=m@kg-extract-v1;embed=e")
            .unwrap());
        let (_, log) = open_logging(dir.path());
        assert!(log.is_empty(), "the upgrade happens once: {log}");
    }
}
