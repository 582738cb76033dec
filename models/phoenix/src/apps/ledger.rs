//! Application data that records, per ID, every message applied to it: used by the property checks
//! (in-memory and simulated) and the scale experiment to prove exactly-once, FIFO delivery into the
//! data held by the owner.

use std::collections::BTreeMap;

use gridbed_runtime::HostId;
use serde::{Deserialize, Serialize};

use crate::protocol::data::IdData;
use crate::protocol::ids::{Id, IdRange};
use crate::wire::Delivery;

/// Per ID: the (sender, seq) of every message applied to it, in application order.
#[derive(Default, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    pub log: BTreeMap<Id, Vec<(u32, u64)>>,
}

impl Ledger {
    /// Applies a received message to its ID's record.
    pub fn apply(&mut self, d: &Delivery) {
        self.log.entry(d.id).or_default().push((d.from.0, d.seq));
    }
}

impl IdData for Ledger {
    fn pack(&mut self, range: IdRange) -> Vec<u8> {
        let keys: Vec<Id> = self
            .log
            .range(range.start..range.end)
            .map(|(&k, _)| k)
            .collect();
        let part: Vec<(Id, Vec<(u32, u64)>)> = keys
            .into_iter()
            .map(|k| (k, self.log.remove(&k).unwrap_or_default()))
            .collect();
        postcard::to_allocvec(&part).expect("serialising plain data")
    }
    fn unpack(&mut self, range: IdRange, bytes: &[u8]) -> Result<(), String> {
        let part: Vec<(Id, Vec<(u32, u64)>)> =
            postcard::from_bytes(bytes).map_err(|e| e.to_string())?;
        if let Some((k, _)) = part.iter().find(|(k, _)| !range.contains(*k)) {
            return Err(format!("id {k} outside {range}"));
        }
        self.log.extend(part);
        Ok(())
    }
}

/// Sequence numbers applied per (sender, ID), across all ledgers, in application order.
fn applied<'a>(ledgers: impl IntoIterator<Item = &'a Ledger>) -> BTreeMap<(u32, Id), Vec<u64>> {
    let mut got: BTreeMap<(u32, Id), Vec<u64>> = BTreeMap::new();
    for l in ledgers {
        for (&id, entries) in &l.log {
            for &(from, seq) in entries {
                got.entry((from, id)).or_default().push(seq);
            }
        }
    }
    got
}

/// The guarantee after crashes: messages that were inside a crashed machine or on a link to it are
/// lost, but nothing is applied twice, out of per-(sender, ID) order, or without having been sent.
pub fn check_at_most_once<'a>(
    sent: &BTreeMap<(u32, Id), u64>,
    ledgers: impl IntoIterator<Item = &'a Ledger>,
) -> Vec<String> {
    let got = applied(ledgers);
    let mut bad = Vec::new();
    for (key, seqs) in got {
        let n = sent.get(&key).copied().unwrap_or(0);
        if seqs.windows(2).any(|w| w[0] >= w[1]) || seqs.iter().any(|&s| s >= n) {
            bad.push(format!(
                "(sender {}, id {}): sent {n}, applied {seqs:?}",
                HostId(key.0),
                key.1
            ));
        }
    }
    bad.truncate(10);
    bad
}

/// Compares what was sent (messages per (sender, ID)) with the union of all ledgers: every message
/// applied exactly once, in per-(sender, ID) order. Returns the first few discrepancies.
pub fn check_exactly_once<'a>(
    sent: &BTreeMap<(u32, Id), u64>,
    ledgers: impl IntoIterator<Item = &'a Ledger>,
) -> Vec<String> {
    let mut got = applied(ledgers);
    let mut bad = Vec::new();
    for (&key, &n) in sent {
        let seqs = got.remove(&key).unwrap_or_default();
        if seqs.len() as u64 != n || seqs.iter().enumerate().any(|(i, &s)| s != i as u64) {
            bad.push(format!(
                "(sender {}, id {}): sent {n}, applied {:?}",
                HostId(key.0),
                key.1,
                seqs
            ));
        }
    }
    for (key, seqs) in got {
        bad.push(format!(
            "(sender {}, id {}): applied {:?} but never sent",
            HostId(key.0),
            key.1,
            seqs
        ));
    }
    bad.truncate(10);
    bad
}
