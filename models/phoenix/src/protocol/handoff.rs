//! Moving IDs between machines together with their data: hand-off out and in, donation to a
//! joiner, ph_assume and ph_release.

use gridbed_runtime::HostId;

use crate::protocol::data::IdData;
use crate::protocol::ids::{Id, IdRange, Ownership, Piece};
use crate::protocol::node::{Node, Phase, PhoenixError};
use crate::protocol::table::Entry;
use crate::wire::{Body, Bootstrap, Delivery, Handoff, Routed, RoutedKind};

impl<D: IdData> Node<D> {
    /// Gives the owned part of `ranges` to `to`: data, undelivered messages and sequence counters
    /// travel in one frame; the table records the new owner at epoch + 1 at once, so anything that
    /// arrives here for those IDs afterwards is forwarded behind the hand-off (FIFO link).
    pub(crate) fn hand_off(&mut self, ranges: &[IdRange], to: HostId, bootstrap: bool) {
        if self.recovery.is_some() {
            // A crash recovery is taking a census of owners: IDs stay put until it ends.
            self.deferred.push((ranges.to_vec(), to, bootstrap));
            return;
        }
        let mut pieces = Vec::new();
        let mut data = Vec::new();
        for r in ranges {
            for p in self.owned.remove(*r) {
                data.push(self.data.pack(p.range));
                let moved = Piece {
                    range: p.range,
                    // Received epochs are at most MAX_EPOCH: the move cannot saturate.
                    epoch: p.epoch.saturating_add(1),
                };
                self.table.merge(Entry {
                    range: p.range,
                    owner: to,
                    epoch: moved.epoch,
                });
                pieces.push(moved);
            }
        }
        if pieces.is_empty() && !bootstrap {
            return;
        }
        let mut moving = Ownership::new();
        for p in &pieces {
            moving.insert(*p);
        }
        let (inbox, kept): (Vec<Delivery>, Vec<Delivery>) =
            self.inbox.drain(..).partition(|d| moving.owns(d.id));
        self.inbox = kept.into();
        let early_keys: Vec<_> = self
            .early
            .keys()
            .filter(|k| moving.owns(k.0))
            .copied()
            .collect();
        let early = early_keys
            .iter()
            .filter_map(|k| self.early.remove(k))
            .collect();
        let seq_keys: Vec<_> = self
            .next_seq
            .keys()
            .filter(|k| moving.owns(k.0))
            .copied()
            .collect();
        let next_seq = seq_keys
            .iter()
            .filter_map(|k| self.next_seq.remove(k).map(|n| (k.0, k.1, n)))
            .collect();
        let resync = pieces
            .iter()
            .flat_map(|p| self.resync.within(p.range))
            .collect();
        let floored_keys: Vec<(Id, HostId)> = self
            .floored
            .iter()
            .filter(|k| moving.owns(k.0))
            .copied()
            .collect();
        for k in &floored_keys {
            self.floored.remove(k);
        }
        let bootstrap = bootstrap.then(|| Bootstrap {
            table: self.table.entries(),
            coordinator: self.coordinator,
            gen: self.gen,
            members: self.members.iter().copied().collect(),
            departed: self.departed.iter().copied().collect(),
            crashed: self.crashed.iter().copied().collect(),
        });
        self.emit(
            to,
            Body::Handoff(Handoff {
                pieces,
                data,
                inbox,
                early,
                next_seq,
                bootstrap,
                resync,
                floored: floored_keys,
            }),
        );
    }

    pub(crate) fn receive_handoff(&mut self, from: HostId, h: Handoff) {
        let valid = h.pieces.len() == h.data.len()
            && h.pieces.iter().all(|p| self.check_range(p.range).is_ok())
            && h.inbox
                .iter()
                .chain(&h.early)
                .all(|d| d.id < self.cfg.space)
            && h.next_seq.iter().all(|&(id, _, _)| id < self.cfg.space)
            && h.resync.iter().all(|r| self.check_range(*r).is_ok());
        if !valid {
            self.reject(from, "malformed hand-off");
            return;
        }
        if let Some(b) = &h.bootstrap {
            if self.phase == Phase::Joining {
                match crate::protocol::table::RoutingTable::from_entries(self.cfg.space, &b.table) {
                    Some(t) => self.table = t,
                    None => {
                        self.reject(from, "bootstrap table does not cover the space");
                        return;
                    }
                }
                // A joiner that took part in a recovery may already know a newer coordinator.
                if (b.gen, std::cmp::Reverse(b.coordinator))
                    > (self.gen, std::cmp::Reverse(self.coordinator))
                    || self.coordinator == self.me
                {
                    self.coordinator = b.coordinator;
                    self.gen = b.gen;
                }
                self.members.extend(b.members.iter().copied());
                self.members.insert(self.me);
                self.departed.extend(b.departed.iter().copied());
                self.gone.extend(b.departed.iter().copied());
                self.crashed.extend(b.crashed.iter().copied());
                self.gone.extend(b.crashed.iter().copied());
                self.phase = Phase::Active;
                self.emit(self.coordinator, Body::JoinDone { joiner: self.me });
            } else {
                // A second donation (re-sent after a crash): confirm again, idempotently; the
                // first confirmation may have gone to a coordinator that crashed.
                self.emit(self.coordinator, Body::JoinDone { joiner: self.me });
            }
        }
        for (p, bytes) in h.pieces.iter().zip(&h.data) {
            if !self.owned.insert(*p) {
                self.stats.overlaps += 1;
                tracing::error!(me = %self.me, range = %p.range, "hand-off overlaps owned IDs");
                continue;
            }
            if let Err(e) = self.data.unpack(p.range, bytes) {
                tracing::error!(me = %self.me, range = %p.range, error = %e, "application data rejected");
            }
            self.table.merge(Entry {
                range: p.range,
                owner: self.me,
                epoch: p.epoch,
            });
            self.held.insert(p.range);
        }
        for r in &h.resync {
            self.resync.insert(*r);
        }
        self.floored
            .extend(h.floored.iter().filter(|k| k.0 < self.cfg.space).copied());
        self.inbox.extend(h.inbox);
        for (id, origin, n) in h.next_seq {
            self.next_seq.insert((id, origin), n);
        }
        let mut keys: Vec<(Id, HostId)> = Vec::new();
        for d in h.early {
            keys.push((d.id, d.from));
            self.early.insert((d.id, d.from, d.seq), d);
        }
        for (id, origin) in keys {
            self.drain_early(id, origin);
        }
        self.retry_parked();
        if self.phase == Phase::Draining {
            // A hand-off sent to us before its giver knew we were leaving: pass it on and tell
            // every member the new facts (another Departing round).
            self.hand_off_all_to_heirs();
            self.start_departing_round();
        }
    }

    fn drain_early(&mut self, id: Id, origin: HostId) {
        let expected = self.next_seq.get(&(id, origin)).copied().unwrap_or(0);
        if let Some(d) = self.early.remove(&(id, origin, expected)) {
            self.accept(d);
        }
    }

    /// The coordinator asked the owner of `id` (us) to give part of its IDs to `joiner`.
    pub(crate) fn on_donate(&mut self, id: Id, joiner: HostId, tries: u32) {
        if self.departed.contains(&joiner) || self.crashed.contains(&joiner) {
            return;
        }
        let ranges: Vec<IdRange> = self.owned.pieces().iter().map(|p| p.range).collect();
        let give = if matches!(self.phase, Phase::Active | Phase::LeaveRequested) {
            self.data.donate(&ranges)
        } else {
            Vec::new()
        };
        let giving: u64 = give.iter().map(IdRange::len).sum();
        if giving == 0 && tries < self.cfg.donate_tries {
            // Too little to split here: ask the owner of another random ID.
            let next = self.next_rand() % self.cfg.space;
            let _ = id;
            self.route_new(
                next,
                RoutedKind::Donate {
                    joiner,
                    tries: tries + 1,
                },
            );
            return;
        }
        if giving == 0 && tries < self.cfg.donate_tries + 4 {
            // Random picks keep failing: go to the largest range this machine knows of.
            let biggest = self
                .table
                .entries()
                .into_iter()
                .filter(|e| e.owner != self.me)
                .max_by_key(|e| e.range.len());
            if let Some(e) = biggest {
                self.route_new(
                    e.range.start,
                    RoutedKind::Donate {
                        joiner,
                        tries: tries + 1,
                    },
                );
                return;
            }
        }
        // Either a real share, or (after all tries) an empty one: the joiner still gets the
        // routing table and becomes a member without IDs.
        self.members.insert(joiner);
        self.hand_off(&give, joiner, true);
    }

    /// Routes a fresh protocol message issued by this machine.
    pub(crate) fn route_new(&mut self, id: Id, kind: RoutedKind) {
        self.route(Routed {
            id,
            origin: self.me,
            e0: 0,
            believed: 0,
            hops: 0,
            kind,
        });
    }

    /// We own `id`; `requester` wants `range` (from `id` on, the part before was done).
    pub(crate) fn on_assume(&mut self, id: Id, range: IdRange, requester: HostId) {
        let rest = IdRange::new(id, range.end);
        if requester != self.me {
            if self.departed.contains(&requester) || self.crashed.contains(&requester) {
                tracing::warn!(me = %self.me, %requester, "assume from a departed machine ignored");
                return;
            }
            self.hand_off(&[rest], requester, false);
        }
        let next = self
            .table
            .entries_in(rest)
            .into_iter()
            .find(|e| e.owner != requester);
        if let Some(e) = next {
            self.route_new(
                e.range.start.max(id),
                RoutedKind::Assume { range, requester },
            );
        }
    }

    /// ph_assume: asks the owners of `range` to hand it (with its data) to this machine.
    /// Completion shows in [`Node::owns`]; the runtime's `assume` waits for it.
    pub fn assume(&mut self, range: IdRange) -> Result<(), PhoenixError> {
        self.check_range(range)?;
        self.require_active()?;
        self.route_new(
            range.start,
            RoutedKind::Assume {
                range,
                requester: self.me,
            },
        );
        self.settle();
        Ok(())
    }

    /// ph_release: gives the owned part of `range` to the owners of the neighbouring IDs.
    pub fn release(&mut self, range: IdRange) -> Result<(), PhoenixError> {
        self.check_range(range)?;
        self.require_active()?;
        for p in self.owned.pieces() {
            if let Some(part) = p.range.intersect(&range) {
                let heir = self
                    .neighbour_heir(part, None)
                    .ok_or(PhoenixError::NoHeir)?;
                self.hand_off(&[part], heir, false);
            }
        }
        self.settle();
        Ok(())
    }

    /// Gives the owned part of `range` to `to` (used for load balancing).
    pub fn release_to(&mut self, range: IdRange, to: HostId) -> Result<(), PhoenixError> {
        self.check_range(range)?;
        self.require_active()?;
        if to == self.me || self.departed.contains(&to) || self.crashed.contains(&to) {
            return Err(PhoenixError::NotMember(to));
        }
        self.hand_off(&[range], to, false);
        self.settle();
        Ok(())
    }

    fn require_active(&self) -> Result<(), PhoenixError> {
        match self.phase {
            Phase::Active | Phase::LeaveRequested => Ok(()),
            Phase::Joining => Err(PhoenixError::NotJoined),
            Phase::Draining | Phase::Departed => Err(PhoenixError::Leaving),
        }
    }

    /// An heir for `r`: the owner of the ID just below, else just above, else any other owner;
    /// restricted to `among` when given. Never this machine or a departed one.
    pub(crate) fn neighbour_heir(&self, r: IdRange, among: Option<&[HostId]>) -> Option<HostId> {
        let ok = |h: HostId| {
            h != self.me
                && !self.departed.contains(&h)
                && !self.crashed.contains(&h)
                && among.is_none_or(|m| m.contains(&h))
        };
        let mut candidates = Vec::new();
        if r.start > 0 {
            candidates.push(self.table.lookup(r.start - 1).owner);
        }
        if r.end < self.cfg.space {
            candidates.push(self.table.lookup(r.end).owner);
        }
        if let Some(h) = candidates.into_iter().find(|&h| ok(h)) {
            return Some(h);
        }
        if let Some(m) = among {
            let live: Vec<HostId> = m.iter().copied().filter(|&h| ok(h)).collect();
            return (!live.is_empty()).then(|| live[(r.start % live.len() as u64) as usize]);
        }
        self.table
            .entries()
            .into_iter()
            .map(|e| e.owner)
            .find(|&h| ok(h))
    }
}
