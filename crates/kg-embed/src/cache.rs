//! A persistent cache of vectors keyed by (model id, text hash), so that a
//! re-run of the same input makes zero embedding calls.
//!
//! Format: one append-only file, `embeddings-v1.bin`, of records
//!
//! ```text
//! "KGE1" | key: 16 bytes | dims: u32 LE | dims × f32 LE | check: 4 bytes
//! ```
//!
//! where `key` is [`kg_core::content_hash`] of (model id, text) and `check`
//! the first 4 bytes of SHA-256 over key, dims and vector.
//!
//! Why this shape rather than a database:
//! - **Bounded memory.** Opening the cache scans record headers only (it
//!   seeks over the vectors) and keeps a map key → file offset, 24 bytes per
//!   entry whatever the dimension; a vector is read from disk when asked for.
//!   A million cached chunks cost ~24 MB of memory, not 1.5 GB.
//! - **Crash safety.** A record is appended with one `write` call and becomes
//!   visible to this process only after it; a run killed mid-write leaves a
//!   torn last record, which the next open detects (bad magic or short) and
//!   cuts off. A record whose checksum fails on read is treated as a miss and
//!   re-embedded, never returned.
//! - **One writer at a time.** Two processes appending to one cache file at
//!   once are not supported (their offsets would disagree; the checksums turn
//!   that into misses, not wrong vectors).
//!
//! Lookups are small synchronous reads, usually from the page cache; the
//! driver does them inline rather than paying a thread hop per chunk.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use crate::EmbedError;

const MAGIC: &[u8; 4] = b"KGE1";
const HEADER_LEN: u64 = 4 + 16 + 4;
const CHECK_LEN: u64 = 4;
/// No real model has more dimensions; a bigger number is a torn header.
const MAX_DIMS: u32 = 65_536;
/// The cache file's name inside the cache folder.
pub const CACHE_FILE: &str = "embeddings-v1.bin";

type Key = [u8; 16];

struct Inner {
    file: File,
    index: HashMap<Key, u64>,
    end: u64,
}

/// The persistent embedding cache. Cheap to share behind an `Arc`.
pub struct EmbedCache {
    path: PathBuf,
    inner: Mutex<Inner>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl std::fmt::Debug for EmbedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbedCache")
            .field("path", &self.path)
            .field("entries", &self.len())
            .finish()
    }
}

fn cache_key(model: &str, text: &str) -> Key {
    let hex_key = kg_core::content_hash(&[model.as_bytes(), text.as_bytes()]);
    let mut key = [0u8; 16];
    // content_hash is always 32 hex digits; fall back to hashing ourselves
    // should that ever change, rather than panicking.
    if hex::decode_to_slice(&hex_key, &mut key).is_err() {
        let d = Sha256::digest(hex_key.as_bytes());
        key.copy_from_slice(&d[..16]);
    }
    key
}

fn check(key: &Key, dims: u32, data: &[u8]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(key);
    h.update(dims.to_le_bytes());
    h.update(data);
    let d = h.finalize();
    [d[0], d[1], d[2], d[3]]
}

impl EmbedCache {
    /// Opens (or creates) the cache in folder `dir`.
    pub fn open(dir: &Path) -> Result<Self, EmbedError> {
        let path = dir.join(CACHE_FILE);
        let io = |source| EmbedError::Cache {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let (index, good_end) = scan(&mut file, len).map_err(io)?;
        if good_end < len {
            tracing::warn!(
                cache = %path.display(),
                kept_bytes = good_end,
                dropped_bytes = len - good_end,
                "embedding cache ends in a torn record (killed run?); cutting it off"
            );
            file.set_len(good_end).map_err(io)?;
        }
        tracing::debug!(cache = %path.display(), entries = index.len(), "embedding cache opened");
        Ok(Self {
            path,
            inner: Mutex::new(Inner {
                file,
                index,
                end: good_end,
            }),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        })
    }

    /// The cache file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of cached vectors (all models).
    pub fn len(&self) -> usize {
        self.inner.lock().map(|i| i.index.len()).unwrap_or(0)
    }

    /// Whether the cache holds no vector.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Lookups answered from the cache since it was opened.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Lookups that found nothing (or a damaged record) since it was opened.
    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }

    fn io(&self, source: std::io::Error) -> EmbedError {
        EmbedError::Cache {
            path: self.path.clone(),
            source,
        }
    }

    /// The cached vector of `text` under `model`, if any.
    pub fn get(&self, model: &str, text: &str) -> Result<Option<Vec<f32>>, EmbedError> {
        let key = cache_key(model, text);
        let found = {
            let mut inner = self
                .inner
                .lock()
                .map_err(|_| self.io(std::io::Error::other("cache lock poisoned")))?;
            match inner.index.get(&key).copied() {
                None => None,
                Some(offset) => {
                    let record =
                        read_record(&mut inner.file, offset, &key).map_err(|e| self.io(e))?;
                    if record.is_none() {
                        // Damaged: forget it so that `put` writes a fresh one.
                        inner.index.remove(&key);
                    }
                    record
                }
            }
        };
        match &found {
            Some(_) => self.hits.fetch_add(1, Ordering::Relaxed),
            None => self.misses.fetch_add(1, Ordering::Relaxed),
        };
        Ok(found)
    }

    /// Stores the vector of `text` under `model` (a no-op if present).
    pub fn put(&self, model: &str, text: &str, vector: &[f32]) -> Result<(), EmbedError> {
        let key = cache_key(model, text);
        let dims = u32::try_from(vector.len())
            .ok()
            .filter(|d| *d <= MAX_DIMS)
            .ok_or_else(|| {
                self.io(std::io::Error::other(format!(
                    "refusing to cache a {}-dimensional vector",
                    vector.len()
                )))
            })?;
        let mut data = Vec::with_capacity(vector.len() * 4);
        for x in vector {
            data.extend_from_slice(&x.to_le_bytes());
        }
        let mut record = Vec::with_capacity(HEADER_LEN as usize + data.len() + 4);
        record.extend_from_slice(MAGIC);
        record.extend_from_slice(&key);
        record.extend_from_slice(&dims.to_le_bytes());
        record.extend_from_slice(&data);
        record.extend_from_slice(&check(&key, dims, &data));

        let mut inner = self
            .inner
            .lock()
            .map_err(|_| self.io(std::io::Error::other("cache lock poisoned")))?;
        if inner.index.contains_key(&key) {
            return Ok(());
        }
        let offset = inner.end;
        inner.file.write_all(&record).map_err(|e| self.io(e))?;
        inner.end += record.len() as u64;
        inner.index.insert(key, offset);
        Ok(())
    }

    /// Flushes written records to disk (called at the end of a run).
    pub fn sync(&self) -> Result<(), EmbedError> {
        let inner = self
            .inner
            .lock()
            .map_err(|_| self.io(std::io::Error::other("cache lock poisoned")))?;
        inner.file.sync_data().map_err(|e| self.io(e))
    }
}

/// Reads record headers from the start; returns the index and the offset
/// where the last complete record ends.
fn scan(file: &mut File, len: u64) -> std::io::Result<(HashMap<Key, u64>, u64)> {
    let mut index = HashMap::new();
    let mut reader = std::io::BufReader::with_capacity(1 << 16, &mut *file);
    reader.seek(SeekFrom::Start(0))?;
    let mut offset = 0u64;
    let mut header = [0u8; HEADER_LEN as usize];
    while offset + HEADER_LEN <= len {
        reader.read_exact(&mut header)?;
        let (magic, rest) = header.split_at(4);
        let (key_bytes, dims_bytes) = rest.split_at(16);
        let mut dims = [0u8; 4];
        dims.copy_from_slice(dims_bytes);
        let dims = u32::from_le_bytes(dims);
        let body = u64::from(dims) * 4 + CHECK_LEN;
        if magic != MAGIC || dims > MAX_DIMS || offset + HEADER_LEN + body > len {
            break;
        }
        let mut key = [0u8; 16];
        key.copy_from_slice(key_bytes);
        // Last wins: a record re-written after a damaged one replaces it.
        index.insert(key, offset);
        let skip = i64::try_from(body).map_err(std::io::Error::other)?;
        reader.seek_relative(skip)?;
        offset += HEADER_LEN + body;
    }
    Ok((index, offset))
}

/// Reads and verifies the record at `offset`; `None` if it is damaged.
fn read_record(file: &mut File, offset: u64, key: &Key) -> std::io::Result<Option<Vec<f32>>> {
    file.seek(SeekFrom::Start(offset))?;
    let mut header = [0u8; HEADER_LEN as usize];
    file.read_exact(&mut header)?;
    let (magic, rest) = header.split_at(4);
    let (key_bytes, dims_bytes) = rest.split_at(16);
    let mut dims = [0u8; 4];
    dims.copy_from_slice(dims_bytes);
    let dims = u32::from_le_bytes(dims);
    if magic != MAGIC || key_bytes != key || dims > MAX_DIMS {
        tracing::warn!(offset, "embedding cache record damaged; re-embedding");
        return Ok(None);
    }
    let mut data = vec![0u8; dims as usize * 4];
    file.read_exact(&mut data)?;
    let mut stored = [0u8; 4];
    file.read_exact(&mut stored)?;
    if stored != check(key, dims, &data) {
        tracing::warn!(
            offset,
            "embedding cache record fails its checksum; re-embedding"
        );
        return Ok(None);
    }
    Ok(Some(
        data.chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_survive_reopen_and_models_are_separate() {
        let dir = tempfile::tempdir().unwrap();
        let v = vec![0.25f32, -1.5, 3.0e-7];
        {
            let cache = EmbedCache::open(dir.path()).unwrap();
            assert_eq!(cache.get("m1", "Debian").unwrap(), None);
            cache.put("m1", "Debian", &v).unwrap();
            cache.put("m2", "Debian", &[1.0, 2.0]).unwrap();
            cache.sync().unwrap();
        }
        let cache = EmbedCache::open(dir.path()).unwrap();
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get("m1", "Debian").unwrap(), Some(v));
        assert_eq!(cache.get("m2", "Debian").unwrap(), Some(vec![1.0, 2.0]));
        assert_eq!(cache.get("m1", "debian").unwrap(), None);
        assert_eq!((cache.hits(), cache.misses()), (2, 1));
    }

    #[test]
    fn torn_tail_is_cut_and_earlier_records_kept() {
        let dir = tempfile::tempdir().unwrap();
        {
            let cache = EmbedCache::open(dir.path()).unwrap();
            cache.put("m", "first", &[1.0; 8]).unwrap();
            cache.put("m", "second", &[2.0; 8]).unwrap();
        }
        let path = dir.path().join(CACHE_FILE);
        let full = std::fs::metadata(&path).unwrap().len();
        // Simulate a run killed in the middle of writing the second record.
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(full - 7).unwrap();
        drop(f);
        let cache = EmbedCache::open(dir.path()).unwrap();
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.get("m", "first").unwrap(), Some(vec![1.0; 8]));
        assert_eq!(cache.get("m", "second").unwrap(), None);
        // The cut-off record can be written again and read back.
        cache.put("m", "second", &[2.0; 8]).unwrap();
        drop(cache);
        let cache = EmbedCache::open(dir.path()).unwrap();
        assert_eq!(cache.get("m", "second").unwrap(), Some(vec![2.0; 8]));
    }

    #[test]
    fn flipped_byte_is_a_miss_not_a_wrong_vector() {
        let dir = tempfile::tempdir().unwrap();
        {
            let cache = EmbedCache::open(dir.path()).unwrap();
            cache.put("m", "text", &[0.5; 4]).unwrap();
        }
        let path = dir.path().join(CACHE_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let i = HEADER_LEN as usize + 2;
        bytes[i] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let cache = EmbedCache::open(dir.path()).unwrap();
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.get("m", "text").unwrap(), None);
        // Re-embedding replaces the damaged record, also after a reopen.
        cache.put("m", "text", &[0.75; 4]).unwrap();
        assert_eq!(cache.get("m", "text").unwrap(), Some(vec![0.75; 4]));
        drop(cache);
        let cache = EmbedCache::open(dir.path()).unwrap();
        assert_eq!(cache.get("m", "text").unwrap(), Some(vec![0.75; 4]));
    }
}
