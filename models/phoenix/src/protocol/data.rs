//! The application's state attached to IDs, and how it travels with them.

use crate::protocol::ids::IdRange;

/// State the application keeps per ID. Phoenix calls `pack` when IDs leave this machine and
/// `unpack` when they arrive, so the data is always where its IDs are owned.
pub trait IdData: Send + 'static {
    /// Removes the state of the IDs in `range` from this machine and serialises it.
    fn pack(&mut self, range: IdRange) -> Vec<u8>;
    /// Installs state received for `range`. Bytes come from a peer: reject malformed input.
    fn unpack(&mut self, range: IdRange, bytes: &[u8]) -> Result<(), String>;
    /// `range` was reclaimed from a crashed machine: its state is gone. Called on the new owner;
    /// the application may restore the state from its own checkpoint (or recompute it).
    fn lost(&mut self, _range: IdRange) {}
    /// Which of `owned` (this machine's IDs, in order) to give a joining machine. The default is the
    /// slides' rule: half of them.
    fn donate(&self, owned: &[IdRange]) -> Vec<IdRange> {
        let total: u64 = owned.iter().map(IdRange::len).sum();
        upper_ids(owned, total / 2)
    }
}

/// The highest `n` IDs of `owned` (sorted, disjoint), as ranges in ID order.
pub fn upper_ids(owned: &[IdRange], n: u64) -> Vec<IdRange> {
    let mut left = n;
    let mut out = Vec::new();
    for r in owned.iter().rev() {
        if left == 0 {
            break;
        }
        let take = left.min(r.len());
        out.push(IdRange::new(r.end - take, r.end));
        left -= take;
    }
    out.reverse();
    out
}

/// Data-less applications.
#[derive(Default, Debug, Clone, Copy)]
pub struct NoData;

impl IdData for NoData {
    fn pack(&mut self, _range: IdRange) -> Vec<u8> {
        Vec::new()
    }
    fn unpack(&mut self, _range: IdRange, _bytes: &[u8]) -> Result<(), String> {
        Ok(())
    }
}
