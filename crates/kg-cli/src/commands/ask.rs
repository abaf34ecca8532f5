//! `kg ask`: retrieval, a grounded prompt, a streamed answer, citations.

use std::io::Write as _;

use futures::StreamExt as _;
use serde_json::json;

use super::{App, Exit, NO_LLM_NOTE};
use crate::build;
use crate::pipeline;
use crate::query::{EmbedderQuery, StoreRetriever};

/// Least cosine between the question and its best chunk for `kg ask` to
/// call the model: below it, retrieval found nothing relevant. Measured on
/// eval/ with the local MiniLM (docs/query.md): the answerable questions'
/// best cosines start above it, most unanswerable ones stay below.
pub const MIN_COSINE: f32 = 0.30;

/// Most answer tokens asked for.
pub const MAX_ANSWER_TOKENS: u32 = 1_024;

/// `kg ask QUESTION`.
pub async fn ask(
    app: &mut App,
    question: &str,
    options: kg_query::SearchOptions,
    json_out: bool,
    dry_run: bool,
) -> anyhow::Result<Exit> {
    if !dry_run && !app.settings.llm_configured() {
        eprintln!(
            "kg ask needs a chat model, and none is configured.\n{}\nWithout one, `kg search \
             {question:?}` shows the passages that match.",
            NO_LLM_NOTE.replace("entity extraction skipped: no LLM configured. ", "")
        );
        return Ok(Exit::Usage);
    }
    let embedder = build::embedder(&app.settings, &app.cancel).await?;
    let store = build::store(&app.settings).await?;
    let (retriever, embedder) = (StoreRetriever(&store), EmbedderQuery(embedder));
    let found = kg_query::search(&retriever, &embedder, question, &options)
        .await
        .map_err(|e| pipeline::StageError::failed("search", &e))?;
    let relevant = !found.hits.is_empty() && found.best_cosine.is_none_or(|c| c >= MIN_COSINE);
    if !relevant {
        let why = match found.best_cosine {
            Some(c) => format!(
                "the best passage's similarity is {c:.3}, under the threshold {MIN_COSINE:.2}"
            ),
            None => "no passage matched".into(),
        };
        if json_out {
            let out = json!({
                "question": question,
                "answer": null,
                "relevant": false,
                "reason": why,
                "citations": [],
                "context": [],
                "tokens": {"prompt": 0, "completion": 0},
                "cost_usd": 0.0,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
        } else {
            println!("Nothing relevant found in the graph for this question ({why}); no model was asked.");
        }
        return Ok(Exit::Done);
    }
    let ids: Vec<String> = found.hits.iter().map(|h| h.chunk.id.clone()).collect();
    let graph = kg_query::Retriever::chunk_graph(&retriever, &ids)
        .await
        .map_err(|e| pipeline::StageError::failed("search", &e))?;
    let prompt = kg_query::prompt::build(question, &found.hits, &graph);
    let counter = kg_ingest::Chunker::new(512, 64).ok();
    let count = |t: &str| match &counter {
        Some(c) => c.count_tokens(t),
        None => kg_query::prompt::estimate_tokens(t),
    };
    let prompt_tokens = count(&prompt.system) + count(&prompt.user);
    let settings = &app.settings;
    if dry_run {
        if json_out {
            let out = json!({
                "question": question,
                "system": prompt.system,
                "prompt": prompt.user,
                "prompt_tokens": prompt_tokens,
                "context": prompt.sources,
                "estimated_cost_usd": prompt_tokens as f64 * settings.input_price_per_mtok / 1e6,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
        } else {
            println!(
                "--- system ---\n{}\n--- user ---\n{}\n---",
                prompt.system, prompt.user
            );
            println!("prompt tokens (cl100k): {prompt_tokens}; no call made (--dry-run)");
        }
        return Ok(Exit::Done);
    }
    let mut config = kg_llm::ClientConfig::new(build::llm_endpoint(settings).to_endpoint_config());
    config.concurrency = settings.concurrency.max(1);
    config.rate_limits = build::rate_limits(settings);
    let client = kg_llm::Client::new(config).map_err(|e| anyhow::anyhow!("LLM settings: {e}"))?;
    let request = kg_query::prompt::request(&prompt, &settings.model, MAX_ANSWER_TOKENS)?;
    let mut stream = client.complete_stream(&request, &app.cancel);
    let mut answer = String::new();
    let mut usage = None;
    let mut stdout = std::io::stdout();
    while let Some(piece) = stream.next().await {
        let delta = piece.map_err(|e| anyhow::anyhow!("the chat model failed: {e}"))?;
        if !json_out && !delta.content.is_empty() {
            print!("{}", delta.content);
            let _ = stdout.flush();
        }
        answer.push_str(&delta.content);
        if delta.usage.is_some() {
            usage = delta.usage;
        }
    }
    let (p_tokens, c_tokens) = match usage {
        Some(u) => (u.prompt_tokens, u.completion_tokens),
        None => (prompt_tokens as u64, count(&answer) as u64),
    };
    let cost = p_tokens as f64 * settings.input_price_per_mtok / 1e6
        + c_tokens as f64 * settings.output_price_per_mtok / 1e6;
    let cited = kg_query::citations::resolve(&answer, &prompt.sources);
    if json_out {
        let citations: Vec<serde_json::Value> = cited
            .sources
            .iter()
            .map(|s| {
                json!({
                    "number": s.number,
                    "path": s.path,
                    "title": s.title,
                    "page_start": s.page_start,
                    "page_end": s.page_end,
                    "chunk_id": s.chunk_id,
                    "reference": s.reference(),
                })
            })
            .collect();
        let out = json!({
            "question": question,
            "answer": answer,
            "relevant": true,
            "citations": citations,
            "invalid_citations": cited.invalid,
            "context": prompt.sources,
            "entities": graph.mentions,
            "relations": graph.relations,
            "model": settings.model,
            "tokens": {"prompt": p_tokens, "completion": c_tokens, "reported": usage.is_some()},
            "cost_usd": cost,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("\n\nSources:");
        for s in &cited.sources {
            println!("  [{}] {}", s.number, s.reference());
        }
        if cited.sources.is_empty() {
            println!("  (the answer cites none of the sources)");
        }
        for n in &cited.invalid {
            println!("  [{n}] ⚠ cites no retrieved source: not a real reference");
        }
        eprintln!(
            "tokens: {p_tokens} prompt + {c_tokens} completion{}; estimated cost ${cost:.4}",
            if usage.is_some() { "" } else { " (estimated)" }
        );
    }
    Ok(Exit::Done)
}
