//! Training windows as a burn `Dataset`, and the `Batcher` that turns them into input and
//! target token tensors plus a key that seeds the batch's CLEX draw.

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::tensor::{Int, Tensor, TensorData, backend::Backend};

/// One training window: `seq_len + 1` tokens and its index in the dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct LmItem {
    /// Position of the window in the packed dataset (seeds the draw; stable across resumes).
    pub index: usize,
    /// `seq_len + 1` token ids.
    pub tokens: Vec<u32>,
}

/// Packed windows.
#[derive(Debug, Clone)]
pub struct LmDataset {
    windows: Vec<Vec<u32>>,
}

impl LmDataset {
    /// Wraps packed windows (see [`crate::packing::pack`]).
    pub fn new(windows: Vec<Vec<u32>>) -> Self {
        LmDataset { windows }
    }
}

impl Dataset<LmItem> for LmDataset {
    fn get(&self, index: usize) -> Option<LmItem> {
        self.windows.get(index).map(|t| LmItem { index, tokens: t.clone() })
    }

    fn len(&self) -> usize {
        self.windows.len()
    }
}

/// A batch: inputs and next-token targets, `[batch, seq_len]` each.
#[derive(Debug, Clone)]
pub struct LmBatch<B: Backend> {
    /// Tokens 0..L of each window.
    pub inputs: Tensor<B, 2, Int>,
    /// Tokens 1..=L of each window.
    pub targets: Tensor<B, 2, Int>,
    /// Seeds the batch's t and positions: a function of the run seed and the window
    /// indices, so a resumed run draws exactly what the uninterrupted run drew.
    pub key: u64,
    /// Global micro-batch index (training) or 0 (validation).
    pub step: usize,
    /// Fraction of the step's batch these rows are: 1, or 1/devices under data parallelism.
    pub share: f32,
}

/// Builds [`LmBatch`]es.
#[derive(Debug, Clone)]
pub struct LmBatcher {
    /// The run seed.
    pub seed: u64,
}

/// SplitMix64 step: a cheap, well-mixed hash for seeds.
pub fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The draw key of a batch: a function of the run seed and the window indices.
pub fn batch_key(seed: u64, items: &[LmItem]) -> u64 {
    items.iter().fold(mix(seed), |key, it| mix(key ^ it.index as u64))
}

impl<B: Backend> Batcher<B, LmItem, LmBatch<B>> for LmBatcher {
    fn batch(&self, items: Vec<LmItem>, device: &B::Device) -> LmBatch<B> {
        let b = items.len();
        let l = items.first().map(|i| i.tokens.len() - 1).unwrap_or(0);
        let mut inputs = Vec::with_capacity(b * l);
        let mut targets = Vec::with_capacity(b * l);
        for it in &items {
            inputs.extend(it.tokens[..l].iter().map(|&t| t as i64));
            targets.extend(it.tokens[1..].iter().map(|&t| t as i64));
        }
        let key = batch_key(self.seed, &items);
        LmBatch {
            inputs: Tensor::from_data(TensorData::new(inputs, [b, l]), device),
            targets: Tensor::from_data(TensorData::new(targets, [b, l]), device),
            key,
            step: 0,
            share: 1.0,
        }
    }
}

/// Ready-made batches (each of one sequence length), for validation at several lengths in
/// one pass: burn's loader takes them one at a time (`batch_size(1)`).
#[derive(Debug, Clone)]
pub struct BatchGroups {
    groups: Vec<Vec<LmItem>>,
}

impl BatchGroups {
    /// Cuts each length's windows into batches of at most `batch_size`.
    pub fn new(per_length: &[Vec<Vec<u32>>], batch_size: usize) -> Self {
        let mut groups = Vec::new();
        let mut index = 0;
        for windows in per_length {
            for chunk in windows.chunks(batch_size.max(1)) {
                groups.push(
                    chunk
                        .iter()
                        .map(|t| {
                            index += 1;
                            LmItem { index: index - 1, tokens: t.clone() }
                        })
                        .collect(),
                );
            }
        }
        BatchGroups { groups }
    }
}

impl Dataset<Vec<LmItem>> for BatchGroups {
    fn get(&self, index: usize) -> Option<Vec<LmItem>> {
        self.groups.get(index).cloned()
    }

    fn len(&self) -> usize {
        self.groups.len()
    }
}

impl<B: Backend> Batcher<B, Vec<LmItem>, LmBatch<B>> for LmBatcher {
    fn batch(&self, mut groups: Vec<Vec<LmItem>>, device: &B::Device) -> LmBatch<B> {
        // `batch_size(1)`: exactly one ready-made group per batch.
        let items = groups.pop().unwrap_or_default();
        Batcher::<B, LmItem, LmBatch<B>>::batch(self, items, device)
    }
}
