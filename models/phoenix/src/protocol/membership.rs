//! Joining and leaving, and the coordinator role that orders them.
//!
//! Routing needs no manager, but a leave must be *complete* before the machine disappears: nobody may
//! still hold a fact that routes to it. So membership changes are serialised by a coordinator (at
//! first the lowest initial machine), which only orders them and never sees application traffic:
//! - Join: the joiner asks any member, which forwards to the coordinator. The coordinator admits it
//!   (sends it the member list), replicates the admission to its deputy (below) and, once the deputy
//!   acknowledged, routes a `Donate` to the owner of a random ID, which hands half its IDs (per
//!   `IdData::donate`) and a snapshot of its table to the joiner. The joiner reports `JoinDone`.
//!   A joiner not admitted within `Config::join_timeout` (driven by [`Node::tick`]) re-sends its
//!   request to its next contact (`Start::JoinAny`), doubling the wait up to 8×; the coordinator
//!   ignores a request for a change already queued, in progress, or done (no double admission).
//! - Leave: the leaver asks the coordinator; on `LeaveGo` it hands every piece to an heir (the owner
//!   of a neighbouring ID), then sends its final table to every member (`Departing`). A member merges
//!   it — afterwards none of its facts names the leaver, since the leaver's table holds a newer fact
//!   for everything it ever owned — and answers `Farewell` on the same FIFO link as anything it sent
//!   before. With every farewell in, nothing more can reach the leaver; it reports `LeaveComplete`.
//!   Its last frame to each member is `Gone`, behind anything it forwarded while draining; a later
//!   leaver waits for the `Gone` of every earlier one, so no frame can reach a machine that left.
//!   A hand-off that reaches the leaver meanwhile (sent before its giver merged `Departing`) is passed
//!   on and announced in a new `Departing` round.
//!
//! The coordinator role moves:
//! - Replica: after every change of its state (member set, queue, change in progress, recovery
//!   round counter, crashed machines) the coordinator sends it to its *deputy* (`CoordState`): the
//!   lowest live member that is neither leaving nor being admitted. A donation waits for the
//!   deputy's `CoordAck`, so the replica always names every machine that can hold IDs.
//! - Coordinator leave: its own leave request is queued like any other. When it comes up, the
//!   coordinator tells every member who coordinates now (`NewCoordinator`, generation + 1; on each
//!   link ahead of its later `Departing`, so a member that said farewell already writes to the new
//!   one) and hands its whole state to the successor — the lowest other live member — with its own
//!   leave first in the queue (`CoordState { take_over: true }`). It keeps that state as the new
//!   coordinator's first replica. Frames that still reach it for the coordinator (join and leave
//!   requests, `JoinDone`, `LeaveComplete`, crash reports) are forwarded to the one it knows.
//! - Coordinator crash: see `crash.rs`. The last member cannot leave (`NoHeir`; a leave request
//!   that finds every other member gone is cancelled and the machine stays `Active`).

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use gridbed_runtime::HostId;

use crate::protocol::data::IdData;
use crate::protocol::node::{Node, Phase, PhoenixError};
use crate::protocol::table::Entry;
pub(crate) use crate::wire::Change;
use crate::wire::{Body, CoordSnapshot, RoutedKind};

/// Membership bookkeeping held by the coordinator only.
#[derive(Debug)]
pub(crate) struct Coordinator {
    pub(crate) members: BTreeSet<HostId>,
    pub(crate) queue: VecDeque<Change>,
    pub(crate) busy: Option<Change>,
    /// Census replies of the crash recovery in progress.
    pub(crate) census: Option<crate::protocol::crash::CensusState>,
    /// Crash recovery rounds started so far.
    pub(crate) rounds: u32,
    /// A joiner admitted but not yet offered IDs: the donation waits until the deputy has
    /// acknowledged a replica naming it, so a successor always knows every machine with IDs.
    pub(crate) pending_donation: Option<HostId>,
    /// Members still joining whose donation must be asked for again when their turn comes.
    pub(crate) redonate: BTreeSet<HostId>,
}

impl Coordinator {
    pub(crate) fn new(members: BTreeSet<HostId>) -> Self {
        Coordinator {
            members,
            queue: VecDeque::new(),
            busy: None,
            census: None,
            rounds: 0,
            pending_donation: None,
            redonate: BTreeSet::new(),
        }
    }
    pub(crate) fn backlog(&self) -> usize {
        self.queue.len() + usize::from(self.busy.is_some())
    }
    pub(crate) fn snapshot(&self, gen: u32, crashed: &BTreeSet<HostId>) -> CoordSnapshot {
        CoordSnapshot {
            gen,
            members: self.members.iter().copied().collect(),
            queue: self.queue.iter().copied().collect(),
            busy: self.busy,
            rounds: self.rounds,
            crashed: crashed.iter().copied().collect(),
        }
    }
    pub(crate) fn from_snapshot(s: &CoordSnapshot) -> Self {
        Coordinator {
            members: s.members.iter().copied().collect(),
            queue: s.queue.iter().copied().collect(),
            busy: s.busy,
            census: None,
            rounds: s.rounds,
            pending_donation: None,
            redonate: BTreeSet::new(),
        }
    }
}

/// A leaving machine's progress.
#[derive(Debug)]
pub(crate) struct LeaveState {
    members: Vec<HostId>,
    round: u32,
    awaiting: BTreeSet<HostId>,
}

impl LeaveState {
    /// A crashed member will never say farewell, and must not be an heir.
    pub(crate) fn forget(&mut self, crashed: HostId) {
        self.members.retain(|&m| m != crashed);
        self.awaiting.remove(&crashed);
    }
    /// Keeps only machines that are still members.
    pub(crate) fn retain_members(&mut self, members: &[HostId]) {
        self.members.retain(|m| members.contains(m));
        self.awaiting.retain(|m| members.contains(m));
    }
}

impl<D: IdData> Node<D> {
    /// Starts leaving: the machine keeps serving its IDs until the coordinator lets it go, then hands
    /// them off and drains. Done when [`Node::phase`] is `Departed`.
    /// The coordinator may leave too: when its own leave is next in its queue it hands the role
    /// to a successor (see the module doc), which then serves the leave like any other.
    pub fn leave(&mut self) -> Result<(), PhoenixError> {
        match self.phase {
            Phase::Active => {}
            Phase::Joining => return Err(PhoenixError::NotJoined),
            _ => return Err(PhoenixError::Leaving),
        }
        if self.coord.is_some() && self.live_member_below(None, &[]).is_none() {
            // The last member: nobody to take the role or the IDs.
            return Err(PhoenixError::NoHeir);
        }
        self.phase = Phase::LeaveRequested;
        self.emit(self.coordinator, Body::LeaveReq { leaver: self.me });
        self.settle();
        Ok(())
    }

    pub(crate) fn on_join_req(&mut self, joiner: HostId) {
        if self.coord.is_none() {
            if self.phase == Phase::Joining || self.coordinator == self.me {
                tracing::warn!(me = %self.me, %joiner, "join request to a machine that is not a member");
                return;
            }
            self.emit(self.coordinator, Body::JoinReq { joiner });
            return;
        }
        self.enqueue(Change::Join(joiner));
    }

    /// Passes a frame meant for the coordinator on to the one this machine knows (the role may
    /// have moved since the sender looked). Returns false if this machine coordinates.
    fn pass_to_coordinator(&mut self, body: Body) -> bool {
        if self.coord.is_some() {
            return false;
        }
        if self.coordinator != self.me {
            self.emit(self.coordinator, body);
        }
        true
    }

    pub(crate) fn on_leave_req(&mut self, leaver: HostId) {
        if self.pass_to_coordinator(Body::LeaveReq { leaver }) {
            return;
        }
        self.enqueue(Change::Leave(leaver));
    }

    /// Queues a change once: a re-sent request (join retry, leave re-sent to a successor) is
    /// ignored while the same change is queued or in progress.
    fn enqueue(&mut self, c: Change) {
        if let Some(co) = self.coord.as_mut() {
            let admitted = matches!(c, Change::Join(j) if co.members.contains(&j));
            if !admitted && co.busy != Some(c) && !co.queue.contains(&c) {
                co.queue.push_back(c);
            }
        }
        self.pump();
    }

    /// The lowest member other than this one (and `except`) not known to have left or crashed,
    /// by this machine's view (the coordinator's view is exact).
    pub(crate) fn live_member_below(
        &self,
        except: Option<HostId>,
        also_skip: &[HostId],
    ) -> Option<HostId> {
        let view = self.coord.as_ref().map_or(&self.members, |c| &c.members);
        view.iter().copied().find(|&m| {
            m != self.me
                && Some(m) != except
                && !also_skip.contains(&m)
                && !self.departed.contains(&m)
                && !self.crashed.contains(&m)
        })
    }

    /// Coordinator: replicates its state to its deputy (the lowest other live member, which
    /// becomes the successor if the coordinator crashes) whenever that state changed.
    pub(crate) fn sync_deputy(&mut self) {
        let Some(co) = self.coord.as_ref() else {
            return;
        };
        self.members = co.members.clone();
        let snap = co.snapshot(self.gen, &self.crashed);
        // Never the machine whose join or leave is in progress: a joiner is not known to the
        // others yet, a leaver drops its replica when it starts draining. The deputy otherwise
        // stays put (a former deputy would hold a stale replica): the predecessor that handed
        // over the role, else the lowest live member.
        let busy: Vec<HostId> = match co.busy {
            Some(Change::Join(h) | Change::Leave(h)) => vec![h],
            None => Vec::new(),
        };
        let pinned = self.pinned_deputy.filter(|p| {
            co.members.contains(p)
                && !busy.contains(p)
                && !self.departed.contains(p)
                && !self.crashed.contains(p)
        });
        self.pinned_deputy = pinned;
        let sticky = self.last_sync.as_ref().map(|(d, _)| *d).filter(|d| {
            co.members.contains(d)
                && !busy.contains(d)
                && !self.departed.contains(d)
                && !self.crashed.contains(d)
        });
        let Some(deputy) = pinned
            .or(sticky)
            .or_else(|| self.live_member_below(None, &busy))
        else {
            return;
        };
        if self.last_sync.as_ref() == Some(&(deputy, snap.clone())) {
            return;
        }
        self.last_sync = Some((deputy, snap.clone()));
        self.emit(
            deputy,
            Body::CoordState {
                state: snap,
                take_over: false,
            },
        );
    }

    /// Coordinator leave, step 1: tells every member who coordinates from now on (ahead of the
    /// `Departing` frames on each link) and hands the role's state to the successor, with this
    /// machine's own leave first in its queue.
    fn hand_over(&mut self) {
        let Some(succ) = self.live_member_below(None, &[]) else {
            // Every other member left or crashed meanwhile: nobody can take the role or the
            // IDs. The last member stays; its leave is cancelled rather than left pending.
            tracing::error!(me = %self.me, "last member: leave cancelled");
            if self.phase == Phase::LeaveRequested {
                self.phase = Phase::Active;
            }
            return;
        };
        let Some(mut co) = self.coord.take() else {
            return;
        };
        co.queue.push_front(Change::Leave(self.me));
        self.gen += 1;
        let state = co.snapshot(self.gen, &self.crashed);
        let state_copy = state.clone();
        for &m in &co.members {
            if m != self.me && m != succ && !self.departed.contains(&m) {
                self.emit(
                    m,
                    Body::NewCoordinator {
                        gen: self.gen,
                        coordinator: succ,
                        members: state.members.clone(),
                    },
                );
            }
        }
        self.emit(
            succ,
            Body::CoordState {
                state,
                take_over: true,
            },
        );
        self.members = co.members;
        self.coordinator = succ;
        self.last_sync = None;
        // This machine stays the replica holder (the successor's first deputy) until its own
        // leave is under way: if the successor crashes, it takes the role back.
        self.synced = Some(state_copy);
    }

    pub(crate) fn on_coord_state(&mut self, from: HostId, state: CoordSnapshot, take_over: bool) {
        if !take_over {
            // From the coordinator, or its replica passed on by a draining deputy after the
            // coordinator crashed.
            let passed_on = self.suspected.contains(&self.coordinator)
                || self.crashed.contains(&self.coordinator);
            if state.gen > self.gen && !passed_on {
                // From a newer coordinator whose announcement has not arrived yet.
                self.gen = state.gen;
                self.coordinator = from;
            }
            if (from == self.coordinator || passed_on) && state.gen >= self.gen {
                let busy = state.busy;
                self.synced = Some(state);
                if from == self.coordinator {
                    self.emit(from, Body::CoordAck { busy });
                } else {
                    // A replica passed on after the coordinator crashed: take the role now.
                    let c = self.coordinator;
                    self.on_suspect(c);
                }
            }
            return;
        }
        if state.gen <= self.gen {
            self.reject(from, "coordinator hand-over of an old generation");
            return;
        }
        let mut co = crate::protocol::membership::Coordinator::from_snapshot(&state);
        co.rounds = co.rounds.max(self.rounds_seen);
        self.crashed.extend(state.crashed.iter().copied());
        self.gen = state.gen;
        self.coordinator = self.me;
        self.members = co.members.clone();
        self.coord = Some(co);
        self.synced = None;
        // The predecessor holds the state just handed over: keep it as the replica holder.
        self.pinned_deputy = Some(from);
        self.stats.takeovers += 1;
        tracing::info!(me = %self.me, %from, gen = self.gen, "took over the coordinator role");
        if self
            .recovery
            .as_ref()
            .is_some_and(|r| r.coordinator() != self.me)
        {
            // This machine is still in a round its predecessor abandoned: run a fresh one.
            self.begin_recovery(None);
        }
        self.pump();
    }

    pub(crate) fn on_new_coordinator(
        &mut self,
        gen: u32,
        coordinator: HostId,
        members: Vec<HostId>,
    ) {
        if self.phase == Phase::Joining && gen >= self.gen {
            // Admission notice: the coordinator's member list.
            self.gen = gen;
            self.coordinator = coordinator;
            self.members.extend(members);
            self.members.insert(self.me);
            return;
        }
        if gen > self.gen {
            self.gen = gen;
            self.coordinator = coordinator;
            // The new coordinator's replica may have overtaken this notice (other link).
            self.synced.take_if(|s| s.gen < gen);
            self.members = members.into_iter().collect();
            self.members.insert(self.me);
            self.resend_suspicions();
        }
    }

    /// A joiner's first request; [`Node::tick`] re-sends it on timeout.
    pub(crate) fn start_join(&mut self, mut contacts: Vec<HostId>) {
        contacts.retain(|&c| c != self.me);
        contacts.dedup();
        self.join_wait = self.cfg.join_timeout;
        let Some(&first) = contacts.first() else {
            tracing::error!(me = %self.me, "a joiner needs at least one contact");
            return;
        };
        self.contacts = contacts;
        self.next_contact = 1;
        self.emit(first, Body::JoinReq { joiner: self.me });
    }

    /// Advances this machine's clock (`now`: any monotonic time, e.g. `Host::now`). A joiner not
    /// admitted within `Config::join_timeout` of its request re-sends it to its next contact
    /// (doubling the wait each time, up to 8×); the coordinator ignores duplicates. The first
    /// call after the request starts the timer. Harmless to call often.
    pub fn tick(&mut self, now: Duration) {
        if self.phase != Phase::Joining || self.contacts.is_empty() {
            self.join_deadline = None;
            return;
        }
        match self.join_deadline {
            None => self.join_deadline = Some(now + self.join_wait),
            Some(d) if now >= d => {
                let c = self.contacts[self.next_contact % self.contacts.len()];
                self.next_contact += 1;
                self.stats.join_retries += 1;
                tracing::info!(me = %self.me, contact = %c, "join not admitted in time: asking again");
                self.emit(c, Body::JoinReq { joiner: self.me });
                self.join_wait = (self.join_wait * 2).min(self.cfg.join_timeout * 8);
                self.join_deadline = Some(now + self.join_wait);
            }
            Some(_) => {}
        }
        self.settle();
    }

    /// When the next join retry is due (None unless joining and the timer runs).
    pub fn next_deadline(&self) -> Option<Duration> {
        self.join_deadline
    }

    /// Starts the next queued membership change if none is in progress.
    pub(crate) fn pump(&mut self) {
        self.pump_once();
        self.sync_deputy();
    }

    fn pump_once(&mut self) {
        loop {
            let me = self.me;
            let Some(co) = self.coord.as_mut() else {
                return;
            };
            // A crash recovery freezes ID movement: joins and leaves wait for it.
            if co.busy.is_some() || co.census.is_some() {
                return;
            }
            let Some(change) = co.queue.pop_front() else {
                return;
            };
            match change {
                Change::Join(j) if co.members.contains(&j) && co.redonate.remove(&j) => {
                    co.busy = Some(change);
                    self.donate_to(j);
                }
                Change::Join(j) => {
                    if co.members.contains(&j)
                        || self.departed.contains(&j)
                        || self.crashed.contains(&j)
                        || j == me
                    {
                        continue;
                    }
                    co.busy = Some(change);
                    co.members.insert(j);
                    // The joiner's view of the members (it picks a successor from it should
                    // this coordinator crash): the exact list, not its donor's older view.
                    let members = co.members.iter().copied().collect();
                    let gen = self.gen;
                    self.emit(
                        j,
                        Body::NewCoordinator {
                            gen,
                            coordinator: me,
                            members,
                        },
                    );
                    if self.live_member_below(None, &[j]).is_some() {
                        // `sync_deputy` (end of `pump`) replicates the admission first.
                        if let Some(co) = self.coord.as_mut() {
                            co.pending_donation = Some(j);
                        }
                    } else {
                        self.donate_to(j);
                    }
                }
                Change::Leave(l) if l == me => {
                    // The coordinator's own leave: the role moves first (to a successor that
                    // serves this leave next), so the coordinator never needs to say farewell
                    // to itself.
                    self.hand_over();
                }
                Change::Leave(l) => {
                    if !co.members.contains(&l) {
                        continue;
                    }
                    co.busy = Some(change);
                    let members = co.members.iter().copied().filter(|&m| m != l).collect();
                    self.emit(l, Body::LeaveGo { members });
                }
            }
            return;
        }
    }

    /// Asks the owner of a random ID to give part of its IDs to `joiner`.
    pub(crate) fn donate_to(&mut self, joiner: HostId) {
        let target = self.next_rand() % self.cfg.space;
        self.route_new(target, RoutedKind::Donate { joiner, tries: 0 });
    }

    /// Coordinator: the deputy holds a replica; a donation waiting for it may go.
    pub(crate) fn on_coord_ack(&mut self, busy: Option<Change>) {
        let Some(co) = self.coord.as_mut() else {
            return;
        };
        if let (Some(j), Some(Change::Join(b))) = (co.pending_donation, busy) {
            if j == b {
                co.pending_donation = None;
                self.donate_to(j);
            }
        }
    }

    pub(crate) fn on_join_done(&mut self, joiner: HostId) {
        if self.pass_to_coordinator(Body::JoinDone { joiner }) {
            return;
        }
        if let Some(co) = self.coord.as_mut() {
            if co.busy == Some(Change::Join(joiner)) {
                co.busy = None;
            }
        }
        self.pump();
    }

    pub(crate) fn on_leave_complete(&mut self, leaver: HostId) {
        if self.pass_to_coordinator(Body::LeaveComplete { leaver }) {
            return;
        }
        self.members.remove(&leaver);
        if let Some(co) = self.coord.as_mut() {
            // Also from a successor that took over mid-leave: the leaver is gone either way.
            if co.busy == Some(Change::Leave(leaver)) {
                co.busy = None;
            }
            co.members.remove(&leaver);
            co.queue.retain(|c| *c != Change::Leave(leaver));
        }
        // The leaver went before it heard of the recovery, so it will never send its census.
        self.restart_recovery_without(leaver);
        self.pump();
    }

    pub(crate) fn on_leave_go(&mut self, members: Vec<HostId>) {
        if self.phase != Phase::LeaveRequested {
            self.reject(self.coordinator, "leave permission without a request");
            return;
        }
        self.phase = Phase::Draining;
        // The coordinator has picked another deputy: a replica kept here would go stale.
        self.synced = None;
        self.members = members.iter().copied().collect();
        self.members.insert(self.me);
        self.leave = Some(LeaveState {
            members,
            round: 0,
            awaiting: BTreeSet::new(),
        });
        self.hand_off_all_to_heirs();
        self.start_departing_round();
    }

    /// Hands every owned piece to an heir among the live members.
    pub(crate) fn hand_off_all_to_heirs(&mut self) {
        let members = self
            .leave
            .as_ref()
            .map(|l| l.members.clone())
            .unwrap_or_default();
        for p in self.owned.pieces() {
            match self.neighbour_heir(p.range, Some(&members)) {
                Some(heir) => self.hand_off(&[p.range], heir, false),
                None => tracing::error!(me = %self.me, range = %p.range, "no heir: IDs stay here"),
            }
        }
    }

    pub(crate) fn start_departing_round(&mut self) {
        // Only facts about IDs this machine ever held can name it elsewhere: send those.
        let table: Vec<Entry> = self
            .held
            .ranges()
            .into_iter()
            .flat_map(|r| self.table.entries_in(r))
            .collect();
        let Some(st) = self.leave.as_mut() else {
            return;
        };
        st.round += 1;
        st.awaiting = st.members.iter().copied().collect();
        let (round, members) = (st.round, st.members.clone());
        for m in members {
            self.emit(
                m,
                Body::Departing {
                    round,
                    table: table.clone(),
                },
            );
        }
        self.check_departed();
    }

    pub(crate) fn on_departing(&mut self, from: HostId, round: u32, table: Vec<Entry>) {
        if table.iter().any(|f| self.check_range(f.range).is_err()) {
            self.reject(from, "departing table outside the space");
            return;
        }
        self.table.merge_all(&table);
        self.departed.insert(from);
        // A draining deputy would be a poor successor: replicate to the next one.
        self.sync_deputy();
        if self.table.mentions(from) {
            tracing::error!(me = %self.me, leaver = %from, "a fact still names the leaver");
        }
        self.retry_parked();
        self.emit(from, Body::Farewell { round });
    }

    pub(crate) fn on_farewell(&mut self, from: HostId, round: u32) {
        if let Some(st) = self.leave.as_mut() {
            if st.round == round {
                st.awaiting.remove(&from);
            }
        }
        self.check_departed();
    }

    /// Completes the leave once every member said farewell, nothing is owned or parked here, and
    /// every earlier leaver's last frames have arrived (they may still forward to us).
    pub(crate) fn check_departed(&mut self) {
        let done = self.phase == Phase::Draining
            && self.leave.as_ref().is_some_and(|l| l.awaiting.is_empty());
        if done
            && self.recovery.is_none()
            && self.owned.is_empty()
            && self.parked.is_empty()
            && self.departed.is_subset(&self.gone)
        {
            let members = self
                .leave
                .as_ref()
                .map(|l| l.members.clone())
                .unwrap_or_default();
            for m in members {
                self.emit(m, Body::Gone);
            }
            self.emit(self.coordinator, Body::LeaveComplete { leaver: self.me });
            self.phase = Phase::Departed;
        }
    }

    /// Whether a fact in this machine's table names `host` (used by property checks).
    pub fn table_mentions(&self, host: HostId) -> bool {
        self.table.mentions(host)
    }
}
