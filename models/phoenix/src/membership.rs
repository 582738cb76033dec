//! Joining and leaving.
//!
//! Routing needs no manager, but a leave must be *complete* before the machine disappears: nobody may
//! still hold a fact that routes to it. So membership changes are serialised by a coordinator (the
//! lowest initial machine; it cannot leave), which only orders them and never sees application
//! traffic:
//! - Join: the joiner asks any member, which forwards to the coordinator. The coordinator routes a
//!   `Donate` to the owner of a random ID, which hands half its IDs (per `IdData::donate`) and a
//!   snapshot of its table to the joiner. The joiner reports `JoinDone`.
//! - Leave: the leaver asks the coordinator; on `LeaveGo` it hands every piece to an heir (the owner
//!   of a neighbouring ID), then sends its final table to every member (`Departing`). A member merges
//!   it — afterwards none of its facts names the leaver, since the leaver's table holds a newer fact
//!   for everything it ever owned — and answers `Farewell` on the same FIFO link as anything it sent
//!   before. With every farewell in, nothing more can reach the leaver; it reports `LeaveComplete`.
//!   Its last frame to each member is `Gone`, behind anything it forwarded while draining; a later
//!   leaver waits for the `Gone` of every earlier one, so no frame can reach a machine that left.
//!   A hand-off that reaches the leaver meanwhile (sent before its giver merged `Departing`) is passed
//!   on and announced in a new `Departing` round.

use std::collections::{BTreeSet, VecDeque};

use gridbed_runtime::HostId;

use crate::data::IdData;
use crate::node::{Node, Phase, PhoenixError};
use crate::table::Entry;
use crate::wire::{Body, RoutedKind};

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    Join(HostId),
    Leave(HostId),
}

/// Membership bookkeeping held by the coordinator only.
#[derive(Debug)]
pub(crate) struct Coordinator {
    pub(crate) members: BTreeSet<HostId>,
    pub(crate) queue: VecDeque<Change>,
    pub(crate) busy: Option<Change>,
    /// Census replies of the crash recovery in progress.
    pub(crate) census: Option<crate::crash::CensusState>,
    /// Crash recovery rounds started so far.
    pub(crate) rounds: u32,
}

impl Coordinator {
    pub(crate) fn new(members: BTreeSet<HostId>) -> Self {
        Coordinator {
            members,
            queue: VecDeque::new(),
            busy: None,
            census: None,
            rounds: 0,
        }
    }
    pub(crate) fn backlog(&self) -> usize {
        self.queue.len() + usize::from(self.busy.is_some())
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
}

impl<D: IdData> Node<D> {
    /// Starts leaving: the machine keeps serving its IDs until the coordinator lets it go, then hands
    /// them off and drains. Done when [`Node::phase`] is `Departed`.
    pub fn leave(&mut self) -> Result<(), PhoenixError> {
        if self.coord.is_some() {
            return Err(PhoenixError::CoordinatorCannotLeave);
        }
        match self.phase {
            Phase::Active => {}
            Phase::Joining => return Err(PhoenixError::NotJoined),
            _ => return Err(PhoenixError::Leaving),
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

    pub(crate) fn on_leave_req(&mut self, leaver: HostId) {
        if self.coord.is_none() {
            self.reject(
                leaver,
                "leave request to a machine that does not coordinate",
            );
            return;
        }
        self.enqueue(Change::Leave(leaver));
    }

    fn enqueue(&mut self, c: Change) {
        if let Some(co) = self.coord.as_mut() {
            co.queue.push_back(c);
        }
        self.pump();
    }

    /// Starts the next queued membership change if none is in progress.
    pub(crate) fn pump(&mut self) {
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
                    let target = self.next_rand() % self.cfg.space;
                    self.route_new(
                        target,
                        RoutedKind::Donate {
                            joiner: j,
                            tries: 0,
                        },
                    );
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

    pub(crate) fn on_join_done(&mut self, joiner: HostId) {
        if let Some(co) = self.coord.as_mut() {
            if co.busy == Some(Change::Join(joiner)) {
                co.busy = None;
            }
        }
        self.pump();
    }

    pub(crate) fn on_leave_complete(&mut self, leaver: HostId) {
        if let Some(co) = self.coord.as_mut() {
            if co.busy == Some(Change::Leave(leaver)) {
                co.busy = None;
                co.members.remove(&leaver);
            }
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
