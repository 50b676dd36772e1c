//! The training data loader: one burn-train "epoch" is one checkpoint interval of optimizer
//! steps, and the batch of global step g is a pure function of (seed, g). A resumed run
//! therefore sees exactly the batches the uninterrupted run would have.

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
        let items = self.step_indices(g).into_iter().map(|i| LmItem { index: i, tokens: self.windows[i].clone() }).collect();
        let mut b = LmBatcher { seed: self.seed }.batch(items, &self.device);
        // The key also depends on the step, so a window seen twice gets a new draw.
        b.key = mix(b.key ^ g as u64);
        b
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
        Progress { items_processed: self.step * self.loader.batch_size, items_total: self.loader.steps_per_epoch * self.loader.batch_size }
    }
}

impl<B: Backend> DataLoader<B, LmBatch<B>> for StepLoader<B> {
    fn iter<'a>(&'a self) -> Box<dyn DataLoaderIterator<LmBatch<B>> + 'a> {
        let epoch = self.next_epoch.fetch_add(1, Ordering::SeqCst);
        Box::new(StepIter { loader: self, epoch, step: 0 })
    }

    fn num_items(&self) -> usize {
        self.steps_per_epoch * self.batch_size
    }

    fn to_device(&self, device: &B::Device) -> Arc<dyn DataLoader<B, LmBatch<B>>> {
        Arc::new(StepLoader {
            windows: self.windows.clone(),
            batch_size: self.batch_size,
            steps_per_epoch: self.steps_per_epoch,
            seed: self.seed,
            next_epoch: self.next_epoch.clone(),
            device: device.clone(),
        })
    }

    fn slice(&self, _start: usize, _end: usize) -> Arc<dyn DataLoader<B, LmBatch<B>>> {
        // Single-device training never slices; multi-device sharding would split steps.
        self.to_device(&self.device)
    }
}
