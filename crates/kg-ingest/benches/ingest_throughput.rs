//! Ingest throughput (MB/s) over the real PDF fixtures, against pdftotext
//! run on each of the same files in turn, measured in the same run.
//!
//! Prints one `kg-bench:` line with both throughputs and their ratio
//! (above 1.0: kg ingest, which also chunks and hashes, is faster than
//! pdftotext on each file in turn). pdftotext must be installed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kg_ingest::{ingest_to_vec, IngestConfig};

fn pdf_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pdf")
}

fn pdfs() -> (Vec<PathBuf>, u64) {
    let mut files: Vec<PathBuf> = std::fs::read_dir(pdf_dir())
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "pdf"));
    files.sort();
    let bytes = files
        .iter()
        .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
        .sum();
    (files, bytes)
}

fn run_kg() -> u64 {
    match ingest_to_vec(vec![pdf_dir()], IngestConfig::default()) {
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

/// Mean seconds of `runs` calls of `f`, after one warm-up call.
fn mean_secs(runs: u32, mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    for _ in 0..runs {
        f();
    }
    start.elapsed().as_secs_f64() / f64::from(runs)
}

fn bench(c: &mut Criterion) {
    let (files, bytes) = pdfs();
    assert!(!files.is_empty(), "no PDF fixtures");
    let mb = bytes as f64 / 1e6;

    let mut group = c.benchmark_group("ingest_pdfs");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Bytes(bytes));
    group.bench_function("kg_ingest", |b| b.iter(run_kg));
    group.bench_function("pdftotext_each_file", |b| b.iter(|| run_pdftotext(&files)));
    group.finish();

    // The comparison line, both sides measured here, one after the other.
    let kg = mean_secs(5, || {
        run_kg();
    });
    let poppler = mean_secs(5, || run_pdftotext(&files));
    println!(
        "kg-bench: ingest_pdfs files={} mb={mb:.2} kg_mb_s={:.2} pdftotext_mb_s={:.2} ratio={:.2} (kg/pdftotext throughput; >1 means kg is faster)",
        files.len(),
        mb / kg,
        mb / poppler,
        poppler / kg
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
