//! Size and verification time of an audit-record proof (issue 10's targets: at most 1 KB for 4
//! validators and 1,000,000 records, verified in under 1 ms), for a client that trusts a
//! checkpoint of the current epoch, and beside it the size of the same proof from genesis, which
//! also carries the validator-set changes since.
//!
//! ```sh
//! cargo run --release -p phoenix-ledger-light --example proof_bench -- \
//!     --records 1000000 --validators 4 --changes 1,3,10 --iterations 2000
//! ```
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
}

fn args() -> Args {
    let mut a = Args {
        records: 1_000_000,
        validators: 4,
        changes: vec![1, 3, 10],
        iterations: 2000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
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

/// Median, min and max of per-verification microseconds over `iterations` decode+verify.
fn time_verify(bytes: &[u8], trust: &Trust, iterations: usize) -> (f64, f64, f64) {
    let mut samples = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let start = Instant::now();
        let p = Proof::decode(bytes).expect("decodes");
        LightClient::new(trust.clone())
            .verify(&p)
            .expect("verifies");
        samples.push(start.elapsed().as_secs_f64() * 1e6);
    }
    samples.sort_by(f64::total_cmp);
    (
        samples[samples.len() / 2],
        samples[0],
        samples[samples.len() - 1],
    )
}

fn main() {
    let a = args();
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
    let (med, min, max) = time_verify(&bytes, &checkpoint, a.iterations);
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
         inclusion) median {med:.1} us, min {min:.1} us, max {max:.1} us over {} runs",
        bytes.len(),
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
        let (med, min, max) = time_verify(&gbytes, &genesis, a.iterations.min(500));
        println!(
            "genesis proof after {k} validator-set change(s): size {} bytes binary ({} per \
             change); verify median {med:.1} us, min {min:.1} us, max {max:.1} us",
            gbytes.len(),
            (gbytes.len() - bytes.len()) / k.max(1)
        );
    }
}
