//! Plans a synthetic 340-site fleet and prints how long it took:
//! `cargo run --release -p phoenix-plan --example big -- [INSTANCES] [PER_SERVICE]`.
//! A quick check, not a benchmark harness: the repository's benchmark command times the CLI.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .map(|a| a.parse::<usize>().expect("a number"));
    let instances = args.next().unwrap_or(100_000);
    let per_service = args.next().unwrap_or(500);
    let fleet = common::synthetic(instances, per_service);
    let t = Instant::now();
    let plan = phoenix_plan::plan(&fleet);
    let planned = t.elapsed();
    let t = Instant::now();
    let json = serde_json::to_string(&plan).expect("serialises");
    let serialised = t.elapsed();
    let t = Instant::now();
    let table = phoenix_plan::render::table(&plan);
    let rendered = t.elapsed();
    println!(
        "{} sites, {} services, {} instances ({} placed), {} findings",
        fleet.sites.len(),
        fleet.services.len(),
        plan.totals.instances,
        plan.totals.placed_instances,
        plan.findings.len()
    );
    println!(
        "plan {planned:?}; json {serialised:?} ({} bytes); table {rendered:?} ({} bytes)",
        json.len(),
        table.len()
    );
}
