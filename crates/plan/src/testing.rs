//! Small fleets built in code, for tests and examples that should not depend on the YAML
//! parser. Everything not given takes the spec's default.

use phoenix_spec::quantity::Range;
use phoenix_spec::{
    Fleet, Location, Placement, Policy, Project, ProviderKind, Resources, RestartPolicy, Role,
    Rollout, Service, Site, Tier,
};
use std::collections::BTreeMap;

/// Storage of every host built here: 1 TB.
pub const HOST_STORAGE: u64 = 1_000_000_000_000;

/// A site with `hosts` identical hosts of `cpu` millicores and `memory` bytes (exact), 1 TB of
/// storage each, phase 1.
pub fn site(name: &str, tier: Tier, hosts: u32, cpu: u64, memory: u64) -> Site {
    Site {
        name: name.to_string(),
        tier,
        region: None,
        provider: ProviderKind::Local,
        hosts,
        docker: None,
        ssh: None,
        capacity: Resources {
            cpu: Range::exact(cpu),
            memory: Range::exact(memory),
            storage: Range::exact(HOST_STORAGE),
        },
        phase: 1,
        group: None,
        description: None,
        location: Location::default(),
    }
}

/// An enabled app service of phase 1 with `replicas` instances of `cpu` millicores and `memory`
/// bytes (exact), no storage, no placement constraint.
pub fn service(name: &str, replicas: u64, cpu: u64, memory: u64) -> Service {
    Service {
        name: name.to_string(),
        project: None,
        phase: 1,
        role: Role::App,
        validator_set: None,
        replicas: Range::exact(replicas),
        placement: Placement::default(),
        resources: Resources {
            cpu: Range::exact(cpu),
            memory: Range::exact(memory),
            storage: Range::ZERO,
        },
        command: vec!["true".to_string()],
        env: BTreeMap::new(),
        ports: Vec::new(),
        health: None,
        depends_on: Vec::new(),
        enabled: true,
        rollout: Rollout::default(),
        restart: RestartPolicy::default(),
        stop_grace_ms: 10_000,
        user: None,
        reload: Vec::new(),
        backup: Vec::new(),
        container: None,
        metrics: None,
        job: None,
        description: None,
        location: Location::default(),
    }
}

/// A project with no dependencies, attribution, duration or budget.
pub fn project(name: &str) -> Project {
    Project {
        name: name.to_string(),
        depends_on: Vec::new(),
        hosted_on: None,
        duration: None,
        budget: None,
        description: None,
        location: Location::default(),
    }
}

/// A fleet named `test` with no sites, projects or services and the default policy.
pub fn empty() -> Fleet {
    Fleet {
        format: 1,
        name: "test".to_string(),
        description: None,
        environment: None,
        environments: Vec::new(),
        policy: Policy::default(),
        budget: None,
        sites: Vec::new(),
        projects: Vec::new(),
        services: Vec::new(),
        secrets: Vec::new(),
        files: Vec::new(),
    }
}

/// A fleet of sites `(name, tier, hosts, cpu millicores, memory bytes)` and services
/// `(name, replicas, cpu millicores, memory bytes)`.
pub fn fleet(sites: &[(&str, Tier, u32, u64, u64)], services: &[(&str, u64, u64, u64)]) -> Fleet {
    let mut f = empty();
    f.sites = sites
        .iter()
        .map(|&(n, t, h, c, m)| site(n, t, h, c, m))
        .collect();
    f.services = services
        .iter()
        .map(|&(n, r, c, m)| service(n, r, c, m))
        .collect();
    f
}
