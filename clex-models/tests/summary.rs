//! What a module summary (burn-train's learner summary prints the model with `Display`)
//! shows of a `CausalLm`: its shape, not the raw `config.json` nor every tensor.

mod common;

use burn::module::Module;
use common::*;

#[test]
fn summary_shows_the_model_shape_not_the_raw_config() {
    let model = load("clex/llama_clex.json", "clex/llama_clex.safetensors");
    let summary = format!("{model}");
    eprintln!("{summary}");
    for want in [
        "architecture: llama",
        "layers: 2",
        "hidden: 64",
        "intermediate: 172",
        "heads: 4",
        "kv_heads: 2",
        "vocab: 256",
        "rope: clex",
        "max_position_embeddings: 32",
        &format!("params: {}", model.num_params()),
    ] {
        assert!(summary.contains(want), "the summary lacks {want:?}:\n{summary}");
    }
    // The raw config would bring its JSON keys; the module tree would bring every layer.
    for unwanted in ["rope_scaling", "num_hidden_layers", "q_proj", "ThetaSlot"] {
        assert!(!summary.contains(unwanted), "the summary shows {unwanted:?}:\n{summary}");
    }
    assert!(summary.lines().count() < 20, "a summary, not a dump:\n{summary}");
}
