//! Real processes on loopback: the `phoenix-ledger` test binary accepts the same argv as
//! `phoenix ledger ...`. Tests kill only the processes they started, by pid.
//!
//! - `api_contract_single_validator` (default suite): one validator; every endpoint, good and bad
//!   transactions.
//! - `join_writes_a_follower_home_and_refuses_clashes` (default suite): `join` writes a home that
//!   loads, and refuses an existing home, a port clash and a bad `--from`, writing nothing.
//! - `regression_testnet_rerun_is_refused_and_a_node_never_panics_on_foreign_data` (default
//!   suite): a second `testnet` on a used directory exits 1 writing nothing; a node whose genesis
//!   and key do not belong to its data exits 1 naming the file, never panics; `--force` replaces.
//! - `regression_second_run_on_a_home_in_use_exits_at_once_naming_the_pid` (default suite): a
//!   second `run` on a running node's home exits 1 at once with the holder's pid.
//! - `regression_node_logs_to_a_file_carry_no_ansi_colour_codes` (default suite): a node whose
//!   stderr is a file logs plain text.
//! - `proofs_fetched_over_http_verify_and_tampered_ones_are_refused` (default suite): audit
//!   records, then `prove audit`, `prove state`, `checkpoint` and `verify-proof` as a person runs
//!   them; a tampered record, a trimmed certificate, another network's genesis and a stale
//!   checkpoint each exit 1 naming the reason.
//! - `kill_and_restart_four_validators` (`PHOENIX_HEAVY_TESTS=1`): kill -9 one validator (the rest
//!   finalize), a second (finalization stops, no fork), restart both (they catch up and agree).
//! - `governance_adds_a_fifth_validator_over_real_sockets` (`PHOENIX_HEAVY_TESTS=1`): a node outside
//!   the genesis set (its home written by `join`) follows, is added by governance, and votes from
//!   its epoch on; a proof from genesis fetched from it and from a genesis validator carries the
//!   change and verifies against the genesis file; a read replica started with the network
//!   follows across the change (the new epoch's certificates checked against the set its own
//!   state derived) and agrees on every block.

mod common;

use phoenix_ledger_node::bench::{Procs, hashes, spawn_node, wait_height};
use phoenix_ledger_node::cli::block_on;
use phoenix_ledger_node::config::{Home, TestnetSpec, read_key, write_testnet};
use phoenix_ledger_node::http::{Conn, sse};
use phoenix_ledger_types::crypto::{Hash, Keypair, PublicKey};
use phoenix_ledger_types::tx::{
    AuditRecord, GovAction, GovOp, Operation, Outcome, ProvOp, Transaction, TxBody,
};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_phoenix-ledger"))
}

/// Runs `phoenix-ledger ledger join --from FROM --home HOME --api-port A --p2p-port Q EXTRA...`.
fn join(from: &Path, home: &Path, api: u16, p2p: u16, extra: &[&str]) -> std::process::Output {
    std::process::Command::new(exe())
        .args(["ledger", "join", "--from"])
        .arg(from)
        .arg("--home")
        .arg(home)
        .args([
            "--api-port",
            &api.to_string(),
            "--p2p-port",
            &p2p.to_string(),
        ])
        .args(extra)
        .output()
        .expect("run join")
}

/// Every file under `dir` with its contents, to show that a refused `join` wrote nothing.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("read dir") {
        let path = e.expect("entry").path();
        if path.is_dir() {
            out.extend(snapshot(&path));
        } else {
            let bytes = std::fs::read(&path).expect("read");
            out.push((path, bytes));
        }
    }
    out.sort();
    out
}

/// `join` writes a home `run` accepts, and refuses (non-zero, saying why, writing nothing) an
/// existing home and a port that a genesis validator uses.
#[test]
fn join_writes_a_follower_home_and_refuses_clashes() {
    let dir = tmpdir("join");
    let p = base_port(2);
    write_testnet(&TestnetSpec {
        validators: 2,
        dir: dir.clone(),
        api_base_port: p,
        p2p_base_port: p + 5,
        chain_id: "join-test".into(),
        empty_block_interval_ms: 300,
        min_block_interval_ms: 70,
        extra_auditors: vec![],
        worker_threads: 3,
        replace: false,
    })
    .expect("testnet");
    let from = dir.join("node-0");
    let home = dir.join("node-2");

    let out = join(&from, &home, p + 2, p + 7, &[]);
    assert!(out.status.success(), "join: {out:?}");
    let text = String::from_utf8(out.stdout).expect("utf8");
    let loaded = Home::load(&home).expect("the joiner's home loads");
    let origin = Home::load(&from).expect("from");
    assert_eq!(loaded.genesis, origin.genesis);
    assert!(
        !origin
            .genesis
            .validators
            .iter()
            .any(|v| v.key == loaded.key.public()),
        "a fresh key, outside genesis"
    );
    assert_eq!(
        loaded.node.api_listen.to_string(),
        format!("127.0.0.1:{}", p + 2)
    );
    assert_eq!(
        loaded.node.p2p_listen.to_string(),
        format!("127.0.0.1:{}", p + 7)
    );
    assert_eq!(loaded.node.min_block_interval_ms, 70);
    assert_eq!(loaded.node.empty_block_interval_ms, 300);
    assert_eq!(loaded.node.worker_threads, 3);
    assert_eq!(loaded.node.peers.len(), 3);
    for want in [
        loaded.key.public().to_hex(),
        format!("--address 127.0.0.1:{}", p + 7),
        format!("--key {}", dir.join("client.key").display()),
        "gov-add-validator".into(),
        "admin_threshold is 1".into(),
    ] {
        assert!(text.contains(&want), "output lacks {want:?}:\n{text}");
    }

    let before = snapshot(&dir);
    // The home exists with a key.
    let out = join(&from, &home, p + 3, p + 8, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{out:?}");
    assert!(err.contains("already a node's home"), "{err}");
    // A port of a genesis validator, into a home that does not exist yet.
    let fresh = dir.join("node-3");
    let out = join(&from, &fresh, p + 3, p + 6, &["-o", "json"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        err.contains(&format!(
            "--p2p-port {} is the port of genesis validator",
            p + 6
        )),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "{out:?}");
    // `--from` that is not a node home.
    let out = join(&dir, &fresh, p + 3, p + 8, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{out:?}");
    assert!(err.contains("is not a node home"), "{err}");
    assert!(
        !fresh.exists(),
        "a refused join created {}",
        fresh.display()
    );
    assert_eq!(snapshot(&dir), before, "a refused join wrote something");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `cmd` to its exit, killing it (and failing) if it runs longer than `limit`.
fn run_bounded(mut cmd: std::process::Command, limit: Duration) -> std::process::Output {
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + limit;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!("still running after {limit:?}: {out:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}

/// `phoenix-ledger ledger testnet` with one validator on ports from `p`.
fn testnet_cmd(dir: &Path, p: u16, extra: &[&str]) -> std::process::Command {
    let mut c = std::process::Command::new(exe());
    c.args(["ledger", "testnet", "--validators", "1", "--dir"])
        .arg(dir)
        .args(["--api-base-port", &p.to_string()])
        .args(["--p2p-base-port", &(p + 5).to_string()])
        .args(["--empty-block-ms", "200", "--min-block-ms", "20"])
        .args(extra);
    c
}

/// `phoenix-ledger ledger run --home HOME`, to its exit (it must exit by itself).
fn run_to_exit(home: &Path) -> (Option<i32>, String) {
    let mut c = std::process::Command::new(exe());
    c.args(["ledger", "run", "--home"]).arg(home);
    let out = run_bounded(c, Duration::from_secs(30));
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Regression: `testnet` run again on an existing directory replaced every key and the genesis
/// and kept the old block data; the node then panicked ("finalized block ... failed to execute:
/// bad header: parent hash mismatch", exit 101). Now the re-run exits 1 writing nothing, and a
/// node given a genesis and key that do not belong to its data (by hand, or data written before
/// it recorded its genesis) exits 1 saying which file disagrees; `--force` replaces the whole
/// directory.
#[test]
fn regression_testnet_rerun_is_refused_and_a_node_never_panics_on_foreign_data() {
    let dir = tmpdir("rerun");
    let other = tmpdir("rerun-other");
    let p = base_port(4);
    let out = run_bounded(testnet_cmd(&dir, p, &[]), Duration::from_secs(30));
    assert!(out.status.success(), "{out:?}");
    let home = dir.join("node-0");
    {
        let _procs = Procs(vec![spawn_node(&exe(), &home).expect("spawn")]);
        block_on(wait_height(
            &[format!("http://127.0.0.1:{p}")],
            3,
            Duration::from_secs(60),
        ))
        .expect("the node finalizes");
    }
    assert!(home.join("data/chain.json").is_file(), "no chain record");

    let before = snapshot(&dir);
    let out = run_bounded(testnet_cmd(&dir, p, &[]), Duration::from_secs(30));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        err.contains("is not empty") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(snapshot(&dir), before, "a refused testnet wrote something");

    // What the old `testnet` did: another chain's genesis and key over this data.
    let out = run_bounded(testnet_cmd(&other, p, &[]), Duration::from_secs(30));
    assert!(out.status.success(), "{out:?}");
    for f in ["genesis.json", "validator.key"] {
        std::fs::copy(other.join("node-0").join(f), home.join(f)).expect("copy");
    }
    let (code, err) = run_to_exit(&home);
    assert_eq!(code, Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.contains("genesis.json") && err.contains("do not belong"),
        "{err}"
    );
    // Data from before the record existed: the replay finds the mismatch, and says so.
    std::fs::remove_file(home.join("data/chain.json")).expect("rm record");
    let (code, err) = run_to_exit(&home);
    assert_eq!(code, Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.contains("does not execute") && err.contains("parent hash mismatch"),
        "{err}"
    );

    // --force: the directory is replaced whole, old block data included.
    let out = run_bounded(testnet_cmd(&dir, p, &["--force"]), Duration::from_secs(30));
    assert!(out.status.success(), "{out:?}");
    assert!(
        !home.join("data").exists(),
        "old block data survived --force"
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&other);
}

/// Regression: a second `phoenix ledger run` on a home already in use waited for ever
/// ("waiting for storage directory hold ..."). It now exits 1 at once, naming the running
/// node's pid; the running node is unaffected.
#[test]
fn regression_second_run_on_a_home_in_use_exits_at_once_naming_the_pid() {
    let dir = tmpdir("in-use");
    let p = base_port(5);
    let out = run_bounded(testnet_cmd(&dir, p, &[]), Duration::from_secs(30));
    assert!(out.status.success(), "{out:?}");
    let home = dir.join("node-0");
    let api = format!("http://127.0.0.1:{p}");
    let procs = Procs(vec![spawn_node(&exe(), &home).expect("spawn")]);
    block_on(wait_height(
        std::slice::from_ref(&api),
        2,
        Duration::from_secs(60),
    ))
    .expect("the first node finalizes");
    let started = Instant::now();
    let (code, err) = run_to_exit(&home);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    let want = format!(
        "node home {} is in use by pid {} (another `phoenix ledger run` or `replica`); stop it first",
        home.display(),
        procs.0[0].id()
    );
    assert!(err.contains(&want), "{err}");
    assert!(!err.contains("waiting for storage"), "{err}");
    block_on(wait_height(
        std::slice::from_ref(&api),
        4,
        Duration::from_secs(30),
    ))
    .expect("the first node carries on");
    drop(procs);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Regression: node logs written to a file carried ANSI colour codes. With stderr not a
/// terminal (here a file, as `spawn_node` and operators' `> node.log` have it), the log is plain.
#[test]
fn regression_node_logs_to_a_file_carry_no_ansi_colour_codes() {
    let dir = tmpdir("ansi");
    let p = base_port(6);
    let out = run_bounded(testnet_cmd(&dir, p, &[]), Duration::from_secs(30));
    assert!(out.status.success(), "{out:?}");
    let home = dir.join("node-0");
    let log_path = home.join("node.log");
    let log = std::fs::File::create(&log_path).expect("log");
    let child = std::process::Command::new(exe())
        .args(["ledger", "run", "--home"])
        .arg(&home)
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("spawn");
    let procs = Procs(vec![child]);
    block_on(wait_height(
        &[format!("http://127.0.0.1:{p}")],
        2,
        Duration::from_secs(60),
    ))
    .expect("the node finalizes");
    drop(procs);
    let text = std::fs::read_to_string(&log_path).expect("read log");
    assert!(text.contains("ledger node running"), "{text}");
    assert!(
        !text.contains('\x1b'),
        "escape codes in the log file:\n{text:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn heavy() -> bool {
    std::env::var("PHOENIX_HEAVY_TESTS").is_ok_and(|v| v == "1")
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("phoenix-ledger-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Free ports for the test in `slot` (see `common::free_block`).
fn base_port(slot: u16) -> u16 {
    common::free_block(slot, 10)
}

/// Record `nonce + 1` of fleet `f`'s chain, signed by `k` with `nonce`.
fn audit_tx(k: &Keypair, chain: &str, nonce: u64) -> Transaction {
    TxBody {
        chain_id: chain.into(),
        signer: k.public(),
        nonce,
        op: Operation::Audit(AuditRecord {
            actor: "test".into(),
            fleet: "f".into(),
            seq: nonce + 1,
            hash: Hash::of(&[&k.public().0, &nonce.to_be_bytes()]),
            revision: 1,
            plan_hash: Hash::ZERO,
            step: "apply".into(),
            outcome: Outcome::Succeeded,
            detail: String::new(),
        }),
    }
    .sign(k)
}

async fn post(c: &mut Conn, bytes: &[u8]) -> (u16, serde_json::Value) {
    let r = c
        .request("POST", "/v1/tx", "application/octet-stream", bytes)
        .await
        .expect("post");
    (r.status, r.json().expect("json"))
}

async fn wait_committed(c: &mut Conn, h: &Hash) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = c
            .get(&format!("/v1/tx/{h}"))
            .await
            .expect("get")
            .json()
            .expect("json");
        if v["status"] == "committed" {
            return v;
        }
        assert!(Instant::now() < deadline, "not committed: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs `phoenix-ledger ledger ARGS...`; returns (exit code, stdout, stderr).
fn ledger(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(exe())
        .arg("ledger")
        .args(args)
        .output()
        .expect("run phoenix-ledger");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Issue 10, item 3, as a person runs it: record audit entries, fetch their proofs over HTTP,
/// check them against the genesis and a checkpoint; tampered proofs exit 1 with their reason.
#[test]
fn proofs_fetched_over_http_verify_and_tampered_ones_are_refused() {
    let dir = tmpdir("proofs");
    let p = base_port(7);
    let spec = |dir: &Path, p: u16| TestnetSpec {
        validators: 1,
        dir: dir.to_path_buf(),
        api_base_port: p,
        p2p_base_port: p + 5,
        chain_id: "proof-test".into(),
        empty_block_interval_ms: 200,
        min_block_interval_ms: 20,
        extra_auditors: vec![],
        worker_threads: 1,
        replace: false,
    };
    write_testnet(&spec(&dir, p)).expect("testnet");
    let other = tmpdir("proofs-other");
    write_testnet(&spec(&other, p + 1)).expect("another network");
    let client = read_key(&dir.join("client.key")).expect("client key");
    let _procs = Procs(vec![
        spawn_node(&exe(), &dir.join("node-0")).expect("spawn"),
    ]);
    let api = format!("http://127.0.0.1:{p}");
    let genesis = dir.join("node-0/genesis.json");
    let genesis = genesis.to_str().expect("utf8");
    let file = |name: &str| dir.join(name).to_str().expect("utf8").to_string();
    block_on(async {
        wait_height(std::slice::from_ref(&api), 1, Duration::from_secs(60)).await?;
        let mut c = Conn::new(&api);
        let mut last = Hash::ZERO;
        for n in 0..5 {
            let tx = audit_tx(&client, "proof-test", n);
            let (code, v) = post(&mut c, &tx.encode()).await;
            assert_eq!(code, 202, "{v}");
            last = tx.hash();
        }
        wait_committed(&mut c, &last).await;
        // A proof needs a certified block that includes the record: the next one or two.
        tokio::time::sleep(Duration::from_millis(600)).await;
        anyhow::Ok(())
    })
    .expect("records");

    let proof = file("audit-3.json");
    let (code, out, err) = ledger(&["prove", "audit", "f", "3", "--api", &api, "--out", &proof]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("audit record 3 of fleet \"f\""), "{out}");
    let (code, out, err) = ledger(&["verify-proof", &proof, "--trust", genesis]);
    assert_eq!(code, 0, "{out}{err}");
    let want_hash = Hash::of(&[&client.public().0, &2u64.to_be_bytes()]);
    assert!(
        out.contains(&format!(
            "verified: audit record 3 of fleet \"f\" is on chain \"proof-test\" with hash \
             {want_hash}"
        )),
        "{out}"
    );
    assert!(out.contains("finalized by 1 of its 1 validators"), "{out}");
    assert!(out.contains("trusting the genesis"), "{out}");
    // The binary form verifies too, and is small.
    let bin = file("audit-3.bin");
    let (code, out, err) = ledger(&[
        "prove", "audit", "f", "3", "--api", &api, "--out", &bin, "--format", "bin",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(std::fs::metadata(&bin).expect("bin").len() < 1024);
    let (code, out, err) = ledger(&["verify-proof", &bin, "--trust", genesis, "-o", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["verified"], true, "{v}");
    assert_eq!(v["proven"]["seq"], 3, "{v}");

    // Tampered: the record's hash, then the certificate cut below a quorum.
    let edit = |from: &str, to: &str, f: &dyn Fn(&mut serde_json::Value)| {
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(from).expect("read")).expect("json");
        f(&mut v);
        std::fs::write(to, serde_json::to_vec(&v).expect("json")).expect("write");
    };
    let tampered = file("tampered.json");
    edit(&proof, &tampered, &|v| {
        v["hash"] = serde_json::json!("ab".repeat(32))
    });
    let (code, out, err) = ledger(&["verify-proof", &tampered, "--trust", genesis]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("proof refused: tampered record"), "{err}");
    edit(&proof, &tampered, &|v| v["seq"] = serde_json::json!(4));
    let (code, _, err) = ledger(&["verify-proof", &tampered, "--trust", genesis]);
    assert_eq!(code, 1);
    assert!(err.contains("tampered record"), "{err}");
    edit(&proof, &tampered, &|v| {
        v["certificate"]["votes"]
            .as_array_mut()
            .expect("votes")
            .clear()
    });
    let (code, _, err) = ledger(&["verify-proof", &tampered, "--trust", genesis]);
    assert_eq!(code, 1);
    assert!(err.contains("too few signatures"), "{err}");
    // Another network's genesis: its validator did not sign this.
    let foreign = other.join("node-0/genesis.json");
    let (code, _, err) = ledger(&[
        "verify-proof",
        &proof,
        "--trust",
        foreign.to_str().expect("utf8"),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("wrong"), "{err}");

    // A state proof of the same record's full entry.
    let sp = file("state.json");
    let (code, out, err) = ledger(&[
        "prove", "state", "audit", "f/3", "--api", &api, "--out", &sp,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = ledger(&["verify-proof", &sp, "--trust", genesis]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("verified: state audit/f/3 on chain"), "{out}");
    assert!(out.contains("\"step\":\"apply\""), "{out}");
    edit(&sp, &tampered, &|v| {
        v["value"] = serde_json::json!(hex::encode(b"{}"))
    });
    let (code, _, err) = ledger(&["verify-proof", &tampered, "--trust", genesis]);
    assert_eq!(code, 1);
    assert!(err.contains("tampered state entry"), "{err}");
    // An unknown record is the node's 404, said plainly.
    let (code, _, err) = ledger(&[
        "prove", "audit", "f", "99", "--api", &api, "--out", &tampered,
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("no audit record 99 of fleet \"f\""), "{err}");

    // A checkpoint, checked against the genesis; proofs verify against it.
    let cp = file("checkpoint.json");
    let (code, out, err) = ledger(&[
        "checkpoint",
        "--api",
        &api,
        "--out",
        &cp,
        "--trust",
        genesis,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("checked against"), "{out}");
    let (code, out, err) = ledger(&["verify-proof", &proof, "--trust", &cp]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("trusting the checkpoint"), "{out}");
    // A checkpoint of a later epoch makes this proof stale.
    let mut later: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cp).expect("read")).expect("json");
    let epoch_length = later["epoch_length"].as_u64().expect("epoch length");
    later["epoch"] = serde_json::json!(50);
    later["height"] = serde_json::json!(50 * epoch_length);
    let later_file = file("later-checkpoint.json");
    std::fs::write(&later_file, later.to_string()).expect("write");
    let (code, _, err) = ledger(&["verify-proof", &proof, "--trust", &later_file]);
    assert_eq!(code, 1);
    assert!(err.contains("stale epoch"), "{err}");
    // Without --trust the node's own genesis is used, with a warning.
    let (code, out, err) = ledger(&["checkpoint", "--api", &api, "--out", &cp]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains("warning: checked against the genesis"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&other);
}

#[test]
fn api_contract_single_validator() {
    let dir = tmpdir("api");
    let p = base_port(0);
    write_testnet(&TestnetSpec {
        validators: 1,
        dir: dir.clone(),
        api_base_port: p,
        p2p_base_port: p + 5,
        chain_id: "api-test".into(),
        empty_block_interval_ms: 200,
        min_block_interval_ms: 20,
        extra_auditors: vec![],
        worker_threads: 1,
        replace: false,
    })
    .expect("testnet");
    let client = read_key(&dir.join("client.key")).expect("client key");
    let _procs = Procs(vec![
        spawn_node(&exe(), &dir.join("node-0")).expect("spawn"),
    ]);
    let api = format!("http://127.0.0.1:{p}");
    block_on(async {
        wait_height(std::slice::from_ref(&api), 2, Duration::from_secs(60)).await?;
        let mut c = Conn::new(&api);
        assert_eq!(c.get("/health/live").await?.status, 200);
        assert_eq!(c.get("/health/ready").await?.status, 200);
        let st = c.get("/v1/status").await?.json()?;
        for k in ["height", "finalized_height", "peers", "validators", "epoch"] {
            assert!(!st[k].is_null(), "status lacks {k}: {st}");
        }

        // A good transaction, then its replay.
        let tx = audit_tx(&client, "api-test", 0);
        let (code, v) = post(&mut c, &tx.encode()).await;
        assert_eq!(code, 202, "{v}");
        let committed = wait_committed(&mut c, &tx.hash()).await;
        let height = committed["height"].as_u64().expect("height");
        let (code, v) = post(&mut c, &tx.encode()).await;
        assert!(code == 400 || code == 200, "{v}");
        assert!(
            v["reason"]
                .as_str()
                .unwrap_or("")
                .contains("already committed"),
            "{v}"
        );

        // Bad inputs, each with a clear reason.
        let (code, v) = post(&mut c, b"\x01garbage").await;
        assert_eq!(code, 400);
        assert!(
            v["reason"].as_str().unwrap().starts_with("malformed"),
            "{v}"
        );
        let (code, v) = post(&mut c, &vec![0u8; 5000]).await;
        assert_eq!(code, 400);
        assert!(
            v["reason"].as_str().unwrap().starts_with("oversized"),
            "{v}"
        );
        let mut forged = audit_tx(&client, "api-test", 1);
        forged.signature.0[0] ^= 0xff;
        let (code, v) = post(&mut c, &forged.encode()).await;
        assert_eq!(code, 400);
        assert!(
            v["reason"].as_str().unwrap().starts_with("bad signature"),
            "{v}"
        );
        let h = forged.hash();
        let s = c.get(&format!("/v1/tx/{h}")).await?.json()?;
        assert_eq!(s["status"], "rejected", "{s}");
        let (code, v) = post(&mut c, &audit_tx(&client, "other-chain", 1).encode()).await;
        assert_eq!(code, 400);
        assert!(
            v["reason"].as_str().unwrap().starts_with("wrong chain"),
            "{v}"
        );
        let stale = audit_tx(&client, "api-test", 0);
        let mut stale_other = stale.body.clone();
        stale_other.op = Operation::Provisioning(ProvOp::Release { id: "x".into() });
        let (code, v) = post(&mut c, &stale_other.sign(&client).encode()).await;
        assert_eq!(code, 400);
        assert!(v["reason"].as_str().unwrap().starts_with("replayed"), "{v}");
        let stranger = Keypair::from_test_index(999);
        let (code, v) = post(&mut c, &audit_tx(&stranger, "api-test", 0).encode()).await;
        assert_eq!(code, 400);
        assert!(
            v["reason"].as_str().unwrap().starts_with("unauthorised"),
            "{v}"
        );
        // A nonce gap is named at once, by the API and by `phoenix ledger tx` (regression: a
        // future-nonce transaction stayed "pending" for ever with no hint).
        let ahead = audit_tx(&client, "api-test", 9);
        let (code, v) = post(&mut c, &ahead.encode()).await;
        assert_eq!(code, 202, "{v}");
        assert_eq!(v["status"], "pending", "{v}");
        assert!(
            v["reason"].as_str().unwrap_or("").starts_with(
                "nonce 9 but the account's next nonce is 1; transactions 1-8 are missing"
            ),
            "{v}"
        );
        let out = std::process::Command::new(exe())
            .args(["ledger", "tx", "--api", &api, "--key"])
            .arg(dir.join("client.key"))
            .args([
                "--nonce", "5", "audit", "--actor", "t", "--fleet", "f", "--seq", "6", "--step",
                "s",
            ])
            .args(["--hash", &"ab".repeat(32)])
            .args(["--outcome", "started"])
            .output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{out:?}");
        assert!(stdout.contains("\"status\":\"pending\""), "{stdout}");
        assert!(
            stderr.contains(
                "warning: nonce 5 but the account's next nonce is 1; transactions 1-4 are missing"
            ),
            "{stderr}"
        );
        // JSON submission works too.
        let tx1 = audit_tx(&client, "api-test", 1);
        let body = serde_json::json!({ "tx": hex::encode(tx1.encode()) }).to_string();
        let r = c
            .request("POST", "/v1/tx", "application/json", body.as_bytes())
            .await?;
        assert_eq!(r.status, 202, "{:?}", r.json());
        wait_committed(&mut c, &tx1.hash()).await;

        // Blocks, state, stream, dump, metrics.
        let b = c.get(&format!("/v1/blocks/{height}")).await?.json()?;
        for k in [
            "height",
            "hash",
            "parent_hash",
            "state_root",
            "transactions",
        ] {
            assert!(!b[k].is_null(), "block lacks {k}: {b}");
        }
        assert_eq!(b["transactions"][0]["hash"], serde_json::json!(tx.hash()));
        assert_eq!(b["finality"]["signers"], 1);
        let prev = c.get(&format!("/v1/blocks/{}", height - 1)).await?.json()?;
        assert_eq!(b["parent_hash"], prev["hash"]);
        let acct = c
            .get(&format!(
                "/v1/state/accounts/{}?proof=true",
                client.public()
            ))
            .await?
            .json()?;
        assert_eq!(acct["value"]["nonce"], 2, "{acct}");
        assert!(acct["proof"].is_object());
        // Audit records are addressed by fleet and seq.
        let rec = c.get("/v1/state/audit/f/1").await?.json()?;
        assert_eq!(rec["value"]["record"]["step"], "apply", "{rec}");
        assert_eq!(rec["value"]["record"]["seq"], 1, "{rec}");
        assert_eq!(rec["key"], "f/1", "{rec}");
        assert_eq!(rec["value"]["index"], 0, "{rec}");
        assert_eq!(c.get("/v1/state/audit/nope").await?.status, 404);
        assert_eq!(c.get("/v1/state/audit/f/99").await?.status, 404);
        let dump = c.get("/v1/consensus").await?.json()?;
        assert!(dump["validator_liveness"].is_array(), "{dump}");
        let m = String::from_utf8(c.get("/metrics").await?.body)?;
        for name in [
            "phoenix_ledger_finalized_height",
            "phoenix_ledger_view_changes_total",
            "phoenix_ledger_validator_votes_total",
            "phoenix_ledger_epoch",
        ] {
            assert!(m.contains(name), "metrics lack {name}");
        }
        let mut seen = 0;
        tokio::time::timeout(
            Duration::from_secs(10),
            sse(&api, "/v1/stream/blocks", |event, _| {
                if event == "block" {
                    seen += 1;
                }
                seen < 2
            }),
        )
        .await??;
        assert_eq!(seen, 2);
        anyhow::Ok(())
    })
    .expect("api contract");
    let _ = std::fs::remove_dir_all(&dir);
}

async fn heights(apis: &[String]) -> Vec<u64> {
    let mut out = Vec::new();
    for a in apis {
        let h = match Conn::new(a).get("/v1/status").await {
            Ok(r) => r
                .json()
                .ok()
                .and_then(|v| v["finalized_height"].as_u64())
                .unwrap_or(0),
            Err(_) => 0,
        };
        out.push(h);
    }
    out
}

#[test]
fn kill_and_restart_four_validators() {
    if !heavy() {
        eprintln!("skipped: set PHOENIX_HEAVY_TESTS=1 to run the 4-process kill/restart test");
        return;
    }
    let dir = tmpdir("faults");
    let p = base_port(1);
    write_testnet(&TestnetSpec {
        validators: 4,
        dir: dir.clone(),
        api_base_port: p,
        p2p_base_port: p + 5,
        chain_id: "fault-test".into(),
        empty_block_interval_ms: 300,
        min_block_interval_ms: 50,
        extra_auditors: vec![],
        worker_threads: 1,
        replace: false,
    })
    .expect("testnet");
    let client = read_key(&dir.join("client.key")).expect("key");
    let homes: Vec<PathBuf> = (0..4).map(|i| dir.join(format!("node-{i}"))).collect();
    let apis: Vec<String> = (0..4)
        .map(|i| format!("http://127.0.0.1:{}", p + i))
        .collect();
    let mut procs = Procs(
        homes
            .iter()
            .map(|h| spawn_node(&exe(), h).expect("spawn"))
            .collect(),
    );
    block_on(async {
        wait_height(&apis, 3, Duration::from_secs(90)).await?;
        let mut c = Conn::new(&apis[0]);
        for n in 0..5 {
            post(&mut c, &audit_tx(&client, "fault-test", n).encode()).await;
        }

        // kill -9 one validator: the other three keep finalizing.
        procs.0[3].kill()?;
        procs.0[3].wait()?;
        let before = heights(&apis[..3]).await;
        let target = before.iter().max().copied().unwrap_or(0) + 5;
        wait_height(&apis[..3], target, Duration::from_secs(60)).await?;

        // kill -9 a second: no quorum, finalization stops, and there is no fork.
        procs.0[2].kill()?;
        procs.0[2].wait()?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let stalled = heights(&apis[..2]).await;
        tokio::time::sleep(Duration::from_secs(6)).await;
        let later = heights(&apis[..2]).await;
        assert!(
            later.iter().max() <= Some(&(stalled.iter().max().copied().unwrap_or(0) + 1)),
            "finalized without a quorum: {stalled:?} -> {later:?}"
        );
        let upto = later.iter().copied().min().unwrap_or(0);
        assert_eq!(
            hashes(&apis[0], upto).await?,
            hashes(&apis[1], upto).await?,
            "fork"
        );

        // Restart both: everyone catches up, resumes, and agrees on every block hash.
        procs.0[2] = spawn_node(&exe(), &homes[2])?;
        procs.0[3] = spawn_node(&exe(), &homes[3])?;
        let resume = later.iter().max().copied().unwrap_or(0) + 5;
        wait_height(&apis, resume, Duration::from_secs(120)).await?;
        let all = heights(&apis).await;
        let upto = all.iter().copied().min().unwrap_or(0);
        let reference = hashes(&apis[0], upto).await?;
        for a in &apis[1..] {
            assert_eq!(hashes(a, upto).await?, reference, "{a} disagrees");
        }
        // The transactions submitted before the faults are committed everywhere.
        for n in 0..5 {
            let h = audit_tx(&client, "fault-test", n).hash();
            for a in &apis {
                let v = Conn::new(a).get(&format!("/v1/tx/{h}")).await?.json()?;
                assert_eq!(v["status"], "committed", "{a}: {v}");
            }
        }
        anyhow::Ok(())
    })
    .expect("fault sequence");
    drop(procs);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Over real sockets (authenticated lookup p2p): a fifth node whose key is not in genesis
/// follows the chain, governance adds it, and from its effective epoch it votes. No restarts.
#[test]
fn governance_adds_a_fifth_validator_over_real_sockets() {
    if !heavy() {
        eprintln!("skipped: set PHOENIX_HEAVY_TESTS=1 to run the 5-process reconfiguration test");
        return;
    }
    let dir = tmpdir("epochs");
    let p = base_port(3);
    let chain = "epochs-test";
    write_testnet(&TestnetSpec {
        validators: 4,
        dir: dir.clone(),
        api_base_port: p,
        p2p_base_port: p + 5,
        chain_id: chain.into(),
        empty_block_interval_ms: 200,
        min_block_interval_ms: 50,
        extra_auditors: vec![],
        worker_threads: 1,
        replace: false,
    })
    .expect("testnet");
    // Epochs of 20 blocks, so the change takes effect within the test.
    let mut homes: Vec<PathBuf> = (0..4).map(|i| dir.join(format!("node-{i}"))).collect();
    let mut genesis: phoenix_ledger_types::exec::Genesis =
        serde_json::from_slice(&std::fs::read(homes[0].join("genesis.json")).expect("read"))
            .expect("genesis");
    genesis.epoch_length = 20;
    for h in &homes {
        std::fs::write(
            h.join("genesis.json"),
            serde_json::to_vec_pretty(&genesis).expect("json"),
        )
        .expect("write");
    }
    // Node 4 joins the way an operator would: `join` writes its home, with a fresh key outside
    // the genesis set; it is added by governance below.
    homes.push(dir.join("node-4"));
    let out = join(&homes[0], &homes[4], p + 4, p + 9, &["-o", "json"]);
    assert!(out.status.success(), "join: {out:?}");
    let joined: serde_json::Value = serde_json::from_slice(&out.stdout).expect("join json");
    let joiner_key = PublicKey::from_hex(joined["key"].as_str().expect("key")).expect("hex");
    let joiner_address = joined["p2p_address"].as_str().expect("address").to_string();
    assert_eq!(joiner_address, format!("127.0.0.1:{}", p + 9));
    assert_eq!(joined["api"], format!("http://127.0.0.1:{}", p + 4));
    let client = read_key(&dir.join("client.key")).expect("key");
    let apis: Vec<String> = (0..5)
        .map(|i| format!("http://127.0.0.1:{}", p + i))
        .collect();
    let procs = Procs(
        homes
            .iter()
            .map(|h| spawn_node(&exe(), h).expect("spawn"))
            .collect(),
    );
    // A read replica of the genesis validators follows across the change (issue 10).
    let replica_port = base_port(8);
    let replica_api = format!("http://127.0.0.1:{replica_port}");
    let replica_log = std::fs::File::create(dir.join("replica.log")).expect("log");
    let replica = Procs(vec![
        std::process::Command::new(exe())
            .args(["ledger", "replica", "--home"])
            .arg(dir.join("replica"))
            .arg("--from")
            .arg(apis[..4].join(","))
            .arg("--genesis")
            .arg(homes[0].join("genesis.json"))
            .args(["--api-port", &replica_port.to_string()])
            .stdin(std::process::Stdio::null())
            .stdout(replica_log.try_clone().expect("log"))
            .stderr(replica_log)
            .spawn()
            .expect("spawn replica"),
    ]);
    block_on(async {
        wait_height(&apis[..4], 3, Duration::from_secs(90)).await?;
        let mut c = Conn::new(&apis[0]);
        let st = c.get("/v1/status").await?.json()?;
        let effective = st["epoch"].as_u64().expect("epoch") + 2;
        let tx = TxBody {
            chain_id: chain.into(),
            signer: client.public(),
            nonce: 0,
            op: Operation::Governance(GovOp::Propose {
                id: "add-4".into(),
                action: GovAction::AddValidator {
                    key: joiner_key,
                    address: joiner_address.clone(),
                    effective_epoch: effective,
                },
            }),
        }
        .sign(&client);
        let (code, v) = post(&mut c, &tx.encode()).await;
        assert_eq!(code, 202, "{v}");
        wait_committed(&mut c, &tx.hash()).await;
        // Everyone, the joiner included, gets well into the effective epoch.
        wait_height(&apis, effective * 20 + 10, Duration::from_secs(120)).await?;
        for a in &apis {
            let st = Conn::new(a).get("/v1/status").await?.json()?;
            assert!(st["epoch"].as_u64() >= Some(effective), "{a}: {st}");
            assert_eq!(
                st["validators"].as_array().map(Vec::len),
                Some(5),
                "{a}: {st}"
            );
        }
        let dump = Conn::new(&apis[0]).get("/v1/consensus").await?.json()?;
        let seen = dump["validator_liveness"]
            .as_array()
            .and_then(|ls| ls.iter().find(|l| l["key"] == joiner_key.to_hex()))
            .and_then(|l| l["notarizes"].as_u64())
            .unwrap_or(0);
        assert!(seen > 0, "node 0 saw no votes from the joiner: {dump}");
        let all = heights(&apis).await;
        let upto = all.iter().copied().min().unwrap_or(0);
        let reference = hashes(&apis[0], upto).await?;
        for a in &apis[1..] {
            assert_eq!(hashes(a, upto).await?, reference, "{a} disagrees");
        }
        // The replica checked epoch `effective`'s certificates against the five validators its
        // own state derived, and agrees on every block.
        wait_height(
            std::slice::from_ref(&replica_api),
            upto,
            Duration::from_secs(60),
        )
        .await?;
        assert_eq!(
            hashes(&replica_api, upto).await?,
            reference,
            "the replica disagrees"
        );
        let st = Conn::new(&replica_api).get("/v1/status").await?.json()?;
        assert_eq!(st["role"], "replica", "{st}");
        assert_eq!(st["replica"]["rejected"], 0, "{st}");
        assert_eq!(st["validators"].as_array().map(Vec::len), Some(5), "{st}");
        assert!(st["epoch"].as_u64() >= Some(effective), "{st}");
        // A proof from genesis carries the change and verifies against the genesis file, from
        // a genesis validator and from the joiner alike (issue 10, light clients).
        let rec = audit_tx(&client, chain, 1);
        let (code, v) = post(&mut c, &rec.encode()).await;
        assert_eq!(code, 202, "{v}");
        wait_committed(&mut c, &rec.hash()).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let genesis = homes[0].join("genesis.json");
        for (i, a) in [(0, &apis[0]), (4, &apis[4])] {
            let out = dir.join(format!("proof-{i}.json"));
            let (code, o, e) = ledger(&[
                "prove",
                "audit",
                "f",
                "2",
                "--api",
                a,
                "--out",
                out.to_str().expect("utf8"),
            ]);
            assert_eq!(code, 0, "node {i}: {o}{e}");
            assert!(o.contains("1 validator-set change(s)"), "node {i}: {o}");
            let (code, o, e) = ledger(&[
                "verify-proof",
                out.to_str().expect("utf8"),
                "--trust",
                genesis.to_str().expect("utf8"),
            ]);
            assert_eq!(code, 0, "node {i}: {o}{e}");
            assert!(
                o.contains("after following 1 certified validator-set change(s)")
                    && o.contains("of its 5 validators"),
                "node {i}: {o}"
            );
        }
        anyhow::Ok(())
    })
    .expect("reconfiguration over real sockets");
    drop(replica);
    drop(procs);
    let _ = std::fs::remove_dir_all(&dir);
}
