//! The planner at the benchmark's scale: 340 sites and 100,000 instances. Not a timed
//! assertion (CI machines vary); it prints the time and checks the plan is complete and within
//! hard limits. `cargo run --release -p phoenix-plan --example big` gives release timings.

mod common;

use std::time::Instant;

#[test]
fn plans_100k_instances_on_340_sites() {
    let fleet = common::synthetic(100_000, 500);
    let t = Instant::now();
    let plan = phoenix_plan::plan(&fleet);
    eprintln!(
        "planned {} instances on {} sites in {:?} (this build's profile)",
        plan.totals.instances,
        plan.totals.sites,
        t.elapsed()
    );
    assert_eq!(plan.totals.sites, 340);
    assert_eq!(plan.totals.instances, 100_000);
    assert_eq!(
        plan.totals.placed_instances,
        100_000,
        "{:#?}",
        &plan.findings[..plan.findings.len().min(5)]
    );
    for s in &fleet.sites {
        let cpu_limit = (s.capacity.cpu.min as f64 * plan.policy.cpu_overcommit) as u64;
        for h in &plan.sites[&s.name].host_loads {
            assert!(
                h.demand.0.memory.max <= s.capacity.memory.min && h.demand.0.cpu.max <= cpu_limit
            );
        }
    }
}
