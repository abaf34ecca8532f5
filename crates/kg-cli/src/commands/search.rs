//! `kg search`.

use super::{App, Exit};
use crate::build;
use crate::pipeline;
use crate::query::{EmbedderQuery, StoreRetriever};

/// What `kg search` and `kg ask` take besides the text.
#[derive(Debug, Clone)]
pub struct SearchArgs {
    /// The options of kg-query.
    pub options: kg_query::SearchOptions,
    /// Print JSON.
    pub json: bool,
    /// A JSON Lines file of questions (`{"id", "question"}`) to run instead
    /// of one text: one JSON line of hits per question (for the
    /// evaluation).
    pub questions: Option<std::path::PathBuf>,
    /// With `questions`: print the lists before fusion and their chunks'
    /// text instead of hits.
    pub candidates: bool,
}

/// `kg search TEXT --mode M -k N [--json]`.
pub async fn search(app: &mut App, text: &str, args: SearchArgs) -> anyhow::Result<Exit> {
    let embedder = build::embedder(&app.settings, &app.cancel).await?;
    let store = build::store(&app.settings).await?;
    let (retriever, embedder) = (StoreRetriever(&store), EmbedderQuery(embedder));
    if let Some(path) = &args.questions {
        let body = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        for line in body.lines().filter(|l| !l.trim().is_empty()) {
            let q: serde_json::Value = serde_json::from_str(line)
                .map_err(|e| anyhow::anyhow!("{}: not a JSON line: {e}", path.display()))?;
            let question = q
                .get("question")
                .and_then(|v| v.as_str())
                .unwrap_or_default();
            if args.candidates {
                println!(
                    "{}",
                    candidates_line(&retriever, &embedder, &q, question, &args.options).await?
                );
                continue;
            }
            let started = std::time::Instant::now();
            let found = kg_query::search(&retriever, &embedder, question, &args.options)
                .await
                .map_err(|e| pipeline::StageError::failed("search", &e))?;
            let out = serde_json::json!({
                "id": q.get("id"),
                "question": question,
                "micros": started.elapsed().as_micros() as u64,
                "best_cosine": found.best_cosine,
                "hits": found.hits,
            });
            println!("{out}");
        }
        return Ok(Exit::Done);
    }
    let found = kg_query::search(&retriever, &embedder, text, &args.options)
        .await
        .map_err(|e| pipeline::StageError::failed("search", &e))?;
    if args.json {
        let out = serde_json::json!({
            "query": text,
            "mode": args.options.mode,
            "best_cosine": found.best_cosine,
            "seeds": found.seeds,
            "hits": found.hits,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!(
            "{}",
            crate::query::render_hits(text, args.options.mode, &found.hits)
        );
    }
    Ok(if found.hits.is_empty() {
        Exit::Failed
    } else {
        Exit::Done
    })
}

/// One question's lists before fusion, and the text of every chunk in
/// them (the evaluation judges relevance by text).
async fn candidates_line(
    retriever: &StoreRetriever<'_>,
    embedder: &EmbedderQuery,
    q: &serde_json::Value,
    question: &str,
    options: &kg_query::SearchOptions,
) -> anyhow::Result<serde_json::Value> {
    let started = std::time::Instant::now();
    let found = kg_query::candidates(retriever, embedder, question, options)
        .await
        .map_err(|e| pipeline::StageError::failed("search", &e))?;
    let micros = started.elapsed().as_micros() as u64;
    let mut ids: Vec<String> = found
        .vector
        .iter()
        .chain(&found.fulltext)
        .chain(&found.graph)
        .map(|s| s.id.clone())
        .collect();
    ids.sort();
    ids.dedup();
    use kg_query::Retriever as _;
    let texts: serde_json::Map<String, serde_json::Value> = retriever
        .chunks(&ids)
        .await
        .map_err(|e| pipeline::StageError::failed("search", &e))?
        .into_iter()
        .map(|c| (c.id, serde_json::Value::String(c.text)))
        .collect();
    Ok(serde_json::json!({
        "id": q.get("id"),
        "question": question,
        "micros": micros,
        "candidates": found,
        "texts": texts,
    }))
}
