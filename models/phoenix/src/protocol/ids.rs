//! Virtual node IDs and the intervals a machine owns.
//!
//! IDs are `u64` in a fixed space `[0, space)`. A machine owns a set of disjoint half-open intervals,
//! each tagged with its ownership *epoch*: the number of times that interval's IDs have changed hands.
//! Every transfer of an ID bumps its epoch by exactly one, so `(id, epoch)` names exactly one owner in
//! the whole history of the run — the fact routing tables are built from.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A virtual node ID.
pub type Id = u64;
/// How many times an ID has changed owner.
pub type Epoch = u64;

/// A half-open interval of IDs `[start, end)`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct IdRange {
    pub start: Id,
    pub end: Id,
}

impl IdRange {
    pub fn new(start: Id, end: Id) -> Self {
        IdRange { start, end }
    }
    pub fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }
    pub fn contains(&self, id: Id) -> bool {
        self.start <= id && id < self.end
    }
    /// The overlap of two ranges, if any.
    pub fn intersect(&self, other: &IdRange) -> Option<IdRange> {
        let r = IdRange::new(self.start.max(other.start), self.end.min(other.end));
        (!r.is_empty()).then_some(r)
    }
}

impl std::fmt::Display for IdRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{},{})", self.start, self.end)
    }
}

/// An owned interval with its epoch.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Piece {
    pub range: IdRange,
    pub epoch: Epoch,
}

/// The intervals one machine owns, keyed by start. Adjacent pieces of equal epoch are merged.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ownership {
    pieces: BTreeMap<Id, (Id, Epoch)>,
}

impl Ownership {
    pub fn new() -> Self {
        Ownership::default()
    }

    /// The piece holding `id`, if owned.
    pub fn get(&self, id: Id) -> Option<Piece> {
        let (&start, &(end, epoch)) = self.pieces.range(..=id).next_back()?;
        (id < end).then_some(Piece {
            range: IdRange::new(start, end),
            epoch,
        })
    }

    pub fn owns(&self, id: Id) -> bool {
        self.get(id).is_some()
    }

    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    /// Total number of owned IDs.
    pub fn count(&self) -> u64 {
        self.pieces.iter().map(|(s, (e, _))| e - s).sum()
    }

    /// All pieces in ID order.
    pub fn pieces(&self) -> Vec<Piece> {
        self.pieces
            .iter()
            .map(|(&s, &(e, ep))| Piece {
                range: IdRange::new(s, e),
                epoch: ep,
            })
            .collect()
    }

    /// Adds a piece. The caller guarantees it does not overlap an owned one (checked: returns false
    /// and changes nothing on overlap).
    pub fn insert(&mut self, piece: Piece) -> bool {
        if piece.range.is_empty() || self.overlaps(piece.range) {
            return false;
        }
        self.pieces
            .insert(piece.range.start, (piece.range.end, piece.epoch));
        self.coalesce_around(piece.range.start);
        true
    }

    /// Whether any owned ID lies in `range`.
    pub fn overlaps(&self, range: IdRange) -> bool {
        if let Some((_, &(end, _))) = self.pieces.range(..=range.start).next_back() {
            if end > range.start {
                return true;
            }
        }
        self.pieces.range(range.start..range.end).next().is_some()
    }

    /// Removes the owned part of `range` and returns it as pieces (with their epochs), in ID order.
    pub fn remove(&mut self, range: IdRange) -> Vec<Piece> {
        let mut out = Vec::new();
        if range.is_empty() {
            return out;
        }
        let mut starts: Vec<Id> = Vec::new();
        if let Some((&s, &(end, _))) = self.pieces.range(..=range.start).next_back() {
            if end > range.start {
                starts.push(s);
            }
        }
        let inner: Vec<Id> = self
            .pieces
            .range(range.start..range.end)
            .map(|(&s, _)| s)
            .collect();
        for s in inner {
            if !starts.contains(&s) {
                starts.push(s);
            }
        }
        for s in starts {
            let (e, ep) = self.pieces.remove(&s).expect("start listed above");
            let piece = IdRange::new(s, e);
            let cut = piece
                .intersect(&range)
                .expect("listed pieces overlap the range");
            if s < cut.start {
                self.pieces.insert(s, (cut.start, ep));
            }
            if cut.end < e {
                self.pieces.insert(cut.end, (e, ep));
            }
            out.push(Piece {
                range: cut,
                epoch: ep,
            });
        }
        out
    }

    fn coalesce_around(&mut self, start: Id) {
        // Merge with the right neighbour, then the left one, when epochs agree.
        let (end, ep) = self.pieces[&start];
        if let Some(&(rend, rep)) = self.pieces.get(&end) {
            if rep == ep {
                self.pieces.remove(&end);
                self.pieces.insert(start, (rend, ep));
            }
        }
        let (end, ep) = self.pieces[&start];
        if let Some((&ls, &(lend, lep))) = self.pieces.range(..start).next_back() {
            if lend == start && lep == ep {
                self.pieces.remove(&start);
                self.pieces.insert(ls, (end, ep));
            }
        }
    }
}

/// A union of ranges (adjacent and overlapping ones merged).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeSet {
    ranges: BTreeMap<Id, Id>,
}

impl RangeSet {
    pub fn insert(&mut self, r: IdRange) {
        if r.is_empty() {
            return;
        }
        let (mut start, mut end) = (r.start, r.end);
        if let Some((&s, &e)) = self.ranges.range(..=start).next_back() {
            if e >= start {
                start = s;
                end = end.max(e);
            }
        }
        let inner: Vec<(Id, Id)> = self
            .ranges
            .range(start..=end)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in inner {
            self.ranges.remove(&s);
            end = end.max(e);
        }
        self.ranges.insert(start, end);
    }
    pub fn contains(&self, id: Id) -> bool {
        self.ranges
            .range(..=id)
            .next_back()
            .is_some_and(|(_, &e)| id < e)
    }
    /// The parts of the set inside `r`.
    pub fn within(&self, r: IdRange) -> Vec<IdRange> {
        self.ranges()
            .iter()
            .filter_map(|x| x.intersect(&r))
            .collect()
    }
    pub fn ranges(&self) -> Vec<IdRange> {
        self.ranges
            .iter()
            .map(|(&s, &e)| IdRange::new(s, e))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn range_set_unions() {
        let mut s = RangeSet::default();
        s.insert(IdRange::new(10, 20));
        s.insert(IdRange::new(0, 5));
        s.insert(IdRange::new(5, 12));
        s.insert(IdRange::new(30, 40));
        s.insert(IdRange::new(35, 36));
        assert_eq!(s.ranges(), vec![IdRange::new(0, 20), IdRange::new(30, 40)]);
    }

    use super::*;

    #[test]
    fn insert_remove_and_coalesce() {
        let mut o = Ownership::new();
        assert!(o.insert(Piece {
            range: IdRange::new(0, 10),
            epoch: 1
        }));
        assert!(o.insert(Piece {
            range: IdRange::new(10, 20),
            epoch: 1
        }));
        assert_eq!(o.pieces().len(), 1);
        assert!(!o.insert(Piece {
            range: IdRange::new(5, 6),
            epoch: 2
        }));
        let cut = o.remove(IdRange::new(5, 15));
        assert_eq!(
            cut,
            vec![Piece {
                range: IdRange::new(5, 15),
                epoch: 1
            }]
        );
        assert_eq!(o.count(), 10);
        assert!(o.owns(4) && !o.owns(5) && !o.owns(14) && o.owns(15));
        assert!(o.insert(Piece {
            range: IdRange::new(5, 15),
            epoch: 3
        }));
        assert_eq!(o.pieces().len(), 3);
        assert_eq!(o.get(7).unwrap().epoch, 3);
    }
}
