//! Crash recovery: a machine that stops without leaving.
//!
//! Detection is outside the protocol: a failure detector or the application calls
//! [`Node::report_crash`] on any member, which tells the coordinator (a member that later learns of
//! a new coordinator repeats its unconfirmed reports to it, since the old one may have died with
//! them). The coordinator starts the recovery at once (a join or leave in progress may be waiting
//! on the crashed machine; joins and leaves not yet started wait until the recovery ends) and runs
//! it in three steps:
//! 1. `CrashBegin` to every live member. From then on a member drops every frame from the crashed
//!    machine (a late hand-off from it must not resurrect IDs), never sends to it (messages for its
//!    IDs are parked), and *freezes* ID movement: hand-offs, donations and assumes it would make are
//!    postponed. It sends a `CrashFlush` marker to every other member.
//! 2. Once a member has the markers of all others, every hand-off made before recovery has landed
//!    (links are FIFO, markers follow them), and none is in flight: it sends the coordinator its
//!    `Census` (owned pieces, highest epoch it knows, its life stage, the members it knows of).
//! 3. The owned pieces of all live members are the whole truth; the IDs nobody owns are the crashed
//!    machine's (and any hand-off that was on its way to it). The coordinator gives each such range
//!    to the owner of the neighbouring ID at an epoch above every epoch any member knows, and sends
//!    the complete map in `Reclaim`. Members merge it (no fact names the crashed machine any more),
//!    unfreeze, run the postponed hand-offs and re-route parked messages to the new owners.
//!    The coordinator then brings joins and leaves in line with the reported life stages: a joiner
//!    still joining gets a fresh donation request, a join whose `JoinDone` was lost is finished, a
//!    leave whose `LeaveGo` was lost is granted again, a lost leave request is queued again.
//!
//! A crash during a recovery, or a member leaving before it heard of it, restarts the recovery as a
//! new round without that machine; stale markers and census replies of older rounds are ignored.
//! A census naming a member the round did not ask restarts it with that member.
//!
//! **Coordinator crash.** A report about the coordinator goes to the member holding its replica
//! (see `membership.rs`): each machine that gets it without holding the replica passes it to every
//! member it knows (once per crash), so the replica holder learns it. The holder takes the role
//! (generation + 1) with the replicated state merged with its own view, and runs the recovery of
//! the crashed coordinator as above; the census rebuilds what the replica missed, and the
//! reconciliation completes or restarts the join or leave that was in progress. Rounds are ordered
//! by (generation, lower coordinator first, round), and round numbers of generation g start at
//! g·2¹⁶, so a successor's rounds supersede its predecessor's; a member that knows its coordinator
//! crashed accepts the next coordinator's rounds. Only a replica holder takes over: a machine
//! without the replica may not know every member, and a census missing a member that holds IDs
//! would reclaim them while it still owns them.
//!
//! **Messages lost in a crash** (inside the machine, on a link to it, or forwarded through it):
//! after a recovery every member sends, for each ID it ever sent to, a `Floor` with its next
//! sequence number. The owner delivers the held later messages in order and stops waiting for the
//! missing ones; an earlier one that still turns up (a straggler parked elsewhere) is dropped. So no
//! receiver waits forever behind a lost sequence number, delivery stays at-most-once and in order
//! per (sender, ID), and crash-free runs send no floors (exactly-once is untouched).
//!
//! What the application sees: the reclaimed ranges appear in [`Node::take_lost`] and
//! [`IdData::lost`] is called for them — their data died with the machine and the application may
//! restore it from its own checkpoint (the ray tracer re-renders the tiles). Messages parked
//! elsewhere are delivered to the new owner. Delivery to a reclaimed ID resumes at the first message
//! per sender that arrives.
//!
//! Assumptions and limits:
//! - Detection must be accurate (fail-stop): a machine wrongly declared crashed would keep serving
//!   IDs now owned by others. It must also be eventually complete: every crash is reported again
//!   until the coordinator has handled it (a report can die with its reporter).
//! - The coordinator and its replica holder must not both crash before the coordinator has learned
//!   of the first crash and re-replicated (one crash among {coordinator, deputy} at a time):
//!   otherwise nobody can take over and recovery stalls (safety is kept: nothing is reclaimed).
//!   The same holds for a coordinator that was just handed the role: its predecessor keeps the
//!   handed state and takes the role back if the successor crashes first.
//! - If a joiner with a host ID below the deputy's joins while an older replica survives on a
//!   former deputy, both may try to take over; members follow the lower one. Not observed in the
//!   suites, but not excluded by construction.
//! - A machine that left is asked to answer a later round's `CrashBegin` with `LeaveComplete` if
//!   a successor never saw its departure; a stopped process cannot, so in real mode a leave whose
//!   completion died with the coordinator relies on the successor having seen the leaver's `Gone`.
//! - Cost: the flush is all-to-all (n² small frames), the map goes to every member, a coordinator
//!   crash is spread by every member once (n² frames), and every member sends one floor per ID it
//!   ever sent to; fine for a lab cluster, not tuned for 1000 machines.

use std::collections::{BTreeMap, BTreeSet};

use gridbed_runtime::HostId;

use crate::protocol::data::IdData;
use crate::protocol::ids::{Epoch, IdRange, Piece};
use crate::protocol::membership::Change;
use crate::protocol::node::{Node, Phase, PhoenixError};
use crate::protocol::table::Entry;
use crate::wire::{Body, MemberStatus, RoutedKind};

/// A member's part in a recovery in progress.
#[derive(Debug)]
pub(crate) struct Recovery {
    /// (coordinator generation, round): a later pair supersedes.
    gen: u32,
    round: u32,
    /// Where the census goes (a joiner may not know the coordinator yet).
    coordinator: HostId,
    members: Vec<HostId>,
    census_sent: bool,
}

impl Recovery {
    pub(crate) fn coordinator(&self) -> HostId {
        self.coordinator
    }
}

/// The coordinator's collection of census replies for one round.
#[derive(Debug)]
pub(crate) struct CensusState {
    round: u32,
    members: Vec<HostId>,
    awaiting: BTreeSet<HostId>,
    owned: Vec<Entry>,
    max_epoch: Epoch,
    /// Each member's life stage, to rebuild joins and leaves the coordinator lost track of.
    status: BTreeMap<HostId, MemberStatus>,
    /// Members someone knows of (a successor's member set may lack recent joiners).
    known: BTreeSet<HostId>,
}

impl<D: IdData> Node<D> {
    /// Declares `host` crashed (from a failure detector or the application; it must really have
    /// stopped: fail-stop). Recovery runs in the background; [`Node::recovering`] is true on a
    /// member while its ID movement is frozen.
    /// The report goes to the coordinator; if the crashed machine *is* the coordinator, to its
    /// successor: the lowest live member this machine knows of.
    pub fn report_crash(&mut self, host: HostId) -> Result<(), PhoenixError> {
        if host == self.me {
            return Err(PhoenixError::CannotReclaim(host));
        }
        match self.phase {
            Phase::Joining => return Err(PhoenixError::NotJoined),
            Phase::Departed => return Err(PhoenixError::Leaving),
            _ => {}
        }
        self.emit(self.me, Body::Suspect { host });
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
        if host == self.me || self.crashed.contains(&host) {
            return;
        }
        if let Some(st) = self.leave.as_mut() {
            // Detection is accurate (fail-stop): a crashed machine will send nothing more, so a
            // leaver need not wait for its farewell (nor for a recovery run by a coordinator
            // that may itself be gone).
            st.forget(host);
        }
        if self.coord.is_none() {
            self.suspected.insert(host);
            if !self.suspected.contains(&self.coordinator) {
                if self.coordinator != self.me {
                    self.emit(self.coordinator, Body::Suspect { host });
                }
                return;
            }
            // The coordinator itself crashed. Its successor is the machine holding its replica
            // (its deputy: the lowest live member). Only that machine may take over: one without
            // the replica may not know every member, and a census that misses a member would
            // reclaim IDs it still holds. A draining deputy passes the replica on.
            let skip: Vec<HostId> = self.suspected.iter().copied().collect();
            let draining = self.phase == Phase::Draining;
            let replica = self.synced.as_ref().is_some_and(|s| s.gen == self.gen);
            if !replica || draining {
                let next = self.live_member_below(None, &skip);
                // Spread the news (once per crashed machine) so the replica holder learns it.
                let coordinator = self.coordinator;
                let targets: Vec<HostId> = self
                    .members
                    .iter()
                    .copied()
                    .filter(|m| {
                        *m != self.me
                            && !skip.contains(m)
                            && !self.crashed.contains(m)
                            && !self.gone.contains(m)
                    })
                    .collect();
                for h in skip {
                    if self.flooded.insert((coordinator, h)) {
                        for &t in &targets {
                            self.emit(t, Body::Suspect { host: h });
                        }
                    }
                }
                if let (true, Some(s), Some(state)) = (draining, next, self.synced.clone()) {
                    // Behind the crash reports on the same link: the receiver then takes over.
                    self.emit(
                        s,
                        Body::CoordState {
                            state,
                            take_over: false,
                        },
                    );
                }
                return;
            }
            self.take_over_after_crash();
            let rest: Vec<HostId> = std::mem::take(&mut self.suspected).into_iter().collect();
            for h in rest {
                self.on_suspect(h);
            }
            return;
        }
        let Some(co) = self.coord.as_mut() else {
            return;
        };
        co.queue
            .retain(|c| !matches!(c, Change::Join(h) | Change::Leave(h) if *h == host));
        if !co.members.contains(&host) {
            // Not a member as far as this coordinator knows: it must never become one. It may
            // still matter to others (a member admitted by a crashed predecessor that a leaver
            // waits for, or a rival successor some members follow), so a round tells everyone.
            self.crashed.insert(host);
            self.begin_recovery(Some(host));
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
            co.queue
                .retain(|c| !matches!(c, Change::Join(h) | Change::Leave(h) if *h == x));
            if matches!(co.busy, Some(Change::Join(h) | Change::Leave(h)) if h == x) {
                co.busy = None;
            }
        }
        // Round numbers grow across coordinators: a generation starts its rounds at gen << 16,
        // above any round a crashed predecessor may have started unseen.
        // Received rounds and generations are bounded (`wire::check_counters`): no overflow.
        co.rounds = co
            .rounds
            .max(self.rounds_seen)
            .max(self.gen << 16)
            .saturating_add(1);
        let round = co.rounds;
        let members: Vec<HostId> = co.members.iter().copied().collect();
        co.census = Some(CensusState {
            round,
            members: members.clone(),
            awaiting: members.iter().copied().collect(),
            owned: Vec::new(),
            max_epoch: 0,
            status: BTreeMap::new(),
            known: BTreeSet::new(),
        });
        let gen = self.gen;
        for m in members.clone() {
            self.emit(
                m,
                Body::CrashBegin {
                    gen,
                    round,
                    crashed,
                    members: members.clone(),
                },
            );
        }
        self.sync_deputy();
    }

    pub(crate) fn on_crash_begin(
        &mut self,
        from: HostId,
        gen: u32,
        round: u32,
        crashed: Option<HostId>,
        members: Vec<HostId>,
    ) {
        if crashed == Some(self.me) {
            self.reject(from, "crash notice about this machine");
            return;
        }
        // Rounds are ordered by (generation, lower coordinator first, round): a successor's
        // rounds supersede its predecessor's; of two rival successors the lower one wins.
        // A coordinator known (or reported) to have crashed has no claim any more.
        let key = |g: u32, c: HostId, r: u32| (g, std::cmp::Reverse(c), r);
        let dead = |c: &HostId| self.suspected.contains(c) || self.crashed.contains(c);
        let leader_dead = dead(&self.coordinator);
        let current = key(self.gen, self.coordinator, 0);
        let superseded = (!leader_dead && key(gen, from, round) < current)
            || self.recovery.as_ref().is_some_and(|r| {
                !dead(&r.coordinator) && key(r.gen, r.coordinator, r.round) >= key(gen, from, round)
            });
        if superseded {
            tracing::debug!(me = %self.me, %from, gen, round, "superseded recovery round ignored");
            return;
        }
        if leader_dead
            || (gen, std::cmp::Reverse(from)) > (self.gen, std::cmp::Reverse(self.coordinator))
        {
            if self.coord.is_some() && from != self.me {
                // A rival successor with a better claim: it rebuilds the state from its census.
                tracing::warn!(me = %self.me, winner = %from, "coordinator role lost to a rival successor");
                self.coord = None;
                self.last_sync = None;
            }
            self.gen = gen;
            self.coordinator = from;
            // A replica from the new coordinator may have overtaken this notice.
            self.synced.take_if(|s| s.gen < gen);
        }
        self.rounds_seen = self.rounds_seen.max(round);
        self.members = members.iter().copied().collect();
        if let Some(x) = crashed {
            self.suspected.remove(&x);
        }
        self.resend_suspicions();
        if let Some(st) = self.leave.as_mut() {
            // The coordinator's member list is exact: a machine missing from it crashed or left
            // (possibly unseen by us, if its crash was handled by a coordinator that died).
            st.retain_members(&members);
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
            if self.crashed.contains(&m) {
                // A crash this coordinator has not heard of (its predecessor's recovery of it
                // died with the predecessor): report it, or this round would wait forever.
                self.emit(from, Body::Suspect { host: m });
            } else if m != self.me {
                self.emit(m, Body::CrashFlush { round });
            }
        }
        self.recovery = Some(Recovery {
            gen,
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
        let status = match self.phase {
            Phase::Joining => MemberStatus::Joining,
            Phase::LeaveRequested => MemberStatus::LeaveRequested,
            Phase::Draining | Phase::Departed => MemberStatus::Draining,
            Phase::Active => MemberStatus::Active,
        };
        let known = self
            .members
            .iter()
            .copied()
            .filter(|m| !self.gone.contains(m) && !self.crashed.contains(m))
            .collect();
        self.emit(
            coordinator,
            Body::Census {
                round,
                owned,
                max_epoch,
                status,
                known,
            },
        );
    }

    pub(crate) fn on_census(
        &mut self,
        from: HostId,
        round: u32,
        owned: Vec<Piece>,
        max_epoch: Epoch,
        status: MemberStatus,
        known: Vec<HostId>,
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
        st.status.insert(from, status);
        st.known.extend(known);
        if !st.awaiting.is_empty() {
            return;
        }
        // A member someone knows of but this round did not ask (a successor's view can miss a
        // recent joiner, which may own IDs): ask again, with it.
        let missing: Vec<HostId> = st
            .known
            .iter()
            .copied()
            .filter(|m| {
                !st.members.contains(m) && !self.gone.contains(m) && !self.crashed.contains(m)
            })
            .collect();
        if !missing.is_empty() {
            if let Some(co) = self.coord.as_mut() {
                co.members.extend(missing);
            }
            self.begin_recovery(None);
            return;
        }
        let Some(st) = self.coord.as_mut().and_then(|c| c.census.as_mut()) else {
            return;
        };
        let (map, reclaimed) =
            reclaim_map(space, &st.owned, st.max_epoch.saturating_add(1), self.me);
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
        let mut status = BTreeMap::new();
        if let Some(co) = self.coord.as_mut() {
            if co.census.as_ref().is_some_and(|c| c.round == round) {
                status = co.census.take().map(|c| c.status).unwrap_or_default();
            }
        }
        self.reconcile(&status);
        for (ranges, to, bootstrap) in std::mem::take(&mut self.deferred) {
            // A target that crashed or left meanwhile: keep the IDs (a leaver re-hands them below).
            if !self.crashed.contains(&to) && !self.departed.contains(&to) {
                self.hand_off(&ranges, to, bootstrap);
            }
        }
        self.retry_parked();
        self.send_floors();
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

impl<D: IdData> Node<D> {
    /// Every member, at the end of a recovery: for each ID it ever sent to, tells the owner not
    /// to wait for its earlier messages (they may have died with the crashed machine, as its
    /// owner or on a forwarding path through it). Sent after this machine's parked messages were
    /// re-routed; a straggler parked elsewhere that arrives after the floor is dropped.
    fn send_floors(&mut self) {
        if matches!(self.phase, Phase::Joining | Phase::Departed) {
            return;
        }
        // Not only reclaimed IDs: a message forwarded through the crashed machine (a stale
        // route) died too, whatever its ID. One floor per ID this machine ever sent to.
        let floors: Vec<(u64, u64)> = self.seq_out.iter().map(|(&id, &n)| (id, n)).collect();
        for (id, upto) in floors {
            self.route_new(id, RoutedKind::Floor { upto });
        }
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
