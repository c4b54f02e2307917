//! Transaction gossip between validators.
//!
//! Outbound: every [`FLUSH_EVERY`], local submissions go to all peers in length-prefixed batches.
//! Inbound: received transactions are decoded at once but their signatures are checked by a
//! separate verifier task that takes everything queued since its last pass, in one batch.
//! Batch verification's cost per signature falls steeply with batch size (ed25519 under ZIP-215
//! here: about 19 us at 50 and 7.5 us at 2,000, docs/benchmarks.md; `cargo run --release -p
//! phoenix-ledger-types --example sig_batch`), so the cost no longer depends on how peers happened to split their traffic into
//! messages. The verifier waits at most [`VERIFY_DELAY`] for a batch to grow; under load it is
//! busy anyway and the queue grows by itself. Worth about 4-5% of throughput in the ledger bench
//! (docs/benchmarks.md).

use crate::shared::{Shared, inc};
use commonware_cryptography::ed25519;
use commonware_p2p::{Receiver, Recipients, Sender};
use commonware_runtime::{Clock, Handle, Metrics, Spawner};
use phoenix_ledger_types::crypto::{Hash, verify_many};
use phoenix_ledger_types::tx::{MAX_TX_BYTES, Transaction};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::warn;

/// How often local submissions are sent to peers.
pub const FLUSH_EVERY: Duration = Duration::from_millis(20);
/// Longest a received transaction waits for its signature check (to let the batch grow).
pub const VERIFY_DELAY: Duration = Duration::from_millis(10);
/// Most transactions in one outbound message.
const MAX_BATCH: usize = 2048;

/// Encodes transactions as `u32` big-endian length + canonical bytes, one after another.
pub fn encode_batch<'a>(txs: impl IntoIterator<Item = &'a Transaction>) -> Vec<u8> {
    let mut buf = Vec::new();
    for tx in txs {
        let b = tx.encode();
        buf.extend_from_slice(&u32::try_from(b.len()).expect("small").to_be_bytes());
        buf.extend_from_slice(&b);
    }
    buf
}

/// Decodes a batch written by [`encode_batch`]. An entry that does not decode is skipped (the
/// framing still holds); a bad length ends the batch (nothing after it can be framed).
pub fn decode_batch(bytes: &[u8]) -> Vec<Transaction> {
    let mut txs = Vec::new();
    let mut rest = bytes;
    while rest.len() >= 4 {
        let len = u32::from_be_bytes(rest[..4].try_into().expect("4")) as usize;
        if len > MAX_TX_BYTES || rest.len() < 4 + len {
            break;
        }
        if let Ok(tx) = Transaction::decode(&rest[4..4 + len]) {
            txs.push(tx);
        }
        rest = &rest[4 + len..];
    }
    txs
}

/// Checks the signatures of `queued` in one batch and admits the good ones to the mempool,
/// skipping what this node already holds or has committed. Returns how many were admitted.
pub fn verify_and_admit(shared: &Shared, queued: Vec<(Transaction, Hash)>) -> usize {
    let fresh: Vec<(Transaction, Hash)> = {
        let g = shared.lock();
        queued
            .into_iter()
            .filter(|(_, h)| !g.is_verified(h) && !g.tx_index.contains_key(h))
            .collect()
    };
    if fresh.is_empty() {
        return 0;
    }
    let items: Vec<_> = fresh
        .iter()
        .map(|(tx, h)| (tx.body.signer, &h.0[..], tx.signature))
        .collect();
    let ok = verify_many(&items);
    let mut admitted = 0;
    let mut g = shared.lock();
    for ((tx, h), ok) in fresh.into_iter().zip(ok) {
        if !ok {
            warn!(tx = %h, "peer gossiped a badly signed transaction");
            continue;
        }
        if g.admit(tx, h, false).is_ok() {
            admitted += 1;
        }
    }
    drop(g);
    inc(&shared.counters.tx_admitted, admitted as u64);
    admitted
}

/// Starts the gossip tasks (outbound flush, inbound decode, batched verification).
pub fn start<E, S, R>(
    context: E,
    shared: Arc<Shared>,
    (mut sender, mut receiver): (S, R),
) -> Handle<()>
where
    E: Clock + Spawner + Metrics,
    S: Sender<PublicKey = ed25519::PublicKey>,
    R: Receiver<PublicKey = ed25519::PublicKey>,
{
    let outbound = {
        let shared = shared.clone();
        context.child("out").spawn(move |ctx| async move {
            loop {
                ctx.sleep(FLUSH_EVERY).await;
                let batch = shared.lock().take_outbox();
                for chunk in batch.chunks(MAX_BATCH) {
                    sender.send(
                        Recipients::All,
                        encode_batch(chunk.iter().map(|t| &**t)),
                        false,
                    );
                }
            }
        })
    };
    let queue: Arc<Mutex<Vec<(Transaction, Hash)>>> = Arc::default();
    let verifier = {
        let (shared, queue) = (shared.clone(), queue.clone());
        context.child("verify").spawn(move |ctx| async move {
            loop {
                ctx.sleep(VERIFY_DELAY).await;
                let batch = std::mem::take(&mut *queue.lock().expect("gossip queue"));
                if !batch.is_empty() {
                    verify_and_admit(&shared, batch);
                }
            }
        })
    };
    context.child("in").spawn(move |_| async move {
        let (_outbound, _verifier) = (outbound, verifier);
        while let Ok((_peer, msg)) = receiver.recv().await {
            let txs = decode_batch(msg.as_ref());
            let mut q = queue.lock().expect("gossip queue");
            q.extend(txs.into_iter().map(|tx| {
                let h = tx.hash();
                (tx, h)
            }));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{audit_tx as tx, shared_with_auditors};
    use phoenix_ledger_types::crypto::Keypair;

    #[test]
    fn batch_round_trips_and_stops_at_garbage() {
        let k = Keypair::from_test_index(1);
        let txs: Vec<_> = (0..3).map(|n| tx(&k, n)).collect();
        let mut bytes = encode_batch(&txs);
        assert_eq!(decode_batch(&bytes), txs);
        // A truncated or garbled tail ends the batch without losing what came before.
        bytes.extend_from_slice(&[0, 0, 0, 9, 1, 2]);
        assert_eq!(decode_batch(&bytes), txs);
        bytes.truncate(bytes.len() - 6);
        bytes.extend_from_slice(&[0, 0, 0, 2, 0xff, 0xff]);
        assert_eq!(decode_batch(&bytes), txs);
    }

    #[test]
    fn only_well_signed_new_transactions_are_admitted() {
        let k = Keypair::from_test_index(1);
        let shared = shared_with_auditors(&[&k]);
        let good: Vec<_> = (0..5).map(|n| tx(&k, n)).collect();
        let mut forged = tx(&k, 5);
        forged.signature = good[0].signature;
        let mut batch: Vec<_> = good.iter().map(|t| (t.clone(), t.hash())).collect();
        batch.push((forged.clone(), forged.hash()));
        assert_eq!(verify_and_admit(&shared, batch.clone()), 5);
        assert_eq!(shared.lock().mempool_len(), 5);
        // A second delivery of the same batch (another peer gossiped it too) admits nothing.
        assert_eq!(verify_and_admit(&shared, batch), 0);
    }
}
