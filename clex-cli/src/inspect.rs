//! `clex inspect`: what a checkpoint is: architecture, sizes, rope kind and parameters,
//! parameter count, and for CLEX models the learned θ(t) table.

use std::path::PathBuf;

use burn::module::Module;
use burn::tensor::DType;
use clex_models::backend;
use serde_json::json;

/// Arguments of `clex inspect`.
#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// GPU index for GPU backends.
    #[arg(long)]
    device: Option<usize>,
    /// HF model directory or .gguf file.
    #[arg(short = 'm', long)]
    model: PathBuf,
    /// Print JSON instead of text (`{"theta": [[K values] per t], ...}`).
    #[arg(long)]
    json: bool,
}

pub fn run(args: InspectArgs) -> anyhow::Result<()> {
    let model = crate::common::load_model(&args.model, &backend::device(args.device), DType::F32)?;
    let gguf = args.model.is_file().then(|| gguf_summary(&args.model)).transpose()?;
    let cfg = model.config();
    let rope = model.rope();
    // num_params also counts CLEX's frozen inv_freq buffer, which HF does not call a parameter.
    let params = model.num_params() - model.clex_layer.as_ref().map(|c| c.num_frequencies()).unwrap_or(0);
    let theta: Option<Vec<Vec<f32>>> = model.clex_layer.as_ref().map(|c| {
        let table = c.theta_table();
        (1..=table.max_factor()).map(|t| table.row(t).to_vec()).collect()
    });
    if args.json {
        let out = json!({
            "model_type": cfg.arch.model_type(),
            "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size, "num_layers": cfg.num_layers,
            "num_heads": cfg.num_heads, "num_kv_heads": cfg.num_kv_heads, "head_dim": cfg.head_dim,
            "parameters": params,
            "rope": {"kind": rope.scaling.kind(), "theta": rope.theta, "rotary_dim": rope.rotary_dim,
                     "max_position_embeddings": rope.max_position_embeddings, "scaling": format!("{:?}", rope.scaling)},
            "log_scale": cfg.log_scale,
            "theta": theta,
            "gguf": gguf,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "{}: {} layers, width {}, {} heads ({} KV), head_dim {}, vocab {}",
        cfg.arch.model_type(),
        cfg.num_layers,
        cfg.hidden_size,
        cfg.num_heads,
        cfg.num_kv_heads,
        cfg.head_dim,
        cfg.vocab_size
    );
    println!("parameters: {params}");
    if let Some(g) = &gguf {
        println!("gguf: version {}, general.name {}, tensor types {}", g["version"], g["name"], g["tensor_types"]);
    }
    println!(
        "rope: {} (base {}, {} rotary dims, P = {}): {:?}",
        rope.scaling.kind(),
        rope.theta,
        rope.rotary_dim,
        rope.max_position_embeddings,
        rope.scaling
    );
    if let Some(theta) = theta {
        println!("CLEX θ(t) for t = 1..{} (first, middle and last frequency; log_scale {}):", theta.len(), cfg.log_scale);
        for (t, row) in theta.iter().enumerate() {
            let k = row.len();
            println!(
                "  t = {:>3} (up to {:>7} tokens): θ_0 {:.6e}  θ_{} {:.6e}  θ_{} {:.6e}",
                t + 1,
                (t + 1) * rope.max_position_embeddings,
                row[0],
                k / 2,
                row[k / 2],
                k - 1,
                row[k - 1]
            );
        }
    }
    Ok(())
}

/// What a GGUF file is: version, `general.name`, and how many tensors of each ggml type.
fn gguf_summary(path: &std::path::Path) -> anyhow::Result<serde_json::Value> {
    let g = clex_models::gguf::GgufFile::open(path)?;
    let mut types = std::collections::BTreeMap::<&str, usize>::new();
    for t in g.tensors() {
        *types.entry(t.ggml_type.name()).or_default() += 1;
    }
    Ok(json!({
        "file": path,
        "version": g.version(),
        "name": g.str_opt("general.name")?.unwrap_or("(unnamed)"),
        "tensor_types": types,
    }))
}
