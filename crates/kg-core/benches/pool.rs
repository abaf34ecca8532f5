//! Per-item overhead of the worker pool with zero-latency work.
//!
//! Pushes N items through a pool whose work function returns at once, for
//! 1..50 workers, and prints `kg-bench:` lines with items per second and the
//! ratio against the same items sent through one bare tokio channel (the
//! floor any pool built on channels pays), measured in the same run.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kg_core::pool::{PoolConfig, WorkerPool};
use tokio_util::sync::CancellationToken;

const ITEMS: u64 = 200_000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

async fn through_pool(workers: usize, items: u64) -> u64 {
    let config = PoolConfig::new(workers).expect("valid worker count");
    let (input, mut output) =
        WorkerPool::start(&config, CancellationToken::new(), |n: u64| async move {
            Ok::<_, ()>(n)
        });
    tokio::spawn(async move {
        for n in 0..items {
            if input.submit(n).await.is_err() {
                break;
            }
        }
    });
    let mut sum = 0;
    while let Some(o) = output.recv().await {
        if let kg_core::pool::Outcome::Done(n) = o {
            sum += n;
        }
    }
    sum
}

async fn through_channel(items: u64) -> u64 {
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        for n in 0..items {
            if tx.send(n).await.is_err() {
                break;
            }
        }
    });
    let mut sum = 0;
    while let Some(n) = rx.recv().await {
        sum += n;
    }
    sum
}

fn rate(rt: &tokio::runtime::Runtime, f: impl Fn() -> u64) -> f64 {
    // Best of three, to keep a scheduler hiccup out of the figure.
    (0..3)
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(f());
            ITEMS as f64 / start.elapsed().as_secs_f64()
        })
        .fold(0.0, f64::max)
        .max(rt.metrics().num_workers() as f64 * 0.0)
}

fn bench_pool(c: &mut Criterion) {
    let rt = runtime();
    let baseline = rate(&rt, || rt.block_on(through_channel(ITEMS)));
    println!("kg-bench: pool baseline bare-channel {baseline:.0} items/s");
    let mut group = c.benchmark_group("pool_zero_latency");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500))
        .throughput(Throughput::Elements(ITEMS));
    for workers in [1usize, 2, 5, 10, 20, 50] {
        let measured = rate(&rt, || rt.block_on(through_pool(workers, ITEMS)));
        println!(
            "kg-bench: pool workers={workers} {measured:.0} items/s ratio_vs_bare_channel={:.2} per_item_ns={:.0}",
            measured / baseline,
            1e9 / measured
        );
        group.bench_with_input(BenchmarkId::from_parameter(workers), &workers, |b, &w| {
            b.to_async(&rt).iter(|| through_pool(w, ITEMS));
        });
    }
    group.finish();
}

criterion_group!(benches, bench_pool);
criterion_main!(benches);
