//! Read replicas as real processes on loopback (`phoenix-ledger ledger replica ...`). Every
//! process a test starts is killed by pid when the test ends (`Procs` kills on drop); every wait
//! is bounded.
//!
//! - `replica_refuses_forged_blocks_and_certificates_from_a_fake_upstream` (default suite): a
//!   fake upstream (an axum server in the test) serves a chain certified by test keys; a block
//!   altered under its certificate, then a certificate with an altered signature, are refused
//!   (logged, counted, named in `/v1/status`) and not applied; the honest chain is then
//!   followed (and streamed on `/v1/stream/blocks`), a second replica follows the first, transactions are refused with 405, and the
//!   first replica survives `kill -9` (restarted with `--home` only, it replays its log).
//! - `replica_follows_a_four_validator_testnet_and_survives_kill_9` (`PHOENIX_HEAVY_TESTS=1`):
//!   a replica of a 4-validator testnet serves the same audit records, transactions, blocks and
//!   proofs as the validators; killed with -9 while the chain goes on, and restarted with only
//!   `--home` while its first upstream is down, it catches up.

mod common;

use axum::extract::{Path as UrlPath, State};
use axum::response::IntoResponse;
use phoenix_ledger_light::testing::TestSet;
use phoenix_ledger_node::bench::{Procs, hashes, spawn_node, wait_height};
use phoenix_ledger_node::cli::block_on;
use phoenix_ledger_node::config::{TestnetSpec, read_key, write_testnet};
use phoenix_ledger_node::http::Conn;
use phoenix_ledger_node::replica::Batch;
use phoenix_ledger_node::replica::follow::SyncRecord;
use phoenix_ledger_types::crypto::{Hash, Keypair};
use phoenix_ledger_types::exec::{BlockContext, Genesis, LedgerState, build_block, genesis_block};
use phoenix_ledger_types::tx::{AuditRecord, Operation, Outcome, Transaction, TxBody};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_phoenix-ledger"))
}

fn heavy() -> bool {
    std::env::var("PHOENIX_HEAVY_TESTS").is_ok_and(|v| v == "1")
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("phoenix-replica-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("tmpdir");
    d
}

/// Free ports for the test in `slot` (see `common::free_block`).
fn base_port(slot: u16) -> u16 {
    common::free_block(slot, 20)
}

/// Starts `phoenix-ledger ledger replica --home HOME ARGS...`, logging to `LOG`.
fn spawn_replica(home: &Path, log: &Path, args: &[String]) -> Child {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log");
    Command::new(exe())
        .args(["ledger", "replica", "--home"])
        .arg(home)
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("log"))
        .stderr(out)
        .spawn()
        .expect("spawn replica")
}

/// Polls `GET /v1/status` on `api` until `ok` holds, for at most `limit`.
async fn wait_status(api: &str, limit: Duration, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + limit;
    let mut last = Value::Null;
    while Instant::now() < deadline {
        if let Ok(r) = Conn::new(api).get("/v1/status").await
            && let Ok(v) = r.json()
        {
            if ok(&v) {
                return v;
            }
            last = v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{api}: condition not met within {limit:?}; last status {last}");
}

fn height_of(v: &Value) -> u64 {
    v["finalized_height"].as_u64().unwrap_or(0)
}

/// A chain of `n` empty blocks on `g`, each certified by `set`.
fn certified_chain(set: &TestSet, g: &Genesis, n: u64) -> Vec<SyncRecord> {
    let mut state = LedgerState::from_genesis(g).expect("genesis");
    let mut hdr = genesis_block(g, &state).header;
    (1..=n)
        .map(|h| {
            let ctx = BlockContext {
                epoch: h / g.epoch_length,
                view: h + 1,
                parent_view: h,
                proposer: set.validators[0].key,
                timestamp_ms: hdr.timestamp_ms + 1,
            };
            let built = build_block(&hdr, &state, ctx, vec![]);
            let cert = Some(set.certify(h / g.epoch_length, h + 1, &built.block.hash()));
            hdr = built.block.header.clone();
            state = built.state;
            SyncRecord {
                block: built.block,
                cert,
            }
        })
        .collect()
}

type Served = Arc<Mutex<Vec<SyncRecord>>>;

/// What the fake upstream answers to `GET /v1/sync/{height}`: whatever `served` holds now.
async fn fake_sync(State(served): State<Served>, UrlPath(h): UrlPath<u64>) -> impl IntoResponse {
    let recs = served.lock().expect("lock").clone();
    let batch = Batch {
        finalized_height: recs.len() as u64,
        records: recs
            .into_iter()
            .skip(h.saturating_sub(1) as usize)
            .collect(),
    };
    batch.encode()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn replica_refuses_forged_blocks_and_certificates_from_a_fake_upstream() {
    let dir = tmpdir("fake");
    let p = base_port(0);
    let set = TestSet::new(1, 4);
    let g = set.genesis("replica-fake", 4);
    let gfile = dir.join("genesis.json");
    std::fs::write(&gfile, serde_json::to_vec_pretty(&g).expect("json")).expect("genesis");
    let honest = certified_chain(&set, &g, 6);
    // Block 3 altered under its own certificate (its hash is no longer what was signed).
    let mut forged_block = honest[..3].to_vec();
    forged_block[2].block.header.timestamp_ms += 7;
    // Block 3 intact, one signature of its certificate altered.
    let mut forged_cert = honest[..3].to_vec();
    if let Some(c) = forged_cert[2].cert.as_mut() {
        c.votes[1].signature.0[9] ^= 0x20;
    }
    let served: Served = Arc::new(Mutex::new(forged_block));
    let home = dir.join("replica");
    let log = dir.join("replica.log");
    let api = format!("http://127.0.0.1:{p}");
    let mut procs = Procs(Vec::new());
    block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let fake = format!("http://{}", listener.local_addr()?);
        let app = axum::Router::new()
            .route("/v1/sync/{height}", axum::routing::get(fake_sync))
            .with_state(served.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });

        procs.0.push(spawn_replica(
            &home,
            &log,
            &[
                "--from".into(),
                fake.clone(),
                "--genesis".into(),
                gfile.display().to_string(),
                "--api-port".into(),
                p.to_string(),
            ],
        ));
        // The forged block: blocks 1-2 applied, 3 refused and named.
        let v = wait_status(&api, Duration::from_secs(60), |v| {
            v["replica"]["rejected"].as_u64().unwrap_or(0) >= 1
        })
        .await;
        assert_eq!(height_of(&v), 2, "{v}");
        assert_eq!(v["role"], "replica", "{v}");
        let r = &v["replica"]["last_rejection"];
        assert_eq!(r["height"], 3, "{v}");
        assert_eq!(r["upstream"], fake.as_str(), "{v}");
        let reason = r["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains("block 3") && reason.contains("finality certificate is refused"),
            "{reason}"
        );
        let logged = read(&log);
        assert!(
            logged.contains("REJECTED") && logged.contains("finality certificate is refused"),
            "{logged}"
        );

        // The forged certificate: refused as a bad signature, still nothing applied.
        let before = v["replica"]["rejected"].as_u64().unwrap_or(0);
        *served.lock().expect("lock") = forged_cert;
        let v = wait_status(&api, Duration::from_secs(30), |v| {
            v["replica"]["rejected"].as_u64().unwrap_or(0) > before
                && v["replica"]["last_rejection"]["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("bad signature"))
        })
        .await;
        assert_eq!(height_of(&v), 2, "{v}");
        let m = Conn::new(&api).get("/metrics").await?;
        let text = String::from_utf8_lossy(&m.body).to_string();
        assert!(
            text.contains("phoenix_ledger_replica_rejected_total"),
            "{text}"
        );

        // The honest chain is followed to its tip, and the block stream shows it.
        let stream_api = api.clone();
        let streamed = tokio::spawn(async move {
            let mut heights = Vec::new();
            let read =
                phoenix_ledger_node::http::sse(&stream_api, "/v1/stream/blocks", |ev, data| {
                    if ev == "block"
                        && let Ok(v) = serde_json::from_str::<Value>(data)
                    {
                        heights.push(v["height"].as_u64().unwrap_or(0));
                    }
                    heights.last() != Some(&6)
                });
            let _ = tokio::time::timeout(Duration::from_secs(30), read).await;
            heights
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        *served.lock().expect("lock") = honest.clone();
        wait_status(&api, Duration::from_secs(30), |v| height_of(v) == 6).await;
        assert_eq!(streamed.await?, vec![3, 4, 5, 6], "the block stream");
        let b = Conn::new(&api).get("/v1/blocks/3").await?.json()?;
        assert_eq!(b["hash"], serde_json::json!(honest[2].block.hash()), "{b}");
        assert_eq!(b["finality"]["certificate_format"], "phoenix-light", "{b}");
        // Read-only: a submission is refused, naming where to submit.
        let r = Conn::new(&api)
            .request("POST", "/v1/tx", "application/octet-stream", b"x")
            .await?;
        assert_eq!(r.status, 405);
        let v = r.json()?;
        assert!(
            v["reason"]
                .as_str()
                .unwrap_or_default()
                .contains("read replica"),
            "{v}"
        );
        assert!(
            Conn::new(&api).get("/health/ready").await?.status == 200,
            "caught up and its upstream answers"
        );

        // A replica of the replica.
        let p2 = p + 1;
        let api2 = format!("http://127.0.0.1:{p2}");
        procs.0.push(spawn_replica(
            &dir.join("replica-2"),
            &dir.join("replica-2.log"),
            &[
                "--from".into(),
                api.clone(),
                "--genesis".into(),
                gfile.display().to_string(),
                "--api-port".into(),
                p2.to_string(),
            ],
        ));
        let v2 = wait_status(&api2, Duration::from_secs(60), |v| height_of(v) == 6).await;
        let v1 = Conn::new(&api).get("/v1/status").await?.json()?;
        assert_eq!(v2["finalized_hash"], v1["finalized_hash"], "{v2}");

        // kill -9, then restart with --home only: the log replays to the same tip at once.
        procs.0[0].kill()?;
        procs.0[0].wait()?;
        procs.0[0] = spawn_replica(&home, &log, &[]);
        let v = wait_status(&api, Duration::from_secs(60), |v| height_of(v) == 6).await;
        assert_eq!(v["finalized_hash"], v1["finalized_hash"], "{v}");
        assert_eq!(v["state_root"], v1["state_root"], "{v}");
        anyhow::Ok(())
    })
    .expect("fake upstream scenario");
    drop(procs);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Record `nonce + 1` of fleet `core`'s chain, signed by `k`.
fn audit_tx(k: &Keypair, chain: &str, nonce: u64) -> Transaction {
    TxBody {
        chain_id: chain.into(),
        signer: k.public(),
        nonce,
        op: Operation::Audit(AuditRecord {
            actor: "replica-test".into(),
            fleet: "core".into(),
            seq: nonce + 1,
            hash: Hash::of(&[b"record", &nonce.to_be_bytes()]),
            revision: 1,
            plan_hash: Hash::ZERO,
            step: "apply".into(),
            outcome: Outcome::Succeeded,
            detail: format!("record {}", nonce + 1),
        }),
    }
    .sign(k)
}

/// Submits `tx` to `api` and waits until it is committed there; returns its height.
async fn commit(api: &str, tx: &Transaction) -> anyhow::Result<u64> {
    let mut c = Conn::new(api);
    let r = c
        .request("POST", "/v1/tx", "application/octet-stream", &tx.encode())
        .await?;
    anyhow::ensure!(r.status < 300, "submit: {} {:?}", r.status, r.json());
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let v = c.get(&format!("/v1/tx/{}", tx.hash())).await?.json()?;
        if v["status"] == "committed" {
            return Ok(v["height"].as_u64().unwrap_or(0));
        }
        anyhow::ensure!(v["status"] != "rejected", "rejected: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("{} not committed within 60 s", tx.hash())
}

/// The same state entry on two nodes at (at least) the same height.
async fn same_entry(a: &str, b: &str, path: &str) -> anyhow::Result<Value> {
    let va = Conn::new(a).get(path).await?.json()?;
    let vb = Conn::new(b).get(path).await?.json()?;
    anyhow::ensure!(va["value"] == vb["value"], "{a}: {va}\n{b}: {vb}");
    anyhow::ensure!(!va["value"].is_null(), "{a}{path}: {va}");
    Ok(vb)
}

#[test]
fn replica_follows_a_four_validator_testnet_and_survives_kill_9() {
    if !heavy() {
        eprintln!("skipped: set PHOENIX_HEAVY_TESTS=1 to run the 4-validator replica test");
        return;
    }
    let dir = tmpdir("testnet");
    let p = base_port(1);
    let chain = "replica-test";
    write_testnet(&TestnetSpec {
        validators: 4,
        dir: dir.join("net"),
        api_base_port: p,
        p2p_base_port: p + 5,
        chain_id: chain.into(),
        empty_block_interval_ms: 300,
        min_block_interval_ms: 50,
        extra_auditors: vec![],
        worker_threads: 1,
        replace: false,
    })
    .expect("testnet");
    let client = read_key(&dir.join("net/client.key")).expect("key");
    let homes: Vec<PathBuf> = (0..4).map(|i| dir.join(format!("net/node-{i}"))).collect();
    let apis: Vec<String> = (0..4)
        .map(|i| format!("http://127.0.0.1:{}", p + i))
        .collect();
    let mut validators = Procs(
        homes
            .iter()
            .map(|h| spawn_node(&exe(), h).expect("spawn"))
            .collect(),
    );
    let mut replicas = Procs(Vec::new());
    let rp = p + 10;
    let rapi = format!("http://127.0.0.1:{rp}");
    let home = dir.join("replica");
    let log = dir.join("replica.log");
    block_on(async {
        wait_height(&apis, 2, Duration::from_secs(90)).await?;
        let mut h = 0;
        for n in 0..3 {
            h = commit(&apis[0], &audit_tx(&client, chain, n)).await?;
        }
        replicas.0.push(spawn_replica(
            &home,
            &log,
            &[
                "--from".into(),
                apis.join(","),
                "--genesis".into(),
                homes[0].join("genesis.json").display().to_string(),
                "--api-port".into(),
                rp.to_string(),
            ],
        ));
        let v = wait_status(&rapi, Duration::from_secs(60), |v| height_of(v) >= h).await;
        assert_eq!(v["role"], "replica", "{v}");
        assert_eq!(v["replica"]["rejected"], 0, "{v}");
        // Audit records, transactions and blocks as the validators serve them.
        for seq in 1..=3 {
            same_entry(&apis[1], &rapi, &format!("/v1/state/audit/core/{seq}")).await?;
        }
        let tx = audit_tx(&client, chain, 2).hash();
        let st = Conn::new(&rapi)
            .get(&format!("/v1/tx/{tx}"))
            .await?
            .json()?;
        assert_eq!(st["status"], "committed", "{st}");
        let upto = height_of(&v);
        assert_eq!(hashes(&rapi, upto).await?, hashes(&apis[2], upto).await?);
        // A proof fetched from the replica verifies against the genesis.
        let proof = Conn::new(&rapi)
            .get("/v1/proof/audit/core/2")
            .await?
            .json()?;
        let proof = phoenix_ledger_light::Proof::from_json(proof)?;
        let trust =
            phoenix_ledger_light::Trust::from_json(&std::fs::read(homes[0].join("genesis.json"))?)?;
        phoenix_ledger_light::LightClient::new(trust).verify(&proof)?;

        // kill -9 the replica; the chain goes on without it.
        replicas.0[0].kill()?;
        replicas.0[0].wait()?;
        for n in 3..6 {
            h = commit(&apis[1], &audit_tx(&client, chain, n)).await?;
        }
        // Its first upstream goes down too: restarted with --home only, it follows the others.
        validators.0[0].kill()?;
        validators.0[0].wait()?;
        replicas.0[0] = spawn_replica(&home, &log, &[]);
        let v = wait_status(&rapi, Duration::from_secs(90), |v| height_of(v) >= h + 2).await;
        for seq in 1..=6 {
            same_entry(&apis[1], &rapi, &format!("/v1/state/audit/core/{seq}")).await?;
        }
        let upto = height_of(&v);
        assert_eq!(hashes(&rapi, upto).await?, hashes(&apis[3], upto).await?);
        let m = Conn::new(&rapi).get("/metrics").await?;
        let text = String::from_utf8_lossy(&m.body).to_string();
        assert!(text.contains("phoenix_ledger_finalized_height"), "{text}");
        anyhow::Ok(())
    })
    .unwrap_or_else(|e| panic!("replica scenario: {e:#}\nreplica log:\n{}", read(&log)));
    drop(replicas);
    drop(validators);
    let _ = std::fs::remove_dir_all(&dir);
}
