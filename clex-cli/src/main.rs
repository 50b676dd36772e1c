//! `clex`: the command line of clex-rs. Subcommands live one per file.

mod args;
mod chat;
mod convert;
mod generate;
mod inspect;
mod memory;
mod passkey;
mod perplexity;
mod rope;
mod score;
mod serve;

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
    /// Chat with a model through its chat template (a REPL, or one --prompt).
    Chat(Box<chat::ChatArgs>),
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
    /// An OpenAI-compatible HTTP server (completions, chat, streaming, continuous batching).
    Serve(Box<serve::ServeArgs>),
}

fn main() -> std::process::ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version print as clap lays them out; a usage error is one line.
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            let text = e.render().to_string();
            let line = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ");
            eprintln!("{}", cut(&line));
            return std::process::ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Chat(args) => chat::run(*args),
        Command::Convert(args) => convert::run(args),
        Command::Generate(args) => generate::run(*args),
        Command::Inspect(args) => inspect::run(args),
        Command::Passkey(args) => passkey::run(*args),
        Command::Perplexity(args) => perplexity::run(*args),
        Command::Rope(args) => rope::run(args),
        Command::Score(args) => score::run(*args),
        Command::Serve(args) => serve::run(*args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", message(&e));
            std::process::ExitCode::from(2)
        }
    }
}

/// Longest error line printed, in characters.
const MAX_MESSAGE_CHARS: usize = 1000;

/// `e` and its causes on one line, each cause once: many errors' Display already includes
/// their source (`path: cause`), which anyhow's `{:#}` would print a second time. Values a
/// file or flag put in the message are cut short, and so is the line.
fn message(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    cut(&out)
}

/// `text` on one line of at most [`MAX_MESSAGE_CHARS`] characters.
fn cut(text: &str) -> String {
    let line: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).take(MAX_MESSAGE_CHARS).collect();
    if text.chars().count() > MAX_MESSAGE_CHARS { format!("{line}… ({} bytes)", text.len()) } else { line }
}
