//! `clex serve`: an OpenAI-compatible HTTP server on one model (clex-serve), bound to
//! loopback unless told otherwise.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clex_models::backend::{self, Inference};
use clex_models::{CausalLm, ModelSource, Session};
use clex_serve::{App, Engine, EngineConfig, MemoryLimit};

use crate::args::{self, LoadFlags, RopeOverride, RunFlags};

/// Arguments of `clex serve`.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// HF model directory (config.json + safetensors) or llama.cpp .gguf file.
    #[arg(short = 'm', long)]
    model: PathBuf,
    /// tokenizer.json (default: MODEL/tokenizer.json, or the GGUF's own).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Address to bind (loopback by default: other machines cannot reach it).
    #[arg(long, default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    /// Port (0: any free port; the address is printed).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Require `Authorization: Bearer KEY` on /v1/* (also read from CLEX_API_KEY).
    #[arg(long)]
    api_key: Option<String>,
    /// The model name /v1/models lists (default: the model file or directory name).
    #[arg(long)]
    model_id: Option<String>,
    /// Requests decoded together as one batch.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    parallel: u16,
    /// Requests that may wait for a slot; more are answered 429.
    #[arg(long, default_value_t = 64)]
    queue: usize,
    /// Most tokens per sequence, prompt included (default: P·T_max for CLEX, else the
    /// model's max_position_embeddings).
    #[arg(long)]
    ctx_size: Option<usize>,
    /// Prompt tokens per forward: smaller chunks let running requests step more often while
    /// a long prompt is read, larger ones read it faster.
    #[arg(long, default_value_t = clex_models::session::PREFILL_CHUNK as u32, value_parser = clap::value_parser!(u32).range(1..))]
    prefill_chunk: u32,
    /// A Jinja chat template file (default: the model's own).
    #[arg(long)]
    chat_template: Option<PathBuf>,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 4 << 20)]
    max_body_bytes: usize,
    /// Start completion prompts with the model's BOS token (default as `clex generate`).
    #[arg(long, action = clap::ArgAction::Set)]
    bos: Option<bool>,
    #[command(flatten)]
    run: RunFlags,
    #[command(flatten)]
    rope: RopeOverride,
    #[command(flatten)]
    load: LoadFlags,
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let source: ModelSource = args.load.open(&args.model)?;
    let run_config = args.rope.config(&source)?;
    let (tokenizer, _) = args::tokenizer(args.tokenizer.as_deref(), &source)?;
    let template = match &args.chat_template {
        Some(path) => Some(source.chat_template_file(path)?),
        None => source.chat_template()?,
    };
    crate::memory::check_load(&source, &run_config, args.run.dtype.into())?;
    let model_id = args.model_id.clone().unwrap_or_else(|| {
        let name = args.model.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into());
        name.strip_suffix(".gguf").map(str::to_string).unwrap_or(name)
    });
    // Bind before loading, so a port in use fails at once.
    let addr = SocketAddr::new(args.host, args.port);
    let std_listener = std::net::TcpListener::bind(addr).with_context(|| format!("--host/--port: binding {addr}"))?;
    std_listener.set_nonblocking(true).context("--port: setting the socket non-blocking")?;
    let bound = std_listener.local_addr().context("--port: reading the bound address")?;

    let device = backend::device(args.run.device);
    let model: CausalLm<Inference> = source.load_with::<Inference>(run_config, &device, args.run.dtype.into())?;
    let config = model.config().clone();
    let default_ctx =
        Session::new(&model, args.run.cache_policy.into()).default_max_seq_len().unwrap_or(config.rope.max_position_embeddings);
    let context = args.ctx_size.unwrap_or(default_ctx);
    if context < 2 {
        bail!("--ctx-size: {context} leaves no room for a prompt and a token");
    }
    let bos = if args.bos.map_or_else(|| source.add_bos(), Ok)? { config.bos_token_id } else { None };
    let stop_tokens = match &template {
        Some(t) => t.stop_tokens(&config.eos_token_ids, &tokenizer),
        None => config.eos_token_ids.clone(),
    };
    // One request's share of the memory available now (after loading the weights).
    let parallel = usize::from(args.parallel);
    let memory = match (clex_models::backend::HOST_MEMORY, crate::memory::available()) {
        (true, Some(avail)) => {
            let estimate_model = model.clone();
            let need = Box::new(move |seq, total| estimate_model.memory_estimate(1, seq, total));
            Some(MemoryLimit { need, budget: avail / parallel })
        }
        _ => None,
    };
    let tokenizer = Arc::new(tokenizer);
    let engine = Engine::start(
        model,
        tokenizer.clone(),
        EngineConfig {
            max_batch: parallel,
            max_queue: args.queue,
            policy: args.run.cache_policy.into(),
            context,
            prefill_chunk: args.prefill_chunk as usize,
        },
    );
    let created = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let app = Arc::new(App {
        engine,
        tokenizer,
        template,
        stop_tokens,
        bos,
        vocab: config.vocab_size,
        model_id: model_id.clone(),
        api_key: args.api_key.clone().or_else(|| std::env::var("CLEX_API_KEY").ok().filter(|k| !k.is_empty())),
        max_body_bytes: args.max_body_bytes,
        memory,
        created,
    });
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(std_listener).context("--port: registering the socket")?;
        eprintln!(
            "clex serve: {model_id} on backend {}, {parallel} parallel, context {context}; listening on http://{bound}",
            backend::name()
        );
        // Ctrl-C: stop taking connections and let requests in flight finish; a second
        // Ctrl-C exits at once.
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
            eprintln!("clex serve: shutting down after the requests in flight (Ctrl-C again to exit now)");
            tokio::spawn(async {
                let _ = tokio::signal::ctrl_c().await;
                std::process::exit(130);
            });
        };
        clex_serve::serve(listener, app, shutdown).await.context("serving")
    })
}
