//! `clex rope`: what rotary frequencies a checkpoint's config.json gives at a length.

use std::path::PathBuf;

use anyhow::Context;
use clex_core::RopeConfig;
use clex_core::clex::ClexLayerConfig;
use clex_models::backend;

/// Arguments of `clex rope`.
#[derive(clap::Args, Debug)]
pub struct RopeArgs {
    /// An HF `config.json`, a model directory holding one, or a .gguf file.
    #[arg(short = 'c', long)]
    config: PathBuf,
    /// Total sequence length N (cache + new tokens).
    #[arg(short = 'n', long, default_value_t = 1)]
    length: usize,
}

pub fn run(args: RopeArgs) -> anyhow::Result<()> {
    let path = if args.config.is_dir() { args.config.join("config.json") } else { args.config.clone() };
    let rope = if is_gguf(&path) {
        clex_models::ModelSource::open(&path)?.config().rope.clone()
    } else {
        let text = clex_models::weights::read_regular(&path)?;
        RopeConfig::from_hf_str(&text).with_context(|| format!("in {}", path.display()))?
    };
    println!("kind: {}", rope.scaling.kind());
    println!(
        "head_dim: {}, rotary dims: {}, base: {}, max_position_embeddings: {}",
        rope.head_dim, rope.rotary_dim, rope.theta, rope.max_position_embeddings
    );
    // CLEX configs get a fresh (untrained) layer: D = 0, i.e. NTK scaling with α = 2t − 1.
    let device = backend::device(None);
    let layer = ClexLayerConfig::from_rope(&rope).map(|cfg| cfg.init::<backend::Inference>(&device));
    let freqs = clex_core::frequencies(&rope, layer.as_ref(), args.length, &device);
    if let Some(sf) = freqs.scaling_factor {
        println!(
            "CLEX: t = {} for N = {}{} (untrained layer: D = 0, so θ(t) is NTK scaling with α = 2t − 1)",
            sf.t,
            args.length,
            if sf.beyond_max { " (beyond P·T_max: θ(T_max) extrapolated)" } else { "" }
        );
    }
    let scale = freqs.attention_scaling;
    let inv = freqs.inv_freq.into_data().convert::<f32>().to_vec::<f32>().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    println!("attention scaling: {scale}");
    println!("inv_freq[0..{}]:", inv.len());
    for chunk in inv.chunks(8) {
        println!("  {}", chunk.iter().map(|x| format!("{x:.6e}")).collect::<Vec<_>>().join(" "));
    }
    Ok(())
}

/// True when the file starts with the GGUF magic.
fn is_gguf(path: &std::path::Path) -> bool {
    let mut magic = [0u8; 4];
    // Only a regular file is opened: a FIFO would block here.
    clex_models::weights::open_regular(path).is_ok_and(|mut f| std::io::Read::read_exact(&mut f, &mut magic).is_ok()) && &magic == b"GGUF"
}
