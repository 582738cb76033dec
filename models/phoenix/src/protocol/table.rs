//! The routing table: a map from ID ranges to the machine believed to own them, with epochs.
//!
//! The table always covers the whole ID space. Every entry is a historical fact "`range` was owned by
//! `owner` at `epoch`"; merging keeps, per ID, the fact with the highest epoch. Because an ID's epoch
//! grows by one per transfer, an entry can be stale but never wrong about the past, and a stale entry
//! is detectable: the machine it names either owns the ID at that epoch or knows a newer fact.

use std::collections::BTreeMap;

use gridbed_runtime::HostId;
use serde::{Deserialize, Serialize};

use crate::protocol::ids::{Epoch, Id, IdRange};

/// One fact: `range` owned by `owner` at `epoch`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub range: IdRange,
    pub owner: HostId,
    pub epoch: Epoch,
}

/// Range → (owner, epoch), covering `[0, space)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutingTable {
    space: Id,
    entries: BTreeMap<Id, (Id, HostId, Epoch)>,
}

impl RoutingTable {
    /// A table in which `owner` holds the whole space at epoch 0.
    pub fn whole(space: Id, owner: HostId) -> Self {
        let mut entries = BTreeMap::new();
        entries.insert(0, (space, owner, 0));
        RoutingTable { space, entries }
    }

    /// The initial layout of `machines` machines (hosts `0..machines`) sharing the space evenly:
    /// host 0 at epoch 0, the others at epoch 1 (one hand-out from host 0's whole-space fact).
    pub fn even(space: Id, machines: u32) -> Self {
        let mut t = RoutingTable::whole(space, HostId(0));
        for i in 1..machines {
            t.merge(Entry {
                range: IdRange::new(
                    space * u64::from(i) / u64::from(machines),
                    space * u64::from(i + 1) / u64::from(machines),
                ),
                owner: HostId(i),
                epoch: 1,
            });
        }
        t
    }

    /// A table built from a complete list of facts (e.g. a snapshot received from a peer).
    /// Returns `None` if the facts do not cover the space.
    pub fn from_entries(space: Id, facts: &[Entry]) -> Option<Self> {
        let mut t = RoutingTable {
            space,
            entries: BTreeMap::new(),
        };
        for f in facts {
            if f.range.is_empty() || f.range.end > space {
                return None;
            }
            t.entries
                .insert(f.range.start, (f.range.end, f.owner, f.epoch));
        }
        t.is_complete().then_some(t)
    }

    fn is_complete(&self) -> bool {
        let mut next = 0;
        for (&s, &(e, _, _)) in &self.entries {
            if s != next || e <= s {
                return false;
            }
            next = e;
        }
        next == self.space
    }

    pub fn space(&self) -> Id {
        self.space
    }

    /// The fact covering `id` (`id` must be in the space).
    pub fn lookup(&self, id: Id) -> Entry {
        let (&s, &(e, owner, epoch)) = self
            .entries
            .range(..=id)
            .next_back()
            .expect("the table covers the whole space");
        Entry {
            range: IdRange::new(s, e),
            owner,
            epoch,
        }
    }

    /// Number of entries (the routing-table size metric).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every fact, in ID order.
    pub fn entries(&self) -> Vec<Entry> {
        self.entries
            .iter()
            .map(|(&s, &(e, o, ep))| Entry {
                range: IdRange::new(s, e),
                owner: o,
                epoch: ep,
            })
            .collect()
    }

    /// Facts overlapping `range`.
    pub fn entries_in(&self, range: IdRange) -> Vec<Entry> {
        let mut out = Vec::new();
        if range.is_empty() {
            return out;
        }
        let first = self.lookup(range.start);
        out.push(first);
        out.extend(
            self.entries
                .range(range.start + 1..range.end)
                .map(|(&s, &(e, o, ep))| Entry {
                    range: IdRange::new(s, e),
                    owner: o,
                    epoch: ep,
                }),
        );
        out
    }

    /// Merges one fact: every ID of `fact.range` whose known epoch is lower takes the new owner.
    /// Returns whether anything changed.
    pub fn merge(&mut self, fact: Entry) -> bool {
        let r = match fact.range.intersect(&IdRange::new(0, self.space)) {
            Some(r) => r,
            None => return false,
        };
        self.split_at(r.start);
        self.split_at(r.end);
        let starts: Vec<Id> = self
            .entries
            .range(r.start..r.end)
            .map(|(&s, _)| s)
            .collect();
        let mut changed = false;
        for s in starts {
            let v = self.entries.get_mut(&s).expect("listed");
            if v.2 < fact.epoch {
                v.1 = fact.owner;
                v.2 = fact.epoch;
                changed = true;
            }
        }
        self.coalesce(r);
        changed
    }

    /// Merges many facts.
    pub fn merge_all(&mut self, facts: &[Entry]) -> bool {
        let mut changed = false;
        for f in facts {
            changed |= self.merge(*f);
        }
        changed
    }

    fn split_at(&mut self, at: Id) {
        if at == 0 || at >= self.space {
            return;
        }
        let (&s, &(e, o, ep)) = self.entries.range(..=at).next_back().expect("covered");
        if s < at && at < e {
            self.entries.insert(s, (at, o, ep));
            self.entries.insert(at, (e, o, ep));
        }
    }

    /// Re-joins neighbouring entries with equal (owner, epoch) around `r`.
    fn coalesce(&mut self, r: IdRange) {
        let from = self
            .entries
            .range(..r.start)
            .next_back()
            .map(|(&s, _)| s)
            .unwrap_or(r.start);
        let keys: Vec<Id> = self
            .entries
            .range(from..=r.end.min(self.space - 1))
            .map(|(&s, _)| s)
            .collect();
        let mut cur: Option<Id> = None;
        for k in keys {
            let Some(&(e, o, ep)) = self.entries.get(&k) else {
                continue;
            };
            if let Some(c) = cur {
                let (ce, co, cep) = self.entries[&c];
                if ce == k && co == o && cep == ep {
                    self.entries.remove(&k);
                    self.entries.insert(c, (e, o, ep));
                    continue;
                }
            }
            cur = Some(k);
        }
    }

    /// Whether any entry names `host`.
    pub fn mentions(&self, host: HostId) -> bool {
        self.entries.values().any(|&(_, o, _)| o == host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(s: Id, end: Id, o: u32, ep: Epoch) -> Entry {
        Entry {
            range: IdRange::new(s, end),
            owner: HostId(o),
            epoch: ep,
        }
    }

    #[test]
    fn newer_facts_win_per_id() {
        let mut t = RoutingTable::whole(100, HostId(0));
        assert!(t.merge(e(50, 100, 1, 1)));
        assert!(t.merge(e(75, 100, 2, 2)));
        assert!(!t.merge(e(50, 100, 1, 1)), "an old fact changes nothing");
        assert_eq!(t.lookup(60).owner, HostId(1));
        assert_eq!(t.lookup(80).owner, HostId(2));
        assert_eq!(t.lookup(10).owner, HostId(0));
        assert_eq!(t.len(), 3);
        // A fact spanning several entries only replaces the older parts.
        t.merge(e(40, 90, 3, 1));
        assert_eq!(t.lookup(45).owner, HostId(3));
        assert_eq!(
            t.lookup(60).owner,
            HostId(1),
            "equal epoch: same fact, kept"
        );
        assert_eq!(t.lookup(85).owner, HostId(2));
        assert!(RoutingTable::from_entries(100, &t.entries()).is_some());
    }

    #[test]
    fn coalesces_equal_neighbours() {
        let mut t = RoutingTable::whole(100, HostId(0));
        t.merge(e(10, 20, 1, 1));
        t.merge(e(20, 30, 1, 1));
        assert_eq!(t.len(), 3);
        assert_eq!(t.entries_in(IdRange::new(15, 25)), vec![e(10, 30, 1, 1)]);
        assert!(RoutingTable::from_entries(100, &[e(0, 50, 0, 0)]).is_none());
    }
}
