//! `phoenix plan`: load, plan, print.

use clap::ValueEnum;
use std::path::PathBuf;
use std::process::ExitCode;

/// Output formats of `phoenix plan`.
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum PlanFormat {
    Table,
    Json,
    Markdown,
    Dot,
}

pub(crate) fn run(
    files: &[PathBuf],
    env: Option<&str>,
    output: PlanFormat,
    strict: bool,
) -> anyhow::Result<ExitCode> {
    let fleet = match phoenix_spec::load_files(files, env) {
        Ok(f) => f,
        Err(diags) => {
            eprint!("{}", diags.render());
            return Ok(ExitCode::from(1));
        }
    };
    let _ = (fleet, output, strict);
    anyhow::bail!("the planner is not wired yet")
}
