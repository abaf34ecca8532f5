//! Entity vectors for graph search: after `kg run` has written its
//! documents, every entity in the store is embedded (name, type and
//! description, [`kg_embed::entity_text`]) with the chunks' embedder and
//! written back. The embed cache is keyed by the text, so an entity whose
//! description has not changed costs no call on a later run: each distinct
//! entity text is embedded once.
//!
//! Memory does not grow with the graph: entities stream from the store
//! through the embedder into the writer over bounded channels.

use std::sync::Arc;

use kg_core::Record;
use kg_store::{AnyStore, BatchWriter, GraphStore, Scope};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What [`embed_entities`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EntityVectors {
    /// Entities embedded by a call to the model.
    pub embedded: u64,
    /// Entities whose vector came from the cache.
    pub cached: u64,
    /// Embeddings written.
    pub written: u64,
}

/// Embeds every entity of the store and writes the vectors through
/// `writer`.
pub async fn embed_entities(
    writer: &Arc<BatchWriter<AnyStore>>,
    embedder: Arc<dyn kg_embed::Embedder>,
    cache: Option<Arc<kg_embed::EmbedCache>>,
    cancel: &CancellationToken,
) -> anyhow::Result<EntityVectors> {
    let (records_tx, mut records_rx) = mpsc::channel::<Record>(256);
    let (entities_tx, entities_rx) = mpsc::channel::<kg_core::Entity>(256);
    let (out_tx, out_rx) = mpsc::channel::<Record>(256);
    let store = writer.sink();
    // The entities alone (and their vectors, which the filter drops):
    // never every chunk of the graph again.
    let read = store.read_entities(&Scope::All, records_tx);
    let filter = async move {
        while let Some(r) = records_rx.recv().await {
            if let Record::Entity(e) = r {
                if entities_tx.send(e).await.is_err() {
                    break;
                }
            }
        }
    };
    let options = kg_embed::EmbedOptions {
        cache,
        cancel: cancel.clone(),
        ..kg_embed::EmbedOptions::default()
    };
    let embed = kg_embed::embed_entities(
        embedder,
        crate::pipeline::stream_of(entities_rx),
        options,
        out_tx,
    );
    let write = writer.write_channel(out_rx, None);
    let (read, (), embed, write) = tokio::join!(read, filter, embed, write);
    read.map_err(|e| anyhow::anyhow!("reading entities: {}", crate::logging::cause_chain(&e)))?;
    let embed = embed
        .map_err(|e| anyhow::anyhow!("embedding entities: {}", crate::logging::cause_chain(&e)))?;
    let write = write.map_err(|e| {
        anyhow::anyhow!(
            "writing entity vectors: {}",
            crate::logging::cause_chain(&e)
        )
    })?;
    let written = write.rows;
    write.check().map_err(|e| {
        anyhow::anyhow!(
            "writing entity vectors: {}",
            crate::logging::cause_chain(&e)
        )
    })?;
    Ok(EntityVectors {
        embedded: embed.embedded,
        cached: embed.cached,
        written,
    })
}
