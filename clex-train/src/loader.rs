//! The training data loader: one burn-train "epoch" is one checkpoint interval of optimizer
//! steps, and the batch of global step g is a pure function of (seed, g). A resumed run
//! therefore sees exactly the batches the uninterrupted run would have.
//!
//! Under burn-train's multi-device strategy the loader is sliced into one shard per device:
//! shard k gets its rows of every step's batch (the same key, so the same CLEX t and
//! positions on every device) and weights its loss by its share, so the summed gradients
//! equal the single-device gradient of the whole batch.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataloader::{DataLoader, DataLoaderIterator, Progress};
use burn::tensor::backend::Backend;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::batch::{LmBatch, LmBatcher, LmItem, mix};

/// Batches of training windows, `steps_per_epoch` per epoch, reshuffled every pass.
pub struct StepLoader<B: Backend> {
    windows: Arc<Vec<Vec<u32>>>,
    batch_size: usize,
    steps_per_epoch: usize,
    seed: u64,
    next_epoch: Arc<AtomicUsize>,
    device: B::Device,
    /// Rows of each step's batch this loader yields (all of them unless sliced).
    rows: Range<usize>,
}

impl<B: Backend> StepLoader<B> {
    /// `first_epoch` is 0 for a new run, or the number of completed epochs when resuming.
    pub fn new(
        windows: Vec<Vec<u32>>,
        batch_size: usize,
        steps_per_epoch: usize,
        seed: u64,
        first_epoch: usize,
        device: B::Device,
    ) -> Self {
        StepLoader {
            windows: Arc::new(windows),
            batch_size,
            steps_per_epoch,
            seed,
            next_epoch: Arc::new(AtomicUsize::new(first_epoch)),
            device,
            rows: 0..batch_size,
        }
    }

    /// The window indices of global step `g`.
    pub fn step_indices(&self, g: usize) -> Vec<usize> {
        let n = self.windows.len();
        let mut out = Vec::with_capacity(self.batch_size);
        let mut pass = usize::MAX;
        let mut order: Vec<usize> = Vec::new();
        for slot in g * self.batch_size..(g + 1) * self.batch_size {
            if slot / n != pass {
                pass = slot / n;
                order = (0..n).collect();
                order.shuffle(&mut ChaCha8Rng::seed_from_u64(mix(self.seed ^ mix(pass as u64))));
            }
            out.push(order[slot % n]);
        }
        out
    }

    fn batch(&self, g: usize) -> LmBatch<B> {
        let items: Vec<LmItem> = self.step_indices(g).into_iter().map(|i| LmItem { index: i, tokens: self.windows[i].clone() }).collect();
        // The key comes from the whole batch (every shard draws the same t) and the step (a
        // window seen twice gets a new draw).
        let key = mix(crate::batch::batch_key(self.seed, &items) ^ g as u64);
        let shard = items[self.rows.clone()].to_vec();
        let mut b = LmBatcher { seed: self.seed }.batch(shard, &self.device);
        b.key = key;
        b.step = g;
        b.share = self.rows.len() as f32 / self.batch_size as f32;
        b
    }

    fn with(&self, device: B::Device, rows: Range<usize>, next_epoch: Arc<AtomicUsize>) -> Self {
        StepLoader {
            windows: self.windows.clone(),
            batch_size: self.batch_size,
            steps_per_epoch: self.steps_per_epoch,
            seed: self.seed,
            next_epoch,
            device,
            rows,
        }
    }
}

struct StepIter<'a, B: Backend> {
    loader: &'a StepLoader<B>,
    epoch: usize,
    step: usize,
}

impl<B: Backend> Iterator for StepIter<'_, B> {
    type Item = LmBatch<B>;

    fn next(&mut self) -> Option<LmBatch<B>> {
        if self.step == self.loader.steps_per_epoch {
            return None;
        }
        let g = self.epoch * self.loader.steps_per_epoch + self.step;
        self.step += 1;
        Some(self.loader.batch(g))
    }
}

impl<B: Backend> DataLoaderIterator<LmBatch<B>> for StepIter<'_, B> {
    fn progress(&self) -> Progress {
        let rows = self.loader.rows.len();
        Progress { items_processed: self.step * rows, items_total: self.loader.steps_per_epoch * rows }
    }
}

impl<B: Backend> DataLoader<B, LmBatch<B>> for StepLoader<B> {
    fn iter<'a>(&'a self) -> Box<dyn DataLoaderIterator<LmBatch<B>> + 'a> {
        let epoch = self.next_epoch.fetch_add(1, Ordering::SeqCst);
        Box::new(StepIter { loader: self, epoch, step: 0 })
    }

    fn num_items(&self) -> usize {
        self.steps_per_epoch * self.rows.len()
    }

    fn to_device(&self, device: &B::Device) -> Arc<dyn DataLoader<B, LmBatch<B>>> {
        Arc::new(self.with(device.clone(), self.rows.clone(), self.next_epoch.clone()))
    }

    /// burn-train's `split_dataloader` cuts `num_items` into one contiguous range per device;
    /// the same fractions of every step's batch become that device's rows.
    fn slice(&self, start: usize, end: usize) -> Arc<dyn DataLoader<B, LmBatch<B>>> {
        let n = self.num_items().max(1);
        let (lo, hi) = (self.rows.start, self.rows.end);
        let rows = lo + start * (hi - lo) / n..lo + end * (hi - lo) / n;
        // Each shard counts its own epochs: every shard's `iter()` starts the same epoch.
        let next = Arc::new(AtomicUsize::new(self.next_epoch.load(Ordering::SeqCst)));
        Arc::new(self.with(self.device.clone(), rows, next))
    }
}
