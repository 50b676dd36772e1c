//! libtorch for the `tch` backend without a system install: PyTorch 2.9.0 (the version
//! burn-tch 0.21's tch 0.22 is built against) from PyPI in `.venv-torch`, and the environment
//! torch-sys needs to build and the binaries need to run.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// The torch version tch 0.22 checks for.
const TORCH: &str = "torch==2.9.0";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The venv: `$CLEX_TORCH_VENV`, else `.venv-torch` in the workspace.
pub fn venv() -> PathBuf {
    std::env::var_os("CLEX_TORCH_VENV").map(PathBuf::from).unwrap_or_else(|| root().join(".venv-torch"))
}

fn site_packages(venv: &Path) -> anyhow::Result<PathBuf> {
    let lib = venv.join("lib");
    let entries = std::fs::read_dir(&lib).with_context(|| format!("{}: no venv here; run `cargo xtask setup-tch`", lib.display()))?;
    for e in entries.flatten() {
        let sp = e.path().join("site-packages");
        if sp.join("torch").is_dir() {
            return Ok(sp);
        }
    }
    bail!("{}: torch is not installed in this venv; run `cargo xtask setup-tch`", venv.display())
}

/// Environment variables for building with `--features tch` and running the result.
pub fn env() -> anyhow::Result<Vec<(String, String)>> {
    let venv = venv().canonicalize().with_context(|| format!("{}: run `cargo xtask setup-tch` first", venv().display()))?;
    let torch_lib = site_packages(&venv)?.join("torch/lib");
    let path = format!("{}:{}", venv.join("bin").display(), std::env::var("PATH").unwrap_or_default());
    let ld = match std::env::var("LD_LIBRARY_PATH") {
        Ok(old) if !old.is_empty() => format!("{}:{old}", torch_lib.display()),
        _ => torch_lib.display().to_string(),
    };
    Ok(vec![
        // torch-sys asks `python` (from VIRTUAL_ENV/PATH) where torch's headers and libs are.
        ("VIRTUAL_ENV".into(), venv.display().to_string()),
        ("PATH".into(), path),
        ("LIBTORCH_USE_PYTORCH".into(), "1".into()),
        ("LD_LIBRARY_PATH".into(), ld),
    ])
}

/// `cargo xtask setup-tch`: create the venv and install torch (about 4 GB, a few minutes).
pub fn setup() -> anyhow::Result<()> {
    let venv = venv();
    if site_packages(&venv).is_ok() {
        eprintln!("{}: torch already installed", venv.display());
    } else {
        run(Command::new("python3").arg("-m").arg("venv").arg(&venv), "creating the venv")?;
        run(Command::new(venv.join("bin/pip")).args(["install", TORCH]), "pip install torch==2.9.0")?;
    }
    println!("libtorch ready. To build and run with --features tch by hand:");
    for (k, v) in env()? {
        println!("  export {k}={v}");
    }
    println!("or use `cargo xtask test-tch` and `cargo xtask train --backend tch`.");
    Ok(())
}

/// `cargo xtask test-tch`: the parity suite (clex-parity) and the training parity checks
/// (clex-train's `tests/backends_tch.rs`) on libtorch.
pub fn test() -> anyhow::Result<()> {
    let env = env()?;
    let mut parity = crate::cargo();
    parity.current_dir(root()).args(["test", "-p", "clex-parity", "--no-default-features", "--features", "tch", "--", "--nocapture"]);
    run(parity.envs(env.clone()), "cargo test -p clex-parity --no-default-features --features tch")?;
    let mut training = crate::cargo();
    training.current_dir(root()).args([
        "test",
        "-p",
        "clex-train",
        "--features",
        "parity-tch",
        "--test",
        "backends_tch",
        "--",
        "--nocapture",
    ]);
    run(training.envs(env), "cargo test -p clex-train --features parity-tch --test backends_tch")
}

fn run(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("{what}: could not start"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}
