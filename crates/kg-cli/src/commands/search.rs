//! `kg search`.

use super::{App, Exit};
use crate::build;
use crate::pipeline;

/// `kg search TEXT -k N [--json]`.
pub async fn search(app: &mut App, text: &str, k: usize, json: bool) -> anyhow::Result<Exit> {
    let embedder = build::embedder(&app.settings, &app.cancel).await?;
    let store = build::store(&app.settings).await?;
    let vector = kg_embed::embed_query(embedder.as_ref(), text)
        .await
        .map_err(|e| anyhow::anyhow!("embedding the query: {}", crate::logging::cause_chain(&e)))?;
    let hits: Vec<crate::search::Hit> = kg_store::GraphStore::search(&store, &vector, k)
        .await
        .map_err(|e| pipeline::StageError::failed("search", &e))?
        .hits
        .into_iter()
        .map(Into::into)
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&hits)?);
    } else {
        print!("{}", crate::search::render_hits(text, &hits));
    }
    Ok(if hits.is_empty() {
        Exit::Failed
    } else {
        Exit::Done
    })
}
