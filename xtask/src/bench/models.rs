//! The bench presets: a LLaMA-shaped and a GPT-NeoX-shaped model of ~58 M parameters with
//! random weights, each saved twice as an HF directory, with plain RoPE and with CLEX
//! (T_max 16) on the very same weights. The token ids both engines feed are saved next to them.

use std::path::{Path, PathBuf};

use anyhow::Context;
use burn::module::Module;
use clex_core::ClexParams;
use clex_models::backend::{self, Inference};
use clex_models::{ModelConfig, attach_fresh_clex, init_model, save_model};
use serde_json::{Value, json};

/// CLEX's T_max in every bench model (the training target is stated at 16).
pub const MAX_FACTOR: usize = 16;

/// One architecture at one size.
#[derive(Debug, Clone)]
pub struct Preset {
    /// Directory stem, e.g. `llama-bench`.
    pub name: &'static str,
    /// `config.json` of the plain-RoPE model.
    pub config: Value,
    /// P (`max_position_embeddings`).
    pub p: usize,
    /// Vocabulary size.
    pub vocab: usize,
}

/// The two presets: full size, or the `--quick` size.
pub fn presets(quick: bool) -> Vec<Preset> {
    // (hidden, layers, heads, vocab, P)
    let (hidden, layers, heads, vocab, p) = if quick { (256, 4, 4, 8192, 64) } else { (512, 8, 8, 32000, 256) };
    let llama = json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": hidden * 11 / 4,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": heads,
        "max_position_embeddings": p,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "rope_scaling": null,
        "hidden_act": "silu",
        "tie_word_embeddings": false,
        "attention_bias": false,
        "mlp_bias": false,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": "float32",
    });
    let neox = json!({
        "architectures": ["GPTNeoXForCausalLM"],
        "model_type": "gpt_neox",
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": hidden * 4,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "max_position_embeddings": p,
        "layer_norm_eps": 1e-5,
        "rotary_emb_base": 10000.0,
        "rotary_pct": 0.25,
        "rope_scaling": null,
        "use_parallel_residual": true,
        "attention_bias": true,
        "hidden_act": "gelu",
        "tie_word_embeddings": false,
        "bos_token_id": 0,
        "eos_token_id": 0,
        "torch_dtype": "float32",
    });
    vec![
        Preset { name: if quick { "llama-quick" } else { "llama-bench" }, config: llama, p, vocab },
        Preset { name: if quick { "neox-quick" } else { "neox-bench" }, config: neox, p, vocab },
    ]
}

/// A Mixtral-shaped preset: the LLaMA preset's attention, norms and vocabulary, and in place
/// of its MLP 8 SwiGLU experts of half its width with top-2 routing, so that a token runs
/// exactly the LLaMA preset's parameters (2 · 3 · hidden · (hidden·11/8) per layer = its
/// 3 · hidden · (hidden·11/4)) while the weights hold 4x the MLP: decode tokens/s of the two
/// compare a sparse model with the dense one of the same active parameters (the bench runs
/// it after [`presets`]; its decode floor counts the k of E experts a step reads).
pub fn moe_presets(quick: bool) -> Vec<Preset> {
    let llama = &presets(quick)[0];
    let mut config = llama.config.clone();
    let hidden = config["hidden_size"].as_u64().expect("the preset's width") as usize;
    let extra = json!({
        "architectures": ["MixtralForCausalLM"],
        "model_type": "mixtral",
        "intermediate_size": hidden * 11 / 8,
        "num_local_experts": 8,
        "num_experts_per_tok": 2,
        "router_aux_loss_coef": 0.02,
        "sliding_window": null,
    });
    config.as_object_mut().expect("an object").extend(extra.as_object().expect("an object").clone());
    vec![Preset { name: if quick { "mixtral-quick" } else { "mixtral-bench" }, config, p: llama.p, vocab: llama.vocab }]
}

/// The HF directories of one preset.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Plain RoPE.
    pub rope: PathBuf,
    /// The same weights with a CLEX layer.
    pub clex: PathBuf,
    /// Parameters of the plain model.
    pub params: usize,
}

/// Writes `dir/<name>-rope` and `dir/<name>-clex` unless they already hold this config (a
/// stamp file keeps the config and the parameter count).
pub fn prepare(preset: &Preset, dir: &Path) -> anyhow::Result<Prepared> {
    let rope = dir.join(format!("{}-rope", preset.name));
    let clex = dir.join(format!("{}-clex", preset.name));
    let stamp = dir.join(format!("{}.stamp.json", preset.name));
    let old: Option<Value> = std::fs::read_to_string(&stamp).ok().and_then(|s| serde_json::from_str(&s).ok());
    if let Some(old) = old
        && old["config"] == preset.config
        && rope.join("model.safetensors").is_file()
        && clex.join("model.safetensors").is_file()
        && let Some(params) = old["params"].as_u64()
    {
        return Ok(Prepared { rope, clex, params: params as usize });
    }
    std::fs::create_dir_all(dir)?;
    let cfg = ModelConfig::from_json(preset.config.clone(), Path::new(preset.name))?;
    let model = init_model::<Inference>(cfg, &backend::device(None), 2024);
    let params = model.num_params();
    save_model(&model, &rope).with_context(|| format!("saving {}", rope.display()))?;
    // The same weights plus a fresh CLEX layer (D = 0; a trained D costs the same).
    let with_clex = attach_fresh_clex(model, ClexParams::fresh(MAX_FACTOR))?;
    save_model(&with_clex, &clex).with_context(|| format!("saving {}", clex.display()))?;
    std::fs::write(&stamp, serde_json::to_string(&json!({"config": preset.config, "params": params}))?)?;
    Ok(Prepared { rope, clex, params })
}

/// Token ids both engines feed: a fixed pseudo-random sequence over the vocabulary
/// (splitmix64), written once per (length, vocab).
pub fn token_ids(dir: &Path, len: usize, vocab: usize) -> anyhow::Result<PathBuf> {
    let path = dir.join(format!("ids-{len}-{vocab}.json"));
    if !path.is_file() {
        let mut state = 0x5EED_u64;
        let ids: Vec<u32> = (0..len)
            .map(|_| {
                state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                ((z ^ (z >> 31)) % vocab as u64) as u32
            })
            .collect();
        std::fs::write(&path, serde_json::to_string(&ids)?)?;
    }
    Ok(path)
}
