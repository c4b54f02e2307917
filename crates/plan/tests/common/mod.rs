//! A synthetic fleet for scale tests and the `big` example: 15 core, 75 regional and 250 edge
//! sites, and services of every placement kind adding up to a given number of instances.

#![allow(dead_code)] // each test binary that includes this uses a different part

use phoenix_plan::testing::{empty, service, site};
use phoenix_spec::quantity::Range;
use phoenix_spec::{Fleet, Role, Spread, Tier};

const MI: u64 = 1 << 20;
const GI: u64 = 1 << 30;

/// `instances` instances in services of `per_service` instances each (the last one smaller).
pub(crate) fn synthetic(instances: usize, per_service: usize) -> Fleet {
    let mut f = empty();
    f.policy.cpu_overcommit = 2.0;
    let tiers = [
        (Tier::Core, "core", 15, 8, 64_000, 256 * GI),
        (Tier::Regional, "regional", 75, 4, 32_000, 128 * GI),
        (Tier::Edge, "edge", 250, 2, 8_000, 32 * GI),
    ];
    for (tier, name, count, hosts, cpu, mem) in tiers {
        for i in 1..=count {
            let mut s = site(&format!("{name}-{i}"), tier, hosts, cpu, mem);
            s.capacity.storage = Range::exact(mem * 32);
            f.sites.push(s);
        }
    }
    let mut left = instances;
    let mut k = 0usize;
    while left > 0 {
        let n = per_service.min(left);
        left -= n;
        let mut s = service(
            &format!("svc-{k}"),
            n as u64,
            50 + 25 * (k % 9) as u64,
            64 * MI * (1 + (k % 4) as u64),
        );
        s.resources.cpu = Range::new(s.resources.cpu.max / 2, s.resources.cpu.max);
        s.resources.storage = Range::exact(GI);
        match k % 6 {
            0 => (s.placement.tier, s.placement.spread) = (Some(Tier::Core), Spread::Site),
            1 => (s.placement.tier, s.placement.spread) = (Some(Tier::Regional), Spread::Site),
            2 => (s.placement.tier, s.placement.spread) = (Some(Tier::Edge), Spread::Site),
            3 => s.placement.spread = Spread::Host,
            _ => {}
        }
        if k.is_multiple_of(50) {
            s.role = Role::Validator;
        }
        if k > 0 && k.is_multiple_of(3) {
            s.depends_on = vec![format!("svc-{}", k - 3)];
        }
        f.services.push(s);
        k += 1;
    }
    f
}
