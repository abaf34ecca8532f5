//! The persistent response cache: a re-run over unchanged chunks makes no
//! LLM call.
//!
//! One append-only JSON Lines file, `extract-cache.jsonl`, in the directory
//! the caller gives: each line `{"key": ..., "answer": {...}}`, the key a
//! hash of (model, prompt version, schema, normalised chunk text). Only the
//! *parsed* answer is stored, not the validated extraction, so a change to
//! validation applies to cached answers too.
//!
//! Memory holds only an index, key → (offset, length), about 60 bytes per
//! entry; a hit reads its one line back with a positioned read. The reads
//! and appends are plain blocking file I/O on the worker's thread: a few
//! kilobytes, mostly from the page cache, microseconds against the
//! seconds of an LLM call, so not worth a `spawn_blocking` hop. Each answer
//! is appended with a single `write` of one whole line as soon as it
//! arrives, so a killed run loses at most the answers still in flight. A
//! torn last line (a kill in the middle of a write) is cut off when the
//! cache is next opened; any other unreadable line is skipped and logged.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::Value;

use crate::ExtractError;

/// File name of the cache inside its directory.
pub const CACHE_FILE: &str = "extract-cache.jsonl";

#[derive(Debug)]
struct Writer {
    file: File,
    len: u64,
}

/// The cache (see the module docs). Shared by all workers.
#[derive(Debug)]
pub struct ResponseCache {
    path: PathBuf,
    index: Mutex<HashMap<String, (u64, u32)>>,
    writer: Mutex<Writer>,
    reader: File,
}

impl ResponseCache {
    /// Opens (or creates) the cache in `dir`.
    pub fn open(dir: &Path) -> Result<Self, ExtractError> {
        Self::open_file(dir, CACHE_FILE)
    }

    /// Opens (or creates) a cache of the same kind in `dir` under another
    /// file name (the description summaries keep theirs apart).
    pub fn open_file(dir: &Path, file: &str) -> Result<Self, ExtractError> {
        let path = dir.join(file);
        let err = |source| ExtractError::Cache {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(err)?;
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(err)?;
        let mut index = HashMap::new();
        let mut offset = 0u64;
        let mut complete_len = 0u64;
        let mut reader = BufReader::new(file.try_clone().map_err(err)?);
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = reader.read_until(b'\n', &mut line).map_err(err)?;
            if n == 0 {
                break;
            }
            if line.last() != Some(&b'\n') {
                tracing::warn!(path = %path.display(), "cutting a torn last line off the cache");
                break;
            }
            match serde_json::from_slice::<Value>(&line) {
                Ok(v) => {
                    if let Some(key) = v.get("key").and_then(Value::as_str) {
                        index.insert(key.to_string(), (offset, n as u32));
                    }
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), offset, "skipping unreadable cache line: {e}")
                }
            }
            offset += n as u64;
            complete_len = offset;
        }
        let total = file.metadata().map_err(err)?.len();
        if total > complete_len {
            file.set_len(complete_len).map_err(err)?;
        }
        Ok(Self {
            reader: file.try_clone().map_err(err)?,
            writer: Mutex::new(Writer {
                file,
                len: complete_len,
            }),
            index: Mutex::new(index),
            path,
        })
    }

    /// The cache file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many answers it holds.
    pub fn len(&self) -> usize {
        self.index.lock().map(|i| i.len()).unwrap_or(0)
    }

    /// Whether it holds no answer.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `key` has an answer (no read).
    pub fn contains(&self, key: &str) -> bool {
        self.index
            .lock()
            .map(|i| i.contains_key(key))
            .unwrap_or(false)
    }

    /// The cached answer for `key`. A line that cannot be read back counts
    /// as a miss (and is logged): the chunk is simply asked again.
    pub fn get(&self, key: &str) -> Option<Value> {
        let (offset, len) = *self.index.lock().ok()?.get(key)?;
        let mut buf = vec![0u8; len as usize];
        if let Err(e) = self.reader.read_exact_at(&mut buf, offset) {
            tracing::warn!(path = %self.path.display(), "cache read failed: {e}");
            return None;
        }
        let mut v: Value = serde_json::from_slice(&buf).ok()?;
        Some(v.get_mut("answer")?.take())
    }

    /// Appends the answer for `key`.
    pub fn put(&self, key: &str, answer: &Value) -> Result<(), ExtractError> {
        let mut line = serde_json::to_vec(&serde_json::json!({"key": key, "answer": answer}))
            .map_err(|e| ExtractError::Cache {
                path: self.path.clone(),
                source: std::io::Error::other(e),
            })?;
        line.push(b'\n');
        let mut w = self.writer.lock().map_err(|_| ExtractError::Cache {
            path: self.path.clone(),
            source: std::io::Error::other("cache writer lock poisoned"),
        })?;
        w.file
            .write_all(&line)
            .map_err(|source| ExtractError::Cache {
                path: self.path.clone(),
                source,
            })?;
        let offset = w.len;
        w.len += line.len() as u64;
        drop(w);
        if let Ok(mut index) = self.index.lock() {
            index.insert(key.to_string(), (offset, line.len() as u32));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn answers_survive_reopening_and_torn_lines_are_cut() {
        let dir = tempfile::tempdir().unwrap();
        {
            let cache = ResponseCache::open(dir.path()).unwrap();
            cache.put("a", &json!({"entities": [1]})).unwrap();
            cache.put("b", &json!({"entities": [2]})).unwrap();
            assert_eq!(cache.get("a"), Some(json!({"entities": [1]})));
        }
        // A kill mid-write leaves half a line.
        let path = dir.path().join(CACHE_FILE);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"key":"c","answer":{"ent"#).unwrap();
        drop(f);
        let cache = ResponseCache::open(dir.path()).unwrap();
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get("b"), Some(json!({"entities": [2]})));
        assert_eq!(cache.get("c"), None);
        cache.put("c", &json!({"entities": []})).unwrap();
        drop(cache);
        let cache = ResponseCache::open(dir.path()).unwrap();
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get("c"), Some(json!({"entities": []})));
        assert_eq!(cache.get("a"), Some(json!({"entities": [1]})));
    }
}
