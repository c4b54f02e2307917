//! What the ledger node's process tests share: ports for their testnets.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::sync::Mutex;

/// Blocks already handed out by this test binary (its tests run at once, in threads).
static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// The first port of `width` consecutive ports on 127.0.0.1 that are free now, for the test
/// in `slot`. They are taken from 20000-32000, below the kernel's ephemeral range (32768 and
/// up), so an outgoing connection of another process cannot take one between this check and
/// the node's bind; a port another process listens on is skipped; and no two tests of this
/// binary get the same block. Bounded: panics after trying every block.
pub(crate) fn free_block(slot: u16, width: u16) -> u16 {
    const LOW: u32 = 20_000;
    const HIGH: u32 = 32_000;
    let width32 = u32::from(width.max(1));
    let blocks = (HIGH - LOW) / width32;
    let start = (std::process::id() * 7 + u32::from(slot) * 131) % blocks;
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for i in 0..blocks {
        let base = (LOW + ((start + i) % blocks) * width32) as u16;
        if given.contains(&base) {
            continue;
        }
        if (0..width).all(|k| TcpListener::bind(("127.0.0.1", base + k)).is_ok()) {
            given.insert(base);
            return base;
        }
    }
    panic!("no {width} consecutive free ports between {LOW} and {HIGH} on 127.0.0.1");
}
