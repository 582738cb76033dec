//! The Phoenix protocol core: a pure, synchronous state machine per machine.
//!
//! The node never touches the network or a clock: it consumes frames ([`Node::handle`]) and API
//! calls, and queues outgoing frames ([`Node::take_outgoing`]). `runtime.rs` drives it over a
//! `Host`/`Mailbox`; the tests drive many of them over an in-memory network.
//!
//! Routing (no central manager). A message to ID `v` goes to the owner named by the sender's table
//! entry `(v, e0)`. It carries `believed`: the epoch of the fact used for the current hop. The
//! receiver delivers if it owns `v`; otherwise it looks `v` up in its own table:
//! - entry older than `believed`, or naming itself: the hand-off that makes it the owner is still in
//!   flight (facts are true, so it will arrive) — the message is *parked* until it does;
//! - otherwise the entry is strictly newer than `believed` (an equal epoch would name the same owner):
//!   it forwards with `believed` = that epoch and sends the origin a correction.
//!
//! Hop bound: each forward strictly raises `believed`, which never exceeds `v`'s epoch at delivery
//! `e_d`, so a message takes at most `1 + (e_d - e0)` machine-to-machine hops — one plus the number
//! of times `v` changed hands since the fact the sender used. NAT relaying multiplies each hop by at
//! most 3 (private host → its gateway → the destination's gateway → destination).
//!
//! Exactly once, FIFO per (sender, ID): a message exists in exactly one place at a time (a queue, a
//! link, a park, an owner's inbox, or a hand-off in flight — nothing is ever copied or retransmitted),
//! and owners deliver by per-(id, sender) sequence numbers whose counters move with the IDs.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use gridbed_runtime::rng::{SplitMix64, GOLDEN_GAMMA};
use gridbed_runtime::HostId;

use crate::protocol::data::IdData;
use crate::protocol::ids::{Id, IdRange, Ownership, Piece};
use crate::protocol::membership::Coordinator;
pub use crate::protocol::stats::{kind_name, Stats};
use crate::protocol::table::{Entry, RoutingTable};
use crate::wire::{self, Body, CoordSnapshot, Delivery, Frame, Routed, RoutedKind, WireError};

/// Static configuration shared by all machines of a run.
#[derive(Clone, Debug)]
pub struct Config {
    /// Size of the virtual ID space: IDs are `0..space`.
    pub space: Id,
    /// How many random owners a join request tries before falling back to the largest known range.
    pub donate_tries: u32,
    /// How long a joiner waits to be admitted before it re-sends its request to its next contact
    /// (doubling after every retry, up to 8 times this). Only effective when the driver calls
    /// [`Node::tick`]. Default 500 ms: an estimate, far above a join's cost on a LAN (a few
    /// round-trips and one hand-off, well under 10 ms in the simulated gige platform) while the
    /// coordinator serves one change at a time, so a joiner queued behind others retries rarely.
    pub join_timeout: Duration,
}

impl Config {
    pub fn new(space: Id) -> Self {
        // 8 tries: a random ID lands on an owner of >= 2 IDs with overwhelming probability long before.
        Config {
            space,
            donate_tries: 8,
            join_timeout: Duration::from_millis(500),
        }
    }
}

/// How a machine enters the computation.
#[derive(Clone, Debug)]
pub enum Start {
    /// One of the initial machines; `table` is the initial layout, known to all of them. The lowest
    /// machine of the layout coordinates membership changes.
    Initial { table: RoutingTable },
    /// A new machine: asks `contact` (any member) to let it join; on timeout it asks again.
    Join { contact: HostId },
    /// A new machine that knows several members: asks the first, and on every timeout the next
    /// (round robin), so a contact that crashed or left does not strand it.
    JoinAny { contacts: Vec<HostId> },
}

impl Start {
    /// A joiner of a run whose initial machines are `0..initial`: asks `contact` first, then the
    /// other initial machines in turn (any of them may have left or crashed meanwhile).
    pub fn join_via(contact: HostId, initial: u32) -> Start {
        let others = (0..initial).map(HostId).filter(|&h| h != contact);
        Start::JoinAny {
            contacts: std::iter::once(contact).chain(others).collect(),
        }
    }

    /// Whether this machine starts by joining.
    pub fn is_join(&self) -> bool {
        matches!(self, Start::Join { .. } | Start::JoinAny { .. })
    }
}

/// Where a machine is in its life.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for its first hand-off.
    Joining,
    Active,
    /// Asked the coordinator to leave; still owns and serves its IDs.
    LeaveRequested,
    /// Has handed everything off; forwards stragglers until every member said farewell.
    Draining,
    /// Gone: nothing will be sent to it any more.
    Departed,
}

/// Errors of the API calls.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PhoenixError {
    #[error("ID {id} is outside the ID space [0, {space})")]
    OutOfSpace { id: Id, space: Id },
    #[error("range {0} is empty or outside the ID space")]
    BadRange(IdRange),
    #[error("this machine has not joined yet")]
    NotJoined,
    #[error("this machine is leaving or has left")]
    Leaving,
    /// Kept for compatibility: the coordinator now hands its role on and leaves.
    #[error("the coordinator cannot leave")]
    CoordinatorCannotLeave,
    #[error("no other machine to hand IDs to")]
    NoHeir,
    #[error("{0} is not a live member")]
    NotMember(HostId),
    #[error("{0} cannot be declared crashed by this machine (it is this machine)")]
    CannotReclaim(HostId),
}

/// One Phoenix machine.
pub struct Node<D: IdData> {
    pub(crate) me: HostId,
    pub(crate) cfg: Config,
    pub(crate) data: D,
    pub(crate) phase: Phase,
    pub(crate) owned: Ownership,
    pub(crate) table: RoutingTable,
    pub(crate) coordinator: HostId,
    /// Generation of `coordinator`: bumped by every hand-over or takeover; higher wins.
    pub(crate) gen: u32,
    /// Present on the coordinator only.
    pub(crate) coord: Option<Coordinator>,
    /// This machine's view of the members (exact on the coordinator; elsewhere enough to pick
    /// the successor of a crashed coordinator).
    pub(crate) members: BTreeSet<HostId>,
    /// The coordinator's state as last replicated here (on its deputy).
    pub(crate) synced: Option<CoordSnapshot>,
    /// On the coordinator: the last state replicated, and to whom.
    pub(crate) last_sync: Option<(HostId, CoordSnapshot)>,
    /// On a coordinator that was handed the role: its predecessor, the deputy until it drains.
    pub(crate) pinned_deputy: Option<HostId>,
    /// Highest recovery round seen (a successor numbers its rounds above it).
    pub(crate) rounds_seen: u32,
    /// A joiner's contacts, the next one to try, and when to retry (set by the first tick).
    pub(crate) contacts: Vec<HostId>,
    pub(crate) next_contact: usize,
    pub(crate) join_deadline: Option<Duration>,
    pub(crate) join_wait: Duration,
    /// Machines known to have left: never a hand-off target.
    pub(crate) departed: BTreeSet<HostId>,
    /// Departed machines whose last frame (`Gone`) has arrived: nothing more will come from them.
    pub(crate) gone: BTreeSet<HostId>,
    /// Every ID this machine ever owned: a leaver's facts that others may hold lie only here.
    pub(crate) held: crate::protocol::ids::RangeSet,
    pub(crate) seq_out: BTreeMap<Id, u64>,
    pub(crate) next_seq: BTreeMap<(Id, HostId), u64>,
    pub(crate) early: BTreeMap<(Id, HostId, u64), Delivery>,
    pub(crate) inbox: VecDeque<Delivery>,
    pub(crate) parked: Vec<Routed>,
    pub(crate) leave: Option<crate::protocol::membership::LeaveState>,
    /// Machines declared crashed: never a destination; their late frames are dropped.
    pub(crate) crashed: BTreeSet<HostId>,
    /// Present while a crash recovery freezes ID movement on this machine.
    pub(crate) recovery: Option<crate::protocol::crash::Recovery>,
    /// Flush markers received per recovery round (they may precede our own `CrashBegin`).
    pub(crate) flush_seen: BTreeMap<u32, BTreeSet<HostId>>,
    /// Hand-offs postponed by a recovery: (ranges, heir, bootstrap).
    pub(crate) deferred: Vec<(Vec<IdRange>, HostId, bool)>,
    /// IDs reclaimed after a crash: their first message per sender sets the sequence counter.
    pub(crate) resync: crate::protocol::ids::RangeSet,
    /// (id, sender) pairs whose counter a `Floor` advanced past messages presumed lost.
    pub(crate) floored: BTreeSet<(Id, HostId)>,
    /// Reclaimed ranges whose data was lost, not yet taken by the application.
    pub(crate) lost: Vec<(u32, IdRange)>,
    /// Machines this one has been told (or decided) crashed, before the recovery confirms it.
    pub(crate) suspected: BTreeSet<HostId>,
    /// (crashed coordinator, crashed machine) reports already spread to every known member.
    pub(crate) flooded: BTreeSet<(HostId, HostId)>,
    pub(crate) rng: SplitMix64,
    pub(crate) out: Vec<Frame>,
    local: VecDeque<Frame>,
    pub(crate) stats: Stats,
}

impl<D: IdData> Node<D> {
    /// Creates a machine. `seed` feeds its private random choices (join targets).
    pub fn new(me: HostId, cfg: Config, data: D, start: Start, seed: u64) -> Self {
        let space = cfg.space;
        let mut node = Node {
            me,
            cfg,
            data,
            phase: Phase::Joining,
            owned: Ownership::new(),
            table: RoutingTable::whole(space, me),
            coordinator: me,
            gen: 0,
            coord: None,
            members: BTreeSet::new(),
            synced: None,
            last_sync: None,
            pinned_deputy: None,
            rounds_seen: 0,
            contacts: Vec::new(),
            next_contact: 0,
            join_deadline: None,
            join_wait: Duration::ZERO,
            departed: BTreeSet::new(),
            gone: BTreeSet::new(),
            held: Default::default(),
            seq_out: BTreeMap::new(),
            next_seq: BTreeMap::new(),
            early: BTreeMap::new(),
            inbox: VecDeque::new(),
            parked: Vec::new(),
            leave: None,
            crashed: BTreeSet::new(),
            recovery: None,
            flush_seen: BTreeMap::new(),
            deferred: Vec::new(),
            resync: Default::default(),
            floored: BTreeSet::new(),
            lost: Vec::new(),
            suspected: BTreeSet::new(),
            flooded: BTreeSet::new(),
            rng: SplitMix64(seed ^ GOLDEN_GAMMA),
            out: Vec::new(),
            local: VecDeque::new(),
            stats: Stats::default(),
        };
        match start {
            Start::Initial { table } => {
                let members: BTreeSet<HostId> = table.entries().iter().map(|e| e.owner).collect();
                node.coordinator = *members.iter().next().unwrap_or(&me);
                for e in table.entries().iter().filter(|e| e.owner == me) {
                    node.owned.insert(Piece {
                        range: e.range,
                        epoch: e.epoch,
                    });
                    node.held.insert(e.range);
                }
                node.table = table;
                node.members = members.clone();
                if node.coordinator == me {
                    node.coord = Some(Coordinator::new(members));
                    node.sync_deputy();
                }
                node.phase = Phase::Active;
            }
            Start::Join { contact } => node.start_join(vec![contact]),
            Start::JoinAny { contacts } => node.start_join(contacts),
        }
        node.settle();
        node
    }

    pub fn id(&self) -> HostId {
        self.me
    }
    pub fn phase(&self) -> Phase {
        self.phase
    }
    pub fn config(&self) -> &Config {
        &self.cfg
    }
    /// The machine this one believes coordinates membership, and that role's generation.
    pub fn coordinator(&self) -> (HostId, u32) {
        (self.coordinator, self.gen)
    }
    /// Whether this machine holds the coordinator role.
    pub fn is_coordinator(&self) -> bool {
        self.coord.is_some()
    }
    pub fn owned(&self) -> Vec<Piece> {
        self.owned.pieces()
    }
    pub fn owns(&self, id: Id) -> bool {
        self.owned.owns(id)
    }
    pub fn table(&self) -> &RoutingTable {
        &self.table
    }
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
    pub fn data(&self) -> &D {
        &self.data
    }
    pub fn data_mut(&mut self) -> &mut D {
        &mut self.data
    }
    /// Application messages waiting in the inbox.
    pub fn pending(&self) -> usize {
        self.inbox.len()
    }
    /// Routed messages parked until a hand-off arrives.
    pub fn parked(&self) -> usize {
        self.parked.len()
    }
    /// Membership changes the coordinator has queued or is serving (0 elsewhere).
    pub fn membership_backlog(&self) -> usize {
        self.coord.as_ref().map_or(0, Coordinator::backlog)
    }

    /// ph_send: sends `payload` to whichever machine owns `id`.
    pub fn send(&mut self, id: Id, payload: Vec<u8>) -> Result<(), PhoenixError> {
        self.check_id(id)?;
        match self.phase {
            Phase::Joining => return Err(PhoenixError::NotJoined),
            Phase::Draining | Phase::Departed => return Err(PhoenixError::Leaving),
            Phase::Active | Phase::LeaveRequested => {}
        }
        let seq = self.seq_out.entry(id).or_insert(0);
        let kind = RoutedKind::App { seq: *seq, payload };
        *seq += 1;
        self.route_new(id, kind);
        self.settle();
        Ok(())
    }

    /// ph_recv without waiting: the next message delivered to an ID this machine owns.
    pub fn try_recv(&mut self) -> Option<Delivery> {
        self.inbox.pop_front()
    }

    /// Feeds one frame from the network. Malformed frames are rejected (and counted), never panic.
    pub fn handle_bytes(&mut self, bytes: &[u8]) -> Result<(), WireError> {
        match wire::decode(bytes) {
            Ok(frame) => {
                self.handle(frame);
                Ok(())
            }
            Err(e) => {
                self.stats.rejected += 1;
                Err(e)
            }
        }
    }

    /// Feeds one decoded frame addressed to this machine.
    pub fn handle(&mut self, frame: Frame) {
        self.dispatch(frame);
        self.settle();
    }

    /// Frames to send, in order; each names its final destination in `dst`.
    pub fn take_outgoing(&mut self) -> Vec<Frame> {
        std::mem::take(&mut self.out)
    }

    pub(crate) fn check_id(&self, id: Id) -> Result<(), PhoenixError> {
        if id < self.cfg.space {
            Ok(())
        } else {
            Err(PhoenixError::OutOfSpace {
                id,
                space: self.cfg.space,
            })
        }
    }

    pub(crate) fn check_range(&self, r: IdRange) -> Result<(), PhoenixError> {
        if r.is_empty() || r.end > self.cfg.space {
            Err(PhoenixError::BadRange(r))
        } else {
            Ok(())
        }
    }

    /// Queues a frame; frames to self are handled locally, after the current step.
    pub(crate) fn emit(&mut self, dst: HostId, body: Body) {
        if self.crashed.contains(&dst) || (self.suspected.contains(&dst) && dst != self.me) {
            // Farewells, corrections and the like to a crashed machine have no one to read them.
            return;
        }
        *self.stats.sent.entry(kind_name(&body)).or_insert(0) += u64::from(dst != self.me);
        let frame = Frame {
            src: self.me,
            dst,
            body,
        };
        if dst == self.me {
            self.local.push_back(frame);
        } else {
            self.out.push(frame);
        }
    }

    pub(crate) fn settle(&mut self) {
        while let Some(f) = self.local.pop_front() {
            self.dispatch(f);
        }
    }

    fn dispatch(&mut self, frame: Frame) {
        let from = frame.src;
        if let Err(why) = wire::check_counters(&frame) {
            // Counters are incremented on receipt (hops, sequence numbers, epochs, rounds): one at
            // the top of its range is forged or corrupt and would overflow.
            self.reject(from, why);
            return;
        }
        if self.crashed.contains(&from) && !matches!(frame.body, Body::Suspect { .. }) {
            // Anything a crashed machine sent that lands after recovery began is void: its IDs
            // are being (or have been) reclaimed. Only its own crash reports still count.
            self.stats.from_crashed += 1;
            return;
        }
        if self.phase == Phase::Departed {
            if self.suspected.contains(&from) {
                // A late frame of a machine that crashed (we left without its farewell).
                return;
            }
            if let Body::CrashBegin { .. } = frame.body {
                // A recovery that started while this machine was completing its leave: tell its
                // coordinator (possibly a successor that never saw our `LeaveComplete`) that we
                // are gone, so it restarts the round without us.
                self.emit(from, Body::LeaveComplete { leaver: self.me });
                return;
            }
            if matches!(
                frame.body,
                Body::CrashFlush { .. }
                    | Body::Reclaim { .. }
                    | Body::JoinReq { .. }
                    | Body::Suspect { .. }
            ) {
                // Late recovery frames, and join requests or crash reports from machines that
                // picked us from an old view: the senders retry elsewhere.
                return;
            }
            self.stats.after_departure += 1;
            tracing::warn!(me = %self.me, from = %frame.src, kind = kind_name(&frame.body), "frame after departure dropped");
            return;
        }
        match frame.body {
            Body::Routed(r) => {
                if self.check_id(r.id).is_err() {
                    self.reject(from, "routed ID outside the space");
                } else {
                    self.route(r);
                }
            }
            Body::Facts(facts) => {
                if facts.iter().any(|f| self.check_range(f.range).is_err()) {
                    self.reject(from, "fact outside the space");
                } else if self.table.merge_all(&facts) {
                    self.retry_parked();
                }
            }
            Body::Handoff(h) => self.receive_handoff(from, h),
            Body::JoinReq { joiner } => self.on_join_req(joiner),
            Body::JoinDone { joiner } => self.on_join_done(joiner),
            Body::LeaveReq { leaver } => self.on_leave_req(leaver),
            Body::LeaveGo { members } => self.on_leave_go(members),
            Body::Departing { round, table } => self.on_departing(from, round, table),
            Body::Farewell { round } => self.on_farewell(from, round),
            Body::LeaveComplete { leaver } => self.on_leave_complete(leaver),
            Body::Gone => {
                self.gone.insert(from);
                self.members.remove(&from);
                self.check_departed();
            }
            Body::Suspect { host } => {
                self.on_suspect(host);
                self.check_departed();
            }
            Body::CoordState { state, take_over } => self.on_coord_state(from, state, take_over),
            Body::CoordAck { busy } => self.on_coord_ack(busy),
            Body::NewCoordinator {
                gen,
                coordinator,
                members,
            } => self.on_new_coordinator(gen, coordinator, members),
            Body::CrashBegin {
                gen,
                round,
                crashed,
                members,
            } => self.on_crash_begin(from, gen, round, crashed, members),
            Body::CrashFlush { round } => self.on_crash_flush(from, round),
            Body::Census {
                round,
                owned,
                max_epoch,
                status,
                known,
            } => self.on_census(from, round, owned, max_epoch, status, known),
            Body::Reclaim {
                round,
                map,
                reclaimed,
            } => self.on_reclaim(from, round, map, reclaimed),
        }
    }

    pub(crate) fn reject(&mut self, from: HostId, why: &str) {
        self.stats.rejected += 1;
        tracing::warn!(me = %self.me, %from, why, "invalid frame dropped");
    }

    /// Delivers, parks or forwards a routed message (see the module doc).
    pub(crate) fn route(&mut self, mut r: Routed) {
        if let RoutedKind::Assume { requester: h, .. } | RoutedKind::Donate { joiner: h, .. } =
            r.kind
        {
            if self.crashed.contains(&h) {
                // IDs for a machine that crashed would only be lost on the way to it.
                return;
            }
        }
        if let Some(piece) = self.owned.get(r.id) {
            if self.recovery.is_some()
                && !matches!(r.kind, RoutedKind::App { .. } | RoutedKind::Floor { .. })
            {
                // Donations and assumes move IDs: they wait until the crash recovery ends.
                self.parked.push(r);
                return;
            }
            self.deliver(r, piece.epoch);
            return;
        }
        let e = self.table.lookup(r.id);
        // A crashed owner: hold the message until recovery names the new owner.
        if e.owner == self.me || e.epoch < r.believed || self.crashed.contains(&e.owner) {
            self.stats.parked += 1;
            self.parked.push(r);
            return;
        }
        if r.hops == 0 {
            r.e0 = e.epoch;
        } else {
            self.stats.forwarded += 1;
            if r.origin != self.me && r.origin != e.owner && !self.departed.contains(&r.origin) {
                self.emit(r.origin, Body::Facts(vec![e]));
            }
        }
        let Some(hops) = r.hops.checked_add(1) else {
            self.reject(r.origin, "hop count overflow");
            return;
        };
        r.believed = e.epoch;
        r.hops = hops;
        self.emit(e.owner, Body::Routed(r));
    }

    /// Re-routes parked messages after ownership or the table changed.
    pub(crate) fn retry_parked(&mut self) {
        let parked = std::mem::take(&mut self.parked);
        for r in parked {
            self.route(r);
        }
    }

    fn deliver(&mut self, r: Routed, epoch: u64) {
        match r.kind {
            RoutedKind::App { seq, payload } => {
                if r.hops > 0 && u64::from(r.hops) > epoch.saturating_sub(r.e0).saturating_add(1) {
                    self.stats.bound_violations += 1;
                    tracing::error!(me = %self.me, id = r.id, hops = r.hops, "hop bound exceeded");
                }
                let d = Delivery {
                    id: r.id,
                    from: r.origin,
                    seq,
                    hops: r.hops,
                    payload,
                };
                self.accept(d);
            }
            RoutedKind::Donate { joiner, tries } => self.on_donate(r.id, joiner, tries),
            RoutedKind::Assume { range, requester } => self.on_assume(r.id, range, requester),
            RoutedKind::Floor { upto } => self.apply_floor(r.id, r.origin, upto),
        }
    }

    /// After a crash: stops waiting for `from`'s messages to `id` numbered below `upto` (they may
    /// have died with the crashed machine). Held later ones are delivered in order; an earlier
    /// one that still turns up is dropped, so delivery stays at-most-once and in order.
    pub(crate) fn apply_floor(&mut self, id: Id, from: HostId, upto: u64) {
        let key = (id, from);
        let expected = match self.next_seq.get(&key) {
            Some(&n) => n,
            // No counter on a reclaimed ID: nothing held either, resume at the floor.
            None if self.resync.contains(id) => upto,
            None => 0,
        };
        if upto <= expected {
            self.next_seq.entry(key).or_insert(expected);
            return;
        }
        let held: Vec<u64> = self
            .early
            .range((id, from, expected)..(id, from, upto))
            .map(|(k, _)| k.2)
            .collect();
        self.stats.floor_skipped += upto - expected - held.len() as u64;
        self.floored.insert(key);
        for s in held {
            if let Some(d) = self.early.remove(&(id, from, s)) {
                self.record_delivery(d);
            }
        }
        let mut next = upto;
        // Sequence numbers below u64::MAX are checked on receipt, so `next` cannot saturate
        // past one that was held.
        while let Some(d) = self.early.remove(&(id, from, next)) {
            self.record_delivery(d);
            next = next.saturating_add(1);
        }
        self.next_seq.insert(key, next);
    }

    /// Puts a delivery in the inbox in per-(id, sender) order; holds early ones, drops duplicates.
    pub(crate) fn accept(&mut self, d: Delivery) {
        let key = (d.id, d.from);
        let expected = match self.next_seq.get(&key) {
            Some(&n) => n,
            // Reclaimed ID: the counter died with the crashed machine; resume from this message.
            None if self.resync.contains(d.id) => d.seq,
            None => 0,
        };
        if d.seq < expected && (self.resync.contains(d.id) || self.floored.contains(&key)) {
            self.stats.stale_dropped += 1;
            tracing::warn!(me = %self.me, id = d.id, from = %d.from, seq = d.seq, "message older than one delivered after a crash dropped");
            return;
        }
        if d.seq < expected {
            self.stats.duplicates += 1;
            tracing::error!(me = %self.me, id = d.id, from = %d.from, seq = d.seq, "duplicate dropped");
            return;
        }
        if d.seq > expected {
            self.early.insert((d.id, d.from, d.seq), d);
            return;
        }
        self.record_delivery(d);
        // `expected` is this message's sequence number, below u64::MAX (checked on receipt).
        let mut next = expected.saturating_add(1);
        while let Some(d) = self.early.remove(&(key.0, key.1, next)) {
            self.record_delivery(d);
            next = next.saturating_add(1);
        }
        self.next_seq.insert(key, next);
    }

    fn record_delivery(&mut self, d: Delivery) {
        self.stats.delivered += 1;
        self.stats.hops_sum += u64::from(d.hops);
        self.stats.hops_max = self.stats.hops_max.max(d.hops);
        self.inbox.push_back(d);
    }

    /// A pseudo-random number from this node's private stream (splitmix64).
    pub(crate) fn next_rand(&mut self) -> u64 {
        self.rng.next_u64()
    }

    /// The entry the table holds for `id`.
    pub fn lookup(&self, id: Id) -> Entry {
        self.table.lookup(id)
    }
}
