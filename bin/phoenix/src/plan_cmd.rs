//! `phoenix plan`: load, plan, print.

use clap::ValueEnum;
use phoenix_plan::render;
use std::path::PathBuf;
use std::process::ExitCode;

/// Output formats of `phoenix plan`.
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum PlanFormat {
    /// Readable tables for a terminal.
    Table,
    /// The JSON contract of fleet-spec.md, for scripts.
    Json,
    /// A report to paste into a ticket.
    Markdown,
    /// The dependency graph for Graphviz.
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
    let plan = phoenix_plan::plan(&fleet);
    let text = match output {
        PlanFormat::Table => render::table(&plan),
        PlanFormat::Json => phoenix_plan::to_json_string(&plan),
        PlanFormat::Markdown => render::markdown(&plan),
        PlanFormat::Dot => render::dot(&plan),
    };
    crate::print_out(&text)?;
    let errors = plan
        .findings
        .iter()
        .filter(|f| f.severity == phoenix_plan::Severity::Error)
        .count();
    Ok(if strict && errors > 0 {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}
