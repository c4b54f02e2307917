//! Cost of one transaction signature check by batch size, the figure behind the batched gossip
//! verification in `phoenix-ledger-node` (docs/benchmarks.md, Ledger).
//!
//! `cargo run --release -p phoenix-ledger-types --example sig_batch`

use phoenix_ledger_types::crypto::{Hash, Keypair, verify_many};
use std::time::Instant;

fn main() {
    let keys: Vec<Keypair> = (0..64).map(Keypair::from_test_index).collect();
    let msgs: Vec<Hash> = (0..2000u64)
        .map(|i| Hash::of(&[&i.to_be_bytes()]))
        .collect();
    let sigs: Vec<_> = msgs
        .iter()
        .enumerate()
        .map(|(i, m)| (keys[i % 64].public(), keys[i % 64].sign(&m.0)))
        .collect();
    for batch in [1usize, 50, 250, 2000] {
        let rounds = 2000 / batch;
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            for r in 0..rounds {
                let items: Vec<_> = (r * batch..(r + 1) * batch)
                    .map(|i| (sigs[i].0, &msgs[i].0[..], sigs[i].1))
                    .collect();
                assert!(verify_many(&items).iter().all(|ok| *ok));
            }
            best = best.min(t.elapsed().as_secs_f64() * 1e6 / (rounds * batch) as f64);
        }
        println!("batch {batch:>5}: {best:6.2} us per signature (best of 5)");
    }
}
