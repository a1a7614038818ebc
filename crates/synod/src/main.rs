//! `synod`: the one command of Synod.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod commands;
mod progress;

/// State machine replication, with a simulator that checks it.
#[derive(Parser)]
#[command(name = "synod", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the deterministic simulator: seeded runs under faults, checked for safety,
    /// linearizability, liveness after heal and convergence.
    Sim(commands::sim::SimArgs),
    /// Inspect a node's write-ahead log: `dump` prints its records, `check` verifies it.
    Wal(commands::wal::WalArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Sim(args) => commands::sim::run(args),
        Command::Wal(args) => commands::wal::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
