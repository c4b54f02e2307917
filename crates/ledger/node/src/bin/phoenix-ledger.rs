//! Stand-alone ledger binary for process-level tests and the bench: accepts the same argv as the
//! main binary's ledger subcommand, `phoenix-ledger ledger <command> ...`.

use clap::Parser;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "phoenix-ledger",
    about = "Phoenix ledger (test and bench binary)"
)]
struct Cli {
    #[command(subcommand)]
    top: Top,
}

#[derive(clap::Subcommand)]
enum Top {
    /// Ledger commands (same as `phoenix ledger ...`).
    #[command(subcommand)]
    Ledger(phoenix_ledger_node::LedgerCommand),
}

fn main() -> ExitCode {
    let Top::Ledger(cmd) = Cli::parse().top;
    match phoenix_ledger_node::run(cmd) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
