//! `cargo xtask eval`: the retrieval evaluation of eval/README.md, offline.
//!
//! Ingests `examples/corpus` and `eval/corpus` with `kg run` into a
//! temporary data dir (embedded store), embedding with the local MiniLM
//! (`KG_TEST_MODEL_DIR`, else the one xtask installs) and extracting with
//! kg-fake-llm (its deterministic capitalised-phrase extraction: graph mode
//! is measured on that graph, not on a real model's). Then asks every
//! question of `eval/retrieval/questions.jsonl` in every mode (`kg search
//! --questions`, top 10), judges each list by the evidence rule
//! (kg-query's `eval` module) and prints recall@5 and MRR@10 per mode,
//! lexical and paraphrase apart, for long chunks truncated to the model's
//! window and embedded in pooled windows; the search latency per mode; and
//! the best cosines of answerable and unanswerable questions (the
//! threshold of `kg ask`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context as _, Result};
use kg_query::eval::{first_relevant, Metrics, Question};

use crate::install;

const MODES: [&str; 4] = ["vector", "fulltext", "hybrid", "graph"];

struct FakeServer(Child);

impl Drop for FakeServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"))
}

fn model_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("KG_TEST_MODEL_DIR") {
        return Ok(PathBuf::from(d));
    }
    let cache = install::cache_dir()?;
    Ok(install::ensure_installed(&cache)?.model_dir)
}

/// Runs the evaluation and prints its tables.
pub fn eval(args: &[String]) -> Result<()> {
    let variants: Vec<&str> = if args.iter().any(|a| a == "--windows-only") {
        vec!["windows"]
    } else {
        vec!["truncate", "windows"]
    };
    let model = model_dir()?;
    let status = Command::new("cargo")
        .args(["build", "-p", "kg-cli", "-p", "kg-fake-llm"])
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build failed");
    }
    let bin = target_dir().join("debug");
    let kg = bin.join("kg");
    let port = portpicker()?;
    let fake = FakeServer(
        Command::new(bin.join("kg-fake-llm"))
            .args(["--port", &port.to_string()])
            .stdout(Stdio::null())
            .spawn()
            .context("starting kg-fake-llm")?,
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    let questions = read_questions(Path::new("eval/retrieval/questions.jsonl"))?;
    let tmp = std::env::temp_dir().join(format!("kg-eval-{}", std::process::id()));
    let mut report = String::new();
    for variant in &variants {
        let data = tmp.join(variant);
        std::fs::create_dir_all(&data)?;
        let env = |c: &mut Command| {
            c.env("KG_DATA_DIR", &data)
                .env("OPENAI_BASE_URL", format!("http://127.0.0.1:{port}/v1"))
                .env("OPENAI_API_KEY", "eval")
                .env("KG_MODEL", "fake")
                .env("KG_EMBEDDER", "local")
                .env("KG_EMBED_MODEL", &model)
                .env("KG_EMBED_LONG_TEXTS", variant)
                .env_remove("NEO4J_URI");
        };
        eprintln!("xtask eval: kg run ({variant})");
        let mut run = Command::new(&kg);
        run.args(["run", "examples/corpus", "eval/corpus"]);
        env(&mut run);
        let status = run.status().context("running kg run")?;
        if !status.success() && status.code() != Some(3) {
            bail!("kg run failed: {status}");
        }
        report.push_str(&format!(
            "\n### long chunks: {variant}\n\n| mode | recall@5 lexical | recall@5 paraphrase | recall@5 all | MRR@10 lexical | MRR@10 paraphrase | MRR@10 all | p50 ms | p95 ms |\n|---|---|---|---|---|---|---|---|---|\n"
        ));
        for mode in MODES {
            let lines = search_all(&kg, &env, "eval/retrieval/questions.jsonl", mode)?;
            let mut by_kind: BTreeMap<&str, Metrics> = BTreeMap::new();
            let mut micros = Vec::new();
            for line in &lines {
                let id = line.get("id").and_then(|v| v.as_str()).unwrap_or_default();
                let Some(q) = questions.iter().find(|q| q.id == id) else {
                    continue;
                };
                let texts: Vec<String> = line
                    .get("hits")
                    .and_then(|h| h.as_array())
                    .map(|hits| {
                        hits.iter()
                            .map(|h| {
                                h.get("text")
                                    .and_then(|t| t.as_str())
                                    .unwrap_or_default()
                                    .to_owned()
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let rank = first_relevant(q, &texts);
                let kind = if q.kind == "lexical" {
                    "lexical"
                } else {
                    "paraphrase"
                };
                by_kind.entry(kind).or_default().add(rank, 5, 10);
                by_kind.entry("all").or_default().add(rank, 5, 10);
                micros.push(line.get("micros").and_then(|m| m.as_u64()).unwrap_or(0));
            }
            micros.sort_unstable();
            let pct = |p: f64| {
                let i = ((micros.len() as f64 - 1.0) * p).round() as usize;
                micros.get(i).copied().unwrap_or(0) as f64 / 1000.0
            };
            let m = |k: &str| by_kind.get(k).copied().unwrap_or_default();
            report.push_str(&format!(
                "| {mode} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.1} | {:.1} |\n",
                m("lexical").recall(),
                m("paraphrase").recall(),
                m("all").recall(),
                m("lexical").mrr(),
                m("paraphrase").mrr(),
                m("all").mrr(),
                pct(0.5),
                pct(0.95),
            ));
        }
        // The relevance threshold of `kg ask`: best cosines.
        let best = |file: &str| -> Result<Vec<f64>> {
            let mut v: Vec<f64> = search_all(&kg, &env, file, "vector")?
                .iter()
                .filter_map(|l| l.get("best_cosine").and_then(|c| c.as_f64()))
                .collect();
            v.sort_by(f64::total_cmp);
            Ok(v)
        };
        let answerable = best("eval/retrieval/questions.jsonl")?;
        let unanswerable = best("eval/retrieval/unanswerable.jsonl")?;
        let fmt = |v: &[f64]| {
            v.iter()
                .map(|x| format!("{x:.2}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        report.push_str(&format!(
            "\nbest cosine, unanswerable: {}\nbest cosine, answerable (lowest 12): {}\n",
            fmt(&unanswerable),
            fmt(answerable
                .get(..12.min(answerable.len()))
                .unwrap_or_default()),
        ));
    }
    drop(fake);
    let _ = std::fs::remove_dir_all(&tmp);
    println!("{report}");
    Ok(())
}

fn search_all(
    kg: &Path,
    env: &dyn Fn(&mut Command),
    file: &str,
    mode: &str,
) -> Result<Vec<serde_json::Value>> {
    let mut c = Command::new(kg);
    c.args(["search", "--questions", file, "--mode", mode, "-k", "10"]);
    env(&mut c);
    let out = c.output().context("running kg search")?;
    if !out.status.success() {
        bail!(
            "kg search --mode {mode} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).context("kg search printed a bad JSON line"))
        .collect()
}

fn read_questions(path: &Path) -> Result<Vec<Question>> {
    let body = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    body.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).context("a bad question line"))
        .collect()
}

fn portpicker() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}
