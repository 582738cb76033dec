//! Coordinator crash: the deputy takes the role over, crash reports that died with a coordinator
//! are repeated to the next one, and at the end of a recovery the new coordinator brings joins and
//! leaves that were in progress in line with what the members reported (see `crash.rs` for the
//! recovery itself and the failure model).

use std::collections::{BTreeMap, BTreeSet};

use gridbed_runtime::HostId;

use crate::protocol::data::IdData;
use crate::protocol::membership::Change;
use crate::protocol::node::Node;
use crate::wire::{Body, MemberStatus, RoutedKind};

impl<D: IdData> Node<D> {
    /// Crash reports this machine made or passed on may have gone to a coordinator that crashed
    /// before acting on them: repeat them to the current one (duplicates are ignored).
    pub(crate) fn resend_suspicions(&mut self) {
        if self.coord.is_some() || self.coordinator == self.me {
            return;
        }
        self.suspected.retain(|h| !self.crashed.contains(h));
        let again: Vec<HostId> = self.suspected.iter().copied().collect();
        for host in again {
            if host != self.coordinator {
                self.emit(self.coordinator, Body::Suspect { host });
            }
        }
    }

    /// The successor of a crashed coordinator takes the role: its state is the deputy's replica
    /// (if this machine was the deputy) merged with this machine's own view of the members; a
    /// census round (started by the caller's `on_suspect`) then finds any member both missed and
    /// the joins and leaves that were in progress.
    pub(crate) fn take_over_after_crash(&mut self) {
        let old = self.coordinator;
        let mut co = match self.synced.take() {
            Some(s) if s.gen == self.gen => {
                self.crashed.extend(s.crashed.iter().copied());
                crate::protocol::membership::Coordinator::from_snapshot(&s)
            }
            _ => crate::protocol::membership::Coordinator::new(BTreeSet::new()),
        };
        co.members.extend(self.members.iter().copied());
        co.members.insert(self.me);
        // Leavers stay members until their last frame (`Gone`): one may still be draining.
        co.members
            .retain(|m| !self.gone.contains(m) && !self.crashed.contains(m));
        co.queue
            .retain(|c| !matches!(c, Change::Leave(h) if self.gone.contains(h)));
        co.rounds = co.rounds.max(self.rounds_seen);
        self.gen += 1;
        self.coordinator = self.me;
        self.coord = Some(co);
        self.stats.takeovers += 1;
        tracing::warn!(me = %self.me, crashed = %old, gen = self.gen, "coordinator crashed: took over its role");
    }

    /// Coordinator, at the end of a recovery: brings the joins and leaves in progress in line
    /// with what the members reported. A no-op for a coordinator that saw every change (its
    /// frames precede the census on each link); after a takeover it restarts what the crashed
    /// coordinator had started, so no join or leave is wedged.
    pub(crate) fn reconcile(&mut self, status: &BTreeMap<HostId, MemberStatus>) {
        let Some(co) = self.coord.as_mut() else {
            return;
        };
        if matches!(co.busy, Some(Change::Join(h) | Change::Leave(h)) if !co.members.contains(&h)) {
            // A leaver that completed (its `LeaveComplete` went to a crashed coordinator).
            co.busy = None;
        }
        if let Some(Change::Join(j)) = co.busy {
            if status.get(&j).is_some_and(|&s| s != MemberStatus::Joining) {
                // Its `JoinDone` (or our record of it) went down with a crashed coordinator.
                co.busy = None;
            }
        }
        // A donation still waiting for the deputy's acknowledgement is made by the loop below.
        co.pending_donation = None;
        let mut donate = Vec::new();
        let mut leave_go = Vec::new();
        for (&m, &st) in status {
            if !co.members.contains(&m) {
                continue;
            }
            match st {
                MemberStatus::Joining if co.busy == Some(Change::Join(m)) => donate.push(m),
                MemberStatus::Joining if co.busy.is_none() => {
                    co.busy = Some(Change::Join(m));
                    donate.push(m);
                }
                MemberStatus::Joining => {
                    // Admitted by a lost coordinator while another change runs: ask for a
                    // donation again later. It stays a member meanwhile (a postponed donation
                    // may still reach it, so every census must include it).
                    co.redonate.insert(m);
                    if !co.queue.contains(&Change::Join(m)) {
                        co.queue.push_back(Change::Join(m));
                    }
                }
                MemberStatus::Active => {
                    if co.busy == Some(Change::Join(m)) {
                        // Its `JoinDone` went to the crashed coordinator.
                        co.busy = None;
                    }
                }
                MemberStatus::LeaveRequested => {
                    if co.busy == Some(Change::Leave(m)) {
                        leave_go.push(m);
                    } else if !co.queue.contains(&Change::Leave(m)) {
                        co.queue.push_back(Change::Leave(m));
                    }
                }
                MemberStatus::Draining => {
                    if co.busy.is_none() {
                        co.busy = Some(Change::Leave(m));
                    }
                }
            }
        }
        for j in donate {
            // The donation request may have died with the crashed machine: ask again. A second
            // donation to a joiner that already got one only gives it more IDs.
            let target = self.next_rand() % self.cfg.space;
            self.route_new(
                target,
                RoutedKind::Donate {
                    joiner: j,
                    tries: 0,
                },
            );
        }
        for l in leave_go {
            let members = self
                .coord
                .as_ref()
                .map(|c| c.members.iter().copied().filter(|&m| m != l).collect())
                .unwrap_or_default();
            self.emit(l, Body::LeaveGo { members });
        }
    }
}
