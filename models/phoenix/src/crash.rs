//! Crash recovery: a machine that stops without leaving.
//!
//! Detection is outside the protocol: a failure detector or the application calls
//! [`Node::report_crash`] on any member, which tells the coordinator. The coordinator starts the
//! recovery at once (a join or leave in progress may be waiting on the crashed machine; joins and
//! leaves not yet started wait until the recovery ends) and runs it in three steps:
//! 1. `CrashBegin` to every live member. From then on a member drops every frame from the crashed
//!    machine (a late hand-off from it must not resurrect IDs), never sends to it (messages for its
//!    IDs are parked), and *freezes* ID movement: hand-offs, donations and assumes it would make are
//!    postponed. It sends a `CrashFlush` marker to every other member.
//! 2. Once a member has the markers of all others, every hand-off made before recovery has landed
//!    (links are FIFO, markers follow them), and none is in flight: it sends the coordinator its
//!    `Census` (owned pieces, highest epoch it knows).
//! 3. The owned pieces of all live members are the whole truth; the IDs nobody owns are the crashed
//!    machine's (and any hand-off that was on its way to it). The coordinator gives each such range
//!    to the owner of the neighbouring ID at an epoch above every epoch any member knows, and sends
//!    the complete map in `Reclaim`. Members merge it (no fact names the crashed machine any more),
//!    unfreeze, run the postponed hand-offs and re-route parked messages to the new owners. A join
//!    in progress gets a fresh donation request (the first may have died with the machine).
//!
//! A crash during a recovery, or a member leaving before it heard of it, restarts the recovery as a
//! new round without that machine; stale markers and census replies of older rounds are ignored.
//!
//! What the application sees: the reclaimed ranges appear in [`Node::take_lost`] and
//! [`IdData::lost`] is called for them — their data died with the machine and the application may
//! restore it from its own checkpoint (the ray tracer re-renders the tiles). Messages that were in
//! the crashed machine or on a link to it are lost (Phoenix does not retransmit); messages parked
//! elsewhere are delivered to the new owner. Delivery to a reclaimed ID resumes at the first message
//! per sender that arrives, so it stays at-most-once and in order per (sender, ID).
//!
//! Cost: the flush is all-to-all (n² small frames) and the map is sent to every member; fine for a
//! lab cluster, not tuned for 1000 machines. The coordinator itself must not crash, and detection
//! must be accurate (a machine wrongly declared crashed would keep serving IDs now owned by others).

use std::collections::{BTreeMap, BTreeSet};

use gridbed_runtime::HostId;

use crate::data::IdData;
use crate::ids::{Epoch, IdRange, Piece};
use crate::membership::Change;
use crate::node::{Node, Phase, PhoenixError};
use crate::table::Entry;
use crate::wire::Body;

/// A member's part in a recovery in progress.
#[derive(Debug)]
pub(crate) struct Recovery {
    round: u32,
    /// Where the census goes (a joiner may not know the coordinator yet).
    coordinator: HostId,
    members: Vec<HostId>,
    census_sent: bool,
}

/// The coordinator's collection of census replies for one round.
#[derive(Debug)]
pub(crate) struct CensusState {
    round: u32,
    members: Vec<HostId>,
    awaiting: BTreeSet<HostId>,
    owned: Vec<Entry>,
    max_epoch: Epoch,
}

impl<D: IdData> Node<D> {
    /// Declares `host` crashed (from a failure detector or the application; it must really have
    /// stopped: fail-stop). Recovery runs in the background; [`Node::recovering`] is true on a
    /// member while its ID movement is frozen.
    pub fn report_crash(&mut self, host: HostId) -> Result<(), PhoenixError> {
        if host == self.me || host == self.coordinator {
            return Err(PhoenixError::CannotReclaim(host));
        }
        match self.phase {
            Phase::Joining => return Err(PhoenixError::NotJoined),
            Phase::Departed => return Err(PhoenixError::Leaving),
            _ => {}
        }
        self.emit(self.coordinator, Body::Suspect { host });
        self.settle();
        Ok(())
    }

    /// Whether a crash recovery currently freezes ID movement here.
    pub fn recovering(&self) -> bool {
        self.recovery.is_some()
    }

    /// (recovery round, range) for each range this machine was given after a crash without its
    /// data; each is reported once.
    pub fn take_lost(&mut self) -> Vec<(u32, IdRange)> {
        std::mem::take(&mut self.lost)
    }

    /// Machines declared crashed so far.
    pub fn crashed(&self) -> Vec<HostId> {
        self.crashed.iter().copied().collect()
    }

    pub(crate) fn on_suspect(&mut self, host: HostId) {
        let Some(co) = self.coord.as_mut() else {
            self.reject(host, "crash report to a machine that does not coordinate");
            return;
        };
        if host == self.me {
            return;
        }
        co.queue
            .retain(|c| !matches!(c, Change::Join(h) | Change::Leave(h) if *h == host));
        if !co.members.contains(&host) {
            // Not a member (yet): nothing to reclaim, but it must never become one.
            self.crashed.insert(host);
            return;
        }
        // A change the crashed machine itself was in will never finish: drop it.
        if matches!(co.busy, Some(Change::Join(h) | Change::Leave(h)) if h == host) {
            co.busy = None;
        }
        // Recovery starts at once, even during a join or leave (which may wait on the crashed
        // machine); a crash during a recovery starts a new round that supersedes it.
        self.begin_recovery(Some(host));
    }

    /// Coordinator: if the recovery in progress waits for `gone`'s census, restarts it without.
    pub(crate) fn restart_recovery_without(&mut self, gone: HostId) {
        let waits = self
            .coord
            .as_ref()
            .and_then(|c| c.census.as_ref())
            .is_some_and(|st| st.members.contains(&gone));
        if waits {
            self.begin_recovery(None);
        }
    }

    /// Coordinator: starts a recovery round for `crashed` (its IDs and those of any machine whose
    /// recovery this round supersedes).
    pub(crate) fn begin_recovery(&mut self, crashed: Option<HostId>) {
        let Some(co) = self.coord.as_mut() else {
            return;
        };
        if let Some(x) = crashed {
            co.members.remove(&x);
        }
        co.rounds += 1;
        let round = co.rounds;
        let members: Vec<HostId> = co.members.iter().copied().collect();
        co.census = Some(CensusState {
            round,
            members: members.clone(),
            awaiting: members.iter().copied().collect(),
            owned: Vec::new(),
            max_epoch: 0,
        });
        for m in members.clone() {
            self.emit(
                m,
                Body::CrashBegin {
                    round,
                    crashed,
                    members: members.clone(),
                },
            );
        }
    }

    pub(crate) fn on_crash_begin(
        &mut self,
        from: HostId,
        round: u32,
        crashed: Option<HostId>,
        members: Vec<HostId>,
    ) {
        if crashed == Some(self.me) || self.recovery.as_ref().is_some_and(|r| r.round >= round) {
            self.reject(from, "crash notice about this machine, or of an old round");
            return;
        }
        if let Some(x) = crashed {
            self.crashed.insert(x);
            // Nothing more will come from it: a leave waiting for its last frames may complete.
            self.gone.insert(x);
            if let Some(st) = self.leave.as_mut() {
                st.forget(x);
            }
        }
        for &m in &members {
            if m != self.me {
                self.emit(m, Body::CrashFlush { round });
            }
        }
        self.recovery = Some(Recovery {
            round,
            coordinator: from,
            members,
            census_sent: false,
        });
        self.maybe_send_census();
    }

    pub(crate) fn on_crash_flush(&mut self, from: HostId, round: u32) {
        self.flush_seen.entry(round).or_default().insert(from);
        self.maybe_send_census();
    }

    /// Sends the census once every other member's link is flushed.
    fn maybe_send_census(&mut self) {
        let Some(r) = self.recovery.as_ref() else {
            return;
        };
        let seen = self.flush_seen.get(&r.round);
        let all = r
            .members
            .iter()
            .all(|m| *m == self.me || seen.is_some_and(|s| s.contains(m)));
        if !all || r.census_sent {
            return;
        }
        let (round, coordinator) = (r.round, r.coordinator);
        let max_epoch = self
            .table
            .entries()
            .iter()
            .map(|e| e.epoch)
            .chain(self.owned.pieces().iter().map(|p| p.epoch))
            .max()
            .unwrap_or(0);
        let owned = self.owned.pieces();
        if let Some(r) = self.recovery.as_mut() {
            r.census_sent = true;
        }
        self.flush_seen.retain(|&k, _| k > round);
        self.emit(
            coordinator,
            Body::Census {
                round,
                owned,
                max_epoch,
            },
        );
    }

    pub(crate) fn on_census(
        &mut self,
        from: HostId,
        round: u32,
        owned: Vec<Piece>,
        max_epoch: Epoch,
    ) {
        if owned.iter().any(|p| self.check_range(p.range).is_err()) {
            self.reject(from, "census outside the space");
            return;
        }
        let space = self.cfg.space;
        let Some(st) = self.coord.as_mut().and_then(|c| c.census.as_mut()) else {
            self.reject(from, "census without a recovery");
            return;
        };
        if st.round != round || !st.awaiting.remove(&from) {
            // The census of a superseded round (a second crash restarted the recovery).
            return;
        }
        st.owned.extend(owned.iter().map(|p| Entry {
            range: p.range,
            owner: from,
            epoch: p.epoch,
        }));
        st.max_epoch = st.max_epoch.max(max_epoch);
        if !st.awaiting.is_empty() {
            return;
        }
        let (map, reclaimed) = reclaim_map(space, &st.owned, st.max_epoch + 1, self.me);
        let members: Vec<HostId> = self
            .coord
            .as_ref()
            .map(|c| c.members.iter().copied().collect())
            .unwrap_or_default();
        for m in members {
            self.emit(
                m,
                Body::Reclaim {
                    round,
                    map: map.clone(),
                    reclaimed: reclaimed.clone(),
                },
            );
        }
    }

    pub(crate) fn on_reclaim(
        &mut self,
        from: HostId,
        round: u32,
        map: Vec<Entry>,
        reclaimed: Vec<IdRange>,
    ) {
        let valid = map
            .iter()
            .map(|e| e.range)
            .chain(reclaimed.iter().copied())
            .all(|r| self.check_range(r).is_ok());
        let expected = self
            .recovery
            .as_ref()
            .map_or(self.coordinator, |r| r.coordinator);
        if !valid || from != expected {
            self.reject(from, "malformed or unauthorised reclaim");
            return;
        }
        self.table.merge_all(&map);
        for r in reclaimed {
            // The grant itself, not the table: the heir may already have passed the range on.
            let Some(grant) = map.iter().find(|e| e.range == r && e.owner == self.me) else {
                continue;
            };
            let piece = Piece {
                range: r,
                epoch: grant.epoch,
            };
            if !self.owned.insert(piece) {
                self.stats.overlaps += 1;
                tracing::error!(me = %self.me, range = %r, "reclaimed range overlaps owned IDs");
                continue;
            }
            self.held.insert(r);
            self.resync.insert(r);
            self.data.lost(r);
            self.lost.push((round, r));
            tracing::warn!(me = %self.me, range = %r, round, "reclaimed IDs of a crashed machine; their data is lost");
        }
        if self.recovery.as_ref().is_some_and(|r| r.round == round) {
            self.recovery = None;
        }
        let mut rejoin = None;
        if let Some(co) = self.coord.as_mut() {
            if co.census.as_ref().is_some_and(|c| c.round == round) {
                co.census = None;
                if let Some(Change::Join(j)) = co.busy {
                    rejoin = Some(j);
                }
            }
        }
        if let Some(j) = rejoin {
            // The donation request may have died with the crashed machine: ask again. A second
            // donation to a joiner that already got one only gives it more IDs.
            let target = self.next_rand() % self.cfg.space;
            self.route_new(
                target,
                crate::wire::RoutedKind::Donate {
                    joiner: j,
                    tries: 0,
                },
            );
        }
        for (ranges, to, bootstrap) in std::mem::take(&mut self.deferred) {
            // A target that crashed or left meanwhile: keep the IDs (a leaver re-hands them below).
            if !self.crashed.contains(&to) && !self.departed.contains(&to) {
                self.hand_off(&ranges, to, bootstrap);
            }
        }
        self.retry_parked();
        if self.phase == Phase::Draining {
            // The reclaim map names this leaver for whatever it still held (hand-offs postponed
            // by the freeze, reclaimed neighbours): hand those on and announce it once more.
            if !self.owned.is_empty() {
                self.hand_off_all_to_heirs();
            }
            self.start_departing_round();
        }
        self.check_departed();
        self.pump();
    }
}

/// The ownership map after a crash: every census piece, plus the gaps (the crashed machine's IDs),
/// each given to the owner of the ID just below it (else just above, else `fallback`) at `epoch`.
fn reclaim_map(
    space: u64,
    owned: &[Entry],
    epoch: Epoch,
    fallback: HostId,
) -> (Vec<Entry>, Vec<IdRange>) {
    let by_start: BTreeMap<u64, Entry> = owned.iter().map(|e| (e.range.start, *e)).collect();
    let mut map = Vec::new();
    let mut gaps = Vec::new();
    let mut next = 0;
    for e in by_start.values() {
        if e.range.start > next {
            gaps.push(IdRange::new(next, e.range.start));
        }
        next = next.max(e.range.end);
        map.push(*e);
    }
    if next < space {
        gaps.push(IdRange::new(next, space));
    }
    let owner_at = |id: u64| {
        by_start
            .range(..=id)
            .next_back()
            .map(|(_, e)| *e)
            .filter(|e| e.range.contains(id))
            .map(|e| e.owner)
    };
    for g in &gaps {
        let heir = (g.start > 0)
            .then(|| owner_at(g.start - 1))
            .flatten()
            .or_else(|| owner_at(g.end))
            .unwrap_or(fallback);
        map.push(Entry {
            range: *g,
            owner: heir,
            epoch,
        });
    }
    (map, gaps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_go_to_the_owner_below_or_above() {
        let e = |s, end, o| Entry {
            range: IdRange::new(s, end),
            owner: HostId(o),
            epoch: 1,
        };
        let (map, gaps) = reclaim_map(100, &[e(10, 40, 1), e(60, 90, 2)], 7, HostId(0));
        assert_eq!(
            gaps,
            vec![
                IdRange::new(0, 10),
                IdRange::new(40, 60),
                IdRange::new(90, 100)
            ]
        );
        let owner = |s| map.iter().find(|x| x.range.start == s).unwrap();
        assert_eq!((owner(0).owner, owner(0).epoch), (HostId(1), 7));
        assert_eq!(owner(40).owner, HostId(1));
        assert_eq!(owner(90).owner, HostId(2));
        let (map, gaps) = reclaim_map(50, &[], 3, HostId(0));
        assert_eq!(gaps, vec![IdRange::new(0, 50)]);
        assert_eq!(map[0].owner, HostId(0));
    }
}
