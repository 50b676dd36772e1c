//! `clex inspect`: what a checkpoint is: architecture, sizes, rope kind and parameters,
//! parameter count, and for CLEX models the learned θ(t) table (and, with `--plot`, a chart
//! of θ_i(t) / θ_i(1) on a fine grid of t).

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::DType;
use clex_core::ClexLayer;
use clex_core::clex::ode::OdeFunction;
use clex_core::clex::solver;
use clex_eval::plot::theta_svg;
use clex_models::backend::{self, Inference};
use clex_models::gguf::GgufFile;
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
    /// Draw θ_i(t) / θ_i(1) against t for a few frequencies i (SVG) here; CLEX models only.
    #[arg(long)]
    plot: Option<PathBuf>,
    #[command(flatten)]
    load: crate::args::LoadFlags,
}

pub fn run(args: InspectArgs) -> anyhow::Result<()> {
    let source = args.load.open(&args.model)?;
    crate::memory::check_load(&source, source.config(), DType::F32)?;
    let model = source.load::<Inference>(&backend::device(args.device), DType::F32)?;
    let gguf = source.gguf().map(gguf_summary).transpose()?;
    let cfg = model.config();
    let rope = model.rope();
    if let Some(plot) = &args.plot {
        let Some(layer) = &model.clex_layer else {
            anyhow::bail!("--plot: {} has no CLEX layer (rope kind `{}`), so no θ(t) to draw", args.model.display(), rope.scaling.kind());
        };
        let (t_values, curves) = theta_curves(layer);
        clex_models::write_atomic(plot, theta_svg(&model_name(&args.model), &t_values, &curves)?.as_bytes())?;
    }
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

/// The frequency indices drawn: 0, K/8, K/4, K/2, 3K/4 and K − 1 (fewer when K is small).
fn plotted_frequencies(k: usize) -> Vec<usize> {
    let mut picks = vec![0, k / 8, k / 4, k / 2, 3 * k / 4, k.saturating_sub(1)];
    picks.dedup();
    picks
}

/// θ_i(t) / θ_i(1) = exp(z_i(t) − z_i(1)) for [`plotted_frequencies`] on a grid of t over
/// [1, T_max]: one solve of the layer's ODE (its grid depends only on the end points, so the
/// integer t agree with the inference table up to the solver's interpolation). The grid
/// step is 0.25, halved until each line has over 32 points, where the chart stops marking
/// every point with a dot.
fn theta_curves<B: burn::tensor::backend::Backend>(layer: &ClexLayer<B>) -> (Vec<f64>, Vec<(usize, Vec<f64>)>) {
    let settings = layer.config();
    let (spec, max_factor) = (settings.spec(), settings.params.max_factor.max(1));
    let mut step = 0.25;
    while (max_factor - 1) as f64 / step <= 32.0 && max_factor > 1 {
        step /= 2.0;
    }
    let times: Vec<f32> = (0..=((max_factor - 1) as f64 / step).round() as usize).map(|k| (1.0 + k as f64 * step) as f32).collect();
    let weights = layer.weights();
    let z1: Vec<f32> = weights.inv_freq.iter().map(|f| f.ln()).collect();
    let z = solver::solve(&OdeFunction::new(spec.dim, spec.act, weights.up, weights.down), &z1, &times, spec.time_dt, None);
    let curves =
        plotted_frequencies(z1.len()).into_iter().map(|i| (i, z.iter().map(|zt| ((zt[i] - z1[i]) as f64).exp()).collect())).collect();
    (times.iter().map(|&t| t as f64).collect(), curves)
}

/// The model's name for a chart title: its directory or file name, not the whole path; for a
/// directory named `model` (how `clex train` lays out a run) its run's name too, e.g.
/// `stage2-clex/model`.
fn model_name(path: &Path) -> String {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let name = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
    match (name(&path), path.parent().and_then(name)) {
        (Some(n), Some(run)) if n == "model" => format!("{run}/{n}"),
        (Some(n), _) => n,
        _ => path.display().to_string(),
    }
}

/// What a GGUF file is: version, `general.name`, and how many tensors of each ggml type.
fn gguf_summary(g: &GgufFile) -> anyhow::Result<serde_json::Value> {
    let mut types = std::collections::BTreeMap::<&str, usize>::new();
    for t in g.tensors() {
        *types.entry(t.ggml_type.name()).or_default() += 1;
    }
    Ok(json!({
        "file": g.path(),
        "version": g.version(),
        "name": g.str_opt("general.name")?.unwrap_or("(unnamed)"),
        "tensor_types": types,
    }))
}
