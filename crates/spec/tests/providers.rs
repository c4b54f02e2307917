//! Sites beyond this host (fleet-spec part 2, "Providers per site"): `docker:` and `ssh:`
//! sections, hosts as the length of their lists, and a service's `image:` or `build:`.

use phoenix_spec::{ContainerImage, ProviderKind, parse_sources};

fn parse(yaml: &str) -> Result<phoenix_spec::Fleet, String> {
    parse_sources(&[("f.yaml".into(), yaml.to_owned())], None).map_err(|d| d.render())
}

const CAP: &str = "capacity: { cpu: 8, memory: 8Gi, storage: 10G }";

#[test]
fn docker_and_ssh_sites_take_their_hosts_from_their_lists() {
    let f = parse(&format!(
        "phoenix: 1\nname: multi\nsites:\n\
         - {{ name: d, tier: core, provider: docker, docker: {{ endpoints: ['unix:///var/run/docker.sock', 'tcp://127.0.0.1:2375'] }}, {CAP} }}\n\
         - {{ name: e, tier: edge, provider: ssh, ssh: {{ hosts: ['deploy@10.0.0.2', 'deploy@10.0.0.3', '10.0.0.4'], port: 2222, identity: '~/.ssh/id' }}, {CAP} }}\n\
         - {{ name: l, tier: regional, {CAP} }}\n\
         services:\n\
         - {{ name: web, image: 'phoenix-demo/busybox:1', command: [httpd, -f, -p, '${{port}}'], ports: [port] }}\n\
         - {{ name: api, build: ./images/api }}\n"
    ))
    .unwrap();
    let d = f.site("d").unwrap();
    assert_eq!(d.provider, ProviderKind::Docker);
    assert_eq!(d.hosts, 2);
    let e = f.site("e").unwrap();
    assert_eq!(e.provider, ProviderKind::Ssh);
    assert_eq!(e.hosts, 3);
    let ssh = e.ssh.as_ref().unwrap();
    assert_eq!(ssh.port, Some(2222));
    assert_eq!(ssh.identity.as_deref(), Some("~/.ssh/id"));
    assert_eq!(f.site("l").unwrap().provider, ProviderKind::Local);
    assert_eq!(
        f.service("web").unwrap().container,
        Some(ContainerImage::Image("phoenix-demo/busybox:1".into()))
    );
    assert!(matches!(
        &f.service("api").unwrap().container,
        Some(ContainerImage::Build { path, file: 0 }) if path == "./images/api"
    ));
}

#[test]
fn provider_sections_are_checked_with_locations() {
    let err = parse(&format!(
        "phoenix: 1\nname: bad\nsites:\n\
         - {{ name: a, tier: core, provider: ssh, {CAP} }}\n\
         - {{ name: b, tier: core, docker: {{ endpoints: [x] }}, {CAP} }}\n\
         - {{ name: c, tier: core, provider: ssh, hosts: 3, ssh: {{ hosts: [h1], port: 70000, user: x }}, {CAP} }}\n\
         services:\n\
         - {{ name: web, image: a, build: b }}\n"
    ))
    .unwrap_err();
    assert!(err.contains("f.yaml:4:"), "{err}");
    assert!(err.contains("lists no `ssh.hosts`"), "{err}");
    assert!(
        err.contains("has a `docker:` section but its provider is `local`"),
        "{err}"
    );
    assert!(err.contains("`hosts: 3` but lists 1"), "{err}");
    assert!(err.contains("not a TCP port"), "{err}");
    assert!(
        err.contains("unknown field") || err.contains("user"),
        "{err}"
    );
    assert!(err.contains("both `image:` and `build:`"), "{err}");
}
