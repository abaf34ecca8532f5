//! Moving a graph from the embedded store to Neo4j.
//!
//! `kg store --from-embedded` reads the embedded store back as kg-core
//! records and writes them through an ordinary [`BatchWriter`] to Neo4j: the
//! same planner, the same idempotent MERGEs, the same retries and
//! dead-letter file. Exporting twice changes nothing; a failed batch is
//! re-run like any other. (A Cypher or CSV dump for `neo4j-admin import`
//! was the alternative: it needs an empty database and a stopped server,
//! which is the wrong trade for a tool whose writes are idempotent merges.)

use crate::embedded::EmbeddedStore;
use crate::error::StoreError;
use crate::store::{GraphSink, GraphStore, Scope};
use crate::writer::{BatchWriter, WriteReport};

/// Writes everything in `embedded` through `writer` (typically to Neo4j).
pub async fn export_embedded<S: GraphSink>(
    embedded: &EmbeddedStore,
    writer: &BatchWriter<S>,
) -> Result<WriteReport, StoreError> {
    let records = embedded.read_records(&Scope::All).await?;
    tracing::info!(
        records = records.len(),
        from = %embedded.path().display(),
        "exporting the embedded store"
    );
    writer.write_records(records).await
}
