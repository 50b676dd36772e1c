//! `cargo xtask`: orchestration of the project's long jobs. Only composition lives here;
//! model and training logic stay in the library crates.

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
    /// Print which burn backend this build uses.
    Backend,
}

fn main() -> std::process::ExitCode {
    let result = match Cli::parse().command {
        Command::Train(args) => train::run(*args),
        Command::Backend => {
            println!("{}", clex_train::backend::name());
            Ok(())
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
