//! One writer per store, across machines: a lease the store itself keeps.
//!
//! A lock on a data dir keeps two `kg run` of one machine apart, but two
//! machines (or two data dirs) can point at one Neo4j database. Both would
//! then call the LLM for the same chunks, and one could remove an earlier
//! version of a document while the other is still writing chunks of it.
//! So a run that writes takes the store's **writer lease** first:
//!
//! - The lease is a holder and an expiry, kept by the store: on the
//!   `:KgLease` node in Neo4j (created under the write lock of the
//!   `:KgStore` marker, see [`GraphStore::identity`]; neither is counted or
//!   read back as graph), in the `kg_meta` table of the embedded store.
//! - [`GraphStore::try_lease`] grants it in one transaction when nobody holds
//!   it, when the asker already holds it, or when the holder's lease has
//!   expired. The transaction first writes the marker (taking its write
//!   lock in Neo4j; an optimistic store such as ArcadeDB fails one of two
//!   concurrent writers at commit instead), and only then reads who holds
//!   it, so two machines asking at once are never both granted.
//! - [`Lease`] renews it every third of its time to live (60 s by
//!   default) while the run lasts and gives it up at the end. A holder
//!   that dies (SIGKILL, power loss) stops renewing: its lease expires
//!   and the next run takes it over. A run from the same data dir uses the
//!   same holder id, so it takes its own dead predecessor's lease at once.
//! - A run that cannot renew for a whole time to live, or finds the lease
//!   taken over (its machine stalled past the expiry), is told through
//!   [`Lease::lost`] and must stop writing.
//!
//! Expiry compares the taker's clock with the clock of the holder that
//! last renewed: machines writing one database should keep their clocks in
//! step (NTP); a skew well under the time to live is harmless.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::StoreError;
use crate::store::GraphStore;

/// The name of the lease every writing kg command takes.
pub const WRITER: &str = "writer";

/// The lease's default time to live.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);

/// What [`GraphStore::try_lease`] answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseState {
    /// The asker holds the lease until the time to live it asked for.
    Granted,
    /// Another holder has it.
    Held {
        /// What that holder said of itself (host, process, data dir).
        note: String,
        /// How long until its lease expires, unless it renews it.
        expires_in: Duration,
    },
}

/// The lease could not be had.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Another kg writes this store and the caller would not wait.
    #[error(
        "another kg is writing to {store} ({note}); its lease runs {secs} s more unless renewed: wait for it to finish, or run without --no-wait to wait for it",
        secs = expires_in.as_secs()
    )]
    Busy {
        /// The store, as the user configured it.
        store: String,
        /// Who holds the lease.
        note: String,
        /// How long until it expires unless renewed.
        expires_in: Duration,
    },
    /// Cancelled (Ctrl-C) while waiting for the lease.
    #[error("interrupted while waiting for the writer lease of {store}")]
    Interrupted {
        /// The store, as the user configured it.
        store: String,
    },
    /// The store could not be asked.
    #[error("cannot take the writer lease of {store}: {source}")]
    Store {
        /// The store, as the user configured it.
        store: String,
        /// Why.
        #[source]
        source: StoreError,
    },
}

/// How long from `now_ms` until `expires_ms` (zero when past).
pub fn until(expires_ms: i64, now_ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(expires_ms.saturating_sub(now_ms)).unwrap_or(0))
}

/// Milliseconds since the Unix epoch on this machine's clock.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// What [`Lease::acquire`] asks for.
#[derive(Debug, Clone)]
pub struct LeaseRequest {
    /// The lease's name ([`WRITER`] for kg's runs).
    pub name: String,
    /// A stable id of the taker: the same for a re-run from the same data
    /// dir, so that it takes its own dead predecessor's lease at once.
    pub holder: String,
    /// What another kg shows of this holder (host, process, data dir).
    pub note: String,
    /// How long the lease lasts unless renewed ([`DEFAULT_TTL`]).
    pub ttl: Duration,
    /// Wait for another holder (else [`LeaseError::Busy`] at once).
    pub wait: bool,
}

/// A held writer lease, renewed in the background until
/// [`Lease::release`] (or until it is dropped: then it simply expires).
#[derive(Debug)]
pub struct Lease {
    name: String,
    holder: String,
    stop: CancellationToken,
    lost: CancellationToken,
    lost_reason: Arc<Mutex<Option<String>>>,
    renew: Option<JoinHandle<()>>,
}

impl Lease {
    /// Takes the lease `request` names of `store`. When another holder has
    /// it: waits for it to be given up or to expire if `request.wait`, else
    /// [`LeaseError::Busy`]. `cancel` ends the wait. `store_name` names the
    /// store in errors.
    ///
    /// The renewal task runs on the current Tokio runtime.
    pub async fn acquire<S: GraphStore + 'static>(
        store: Arc<S>,
        store_name: &str,
        request: &LeaseRequest,
        cancel: &CancellationToken,
    ) -> Result<Lease, LeaseError> {
        let LeaseRequest {
            name,
            holder,
            note,
            ttl,
            wait,
        } = request;
        let (ttl, wait) = (*ttl, *wait);
        let mut told = false;
        loop {
            let state = store
                .try_lease(name, holder, note, ttl, now_ms())
                .await
                .map_err(|source| LeaseError::Store {
                    store: store_name.to_owned(),
                    source,
                })?;
            match state {
                LeaseState::Granted => break,
                LeaseState::Held { note, expires_in } => {
                    if !wait {
                        return Err(LeaseError::Busy {
                            store: store_name.to_owned(),
                            note,
                            expires_in,
                        });
                    }
                    if !told {
                        tracing::warn!(
                            "another kg is writing to {store_name} ({note}); waiting for it to \
                             finish (its lease runs {} s more unless renewed)",
                            expires_in.as_secs()
                        );
                        told = true;
                    }
                    let pause = expires_in.min(ttl / 6).max(Duration::from_millis(200));
                    tokio::select! {
                        () = cancel.cancelled() => {
                            return Err(LeaseError::Interrupted { store: store_name.to_owned() });
                        }
                        () = tokio::time::sleep(pause) => {}
                    }
                }
            }
        }
        let stop = CancellationToken::new();
        let lost = CancellationToken::new();
        let lost_reason = Arc::new(Mutex::new(None));
        let renew = tokio::spawn(renew_loop(
            store,
            LeaseRequest {
                name: name.clone(),
                holder: holder.clone(),
                note: note.clone(),
                ttl,
                wait,
            },
            stop.clone(),
            lost.clone(),
            lost_reason.clone(),
        ));
        Ok(Lease {
            name: name.to_owned(),
            holder: holder.to_owned(),
            stop,
            lost,
            lost_reason,
            renew: Some(renew),
        })
    }

    /// Cancelled when the lease is lost: not renewed for a whole time to
    /// live, or taken over by another holder. A run must stop writing.
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// Why the lease was lost, once [`Self::lost`] fired.
    pub fn lost_reason(&self) -> Option<String> {
        self.lost_reason.lock().ok().and_then(|r| r.clone())
    }

    /// Stops renewing and gives the lease up.
    pub async fn release<S: GraphStore>(mut self, store: &S) -> Result<(), StoreError> {
        self.stop.cancel();
        if let Some(task) = self.renew.take() {
            let _ = task.await;
        }
        store.release_lease(&self.name, &self.holder).await
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn renew_loop<S: GraphStore>(
    store: Arc<S>,
    request: LeaseRequest,
    stop: CancellationToken,
    lost: CancellationToken,
    reason: Arc<Mutex<Option<String>>>,
) {
    let LeaseRequest {
        name,
        holder,
        note,
        ttl,
        ..
    } = request;
    let every = (ttl / 3).max(Duration::from_millis(50));
    let mut last_renewed = tokio::time::Instant::now();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        let why = match store.try_lease(&name, &holder, &note, ttl, now_ms()).await {
            Ok(LeaseState::Granted) => {
                last_renewed = tokio::time::Instant::now();
                continue;
            }
            Ok(LeaseState::Held { note, .. }) => {
                format!("the store's writer lease was taken over by another kg ({note})")
            }
            Err(e) => {
                if last_renewed.elapsed() < ttl {
                    tracing::warn!("cannot renew the store's writer lease: {e}");
                    continue;
                }
                format!(
                    "the store's writer lease could not be renewed for {} s: {e}",
                    ttl.as_secs()
                )
            }
        };
        if let Ok(mut r) = reason.lock() {
            *r = Some(why);
        }
        lost.cancel();
        return;
    }
}
