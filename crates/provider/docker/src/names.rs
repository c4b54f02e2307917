//! How Phoenix names and labels what it makes on a Docker Engine. Pure functions: the same unit
//! always gives the same container name, which is what keeps a retried start from making a
//! second container.

use sha2::{Digest, Sha256};
use std::path::PathBuf;

/// Label on every unit container (and only on those): the fleet. `list` selects by it.
pub const LABEL_FLEET: &str = "phoenix.fleet";
/// Label: the unit id (`web-0@r3`).
pub const LABEL_UNIT: &str = "phoenix.unit";
/// Label: the instance (`web-0`).
pub const LABEL_INSTANCE: &str = "phoenix.instance";
/// Label: the service (`web`).
pub const LABEL_SERVICE: &str = "phoenix.service";
/// Label: the fleet revision of the unit.
pub const LABEL_REVISION: &str = "phoenix.revision";
/// Label: the site the unit was started for.
pub const LABEL_SITE: &str = "phoenix.site";
/// Label: the host index within the site.
pub const LABEL_HOST: &str = "phoenix.host";
/// Label: the allocated ports, a JSON object from port name to number.
pub const LABEL_PORTS: &str = "phoenix.ports";
/// Label: the resolved image id the container runs (what the unit's fingerprint includes).
pub const LABEL_IMAGE: &str = "phoenix.image";
/// Label: the image as the spec names it (tag or build tag), for people reading `docker ps`.
pub const LABEL_IMAGE_REF: &str = "phoenix.image-ref";
/// Label on helper containers (snapshots, restores), whose value is the fleet; they never carry
/// [`LABEL_FLEET`].
pub const LABEL_HELPER: &str = "phoenix.helper";
/// Label on volumes: the fleet whose instance owns it.
pub const LABEL_VOLUME_FLEET: &str = "phoenix.fleet";
/// Label on built images: the content hash of their build context.
pub const LABEL_CONTEXT: &str = "phoenix.context";
/// Label on built images: the fleet they were built for ([`DockerProvider::remove_built_images`](crate::DockerProvider::remove_built_images)).
pub const LABEL_BUILD_FLEET: &str = "phoenix.build-fleet";

/// Where an instance's data volume is mounted inside its containers: `${data_dir}` is
/// `DATA_ROOT/<instance>`, the same path for every revision of the instance and a different
/// one for every other instance.
pub const DATA_ROOT: &str = "/phoenix/data";

/// `${data_dir}` of `instance`, inside its containers.
pub fn data_dir(instance: &str) -> PathBuf {
    PathBuf::from(DATA_ROOT).join(instance)
}

/// The name part that stands for `fleet`: the fleet itself when it has no `.` (fleet names of
/// the spec never do), else a hash of it, so that `.` can separate fleet and instance without
/// two (fleet, instance) pairs ever sharing a name.
fn fleet_part(fleet: &str) -> String {
    if fleet.contains('.') {
        format!("h{}", &hex(&Sha256::digest(fleet.as_bytes()))[..12])
    } else {
        fleet.to_string()
    }
}

/// The container of unit `<instance>@r<revision>` of `fleet`: `phoenix-<fleet>.<instance>.r<revision>`.
/// Docker refuses a second container of one name, so concurrent or retried starts of a unit
/// create at most one container.
pub fn container_name(fleet: &str, instance: &str, revision: u64) -> String {
    format!("phoenix-{}.{instance}.r{revision}", fleet_part(fleet))
}

/// The data volume of `instance` in `fleet`: `phoenix-<fleet>.<instance>`.
pub fn volume_name(fleet: &str, instance: &str) -> String {
    format!("phoenix-{}.{instance}", fleet_part(fleet))
}

/// A Docker repository path component made of `s`: lowercase letters, digits and single `-`,
/// starting and ending with a letter or digit.
pub fn repo_component(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    while out.ends_with('-') {
        out.pop();
    }
    if out.is_empty() {
        out.push('x');
    }
    out
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_deterministic_and_never_shared() {
        assert_eq!(container_name("demo", "web-0", 3), "phoenix-demo.web-0.r3");
        assert_eq!(volume_name("demo", "web-0"), "phoenix-demo.web-0");
        // `-` in fleet and instance names cannot make two pairs meet.
        assert_ne!(
            volume_name("demo", "web-x-0"),
            volume_name("demo-web", "x-0")
        );
        // A fleet with a dot (allowed by the provider API, never by the spec) is hashed.
        let dotted = volume_name("a.b", "c");
        assert!(
            dotted.starts_with("phoenix-h") && dotted.ends_with(".c"),
            "{dotted}"
        );
        assert_ne!(dotted, volume_name("a", "b.c"));
        assert_eq!(data_dir("db-0"), PathBuf::from("/phoenix/data/db-0"));
    }

    #[test]
    fn repo_components_are_valid() {
        assert_eq!(repo_component("conf-Build_1"), "conf-build-1");
        assert_eq!(repo_component("__x..y--"), "x-y");
        assert_eq!(repo_component("..."), "x");
    }
}
