//! What a `phoenix-node` process tells the program driving it: one JSON object per report, so a
//! test in another process can check exactly-once delivery and single ownership across processes.

use serde::{Deserialize, Serialize};

use crate::apps::ledger::Ledger;
use crate::protocol::ids::{Id, IdRange};
use crate::protocol::node::Node;

/// One machine's state as seen from outside.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeReport {
    pub host: u32,
    /// `Phase` in its Debug form (`Active`, `Departed`, ...).
    pub phase: String,
    pub owned: Vec<IdRange>,
    /// Messages this machine sent, per destination ID.
    pub sent: Vec<(Id, u64)>,
    /// Every message applied to the data of the IDs this machine owns now.
    pub ledger: Ledger,
    pub delivered: u64,
    pub duplicates: u64,
    pub bound_violations: u64,
    pub rejected: u64,
    pub after_departure: u64,
    pub parked: u64,
}

impl NodeReport {
    /// Snapshot of `node` (whose application data is a [`Ledger`]) and of what it sent.
    pub fn of(node: &Node<Ledger>, sent: &[(Id, u64)]) -> Self {
        let s = node.stats();
        NodeReport {
            host: node.id().0,
            phase: format!("{:?}", node.phase()),
            owned: node.owned().iter().map(|p| p.range).collect(),
            sent: sent.to_vec(),
            ledger: node.data().clone(),
            delivered: s.delivered,
            duplicates: s.duplicates,
            bound_violations: s.bound_violations,
            rejected: s.rejected,
            after_departure: s.after_departure,
            parked: node.parked() as u64,
        }
    }

    /// Messages applied to this machine's data.
    pub fn applied(&self) -> u64 {
        self.ledger.log.values().map(|v| v.len() as u64).sum()
    }
}
