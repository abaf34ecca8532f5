//! Cutting a stream into batches by size *and* time: the one batcher of
//! kg.
//!
//! A sink that writes or calls per batch (the embedder's requests, the
//! store's windows) wants full batches under load and no waiting when the
//! input trickles. [`batches`] gives both, as Vector's sinks do: a batch
//! goes out when it holds [`BatchLimits::max_items`] items, when the next
//! item would push it over [`BatchLimits::max_weight`] (that item starts the
//! next batch; an item heavier than the budget on its own goes alone), when
//! [`BatchLimits::linger`] has passed since its first item arrived, or when
//! the input ends. Nothing is ever dropped or reordered.
//!
//! ```
//! use std::time::Duration;
//! use futures::StreamExt;
//! use kg_core::batch::{batches, BatchLimits};
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let words = futures::stream::iter(["a", "bb", "cccc", "d", "e", "f"]);
//! let limits = BatchLimits { max_items: 3, max_weight: Some(5), linger: Duration::from_millis(50) };
//! let out: Vec<Vec<&str>> = batches(words, limits, |w: &&str| w.len()).collect().await;
//! assert_eq!(out, vec![vec!["a", "bb"], vec!["cccc", "d"], vec!["e", "f"]]);
//! # });
//! ```

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use std::future::Future as _;
use tokio::time::{Instant, Sleep};

/// When a batch is complete (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Most items per batch (at least 1).
    pub max_items: usize,
    /// Most total weight per batch (tokens, bytes...), if any.
    pub max_weight: Option<usize>,
    /// Longest a batch waits for more items after its first one arrived.
    /// Zero: whatever is ready goes at once.
    pub linger: Duration,
}

impl BatchLimits {
    /// At most `max_items` items, each batch waiting at most `linger`.
    pub fn new(max_items: usize, linger: Duration) -> Self {
        Self {
            max_items,
            max_weight: None,
            linger,
        }
    }
}

/// The stream of [`batches`].
pub struct Batches<S: Stream, W> {
    input: Pin<Box<S>>,
    limits: BatchLimits,
    weight: W,
    pending: Vec<S::Item>,
    pending_weight: usize,
    /// An item that did not fit the batch that went out before it.
    carry: Option<(S::Item, usize)>,
    deadline: Pin<Box<Sleep>>,
    done: bool,
}

/// Cuts `input` into batches by count, weight (`weight` of each item) and
/// time (see the module docs).
pub fn batches<S, W>(input: S, limits: BatchLimits, weight: W) -> Batches<S, W>
where
    S: Stream,
    W: FnMut(&S::Item) -> usize,
{
    Batches {
        input: Box::pin(input),
        limits: BatchLimits {
            max_items: limits.max_items.max(1),
            ..limits
        },
        weight,
        pending: Vec::new(),
        pending_weight: 0,
        carry: None,
        deadline: Box::pin(tokio::time::sleep(Duration::ZERO)),
        done: false,
    }
}

impl<S: Stream, W: FnMut(&S::Item) -> usize> Batches<S, W> {
    fn push(&mut self, item: S::Item, weight: usize) {
        if self.pending.is_empty() {
            let at = Instant::now() + self.limits.linger;
            self.deadline.as_mut().reset(at);
            self.pending.reserve(self.limits.max_items.min(1024));
        }
        self.pending.push(item);
        self.pending_weight += weight;
    }

    fn take(&mut self) -> Vec<S::Item> {
        self.pending_weight = 0;
        std::mem::take(&mut self.pending)
    }
}

impl<S: Stream, W: FnMut(&S::Item) -> usize> Unpin for Batches<S, W> {}

impl<S: Stream, W: FnMut(&S::Item) -> usize> Stream for Batches<S, W> {
    type Item = Vec<S::Item>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some((item, weight)) = this.carry.take() {
            this.push(item, weight);
        }
        loop {
            if this.pending.len() >= this.limits.max_items {
                return Poll::Ready(Some(this.take()));
            }
            if this.done {
                return Poll::Ready((!this.pending.is_empty()).then(|| this.take()));
            }
            match this.input.as_mut().poll_next(cx) {
                Poll::Ready(Some(item)) => {
                    let weight = (this.weight)(&item);
                    let over = this
                        .limits
                        .max_weight
                        .is_some_and(|max| this.pending_weight + weight > max);
                    if over && !this.pending.is_empty() {
                        this.carry = Some((item, weight));
                        return Poll::Ready(Some(this.take()));
                    }
                    this.push(item, weight);
                }
                Poll::Ready(None) => this.done = true,
                Poll::Pending => {
                    if this.pending.is_empty() {
                        return Poll::Pending;
                    }
                    return match this.deadline.as_mut().poll(cx) {
                        Poll::Ready(()) => Poll::Ready(Some(this.take())),
                        Poll::Pending => Poll::Pending,
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use tokio::sync::mpsc;

    fn stream_of<T>(mut rx: mpsc::Receiver<T>) -> impl Stream<Item = T> {
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickle_goes_out_after_the_linger() {
        let (tx, rx) = mpsc::channel::<u32>(100);
        let linger = Duration::from_millis(200);
        let mut out = batches(stream_of(rx), BatchLimits::new(10, linger), |_| 1);
        tx.send(1).await.unwrap();
        tx.send(2).await.unwrap();
        let started = Instant::now();
        assert_eq!(out.next().await, Some(vec![1, 2]));
        assert_eq!(started.elapsed(), linger, "waited exactly the linger");
        // The next batch's clock starts at its own first item.
        tokio::time::sleep(Duration::from_secs(5)).await;
        tx.send(3).await.unwrap();
        let started = Instant::now();
        assert_eq!(out.next().await, Some(vec![3]));
        assert_eq!(started.elapsed(), linger);
        drop(tx);
        assert_eq!(out.next().await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_goes_out_in_full_batches_at_once_and_the_end_flushes() {
        let (tx, rx) = mpsc::channel::<u32>(100);
        for i in 0..10 {
            tx.send(i).await.unwrap();
        }
        drop(tx);
        let started = Instant::now();
        let out: Vec<Vec<u32>> = batches(
            stream_of(rx),
            BatchLimits::new(4, Duration::from_secs(60)),
            |_| 1,
        )
        .collect()
        .await;
        assert_eq!(out, vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7], vec![8, 9]]);
        assert_eq!(
            started.elapsed(),
            Duration::ZERO,
            "no linger when full or ended"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_item_over_the_weight_budget_goes_alone_and_nothing_is_lost() {
        let limits = BatchLimits {
            max_items: 100,
            max_weight: Some(10),
            linger: Duration::from_millis(1),
        };
        let items = vec![3usize, 4, 50, 2, 9, 1, 10];
        let out: Vec<Vec<usize>> = batches(futures::stream::iter(items.clone()), limits, |w| *w)
            .collect()
            .await;
        assert_eq!(
            out,
            vec![vec![3, 4], vec![50], vec![2], vec![9, 1], vec![10]]
        );
        assert_eq!(out.concat(), items);
    }

    #[tokio::test(start_paused = true)]
    async fn zero_linger_sends_what_is_ready() {
        let (tx, rx) = mpsc::channel::<u32>(100);
        let mut out = batches(stream_of(rx), BatchLimits::new(10, Duration::ZERO), |_| 1);
        tx.send(1).await.unwrap();
        tx.send(2).await.unwrap();
        assert_eq!(out.next().await, Some(vec![1, 2]));
        tx.send(3).await.unwrap();
        assert_eq!(out.next().await, Some(vec![3]));
    }
}
