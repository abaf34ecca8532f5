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
//! A consumer that is busy with the batch before (a sink whose write is
//! still running) can keep the next one filling with [`Batches::fill`]:
//! it reads the input into the batch being built without ending it on the
//! linger, so that what arrives while the consumer works goes out in one
//! batch when it asks for the next (group commit), instead of in a batch
//! that closed small on its linger and waited.
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

/// The future of [`Batches::fill`].
pub struct Fill<'a, S: Stream, W> {
    batches: &'a mut Batches<S, W>,
}

impl<S: Stream, W: FnMut(&S::Item) -> usize> std::future::Future for Fill<'_, S, W> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.get_mut().batches.poll_fill(cx)
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
    /// Reads the input into the batch being built, for as long as the
    /// caller awaits it, without ending the batch on its linger: the
    /// future completes only when the batch is complete by
    /// [`BatchLimits::max_items`] or [`BatchLimits::max_weight`], or the
    /// input ended (then the next `next()` returns at once). Dropping it
    /// loses nothing: what it read stays in the batch, and the linger
    /// still counts from the batch's first item, so a `next()` after a
    /// long fill returns what came at once.
    pub fn fill(&mut self) -> Fill<'_, S, W> {
        Fill { batches: self }
    }

    /// Items in the batch being built.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Moves the item that did not fit the batch before into an empty one.
    fn take_carry(&mut self) {
        if self.pending.is_empty() {
            if let Some((item, weight)) = self.carry.take() {
                self.push(item, weight);
            }
        }
    }

    /// The batch is complete by size or weight (an item is waiting for the
    /// next one), or nothing more will come.
    fn complete(&self) -> bool {
        self.pending.len() >= self.limits.max_items || self.carry.is_some() || self.done
    }

    /// Reads what the input has ready into the batch until it is complete.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.take_carry();
        loop {
            if self.complete() {
                return Poll::Ready(());
            }
            match self.input.as_mut().poll_next(cx) {
                Poll::Ready(Some(item)) => {
                    let weight = (self.weight)(&item);
                    let over = self
                        .limits
                        .max_weight
                        .is_some_and(|max| self.pending_weight + weight > max);
                    if over && !self.pending.is_empty() {
                        self.carry = Some((item, weight));
                    } else {
                        self.push(item, weight);
                    }
                }
                Poll::Ready(None) => self.done = true,
                Poll::Pending => return Poll::Pending,
            }
        }
    }

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
        match this.poll_fill(cx) {
            Poll::Ready(()) => {
                // Full, over the weight budget, or the input ended.
                Poll::Ready((!this.pending.is_empty()).then(|| this.take()))
            }
            Poll::Pending if this.pending.is_empty() => Poll::Pending,
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(this.take())),
                Poll::Pending => Poll::Pending,
            },
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
    async fn a_batch_filled_while_the_consumer_is_busy_outlives_its_linger() {
        let (tx, rx) = mpsc::channel::<u32>(100);
        let linger = Duration::from_millis(100);
        let mut out = batches(stream_of(rx), BatchLimits::new(10, linger), |_| 1);
        // The consumer is busy for 5 lingers while items trickle in: the
        // batch keeps them all instead of going out after its first linger.
        let producer = tokio::spawn(async move {
            for i in 0..5 {
                tx.send(i).await.unwrap();
                tokio::time::sleep(linger).await;
            }
            tx
        });
        let busy = tokio::time::timeout(linger * 5 + linger / 2, out.fill()).await;
        assert!(
            busy.is_err(),
            "fill ends only on size, weight or the input's end"
        );
        assert_eq!(out.pending(), 5);
        // Asked for, it goes out at once: its linger passed long ago.
        let started = Instant::now();
        assert_eq!(out.next().await, Some(vec![0, 1, 2, 3, 4]));
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert_eq!(out.pending(), 0);
        drop(producer.await.unwrap());
        assert_eq!(out.next().await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn fill_ends_when_the_batch_is_full_and_the_rest_waits_for_the_next() {
        let (tx, rx) = mpsc::channel::<u32>(100);
        for i in 0..7 {
            tx.send(i).await.unwrap();
        }
        let limits = BatchLimits {
            max_items: 3,
            max_weight: Some(100),
            linger: Duration::from_secs(60),
        };
        let mut out = batches(stream_of(rx), limits, |_| 1);
        out.fill().await;
        assert_eq!(out.pending(), 3, "full: the fourth item is not read yet");
        assert_eq!(out.next().await, Some(vec![0, 1, 2]));
        out.fill().await;
        assert_eq!(out.next().await, Some(vec![3, 4, 5]));
        // The input ends: fill returns, and the last batch goes at once.
        drop(tx);
        out.fill().await;
        let started = Instant::now();
        assert_eq!(out.next().await, Some(vec![6]));
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert_eq!(out.next().await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn fill_stops_at_the_weight_budget_and_keeps_the_item_for_the_next_batch() {
        let limits = BatchLimits {
            max_items: 100,
            max_weight: Some(10),
            linger: Duration::from_secs(60),
        };
        let mut out = batches(futures::stream::iter(vec![4usize, 5, 3, 2]), limits, |w| *w);
        out.fill().await;
        assert_eq!(out.pending(), 2, "4 + 5 fit, 3 would not");
        assert_eq!(out.next().await, Some(vec![4, 5]));
        assert_eq!(out.next().await, Some(vec![3, 2]));
        assert_eq!(out.next().await, None);
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
