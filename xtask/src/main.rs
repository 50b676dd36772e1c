//! `cargo xtask`: orchestration of the project's long jobs (train, experiment, bench).
//! Only composition lives here; model and training logic stay in the library crates.

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print which burn backend this build uses.
    Backend,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Backend => println!("{}", clex_train::backend::name()),
    }
    Ok(())
}
