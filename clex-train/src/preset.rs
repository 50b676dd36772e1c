//! Model presets for training from scratch, as HF `config.json` values (LLaMA architecture,
//! CLEX `rope_scaling` in the released checkpoints' spelling, or a baseline rope kind).

use std::path::Path;

use burn::tensor::{DType, backend::Backend};
use clex_core::ClexParams;
use clex_models::{CausalLm, ModelSource, RopeChange};
use serde_json::{Value, json};

use crate::error::TrainError;

/// A model size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// 4 layers, width 128, 4 heads (2 KV), P = 128: trains on a CPU in minutes.
    Tiny,
    /// 6 layers, width 384, 6 heads, P = 256.
    Small,
}

impl Preset {
    /// Parses `tiny` / `small`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "tiny" => Some(Preset::Tiny),
            "small" => Some(Preset::Small),
            _ => None,
        }
    }

    /// P, the context the positions are trained relative to.
    pub fn max_position_embeddings(self) -> usize {
        match self {
            Preset::Tiny => 128,
            Preset::Small => 256,
        }
    }
}

/// The rope of a run.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeChoice {
    /// CLEX with T_max.
    Clex {
        /// T_max.
        max_factor: usize,
    },
    /// Plain RoPE.
    None,
    /// Position interpolation.
    Linear(f64),
    /// Dynamic NTK.
    Dynamic(f64),
    /// YaRN.
    Yarn(f64),
}

impl RopeChoice {
    /// The rope as a [`RopeChange`] (CLEX with a fresh layer's settings).
    pub fn change(&self) -> RopeChange {
        match self {
            RopeChoice::Clex { max_factor } => RopeChange::Clex(ClexParams::fresh(*max_factor)),
            RopeChoice::None => RopeChange::None,
            RopeChoice::Linear(f) => RopeChange::Linear(*f),
            RopeChoice::Dynamic(f) => RopeChange::Dynamic(*f),
            RopeChoice::Yarn(f) => RopeChange::Yarn(*f),
        }
    }

    /// The `rope_scaling` block (or null).
    pub fn rope_scaling(&self) -> Value {
        self.change().hf_block()
    }
}

/// The `config.json` of a preset.
/// `rope_theta` is the base B of the frequencies θ_i = B^(-2i/d).
pub fn preset_config(preset: Preset, vocab_size: usize, rope: &RopeChoice, rope_theta: f64, bos: Option<u32>) -> Value {
    let (hidden, inter, layers, heads, kv) = match preset {
        Preset::Tiny => (128, 352, 4, 4, 2),
        Preset::Small => (384, 1024, 6, 6, 6),
    };
    json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab_size,
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "max_position_embeddings": preset.max_position_embeddings(),
        "rms_norm_eps": 1e-6,
        "rope_theta": rope_theta,
        "rope_scaling": rope.rope_scaling(),
        "hidden_act": "silu",
        "tie_word_embeddings": false,
        "log_scale": false,
        "bos_token_id": bos,
        "eos_token_id": bos,
        "torch_dtype": "float32",
    })
}

/// Loads an HF model directory in f32, optionally under `rope` in place of its own
/// ([`clex_models::ModelConfig::with_rope`]): dynamic NTK at inference on a model trained
/// with plain RoPE, or the starting point of a run continued from a checkpoint (`trainer`).
pub fn load_for_eval<B: Backend>(dir: &Path, rope: Option<&RopeChoice>, device: &B::Device) -> Result<CausalLm<B>, TrainError> {
    let source = ModelSource::open(dir)?;
    let config = match rope {
        None => source.config().clone(),
        Some(rope) => source.config().with_rope(&rope.change(), None)?,
    };
    Ok(source.load_with::<B>(config, device, DType::F32)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use clex_models::{ModelConfig, init_model};

    fn model(rope: RopeChoice) -> CausalLm<Flex> {
        let raw = preset_config(Preset::Tiny, 64, &rope, 10000.0, Some(0));
        init_model(ModelConfig::from_json(raw, Path::new("<test>")).unwrap(), &Default::default(), 3)
    }

    #[test]
    fn load_for_eval_rewrites_only_the_scaling() {
        let dir = tempfile::tempdir().unwrap();
        clex_models::save_model(&model(RopeChoice::None), dir.path()).unwrap();
        let m = load_for_eval::<Flex>(dir.path(), Some(&RopeChoice::Dynamic(2.0)), &Default::default()).unwrap();
        assert!(matches!(m.rope().scaling, clex_core::RopeScaling::Dynamic { .. }), "{:?}", m.rope().scaling);
        assert_eq!(m.config().num_layers, 4);
        let plain = load_for_eval::<Flex>(dir.path(), None, &Default::default()).unwrap();
        assert!(matches!(plain.rope().scaling, clex_core::RopeScaling::Default), "{:?}", plain.rope().scaling);
    }
}
