//! `cargo xtask eval`: the retrieval evaluation of eval/README.md, offline.
//!
//! Builds `kg` and `kg-fake-llm` (release) and runs copies of them from a
//! temporary folder, so a build from another checkout into a shared target
//! dir cannot swap the binaries mid-run. Ingests `examples/corpus` and
//! `eval/corpus` with `kg run` into a temporary data dir (embedded store),
//! embedding with the local MiniLM (`KG_TEST_MODEL_DIR`, else the one xtask
//! installs) and extracting with kg-fake-llm (its deterministic
//! capitalised-phrase extraction: graph mode is measured on that graph, not
//! on a real model's); once with long chunks truncated to the model's
//! window and once embedded in pooled windows (the default).
//!
//! Then, for each:
//! - every question of `eval/retrieval/questions.jsonl` in every mode with
//!   the shipped defaults (`kg search --questions`, top 10), judged by the
//!   evidence rule (kg-query's `eval` module): recall@5 and MRR@10,
//!   lexical and paraphrase apart, and the search latency per mode;
//! - (windows only) the fusion sweep: each question's lists before fusion
//!   (`kg search --questions --candidates`) are fused offline with every
//!   parameter of each family (weighted RRF, convex combinations under
//!   three normalisations, the graph list's weight), and each family is
//!   scored by two-fold cross-validation: parameters picked on one half of
//!   the questions, scored on the other (`kg_query::eval::cross_validate`);
//! - the best cosines of answerable and unanswerable questions (the
//!   threshold of `kg ask`).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context as _, Result};
use kg_query::eval::{cross_validate, first_relevant, relevant, Case, Question, Report};
use kg_query::fusion::{Fusion, Norm, RRF_K};
use kg_query::{Candidates, Mode, SearchOptions};

use crate::install;

const MODES: [&str; 4] = ["vector", "fulltext", "hybrid", "graph"];
const QUESTIONS: &str = "eval/retrieval/questions.jsonl";
const UNANSWERABLE: &str = "eval/retrieval/unanswerable.jsonl";

struct FakeServer(Child);

impl Drop for FakeServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A temporary folder removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
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
        .args(["build", "--release", "-p", "kg-cli", "-p", "kg-fake-llm"])
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build failed");
    }
    let tmp = TempDir(std::env::temp_dir().join(format!("kg-eval-{}", std::process::id())));
    let bin = tmp.0.join("bin");
    std::fs::create_dir_all(&bin)?;
    for name in ["kg", "kg-fake-llm"] {
        let from = target_dir().join("release").join(name);
        std::fs::copy(&from, bin.join(name))
            .with_context(|| format!("copying {}", from.display()))?;
    }
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
    let questions = read_questions(Path::new(QUESTIONS))?;
    let mut report = String::new();
    for variant in &variants {
        let data = tmp.0.join(variant);
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
            "\n### long chunks: {variant} (shipped defaults, `kg search`)\n\n{}",
            table_head("| p50 ms | p95 ms ", "|---|---")
        ));
        for mode in MODES {
            let lines = search_all(&kg, &env, QUESTIONS, mode, &[])?;
            let mut by_kind = Report::default();
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
                by_kind.add(&q.kind, first_relevant(q, &texts));
                micros.push(line.get("micros").and_then(|m| m.as_u64()).unwrap_or(0));
            }
            micros.sort_unstable();
            let pct = |p: f64| {
                let i = ((micros.len() as f64 - 1.0) * p).round() as usize;
                micros.get(i).copied().unwrap_or(0) as f64 / 1000.0
            };
            report.push_str(&format!(
                "{} {:.1} | {:.1} |\n",
                table_row(mode, &by_kind),
                pct(0.5),
                pct(0.95)
            ));
        }
        if *variant == "windows" {
            eprintln!("xtask eval: fusion sweep");
            let cases = read_cases(&kg, &env, &questions)?;
            report.push_str(&sweep(&cases));
        }
        // The relevance threshold of `kg ask`: best cosines.
        let best = |file: &str| -> Result<Vec<f64>> {
            let mut v: Vec<f64> = search_all(&kg, &env, file, "vector", &[])?
                .iter()
                .filter_map(|l| l.get("best_cosine").and_then(|c| c.as_f64()))
                .collect();
            v.sort_by(f64::total_cmp);
            Ok(v)
        };
        let answerable = best(QUESTIONS)?;
        let unanswerable = best(UNANSWERABLE)?;
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
    println!("{report}");
    Ok(())
}

fn table_head(extra: &str, extra_rule: &str) -> String {
    format!(
        "| mode | R@5 lex | R@5 para | R@5 all | MRR@10 lex | MRR@10 para | MRR@10 all {extra}|\n\
         |---|---|---|---|---|---|---{extra_rule}|\n"
    )
}

/// `| name | six figures |`, without the closing bar.
fn table_row(name: &str, r: &Report) -> String {
    format!(
        "| {name} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
        r.lexical.recall(),
        r.paraphrase.recall(),
        r.all.recall(),
        r.lexical.mrr(),
        r.paraphrase.mrr(),
        r.all.mrr(),
    )
}

/// The questions with their lists before fusion, judged: every chunk in
/// any list is relevant or not by the evidence rule.
fn read_cases(kg: &Path, env: &dyn Fn(&mut Command), questions: &[Question]) -> Result<Vec<Case>> {
    let lines = search_all(kg, env, QUESTIONS, "graph", &["--candidates"])?;
    let mut cases = Vec::new();
    for line in lines {
        let id = line.get("id").and_then(|v| v.as_str()).unwrap_or_default();
        let Some(q) = questions.iter().find(|q| q.id == id) else {
            continue;
        };
        let candidates: Candidates = serde_json::from_value(
            line.get("candidates")
                .cloned()
                .unwrap_or(serde_json::Value::Null),
        )
        .with_context(|| format!("{id}: candidates"))?;
        let relevant_ids: HashSet<String> = line
            .get("texts")
            .and_then(|t| t.as_object())
            .map(|texts| {
                texts
                    .iter()
                    .filter(|(_, text)| relevant(q, text.as_str().unwrap_or_default()))
                    .map(|(id, _)| id.clone())
                    .collect()
            })
            .unwrap_or_default();
        cases.push(Case {
            question: q.clone(),
            candidates,
            relevant: relevant_ids,
        });
    }
    Ok(cases)
}

/// The parameter grids of the sweep.
fn rrf_grid() -> Vec<Fusion> {
    let mut grid = Vec::new();
    for k in [10.0, 30.0, RRF_K, 100.0] {
        for fulltext_weight in [0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0] {
            grid.push(Fusion::Rrf { k, fulltext_weight });
        }
    }
    grid
}

fn convex_grid(norm: Norm) -> Vec<Fusion> {
    (0..=20)
        .map(|i| Fusion::Convex {
            lexical: i as f32 / 20.0,
            norm,
        })
        .collect()
}

fn options(mode: Mode, fusion: Fusion, graph_weight: f32) -> SearchOptions {
    SearchOptions {
        mode,
        fusion,
        graph_weight,
        ..SearchOptions::default()
    }
}

/// The fusion sweep's tables.
fn sweep(cases: &[Case]) -> String {
    let defaults = SearchOptions::default();
    let rank_with = |mode: Mode| {
        move |c: &Case, f: &Fusion| c.candidates.rank(&options(mode, *f, defaults.graph_weight))
    };
    let mut out = format!(
        "\n### fusion sweep (windows; {} questions; lists before fusion fused offline)\n\n\
         Two-fold cross-validation: the parameters are chosen on one half of the questions \
         (recall@5, then MRR@10) and scored on the other half, and the other way round; \
         the row holds both held-out halves together.\n\n{}",
        cases.len(),
        table_head(
            "| chosen on half 1 | chosen on half 2 | best on all ",
            "|---|---|---"
        ),
    );
    let single = |mode: Mode| {
        kg_query::eval::score(cases, |c| {
            c.candidates
                .rank(&options(mode, defaults.fusion, defaults.graph_weight))
        })
    };
    out.push_str(&format!(
        "{} – | – | – |\n",
        table_row("vector", &single(Mode::Vector))
    ));
    out.push_str(&format!(
        "{} – | – | – |\n",
        table_row("fulltext", &single(Mode::Fulltext))
    ));
    let equal = kg_query::eval::score(cases, |c| {
        c.candidates.rank(&options(
            Mode::Hybrid,
            Fusion::EQUAL_RRF,
            defaults.graph_weight,
        ))
    });
    out.push_str(&format!(
        "{} – | – | – |\n",
        table_row("hybrid, equal-weight RRF (k 60)", &equal)
    ));
    // Parameter-free: equal weights of normalised scores (CombSUM); the
    // held-out figure is the in-sample one, since nothing is fitted.
    for norm in Norm::ALL {
        let r = kg_query::eval::score(cases, |c| {
            c.candidates.rank(&options(
                Mode::Hybrid,
                Fusion::Convex { lexical: 0.5, norm },
                defaults.graph_weight,
            ))
        });
        out.push_str(&format!(
            "{} – | – | nothing fitted |\n",
            table_row(
                &format!("hybrid, CombSUM {} (equal weights)", norm.as_str()),
                &r
            )
        ));
    }
    let mut families: Vec<(String, Vec<Fusion>)> = vec![("weighted RRF".into(), rrf_grid())];
    for norm in Norm::ALL {
        families.push((format!("convex, {}", norm.as_str()), convex_grid(norm)));
    }
    let every: Vec<Fusion> = families.iter().flat_map(|(_, g)| g.clone()).collect();
    families.push(("any of the above".into(), every));
    for (name, grid) in &families {
        if let Some(cv) = cross_validate(cases, grid, rank_with(Mode::Hybrid)) {
            out.push_str(&format!(
                "{} {} | {} | {} |\n",
                table_row(&format!("hybrid, {name}"), &cv.held_out),
                cv.chosen[0].describe(),
                cv.chosen[1].describe(),
                cv.on_all.0.describe(),
            ));
        }
    }
    let shipped = kg_query::eval::score(cases, |c| {
        c.candidates.rank(&options(
            Mode::Hybrid,
            defaults.fusion,
            defaults.graph_weight,
        ))
    });
    out.push_str(&format!(
        "{} – | – | shipped: {} |\n",
        table_row("hybrid, shipped default", &shipped),
        defaults.fusion.describe(),
    ));
    // The graph list's weight against the shipped hybrid ranking.
    let weights = [0.0f32, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0];
    if let Some(cv) = cross_validate(cases, &weights, |c, w| {
        c.candidates
            .rank(&options(Mode::Graph, defaults.fusion, *w))
    }) {
        out.push_str(&format!(
            "{} {} | {} | {} |\n",
            table_row("graph, graph-list weight", &cv.held_out),
            cv.chosen[0],
            cv.chosen[1],
            cv.on_all.0,
        ));
    }
    // In-sample curves, to see how flat the optimum is.
    out.push_str(
        "\nIn-sample recall@5 / MRR@10 of the convex combination by fulltext share:\n\n| lexical |",
    );
    for norm in Norm::ALL {
        out.push_str(&format!(" {} |", norm.as_str()));
    }
    out.push_str("\n|---|---|---|---|\n");
    for i in (0..=20).step_by(2) {
        let lexical = i as f32 / 20.0;
        out.push_str(&format!("| {lexical:.1} |"));
        for norm in Norm::ALL {
            let r = kg_query::eval::score(cases, |c| {
                rank_with(Mode::Hybrid)(c, &Fusion::Convex { lexical, norm })
            });
            out.push_str(&format!(" {:.3} / {:.3} |", r.all.recall(), r.all.mrr()));
        }
        out.push('\n');
    }
    out
}

fn search_all(
    kg: &Path,
    env: &dyn Fn(&mut Command),
    file: &str,
    mode: &str,
    extra: &[&str],
) -> Result<Vec<serde_json::Value>> {
    let mut c = Command::new(kg);
    c.args(["search", "--questions", file, "--mode", mode, "-k", "10"])
        .args(extra);
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
