//! `clex`: the command line of clex-rs. Subcommands live one per file.

mod args;
mod convert;
mod generate;
mod inspect;
mod memory;
mod passkey;
mod perplexity;
mod rope;
mod score;

use clap::{Parser, Subcommand};

/// CLEX and RoPE-scaling tools for HF-format LLaMA / GPT-NeoX checkpoints and llama.cpp
/// LLaMA GGUF files.
#[derive(Parser, Debug)]
#[command(name = "clex", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write a llama.cpp GGUF file as an HF model directory.
    Convert(convert::ConvertArgs),
    /// Generate text from an HF model directory or GGUF file.
    Generate(Box<generate::GenerateArgs>),
    /// Show a checkpoint: architecture, sizes, rope, parameter count, CLEX θ(t) table.
    Inspect(inspect::InspectArgs),
    /// Logits and per-token NLL of a token sequence (optionally through the KV cache).
    Score(Box<score::ScoreArgs>),
    /// Passkey retrieval accuracy at several lengths and depths.
    Passkey(Box<passkey::PasskeyArgs>),
    /// Perplexity and accuracy across evaluation lengths.
    Perplexity(Box<perplexity::PerplexityArgs>),
    /// Show the RoPE / CLEX frequencies a config.json implies at a given length.
    Rope(rope::RopeArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Convert(args) => convert::run(args),
        Command::Generate(args) => generate::run(*args),
        Command::Inspect(args) => inspect::run(args),
        Command::Passkey(args) => passkey::run(*args),
        Command::Perplexity(args) => perplexity::run(*args),
        Command::Rope(args) => rope::run(args),
        Command::Score(args) => score::run(*args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
