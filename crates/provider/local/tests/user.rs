//! `user:`: a unit runs as another user of this host, with its data dir given to that user.
//! Needs root and `useradd`/`userdel`; skips with a printed reason otherwise. The test user
//! is created for the test and removed at its end, whatever happens.

mod common;

use common::LocalFixture;
use phoenix_provider_api::Provider;
use phoenix_provider_api::conformance::{shell, wait_for};
use phoenix_provider_local::lookup_user;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;
use std::time::Duration;

/// A system user made for one test, deleted on drop.
struct TestUser(String);

impl TestUser {
    fn create(prefix: &str) -> Option<TestUser> {
        if rustix::process::geteuid().as_raw() != 0 {
            eprintln!("skipped: not root, cannot create a test user");
            return None;
        }
        let name = format!("{prefix}{}", std::process::id() % 100_000);
        let made = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
            ])
            .arg(&name)
            .status();
        match made {
            Ok(s) if s.success() => Some(TestUser(name)),
            other => {
                eprintln!("skipped: useradd {name} failed: {other:?}");
                None
            }
        }
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.0).status();
    }
}

#[test]
fn a_unit_runs_as_its_user_who_owns_the_data_dir() {
    let Some(user) = TestUser::create("phxu") else {
        return;
    };
    let who = lookup_user(&user.0).unwrap().expect("the user just made");
    let fx = LocalFixture::new();
    // Temp dirs are 0700: the user must be able to pass through the state dir.
    std::fs::set_permissions(fx.state_dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let p = fx.local();

    let mut spec = shell(
        "f",
        "db-0",
        1,
        "id -u > ${data_dir}/uid; id -g > ${data_dir}/gid; echo $HOME > ${data_dir}/home; sleep 60",
    );
    spec.user = Some(user.0.clone());
    let st = p.start(&spec).unwrap();
    // `home` is written last: once it has a line, `uid` and `gid` are complete (a file that
    // exists may still be empty while the shell writes it).
    let uid = wait_for("the unit wrote its ids", Duration::from_secs(10), || {
        let home = std::fs::read_to_string(st.data_dir.join("home")).ok()?;
        home.ends_with('\n').then_some(())?;
        std::fs::read_to_string(st.data_dir.join("uid")).ok()
    });
    assert_eq!(uid.trim(), who.uid.to_string());
    let gid = std::fs::read_to_string(st.data_dir.join("gid")).unwrap();
    assert_eq!(gid.trim(), who.gid.to_string());
    let meta = std::fs::metadata(&st.data_dir).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid()),
        (who.uid, who.gid),
        "data dir owner"
    );
    let file = std::fs::metadata(st.data_dir.join("uid")).unwrap();
    assert_eq!(file.uid(), who.uid);
    p.stop("f", &st.unit_id, Duration::from_secs(5)).unwrap();

    // A unit of a user this host does not have is refused, naming the user.
    let mut ghost = shell("f", "ghost-0", 1, "sleep 60");
    ghost.user = Some("phoenix-no-such-user".into());
    let err = p.start(&ghost).unwrap_err().to_string();
    assert!(
        err.contains("user `phoenix-no-such-user` does not exist on this host"),
        "{err}"
    );
    assert!(
        p.list("f").unwrap().is_empty(),
        "nothing left of the refused unit"
    );
}

#[test]
fn a_data_dir_the_user_cannot_reach_is_a_clear_error() {
    let Some(user) = TestUser::create("phxv") else {
        return;
    };
    let fx = LocalFixture::new();
    std::fs::set_permissions(fx.state_dir(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let p = fx.local();
    let mut spec = shell("f", "db-0", 1, "sleep 60");
    spec.user = Some(user.0.clone());
    let err = p.start(&spec).unwrap_err().to_string();
    assert!(err.contains("cannot reach its data dir"), "{err}");
    assert!(err.contains("chmod o+x"), "{err}");
}
