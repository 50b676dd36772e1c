//! Tokenizers: an HF `tokenizer.json` given by the user, or a byte-level BPE trained on the
//! training split (deterministically) and stored with the run.

use std::path::Path;

use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer, TokenizerBuilder};

use crate::error::TrainError;

/// The special token trained BPEs use for document boundaries (BOS).
pub const BOUNDARY: &str = "<|endoftext|>";

fn tk(e: impl std::fmt::Display) -> TrainError {
    TrainError::Tokenizer(e.to_string())
}

/// Trains a byte-level BPE with `vocab_size` entries (including [`BOUNDARY`]) on `texts`.
/// The result depends only on the texts and their order.
pub fn train_bpe(texts: &[&str], vocab_size: usize) -> Result<Tokenizer, TrainError> {
    let mut trainer = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(vec![AddedToken::from(BOUNDARY, true)])
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    let mut tokenizer = TokenizerBuilder::<BPE, NormalizerWrapper, ByteLevel, ByteLevel, ByteLevel>::new()
        .with_model(BPE::default())
        .with_normalizer(None)
        .with_pre_tokenizer(Some(ByteLevel::new(false, true, true)))
        .with_post_processor(Some(ByteLevel::new(false, true, true)))
        .with_decoder(Some(ByteLevel::new(false, true, true)))
        .build()
        .map_err(tk)?;
    tokenizer.train(&mut trainer, texts.iter()).map_err(tk)?;
    let json = tokenizer.to_string(false).map_err(tk)?;
    json.parse::<Tokenizer>().map_err(tk)
}

/// Loads a `tokenizer.json`.
pub fn load_tokenizer(path: &Path) -> Result<Tokenizer, TrainError> {
    Tokenizer::from_file(path).map_err(|e| TrainError::Tokenizer(format!("{}: {e}", path.display())))
}

/// Token ids of `text` (no special tokens added).
pub fn encode(tokenizer: &Tokenizer, text: &str) -> Result<Vec<u32>, TrainError> {
    Ok(tokenizer.encode(text, false).map_err(tk)?.get_ids().to_vec())
}

/// The id documents start with: [`BOUNDARY`], `<s>`, or `<|endoftext|>`-like tokens.
pub fn boundary_id(tokenizer: &Tokenizer) -> Option<u32> {
    [BOUNDARY, "<s>", "<|begin_of_text|>"].iter().find_map(|t| tokenizer.token_to_id(t))
}
