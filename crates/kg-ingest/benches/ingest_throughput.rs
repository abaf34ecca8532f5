//! Ingest throughput (MB/s) over the real PDF fixtures, against pdftotext
//! run on each of the same files in turn, measured in the same run.
//!
//! Prints one `kg-bench:` line with both throughputs and their ratio
//! (above 1.0: kg ingest, which also chunks and hashes, is faster than
//! pdftotext on each file in turn), and one with what removing page
//! furniture and joining hyphenation costs on the largest fixture
//! (bash.pdf, 87 pages). pdftotext must be installed.
//!
//! `KG_BENCH_PDF_DIRS` (folders separated by `:`) adds a second comparison
//! line over other PDFs, for instance the held-out manuals of `eval/corpus`
//! or any public manuals you have at hand:
//! `KG_BENCH_PDF_DIRS=eval/corpus cargo bench -p kg-ingest --bench ingest_throughput`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use kg_ingest::furniture::clean_pages;
use kg_ingest::pdf::{read_pdf, PdfOutcome};
use kg_ingest::{ingest_to_vec, IngestConfig, PdfEngine};

fn pdf_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pdf")
}

fn pdfs(dirs: &[PathBuf]) -> (Vec<PathBuf>, u64) {
    let mut files: Vec<PathBuf> = dirs
        .iter()
        .flat_map(|dir| {
            std::fs::read_dir(dir)
                .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
                .unwrap_or_else(|_| Vec::new())
        })
        .collect();
    files.retain(|p| p.extension().is_some_and(|e| e == "pdf"));
    files.sort();
    let bytes = files
        .iter()
        .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
        .sum();
    (files, bytes)
}

fn run_kg(files: &[PathBuf]) -> u64 {
    match ingest_to_vec(files.to_vec(), IngestConfig::default()) {
        Ok((_, summary)) => {
            assert_eq!(summary.set_aside_total(), 0, "{:?}", summary.set_aside);
            summary.chunks
        }
        Err(e) => panic!("ingest failed: {e}"),
    }
}

fn run_pdftotext(files: &[PathBuf]) {
    for f in files {
        let status = Command::new("pdftotext")
            .arg(f)
            .arg("/dev/null")
            .status()
            .unwrap_or_else(|e| {
                panic!("pdftotext is required (apt-get install -y poppler-utils): {e}")
            });
        assert!(status.success(), "pdftotext failed on {}", f.display());
    }
}

fn bench(c: &mut Criterion) {
    let (files, bytes) = pdfs(&[pdf_dir()]);
    assert!(!files.is_empty(), "no PDF fixtures");

    let mut group = c.benchmark_group("ingest_pdfs");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Bytes(bytes));
    group.bench_function("kg_ingest", |b| b.iter(|| run_kg(&files)));
    group.bench_function("pdftotext_each_file", |b| b.iter(|| run_pdftotext(&files)));
    group.finish();

    compare("ingest_pdfs", &files, bytes);
    let extra: Vec<PathBuf> = std::env::var_os("KG_BENCH_PDF_DIRS")
        .map(|dirs| std::env::split_paths(&dirs).collect())
        .unwrap_or_default();
    if !extra.is_empty() {
        let (files, bytes) = pdfs(&extra);
        assert!(!files.is_empty(), "no PDF in KG_BENCH_PDF_DIRS");
        compare("ingest_other_pdfs", &files, bytes);
    }
}

/// The comparison line for one set of files, both sides measured here, in
/// alternating rounds so that a drift of the machine's speed hits both.
fn compare(name: &str, files: &[PathBuf], bytes: u64) {
    let mb = bytes as f64 / 1e6;
    // One warm-up of each, then five rounds.
    run_kg(files);
    run_pdftotext(files);
    let (mut kg, mut poppler) = (0.0, 0.0);
    for _ in 0..5 {
        let start = Instant::now();
        run_kg(files);
        kg += start.elapsed().as_secs_f64();
        let start = Instant::now();
        run_pdftotext(files);
        poppler += start.elapsed().as_secs_f64();
    }
    println!(
        "kg-bench: {name} files={} mb={mb:.2} kg_mb_s={:.2} pdftotext_mb_s={:.2} ratio={:.2} (kg/pdftotext throughput; >1 means kg is faster)",
        files.len(),
        5.0 * mb / kg,
        5.0 * mb / poppler,
        poppler / kg
    );
}

/// The engine's page texts of bash.pdf, as ingest gets them before cleaning.
fn bash_pages() -> Vec<String> {
    let path = pdf_dir().join("bash.pdf");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let runtime = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("runtime: {e}"));
    let outcome = runtime.block_on(read_pdf(
        std::sync::Arc::new(bytes),
        "bash.pdf",
        PdfEngine::PdfOxide,
        Duration::from_secs(120),
    ));
    match outcome {
        PdfOutcome::Text(t) => t.pages,
        PdfOutcome::SetAside(reason, detail) => panic!("bash.pdf set aside: {reason}: {detail}"),
    }
}

fn bench_furniture(c: &mut Criterion) {
    let pages = bash_pages();
    let bytes: usize = pages.iter().map(String::len).sum();
    let mut group = c.benchmark_group("furniture");
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("clean_pages_bash_pdf", |b| {
        b.iter_batched(|| pages.clone(), clean_pages, BatchSize::SmallInput)
    });
    group.finish();
    let runs = 20;
    let mut total = Duration::ZERO;
    for _ in 0..runs {
        let input = pages.clone();
        let start = Instant::now();
        std::hint::black_box(clean_pages(input));
        total += start.elapsed();
    }
    println!(
        "kg-bench: furniture bash.pdf pages={} text_kb={} clean_ms={:.2}",
        pages.len(),
        bytes / 1000,
        total.as_secs_f64() * 1000.0 / f64::from(runs)
    );
}

criterion_group!(benches, bench, bench_furniture);
criterion_main!(benches);
