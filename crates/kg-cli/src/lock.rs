//! One writer at a time: operating-system locks on the data dir.
//!
//! Two `kg run` on one data dir would both call the LLM for the same chunks
//! and race each other's removal of earlier document versions. Each
//! resource of the data dir that must have one writer has a lock file in
//! `<data_dir>/locks/`, held with `flock` for as long as a command uses it:
//!
//! | lock | taken by | guards |
//! |---|---|---|
//! | `store` | `kg run`, `kg store` | the graph and the run state's documents |
//! | `extract-cache` | `kg run`, `kg extract` | the LLM response cache |
//! | `embed-cache` | `kg run`, `kg embed` | the vector cache |
//!
//! so the stages of a pipe (`kg ingest | kg extract | kg embed | kg store`)
//! run side by side while two runs do not. Locks are always taken in that
//! order, so two commands never wait for each other in a circle.
//!
//! The kernel releases an `flock` when its process ends, however it ends
//! (SIGKILL included): a lock never goes stale, and the next run starts at
//! once. The file holds the holder's pid and start time, for the message a
//! second command prints while it waits (or, with `--no-wait`, when it
//! gives up with exit code 1).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;

/// A lock of the data dir (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// The graph and the run state's documents.
    Store,
    /// The LLM response cache.
    ExtractCache,
    /// The vector cache.
    EmbedCache,
}

impl Resource {
    fn file_name(self) -> &'static str {
        match self {
            Resource::Store => "store.lock",
            Resource::ExtractCache => "extract-cache.lock",
            Resource::EmbedCache => "embed-cache.lock",
        }
    }
}

/// A lock could not be had.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another kg holds it and the command was told not to wait.
    #[error(
        "another kg is using {path} ({holder}); wait for it to finish, or run without --no-wait to wait for it"
    )]
    Busy {
        /// The lock file.
        path: PathBuf,
        /// Who holds it, as it wrote itself down.
        holder: String,
    },
    /// Ctrl-C while waiting.
    #[error("interrupted while waiting for {path}")]
    Interrupted {
        /// The lock file.
        path: PathBuf,
    },
    /// The lock file cannot be created or locked.
    #[error("cannot lock {path}: {error}")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// Why.
        #[source]
        error: std::io::Error,
    },
}

/// Held locks; dropping them releases them.
#[derive(Debug)]
pub struct DataDirLock {
    _files: Vec<File>,
}

fn open(path: &Path) -> Result<File, LockError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|error| LockError::Io {
            path: path.to_path_buf(),
            error,
        })?;
    }
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .map_err(|error| LockError::Io {
            path: path.to_path_buf(),
            error,
        })
}

fn holder(file: &mut File) -> String {
    let mut text = String::new();
    let _ = file.rewind().and_then(|()| file.read_to_string(&mut text));
    let text = text.trim();
    if text.is_empty() {
        "a process that has not written its name yet".into()
    } else {
        text.to_string()
    }
}

fn write_holder(file: &mut File) {
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let args: Vec<String> = std::env::args().take(2).collect();
    let me = format!(
        "pid {}, `{}`, started at unix time {started}",
        std::process::id(),
        args.join(" ")
    );
    let _ = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| file.write_all(me.as_bytes()))
        .and_then(|()| file.flush());
}

impl DataDirLock {
    /// Takes the locks of `resources` in `data_dir`, in the fixed order.
    /// When one is held by another process: with `wait`, logs who holds it
    /// and waits (Ctrl-C, through `cancel`, stops the wait); without,
    /// returns [`LockError::Busy`].
    pub async fn acquire(
        data_dir: &Path,
        resources: &[Resource],
        wait: bool,
        cancel: &CancellationToken,
    ) -> Result<Self, LockError> {
        let mut order = resources.to_vec();
        order.sort_by_key(|r| *r as u8);
        order.dedup();
        let mut files = Vec::with_capacity(order.len());
        for resource in order {
            let path = data_dir.join("locks").join(resource.file_name());
            let mut file = open(&path)?;
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    let who = holder(&mut file);
                    if !wait {
                        return Err(LockError::Busy { path, holder: who });
                    }
                    tracing::warn!(
                        lock = %path.display(),
                        "waiting for another kg to finish ({who})"
                    );
                    let (file_back, result) = {
                        let task = tokio::task::spawn_blocking(move || {
                            let r = file.lock();
                            (file, r)
                        });
                        tokio::select! {
                            joined = task => joined.map_err(|e| LockError::Io {
                                path: path.clone(),
                                error: std::io::Error::other(e.to_string()),
                            })?,
                            _ = cancel.cancelled() => return Err(LockError::Interrupted { path }),
                        }
                    };
                    file = file_back;
                    result.map_err(|error| LockError::Io {
                        path: path.clone(),
                        error,
                    })?;
                    tracing::info!(lock = %path.display(), "lock taken: going on");
                }
                Err(std::fs::TryLockError::Error(error)) => {
                    return Err(LockError::Io { path, error })
                }
            }
            write_holder(&mut file);
            files.push(file);
        }
        Ok(Self { _files: files })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_holder_is_refused_or_waits_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let cancel = CancellationToken::new();
        let first = DataDirLock::acquire(
            dir.path(),
            &[Resource::Store, Resource::ExtractCache],
            false,
            &cancel,
        )
        .await
        .unwrap();
        // flock locks belong to open files: a second open in this process
        // conflicts exactly as another process would.
        let err = DataDirLock::acquire(dir.path(), &[Resource::Store], false, &cancel)
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, LockError::Busy { .. }), "{msg}");
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        // A pipe's stages use different locks and do not conflict.
        let embed = DataDirLock::acquire(dir.path(), &[Resource::EmbedCache], false, &cancel)
            .await
            .unwrap();
        drop(embed);
        let waiter = {
            let (dir, cancel) = (dir.path().to_path_buf(), cancel.clone());
            tokio::spawn(async move {
                DataDirLock::acquire(&dir, &[Resource::Store], true, &cancel).await
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(!waiter.is_finished(), "waits while the lock is held");
        drop(first);
        let got = tokio::time::timeout(std::time::Duration::from_secs(20), waiter)
            .await
            .expect("hang guard")
            .unwrap();
        assert!(got.is_ok());
    }

    #[tokio::test]
    async fn ctrl_c_ends_the_wait() {
        let dir = tempfile::tempdir().unwrap();
        let cancel = CancellationToken::new();
        let _held = DataDirLock::acquire(dir.path(), &[Resource::Store], false, &cancel)
            .await
            .unwrap();
        let waiter = {
            let (dir, cancel) = (dir.path().to_path_buf(), cancel.clone());
            tokio::spawn(async move {
                DataDirLock::acquire(&dir, &[Resource::Store], true, &cancel).await
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        cancel.cancel();
        let got = tokio::time::timeout(std::time::Duration::from_secs(20), waiter)
            .await
            .expect("hang guard")
            .unwrap();
        assert!(matches!(got, Err(LockError::Interrupted { .. })));
    }
}
