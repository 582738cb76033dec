//! An in-memory network of pure [`Node`]s for property tests: FIFO links, adversarial (random)
//! interleaving of deliveries, and random sends, joins, leaves, assumes, releases and (optionally)
//! crashes. Every frame goes through the wire codec.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use gridbed_runtime::HostId;

use crate::protocol::ids::{Id, IdRange};
use crate::protocol::node::{Config, Node, Phase, Start};
use crate::protocol::table::RoutingTable;
use crate::wire;

pub(crate) use crate::apps::ledger::Ledger as LogData;

pub(crate) struct Net {
    pub(crate) space: Id,
    pub(crate) nodes: BTreeMap<HostId, Node<LogData>>,
    links: BTreeMap<(HostId, HostId), VecDeque<Vec<u8>>>,
    rng: gridbed_runtime::rng::SplitMix64,
    /// Messages each origin sent per ID.
    pub(crate) sent: BTreeMap<(u32, Id), u64>,
    next_host: u32,
    pub(crate) violations: Vec<String>,
    /// Chance per step, in thousandths, that a machine crashes (0: crash-free run).
    pub(crate) crash_per_mille: u64,
    /// Machines crashed so far.
    pub(crate) crashed: BTreeSet<HostId>,
    /// (recovery round, range) reported lost to the applications.
    pub(crate) lost: Vec<(u32, IdRange)>,
    /// Logical clock: one millisecond per scheduling step; drives `Node::tick`.
    pub(crate) now: Duration,
    /// Each joiner's contacts (a joiner whose contacts all died may stay out, legitimately).
    pub(crate) contacts: BTreeMap<HostId, Vec<HostId>>,
    /// Whether the coordinator may leave and crash like any machine.
    pub(crate) coordinator_mortal: bool,
}

/// The join timeout of the in-memory runs: 30 steps (a step is one logical millisecond).
pub(crate) const TEST_JOIN_TIMEOUT: Duration = Duration::from_millis(30);

pub(crate) fn test_config(space: Id) -> Config {
    Config {
        join_timeout: TEST_JOIN_TIMEOUT,
        ..Config::new(space)
    }
}

impl Net {
    /// `initial` machines share the space evenly.
    pub(crate) fn new(space: Id, initial: u32, seed: u64) -> Self {
        let mut table = RoutingTable::whole(space, HostId(0));
        for i in 1..initial {
            let start = space * u64::from(i) / u64::from(initial);
            let end = space * u64::from(i + 1) / u64::from(initial);
            table.merge(crate::protocol::table::Entry {
                range: IdRange::new(start, end),
                owner: HostId(i),
                epoch: 1,
            });
        }
        let mut net = Net {
            space,
            nodes: BTreeMap::new(),
            links: BTreeMap::new(),
            rng: gridbed_runtime::rng::SplitMix64(seed),
            sent: BTreeMap::new(),
            next_host: initial,
            violations: Vec::new(),
            crash_per_mille: 0,
            crashed: BTreeSet::new(),
            lost: Vec::new(),
            now: Duration::ZERO,
            contacts: BTreeMap::new(),
            coordinator_mortal: true,
        };
        for i in 0..initial {
            let seed = net.rand();
            let node = Node::new(
                HostId(i),
                test_config(space),
                LogData::default(),
                Start::Initial {
                    table: table.clone(),
                },
                seed,
            );
            net.nodes.insert(HostId(i), node);
        }
        net.collect();
        net
    }

    pub(crate) fn rand(&mut self) -> u64 {
        self.rng.next_u64()
    }

    fn pick<T: Copy>(&mut self, v: &[T]) -> Option<T> {
        (!v.is_empty()).then(|| v[(self.rand() % v.len() as u64) as usize])
    }

    /// Moves every machine's outgoing frames onto the links.
    pub(crate) fn collect_now(&mut self) {
        self.collect();
    }

    fn collect(&mut self) {
        for (&h, n) in self.nodes.iter_mut() {
            for f in n.take_outgoing() {
                self.links
                    .entry((h, f.dst))
                    .or_default()
                    .push_back(wire::encode(&f));
            }
        }
    }

    pub(crate) fn live(&self, phases: &[Phase]) -> Vec<HostId> {
        self.nodes
            .iter()
            .filter(|(_, n)| phases.contains(&n.phase()))
            .map(|(&h, _)| h)
            .collect()
    }

    /// Delivers one frame from a random non-empty link. Returns false when the network is quiet.
    pub(crate) fn deliver_one(&mut self) -> bool {
        let busy: Vec<(HostId, HostId)> = self
            .links
            .iter()
            .filter(|(_, q)| !q.is_empty())
            .map(|(&k, _)| k)
            .collect();
        let Some(link) = self.pick(&busy) else {
            return false;
        };
        let bytes = self
            .links
            .get_mut(&link)
            .and_then(VecDeque::pop_front)
            .expect("non-empty link");
        if let Some(n) = self.nodes.get_mut(&link.1) {
            if n.handle_bytes(&bytes).is_err() {
                self.violations
                    .push(format!("{link:?}: a well-formed frame was rejected"));
            }
        }
        self.collect();
        true
    }

    /// Every machine's application takes what is in its inbox and applies it to its ID's data.
    pub(crate) fn apps_receive(&mut self) {
        for (h, n) in self.nodes.iter_mut() {
            while let Some(d) = n.try_recv() {
                if !n.owns(d.id) {
                    self.violations
                        .push(format!("{h} received for {} which it does not own", d.id));
                }
                n.data_mut().apply(&d);
            }
        }
    }

    pub(crate) fn send_random(&mut self) {
        let senders = self.live(&[Phase::Active, Phase::LeaveRequested]);
        let Some(s) = self.pick(&senders) else { return };
        let id = self.rand() % self.space;
        let payload = self.rand().to_le_bytes().to_vec();
        if self
            .nodes
            .get_mut(&s)
            .expect("live")
            .send(id, payload)
            .is_ok()
        {
            *self.sent.entry((s.0, id)).or_insert(0) += 1;
        }
        self.collect();
    }

    /// A new machine asks one to three random members (its contacts, tried in turn on timeout).
    pub(crate) fn join(&mut self) {
        let active = self.live(&[Phase::Active]);
        if active.is_empty() {
            return;
        }
        let mut contacts = Vec::new();
        for _ in 0..1 + self.rand() % 3 {
            if let Some(c) = self.pick(&active) {
                if !contacts.contains(&c) {
                    contacts.push(c);
                }
            }
        }
        let h = HostId(self.next_host);
        self.next_host += 1;
        let seed = self.rand();
        let node = Node::new(
            h,
            test_config(self.space),
            LogData::default(),
            Start::JoinAny {
                contacts: contacts.clone(),
            },
            seed,
        );
        self.contacts.insert(h, contacts);
        self.nodes.insert(h, node);
        self.collect();
    }

    /// Advances the logical clock and lets every machine see it.
    pub(crate) fn tick(&mut self, by: Duration) {
        self.now += by;
        let now = self.now;
        for n in self.nodes.values_mut() {
            n.tick(now);
        }
        self.collect();
    }

    /// The machine holding the coordinator role, if exactly one live machine does.
    pub(crate) fn coordinators(&self) -> Vec<HostId> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.phase() != Phase::Departed && n.is_coordinator())
            .map(|(&h, _)| h)
            .collect()
    }

    fn mortal(&self, h: HostId) -> bool {
        self.coordinator_mortal || !self.nodes.get(&h).is_some_and(Node::is_coordinator)
    }

    /// The failure model's assumption (see `crash.rs`): the coordinator crashes only while its
    /// deputy is alive and holds the coordinator's latest state, and every earlier crash has
    /// been handled by the coordinator (no unprocessed crash of the deputy).
    fn may_crash(&self, h: HostId) -> bool {
        let Some(n) = self.nodes.get(&h) else {
            return false;
        };
        let coords = self.coordinators();
        let settled = coords.len() == 1
            && self
                .crashed
                .iter()
                .all(|x| self.nodes[&coords[0]].crashed.contains(x));
        if !n.is_coordinator() {
            // A replica holder stays up while a coordinator crash is being handled.
            return settled || n.synced.is_none();
        }
        if !self.coordinator_mortal || self.crashed.iter().any(|x| !n.crashed.contains(x)) {
            return false;
        }
        let (Some((d, snap)), Some(co)) = (&n.last_sync, &n.coord) else {
            return false;
        };
        co.snapshot(n.gen, &n.crashed) == *snap
            && self.nodes.get(d).is_some_and(|dn| {
                matches!(dn.phase(), Phase::Active | Phase::LeaveRequested)
                    && dn.synced.as_ref() == Some(snap)
            })
    }

    pub(crate) fn leave(&mut self) {
        let active: Vec<HostId> = self
            .live(&[Phase::Active])
            .into_iter()
            .filter(|&h| self.mortal(h))
            .collect();
        if let Some(h) = self.pick(&active) {
            match self.nodes.get_mut(&h).expect("live").leave() {
                // The last member cannot leave.
                Ok(()) | Err(crate::protocol::node::PhoenixError::NoHeir) => {}
                Err(e) => self.violations.push(format!("leave of {h}: {e}")),
            }
            self.collect();
        }
    }

    pub(crate) fn rebalance(&mut self) {
        let active = self.live(&[Phase::Active]);
        let (Some(a), Some(b)) = (self.pick(&active), self.pick(&active)) else {
            return;
        };
        let start = self.rand() % self.space;
        let len = 1 + self.rand() % (self.space / 4).max(1);
        let r = IdRange::new(start, (start + len).min(self.space));
        let res = match self.rand() % 3 {
            0 => self.nodes.get_mut(&a).expect("live").assume(r),
            1 => self.nodes.get_mut(&a).expect("live").release(r),
            _ if a != b => self.nodes.get_mut(&a).expect("live").release_to(r, b),
            _ => Ok(()),
        };
        if let Err(e) = res {
            // NoHeir is legitimate when a machine is alone; anything else is a bug.
            if e != crate::protocol::node::PhoenixError::NoHeir {
                self.violations.push(format!("rebalance on {a}: {e}"));
            }
        }
        self.collect();
    }

    /// Crashes a random machine (the coordinator included, unless spared) in any phase but
    /// departed: in the middle of joins, leaves, hand-offs and other recoveries. A random member
    /// reports it. At least one member stays alive.
    pub(crate) fn crash(&mut self) {
        let candidates: Vec<HostId> = self
            .live(&[
                Phase::Active,
                Phase::Joining,
                Phase::LeaveRequested,
                Phase::Draining,
            ])
            .into_iter()
            .filter(|&h| self.may_crash(h))
            .collect();
        let Some(x) = self.pick(&candidates) else {
            return;
        };
        self.crash_host(x);
    }

    /// Crashes `x` now; a random other active member reports it.
    pub(crate) fn crash_host(&mut self, x: HostId) {
        let survivors = self
            .live(&[Phase::Active])
            .into_iter()
            .filter(|&h| h != x)
            .count();
        if survivors == 0 {
            return;
        }
        self.nodes.remove(&x);
        self.crashed.insert(x);
        // Frames on their way to it vanish; frames it already sent stay in flight.
        self.links.retain(|&(_, dst), _| dst != x);
        let members = self.live(&[Phase::Active]);
        let Some(reporter) = self.pick(&members) else {
            return;
        };
        if let Err(e) = self.nodes.get_mut(&reporter).expect("live").report_crash(x) {
            self.violations
                .push(format!("{reporter} reporting {x}: {e}"));
        }
        self.collect();
    }

    /// The failure detector, repeated: every crashed machine that some active member does not
    /// yet know as crashed is reported again by such a member (a report can die with its
    /// reporter or with a coordinator that crashed before acting on it).
    pub(crate) fn detect_crashes(&mut self) {
        let crashed: Vec<HostId> = self.crashed.iter().copied().collect();
        for x in crashed {
            let unaware: Vec<HostId> = self
                .nodes
                .iter()
                .filter(|(_, n)| {
                    matches!(
                        n.phase(),
                        Phase::Active | Phase::LeaveRequested | Phase::Draining
                    ) && !n.crashed().contains(&x)
                })
                .map(|(&h, _)| h)
                .collect();
            if let Some(r) = self.pick(&unaware) {
                if let Err(e) = self.nodes.get_mut(&r).expect("live").report_crash(x) {
                    self.violations.push(format!("{r} re-reporting {x}: {e}"));
                }
            }
        }
        self.collect();
    }

    /// At most one owner per ID at this instant.
    pub(crate) fn check_single_owner(&mut self) {
        let mut pieces: Vec<(Id, Id, HostId)> = Vec::new();
        for (&h, n) in &self.nodes {
            pieces.extend(n.owned().iter().map(|p| (p.range.start, p.range.end, h)));
        }
        pieces.sort();
        for w in pieces.windows(2) {
            if w[1].0 < w[0].1 {
                self.violations
                    .push(format!("two owners: {:?} and {:?}", w[0], w[1]));
            }
        }
    }

    /// Runs until no frame is in flight and no joiner's retry can still change anything.
    pub(crate) fn quiesce(&mut self) {
        let mut steps = 0u64;
        let mut idle_ticks = 0;
        loop {
            while self.deliver_one() {
                self.check_single_owner();
                steps += 1;
                if steps > 5_000_000 {
                    self.violations.push("did not quiesce".into());
                    return;
                }
            }
            // A joiner still waiting, or a recovery waiting for a crash nobody reported yet (its
            // reporter crashed too): let time pass so retry timers and the failure detector fire
            // (bounded: a joiner's contacts may all be gone).
            let waiting = !self.live(&[Phase::Joining]).is_empty()
                || self.nodes.values().any(Node::recovering);
            if !waiting || idle_ticks > 12 {
                break;
            }
            idle_ticks += 1;
            self.detect_crashes();
            self.tick(TEST_JOIN_TIMEOUT * 8);
        }
        self.apps_receive();
    }

    /// The end-of-run checks: exactly one owner, exactly-once and FIFO delivery into the data of
    /// the owner, hop bound, clean departures.
    pub(crate) fn check_settled(&mut self) {
        let mut covered = 0u64;
        let mut departed: BTreeSet<HostId> = self.live(&[Phase::Departed]).into_iter().collect();
        departed.extend(self.crashed.iter().copied());
        for n in self.nodes.values_mut() {
            self.lost.extend(n.take_lost());
        }
        for (&h, n) in &self.nodes {
            covered += n.owned().iter().map(|p| p.range.len()).sum::<u64>();
            for &id in n.data().log.keys() {
                if !n.owns(id) {
                    self.violations
                        .push(format!("{h} holds data of {id} without owning it"));
                }
            }
            let stranded = n.phase() == Phase::Joining
                && self.contacts.get(&h).is_some_and(|cs| {
                    cs.iter().all(|c| {
                        !self
                            .nodes
                            .get(c)
                            .is_some_and(|n| n.phase() != Phase::Departed)
                    })
                })
                && !self
                    .nodes
                    .values()
                    .any(|c| c.coord.as_ref().is_some_and(|co| co.members.contains(&h)));
            if stranded {
                // Every contact it knew left or crashed before admitting it: it never became a
                // member (checked just above), so nothing waits on it.
                continue;
            }
            let s = n.stats();
            let crash_only = if self.crashed.is_empty() {
                s.stale_dropped + s.from_crashed
            } else {
                0
            };
            if s.duplicates
                + s.bound_violations
                + s.overlaps
                + s.after_departure
                + s.rejected
                + crash_only
                > 0
            {
                self.violations.push(format!("{h} stats: {s:?}"));
            }
            if n.recovering() {
                self.violations.push(format!(
                    "{h} still recovering: {:?}, flushes {:?}, census {:?}",
                    n.recovery,
                    n.flush_seen,
                    n.coord.as_ref().map(|c| &c.census)
                ));
            }
            if !n.early.is_empty() {
                // Messages held behind a sequence number that will never come.
                self.violations
                    .push(format!("{h} holds {} messages behind a gap", n.early.len()));
            }
            if n.parked() > 0 || n.pending() > 0 {
                self.violations.push(format!(
                    "{h} still has {} parked, {} pending",
                    n.parked(),
                    n.pending()
                ));
            }
            if !departed.contains(&h) && n.phase() != Phase::Joining {
                for d in &departed {
                    if n.table_mentions(*d) {
                        self.violations
                            .push(format!("{h}'s table still names departed {d}"));
                    }
                }
            }
            if matches!(
                n.phase(),
                Phase::Joining | Phase::LeaveRequested | Phase::Draining
            ) {
                self.violations
                    .push(format!("{h} stuck in {:?}", n.phase()));
            }
        }
        let coords = self.coordinators();
        if coords.len() != 1 {
            self.violations
                .push(format!("coordinators after settling: {coords:?}"));
        }
        for (&h, n) in &self.nodes {
            let (c, _) = n.coordinator();
            if matches!(n.phase(), Phase::Active | Phase::LeaveRequested)
                && coords.len() == 1
                && c != coords[0]
            {
                self.violations
                    .push(format!("{h} believes {c} coordinates, not {}", coords[0]));
            }
        }
        if covered != self.space {
            self.violations.push(format!(
                "owned IDs total {covered}, space is {}",
                self.space
            ));
        }
        let ledgers = self.nodes.values().map(|n| n.data());
        let bad = if self.crashed.is_empty() {
            crate::apps::ledger::check_exactly_once(&self.sent, ledgers)
        } else {
            crate::apps::ledger::check_at_most_once(&self.sent, ledgers)
        };
        self.violations.extend(bad);
        let mut lost = self.lost.clone();
        lost.sort();
        for w in lost.windows(2) {
            if w[0].0 == w[1].0 && w[1].1.start < w[0].1.end {
                self.violations
                    .push(format!("lost ranges reported twice: {:?} {:?}", w[0], w[1]));
            }
        }
    }

    /// A random schedule of `steps` actions, then quiescence and the final checks.
    pub(crate) fn churn(&mut self, steps: u32) {
        for _ in 0..steps {
            match self.rand() % 100 {
                0..=54 => {
                    self.deliver_one();
                }
                55..=84 => self.send_random(),
                85..=89 => self.join(),
                90..=94 => self.leave(),
                _ => self.rebalance(),
            }
            if self.rand().is_multiple_of(4) {
                self.apps_receive();
            }
            self.tick(Duration::from_millis(1));
            if self.crash_per_mille > 0 && self.rand().is_multiple_of(50) {
                self.detect_crashes();
            }
            if self.crash_per_mille > 0 && self.rand() % 1000 < self.crash_per_mille {
                self.crash();
            }
            self.check_single_owner();
        }
        self.quiesce();
        self.check_settled();
    }
}
