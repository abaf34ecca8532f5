//! End-to-end benchmark of `kg run` (a harness=false bench binary).
//!
//! The fake LLM server answers chat and embedding requests after 200 ms;
//! `kg run` extracts with concurrency 5, so no pipeline can beat
//! c / L = 5 / 0.2 s = 25 chunks/s. We report the measured chunks/s as a
//! ratio of that limit (1.0 = the pipeline adds nothing to the LLM's
//! latency), and the peak RSS of the `kg` process for 1× and 10× the input
//! (the pipeline is streaming: the ratio should stay near 1, the issue asks
//! for at most 1.2).
//!
//! Embeddings come from the same fake server (`--embedder openai`), so the
//! figure measures the pipeline and the LLM limit, not a CPU-bound model.
//! Output lines start with `kg-bench:`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kg_fake_llm::{FakeConfig, FakeLlm};

const LATENCY: Duration = Duration::from_millis(200);
const CONCURRENCY: u32 = 5;

const WORDS: &[&str] = &[
    "Debian",
    "package",
    "maintainer",
    "release",
    "archive",
    "mirror",
    "kernel",
    "security",
    "team",
    "developer",
    "policy",
    "stable",
    "testing",
    "unstable",
    "Murdock",
    "Perens",
    "Purdue",
    "upload",
    "bug",
    "tracker",
    "installer",
    "firmware",
    "desktop",
    "server",
    "build",
    "daemon",
    "library",
    "license",
    "free",
    "software",
    "community",
    "vote",
    "constitution",
    "leader",
    "election",
    "conference",
    "Toy",
    "Story",
    "Buzz",
    "Rex",
    "Woody",
    "Potato",
];

/// A corpus of `files` Markdown files of about 2,500 tokens each, every
/// sentence distinct (so every chunk is a distinct request).
fn write_corpus(dir: &Path, files: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for f in 0..files {
        let mut text = format!("# Report {f}\n\n");
        for p in 0..40 {
            for s in 0..5 {
                let mut sentence = Vec::new();
                for _ in 0..10 {
                    sentence.push(WORDS[(next() % WORDS.len() as u64) as usize]);
                }
                text.push_str(&format!("{} number {f}-{p}-{s}. ", sentence.join(" ")));
            }
            text.push_str("\n\n");
        }
        std::fs::write(dir.join(format!("report-{f:04}.md")), text).unwrap();
    }
}

struct Measured {
    chunks: u64,
    seconds: f64,
    peak_rss_kib: i64,
}

/// Runs `kg run` on `corpus`, waiting with wait4 for its own rusage.
// The child is reaped by wait4 (for its rusage), not by `Child::wait`.
#[allow(clippy::zombie_processes)]
fn run_kg(corpus: &Path, data_dir: &Path, base_url: &str) -> Measured {
    let started = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_kg"))
        .args([
            "--log-format",
            "json",
            "run",
            "--embedder",
            "openai",
            "--embed-model",
            "fake-embed",
        ])
        .arg("--concurrency")
        .arg(CONCURRENCY.to_string())
        .arg("--data-dir")
        .arg(data_dir)
        .arg(corpus)
        .env("OPENAI_BASE_URL", base_url)
        .env("OPENAI_API_KEY", "sk-bench")
        .env("KG_LOG", "warn,kg_cli=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start kg");
    let pid = child.id() as libc::pid_t;
    let mut stderr = child.stderr.expect("stderr piped");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut s).ok();
        s
    });
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid value of the plain C struct, and
    // wait4 only writes into the two pointers we pass for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid, "wait4 failed");
    let seconds = started.elapsed().as_secs_f64();
    let log = reader.join().unwrap_or_default();
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "kg run failed:\n{log}"
    );
    let chunks = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message"] == "summary")
        .and_then(|v| v["chunks"].as_u64())
        .unwrap_or_else(|| panic!("no summary line in:\n{log}"));
    Measured {
        chunks,
        seconds,
        peak_rss_kib: usage.ru_maxrss,
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a filter that excludes us means skip.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if !args.is_empty() && !args.iter().any(|a| "pipeline".contains(a.as_str())) {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime
        .block_on(FakeLlm::start(FakeConfig {
            latency: LATENCY,
            ..FakeConfig::default()
        }))
        .unwrap();
    let base_url = server.base_url();
    let tmp = tempfile::tempdir().unwrap();
    let limit = f64::from(CONCURRENCY) / LATENCY.as_secs_f64();

    let mut results = Vec::new();
    for (name, files) in [("1x", 8usize), ("10x", 80usize)] {
        let corpus = tmp.path().join(format!("corpus-{name}"));
        write_corpus(&corpus, files);
        let m = run_kg(&corpus, &tmp.path().join(format!("data-{name}")), &base_url);
        let rate = m.chunks as f64 / m.seconds;
        println!(
            "kg-bench: kg_run input={name} files={files} chunks={} seconds={:.2} chunks_per_s={:.2} limit_c_over_l={:.1} ratio_to_limit={:.3} peak_rss_mib={:.1}",
            m.chunks,
            m.seconds,
            rate,
            limit,
            rate / limit,
            m.peak_rss_kib as f64 / 1024.0
        );
        results.push(m);
    }
    if let [one, ten] = &results[..] {
        println!(
            "kg-bench: kg_run peak_rss_ratio_10x_over_1x={:.3} (target <= 1.2)",
            ten.peak_rss_kib as f64 / one.peak_rss_kib as f64
        );
    }
    runtime.block_on(server.shutdown());
}
