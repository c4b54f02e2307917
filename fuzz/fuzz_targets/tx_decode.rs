//! Fuzzes transaction and block decoding: arbitrary bytes must never panic, and whatever decodes
//! must be canonical (re-encodes to the same bytes) and respect the size limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use phoenix_ledger_types::block::{Block, MAX_BLOCK_BYTES};
use phoenix_ledger_types::tx::{MAX_TX_BYTES, Transaction};

fuzz_target!(|data: &[u8]| {
    if let Ok(tx) = Transaction::decode(data) {
        assert!(data.len() <= MAX_TX_BYTES);
        assert_eq!(tx.encode(), data, "non-canonical transaction encoding accepted");
        // Signature checking must not panic on any key or signature bytes.
        let _ = tx.verify_signature();
        let _ = tx.hash();
    }
    if let Ok(block) = Block::decode(data) {
        assert!(data.len() <= MAX_BLOCK_BYTES);
        assert_eq!(block.encode(), data, "non-canonical block encoding accepted");
    }
});
