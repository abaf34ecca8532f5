//! What the kg-cli end-to-end tests share: the fake LLM server on a
//! runtime of its own (the tests drive the `kg` binary from plain threads),
//! and a plain HTTP GET for the metrics endpoint.
#![allow(dead_code)]

use std::process::{Command, Output};
use std::time::Duration;

use std::path::Path;

use assert_cmd::cargo::CommandCargoExt;
use kg_core::Record;
use kg_fake_llm::{FakeConfig, FakeLlm, FakeLlmHandle, Script};
use kg_store::{EmbeddedConfig, EmbeddedStore, GraphStore, Scope};

/// The fake OpenAI-compatible server, shut down when dropped.
pub struct Llm {
    runtime: tokio::runtime::Runtime,
    handle: Option<FakeLlmHandle>,
}

impl Llm {
    /// The server with its default seed, answering after `latency`.
    pub fn start(latency: Duration) -> Self {
        Self::with_seed(FakeConfig::default().seed, latency)
    }

    /// The server with `seed` (which picks its relation types and faults),
    /// answering after `latency`.
    pub fn with_seed(seed: u64, latency: Duration) -> Self {
        Self::with_config(FakeConfig {
            seed,
            latency,
            ..FakeConfig::default()
        })
    }

    /// The server with `config`.
    pub fn with_config(config: FakeConfig) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let handle = runtime.block_on(FakeLlm::start(config)).unwrap();
        Self {
            runtime,
            handle: Some(handle),
        }
    }

    /// The server answering extractions from `script` (the rest heuristic).
    pub fn scripted(script: Script) -> Self {
        Self::with_config(FakeConfig {
            script,
            ..FakeConfig::default()
        })
    }

    /// Its base URL (`http://127.0.0.1:PORT/v1`).
    pub fn url(&self) -> String {
        self.handle().base_url()
    }

    /// The running server.
    pub fn handle(&self) -> &FakeLlmHandle {
        self.handle.as_ref().unwrap()
    }

    /// Chat completions served so far, of every kind (extractions,
    /// description summaries, answers).
    pub fn chat_requests(&self) -> u64 {
        self.handle().counters().chat_requests
    }

    /// Chat completions that were extractions (neither description
    /// summaries nor `kg ask` answers).
    pub fn extraction_requests(&self) -> u64 {
        self.handle().counters().extraction_requests()
    }
}

impl Drop for Llm {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            self.runtime.block_on(h.shutdown());
        }
    }
}

/// `GET path` from `addr`: the whole answer, status line and headers
/// included; `None` when nothing answers.
pub fn http_get(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

/// Runs `cmd` and fails the test, with its output, unless it exits 0.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `kg` in `dir` (its data dir `dir/kg-data`, a clean environment) with
/// chat and embeddings on `llm`.
pub fn kg_on(dir: &Path, llm: &Llm) -> Command {
    let url = llm.url();
    let mut cmd = Command::cargo_bin("kg").unwrap();
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env("KG_DATA_DIR", dir.join("kg-data"))
        .env("OPENAI_BASE_URL", &url)
        .env("OPENAI_API_KEY", "sk-test-not-a-real-key-0123456789")
        .env("KG_EMBEDDER", "openai")
        .env("KG_EMBED_MODEL", "fake-embed")
        .env("KG_EMBED_BASE_URL", &url)
        .current_dir(dir);
    cmd
}

/// Every record of the embedded store in `dir/kg-data`.
pub fn read_graph(dir: &Path) -> Vec<Record> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = EmbeddedStore::open(&EmbeddedConfig {
            data_dir: dir.join("kg-data"),
        })
        .unwrap();
        store.read_all(&Scope::All).await.unwrap()
    })
}
