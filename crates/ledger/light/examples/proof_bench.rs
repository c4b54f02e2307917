//! Size and verification time of an audit-record proof (issue 10's targets: at most 1 KB for 4
//! validators and 1,000,000 records, verified in under 1 ms), for a client that trusts a
//! checkpoint of the current epoch, and beside it the size of the same proof from genesis, which
//! also carries the validator-set changes since.
//!
//! ```sh
//! cargo run --release -p phoenix-ledger-light --example proof_bench -- \
//!     --records 1000000 --validators 4 --changes 1,3,10 --iterations 2000 --runs 5
//! ```
//!
//! `--trie` also builds the state trie of as many keys and prints the path length of the same
//! record there (about 300 MB more memory at a million).
//!
//! Each run times `--iterations` verifications and reports their median; the spread is over the
//! runs. The load average (`/proc/loadavg`) is printed before and after, since other work on the
//! machine moves the figures.
//!
//! The audit log is built in memory (no consensus): `--records` records spread over 100 fleets
//! named `fleet-00`..`fleet-99`, as the ledger's execution appends them; the certified header is a
//! header of the real format at height 100,000 (epoch 1,000 of 100 blocks), signed by a quorum of
//! test keys; each validator-set change replaces one validator. Verification is what an edge
//! device does with the bytes it received: decode the binary proof, check the certificate (a
//! quorum of ed25519 signatures), the header hash and the inclusion path.

use phoenix_ledger_light::proof::{AuditProof, Proof};
use phoenix_ledger_light::testing::{TestSet, change, header};
use phoenix_ledger_light::{LightClient, Trust};
use phoenix_ledger_types::crypto::Hash;
use phoenix_ledger_types::exec::Validator;
use phoenix_ledger_types::mlog::{MerkleLog, audit_leaf};
use std::time::Instant;

const CHAIN: &str = "phoenix-testnet";
const EPOCH_LENGTH: u64 = 100;
const HEIGHT: u64 = 100_000;
const FLEETS: u64 = 100;

struct Args {
    records: u64,
    validators: usize,
    changes: Vec<usize>,
    iterations: usize,
    runs: usize,
    /// Also measure the state trie's path for one of `records` keys (ADR 004's comparison).
    trie: bool,
}

fn args() -> Args {
    let mut a = Args {
        records: 1_000_000,
        validators: 4,
        changes: vec![1, 3, 10],
        iterations: 2000,
        runs: 5,
        trie: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--trie" {
            a.trie = true;
            continue;
        }
        let v = it.next().unwrap_or_default();
        match flag.as_str() {
            "--records" => a.records = v.parse().expect("--records N"),
            "--validators" => a.validators = v.parse().expect("--validators N"),
            "--changes" => {
                a.changes = v
                    .split(',')
                    .map(|s| s.parse().expect("--changes N,N,..."))
                    .collect()
            }
            "--iterations" => a.iterations = v.parse().expect("--iterations N"),
            "--runs" => a.runs = v.parse().expect("--runs N"),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

fn fleet(i: u64) -> String {
    format!("fleet-{:02}", i % FLEETS)
}

fn chain_hash(fleet: &str, seq: u64) -> Hash {
    Hash::of(&[fleet.as_bytes(), &seq.to_be_bytes()])
}

/// The proof of the record at log position `index`.
fn proof(log: &MerkleLog, set: &TestSet, index: u64) -> AuditProof {
    let h = header(
        CHAIN,
        EPOCH_LENGTH,
        HEIGHT,
        set.hash(),
        set.hash(),
        log.size(),
        log.root(),
        Hash::of(&[b"state"]),
    );
    let f = fleet(index);
    let seq = index / FLEETS + 1;
    AuditProof {
        changes: vec![],
        certificate: set.certify(h.epoch, h.view, &h.hash()),
        header: h.compact(),
        hash: chain_hash(&f, seq),
        fleet: f,
        seq,
        index,
        path: log.prove(index, log.size()).expect("in range"),
    }
}

/// Per-run medians of one decode+verify, their median and range, and the fastest single one.
struct Timing {
    runs: Vec<f64>,
    median: f64,
    low: f64,
    high: f64,
    fastest: f64,
}

impl std::fmt::Display for Timing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let runs: Vec<String> = self.runs.iter().map(|r| format!("{r:.0}")).collect();
        write!(
            f,
            "median {:.0} us (run medians {:.0}..{:.0} us: {}; fastest single {:.0} us)",
            self.median,
            self.low,
            self.high,
            runs.join(", "),
            self.fastest
        )
    }
}

/// Times `runs` runs of `iterations` decode+verify of `bytes` against `trust`, in microseconds.
fn time_verify(bytes: &[u8], trust: &Trust, iterations: usize, runs: usize) -> Timing {
    let mut medians = Vec::with_capacity(runs);
    let mut fastest = f64::MAX;
    for _ in 0..runs.max(1) {
        let mut samples = Vec::with_capacity(iterations);
        for _ in 0..iterations.max(1) {
            let start = Instant::now();
            let p = Proof::decode(bytes).expect("decodes");
            LightClient::new(trust.clone())
                .verify(&p)
                .expect("verifies");
            samples.push(start.elapsed().as_secs_f64() * 1e6);
        }
        samples.sort_by(f64::total_cmp);
        fastest = fastest.min(samples[0]);
        medians.push(samples[samples.len() / 2]);
    }
    let mut sorted = medians.clone();
    sorted.sort_by(f64::total_cmp);
    Timing {
        median: sorted[sorted.len() / 2],
        low: sorted[0],
        high: sorted[sorted.len() - 1],
        runs: medians,
        fastest,
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn main() {
    let a = args();
    println!("load average before: {}", loadavg());
    let start = Instant::now();
    let mut log = MerkleLog::new();
    for i in 0..a.records {
        let f = fleet(i);
        log.push(audit_leaf(
            &f,
            i / FLEETS + 1,
            &chain_hash(&f, i / FLEETS + 1),
        ));
    }
    println!(
        "built an audit log of {} records in {:.2} s (root {})",
        log.size(),
        start.elapsed().as_secs_f64(),
        log.root()
    );

    // Checkpoint trust: the current epoch's set.
    let set = TestSet::new(1000, a.validators);
    let index = a.records * 2 / 3 + 7;
    let p = proof(&log, &set, index);
    let bytes = Proof::Audit(p.clone()).encode();
    let checkpoint = Trust {
        chain_id: CHAIN.into(),
        epoch_length: EPOCH_LENGTH,
        epoch: HEIGHT / EPOCH_LENGTH,
        height: HEIGHT - 10,
        header_hash: Hash::ZERO,
        validators: set.validators.clone(),
        set_hash: set.hash(),
    };
    let t = time_verify(&bytes, &checkpoint, a.iterations, a.runs);
    let json_len = serde_json::to_vec(&Proof::Audit(p.clone()).to_json())
        .expect("json")
        .len();
    println!(
        "checkpoint proof: record {} of {:?} (log index {index}), {} validators ({} signatures), \
         path {} hashes",
        p.seq,
        p.fleet,
        a.validators,
        p.certificate.votes.len(),
        p.path.len()
    );
    println!(
        "  size {} bytes binary ({json_len} bytes as JSON); verify (decode + certificate + \
         inclusion), {} runs of {}: {t}",
        bytes.len(),
        a.runs,
        a.iterations
    );

    // From genesis: the same proof after `k` validator-set changes, one validator replaced at
    // each, at the end of evenly spaced epochs.
    for &k in &a.changes {
        let mut sets = vec![TestSet::new(1, a.validators)];
        for i in 0..k {
            let prev = &sets[i];
            let mut next = prev.clone();
            let newcomer = TestSet::new(2000 + i as u64, 1);
            next.keys[0] = newcomer.keys[0].clone();
            next.validators[0] = newcomer.validators[0].clone();
            let mut pairs: Vec<(Validator, _)> =
                next.validators.into_iter().zip(next.keys).collect();
            pairs.sort_by(|x, y| x.0.cmp(&y.0));
            let (validators, keys) = pairs.into_iter().unzip();
            sets.push(TestSet { keys, validators });
        }
        let last = sets.last().expect("one set at least");
        let mut gp = proof(&log, last, index);
        let epoch = HEIGHT / EPOCH_LENGTH;
        gp.changes = (0..k)
            .map(|i| {
                let e = (i as u64 + 1) * epoch / (k as u64 + 1);
                change(CHAIN, EPOCH_LENGTH, e, &sets[i], &sets[i + 1])
            })
            .collect();
        let gbytes = Proof::Audit(gp).encode();
        let genesis = Trust::from_genesis(&sets[0].genesis(CHAIN, EPOCH_LENGTH)).expect("genesis");
        let t = time_verify(&gbytes, &genesis, a.iterations.min(500), a.runs);
        println!(
            "genesis proof after {k} validator-set change(s): size {} bytes binary ({} per \
             change); verify {t}",
            gbytes.len(),
            (gbytes.len() - bytes.len()) / k.max(1)
        );
    }
    if a.trie {
        // The same record as a state-trie key among `records` others (values kept small: the
        // path does not depend on them).
        let mut map = phoenix_ledger_types::state::AuthMap::new();
        for i in 0..a.records {
            let key = format!("audit/{}/{}", fleet(i), i / FLEETS + 1);
            map.insert(key.as_bytes(), &i.to_be_bytes());
        }
        let key = format!("audit/{}/{}", fleet(index), index / FLEETS + 1);
        let tp = map.prove(key.as_bytes());
        let sibs: usize = tp.branches.iter().map(|(_, s)| s.len()).sum();
        println!(
            "state-trie path of the same record among {} keys: {} levels, {sibs} sibling hashes, \
             {} bytes (the audit log's: {} hashes, {} bytes)",
            a.records,
            tp.branches.len(),
            sibs * 32 + tp.branches.len() * 2,
            p.path.len(),
            p.path.len() * 32
        );
    }
    println!("load average after: {}", loadavg());
}
