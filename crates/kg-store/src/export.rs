//! Moving a graph from the embedded store to Neo4j.
//!
//! `kg store --from-embedded` reads the embedded store back as kg-core
//! records and writes them through an ordinary [`BatchWriter`] to Neo4j: the
//! same planner, the same idempotent MERGEs, the same retries and
//! dead-letter file. Exporting twice changes nothing; a failed batch is
//! re-run like any other. (A Cypher or CSV dump for `neo4j-admin import`
//! was the alternative: it needs an empty database and a stopped server,
//! which is the wrong trade for a tool whose writes are idempotent merges.)
//!
//! The records stream from the SQLite file into the writer through a
//! bounded channel, so memory holds a window or two, not the graph. Chunks
//! come in document and index order, so the writer links `NEXT_CHUNK`
//! again across its windows; a writer made with [`BatchWriter::open`]
//! creates the vector index when the first chunk vector comes by, so the
//! export needs no pass of its own to learn the vector size.

use kg_core::Record;
use tokio::sync::mpsc;

use crate::embedded::EmbeddedStore;
use crate::error::StoreError;
use crate::store::{GraphSink, GraphStore, Scope};
use crate::writer::{BatchWriter, WriteReport};

/// Records in flight between the embedded store and the writer.
const IN_FLIGHT: usize = 1_024;

/// Writes everything in `embedded` through `writer` (typically to Neo4j,
/// opened with [`BatchWriter::open`]). `Err` when the embedded store cannot
/// be read (what was read before is written) or the dead-letter file
/// cannot be written; failed batches are in the report.
pub async fn export_embedded<S: GraphSink>(
    embedded: &EmbeddedStore,
    writer: &BatchWriter<S>,
) -> Result<WriteReport, StoreError> {
    tracing::info!(from = %embedded.path().display(), "exporting the embedded store");
    let (tx, rx) = mpsc::channel::<Record>(IN_FLIGHT);
    let (read, written) = tokio::join!(
        embedded.read_records(&Scope::All, tx),
        writer.write_channel(rx, None)
    );
    let report = written?;
    let read = read?;
    tracing::info!(records = read, "exported the embedded store");
    Ok(report)
}
