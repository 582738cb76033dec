//! The routing-table protocol as a pure state machine: frames in, frames out; no clock, no network.
//!
//! Distance vector over the links a machine can open directly, with poisoned reverse, corrective
//! replies instead of periodic updates, and flooded tombstones for machines that leave (see the
//! module documentation in `mod.rs` for the scheme and why).

use std::collections::{BTreeMap, BTreeSet};

use gridbed_runtime::HostId;

use super::wire::{Advert, Body, Frame, Tomb, POISON};

/// One destination's route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// First machine on the path (the destination itself for a neighbour).
    pub next: HostId,
    /// Links to the destination; `>= inf` while a withdrawal is waiting to be advertised.
    pub hops: u32,
    /// The destination's incarnation this route leads to.
    pub inc: u32,
}

/// Where the machine is in its life.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    Active,
    /// Said `Bye`; waiting for the `ByeAck` of these neighbours.
    Leaving(BTreeSet<HostId>),
    /// Every neighbour acknowledged: nothing will reach this machine any more.
    Departed,
}

/// Protocol errors on a received frame (the frame is ignored; one line for the log).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OverlayError {
    #[error("frame claims to come from {claimed} but arrived from {actual}")]
    Spoofed { claimed: HostId, actual: HostId },
    #[error("frame from {0}, which is this machine")]
    FromSelf(HostId),
    #[error("advert from {from} for {dest} repeats a destination in one frame")]
    Duplicate { from: HostId, dest: HostId },
}

/// Counters (for the experiment's metrics).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouterStats {
    pub frames_in: u64,
    pub adverts_in: u64,
    pub frames_out: u64,
    pub adverts_out: u64,
    pub corrective_replies: u64,
    pub ignored_stale: u64,
}

/// One machine's routing state.
#[derive(Clone, Debug)]
pub struct Router {
    me: HostId,
    inc: u32,
    /// "Unreachable": a simple path has fewer links than there are machines, so `inf` = machine
    /// count bounds counting-to-infinity after a partition.
    inf: u32,
    state: State,
    /// Neighbours (machines heard from on a direct link) and their incarnations.
    neighbors: BTreeMap<HostId, u32>,
    routes: BTreeMap<HostId, Route>,
    /// Highest departed incarnation per machine.
    gone: BTreeMap<HostId, u32>,
    /// Destinations whose route changed since the last flush (advertised to every neighbour).
    dirty: BTreeSet<HostId>,
    /// Destinations to advertise to one neighbour only (corrective replies).
    direct: BTreeMap<HostId, BTreeSet<HostId>>,
    /// Neighbours owed the whole table (new links).
    dump: BTreeSet<HostId>,
    /// Departures to flood, with the neighbour they came from (not sent back there).
    tombs_out: Vec<(Tomb, Option<HostId>)>,
    /// Control frames (Hello, Bye, ByeAck), sent before updates, in order.
    control: Vec<(HostId, Body)>,
    /// Bumped on every change of a finite route (for "time of the last table change").
    version: u64,
    stats: RouterStats,
}

impl Router {
    /// A machine with incarnation `inc` (higher than any earlier life of the same machine) in a
    /// system of at most `max_machines` machines.
    pub fn new(me: HostId, inc: u32, max_machines: u32) -> Self {
        let mut routes = BTreeMap::new();
        routes.insert(
            me,
            Route {
                next: me,
                hops: 0,
                inc,
            },
        );
        Router {
            me,
            inc,
            inf: max_machines.max(2),
            state: State::Active,
            neighbors: BTreeMap::new(),
            routes,
            gone: BTreeMap::new(),
            dirty: BTreeSet::new(),
            direct: BTreeMap::new(),
            dump: BTreeSet::new(),
            tombs_out: Vec::new(),
            control: Vec::new(),
            version: 0,
            stats: RouterStats::default(),
        }
    }

    /// Says hello to every machine this one may connect to directly (its candidates).
    pub fn start(&mut self, candidates: impl IntoIterator<Item = HostId>) {
        for c in candidates {
            if c != self.me {
                self.control.push((c, Body::Hello));
            }
        }
    }

    pub fn me(&self) -> HostId {
        self.me
    }
    pub fn incarnation(&self) -> u32 {
        self.inc
    }
    pub fn state(&self) -> &State {
        &self.state
    }
    pub fn version(&self) -> u64 {
        self.version
    }
    pub fn stats(&self) -> &RouterStats {
        &self.stats
    }
    pub fn neighbors(&self) -> impl Iterator<Item = HostId> + '_ {
        self.neighbors.keys().copied()
    }

    /// The routing table: destination → route, finite routes to other machines only.
    pub fn table(&self) -> BTreeMap<HostId, Route> {
        self.routes
            .iter()
            .filter(|(d, r)| **d != self.me && r.hops < self.inf)
            .map(|(d, r)| (*d, *r))
            .collect()
    }

    /// Starts leaving: `Bye` to every neighbour; done once all acknowledged ([`State::Departed`]).
    pub fn leave(&mut self) {
        if self.state != State::Active {
            return;
        }
        self.clear_pending();
        let waiting: BTreeSet<HostId> = self.neighbors.keys().copied().collect();
        for n in &waiting {
            self.control.push((*n, Body::Bye));
        }
        self.state = if waiting.is_empty() {
            State::Departed
        } else {
            State::Leaving(waiting)
        };
    }

    fn clear_pending(&mut self) {
        self.dirty.clear();
        self.direct.clear();
        self.dump.clear();
        self.tombs_out.clear();
        self.control.retain(|(_, b)| *b == Body::ByeAck);
    }

    /// Handles one frame that arrived from `from`. Returns the work done (adverts and tombs
    /// examined, at least 1) so the driver can charge CPU for it.
    pub fn handle(&mut self, from: HostId, f: Frame) -> Result<u64, OverlayError> {
        if f.src != from {
            return Err(OverlayError::Spoofed {
                claimed: f.src,
                actual: from,
            });
        }
        if from == self.me {
            return Err(OverlayError::FromSelf(from));
        }
        self.stats.frames_in += 1;
        // A Bye is always acknowledged, even from an incarnation already known to be gone, so the
        // leaver can finish its handshake.
        if f.body == Body::Bye {
            self.control.push((from, Body::ByeAck));
            self.on_departure(
                Tomb {
                    host: from,
                    inc: f.inc,
                },
                None,
            );
            return Ok(1);
        }
        if let State::Leaving(waiting) = &mut self.state {
            match f.body {
                Body::ByeAck => {
                    waiting.remove(&from);
                    if waiting.is_empty() {
                        self.state = State::Departed;
                    }
                }
                // A machine that has not heard our Bye yet: it must say goodbye to us too.
                _ if !self.neighbors.contains_key(&from) => {
                    self.neighbors.insert(from, f.inc);
                    waiting.insert(from);
                    self.control.push((from, Body::Bye));
                }
                _ => {}
            }
            return Ok(1);
        }
        if self.state == State::Departed || f.body == Body::ByeAck {
            return Ok(1);
        }
        if self.gone.get(&from).is_some_and(|g| *g >= f.inc) {
            self.stats.ignored_stale += 1;
            return Ok(1);
        }
        if let Body::Update { adverts, .. } = &f.body {
            let mut seen = BTreeSet::new();
            for a in adverts {
                if !seen.insert(a.dest) {
                    return Err(OverlayError::Duplicate { from, dest: a.dest });
                }
            }
        }
        self.link_up(from, f.inc);
        let mut work = 1;
        if let Body::Update { adverts, gone } = f.body {
            for t in gone {
                work += 1;
                self.on_departure(t, Some(from));
            }
            for a in adverts {
                work += 1;
                self.on_advert(from, a);
            }
        }
        self.stats.adverts_in += work - 1;
        Ok(work)
    }

    /// First frame from a neighbour (or from a new incarnation of it).
    fn link_up(&mut self, n: HostId, inc: u32) {
        match self.neighbors.get(&n) {
            Some(&old) if old >= inc => return,
            Some(_) => self.link_down(n),
            None => {}
        }
        self.neighbors.insert(n, inc);
        self.dump.insert(n);
        self.set_route(
            n,
            Route {
                next: n,
                hops: 1,
                inc,
            },
        );
    }

    /// The link to `n` is gone: every route through it is withdrawn (advertised as unreachable;
    /// neighbours with another path answer with a corrective reply).
    fn link_down(&mut self, n: HostId) {
        self.neighbors.remove(&n);
        self.direct.remove(&n);
        self.dump.remove(&n);
        let via: Vec<HostId> = self
            .routes
            .iter()
            .filter(|(d, r)| r.next == n && **d != self.me)
            .map(|(d, _)| *d)
            .collect();
        for d in via {
            let r = self.routes[&d];
            self.set_route(
                d,
                Route {
                    hops: self.inf,
                    ..r
                },
            );
        }
    }

    fn on_departure(&mut self, t: Tomb, from: Option<HostId>) {
        if t.host == self.me || self.gone.get(&t.host).is_some_and(|g| *g >= t.inc) {
            return;
        }
        self.gone.insert(t.host, t.inc);
        if self.neighbors.get(&t.host).is_some_and(|i| *i <= t.inc) {
            self.link_down(t.host);
        }
        if let Some(r) = self.routes.get(&t.host).copied() {
            if r.inc <= t.inc {
                if r.hops < self.inf {
                    self.version += 1;
                }
                self.routes.remove(&t.host);
                self.dirty.remove(&t.host);
            }
        }
        self.tombs_out.push((t, from));
    }

    fn on_advert(&mut self, n: HostId, a: Advert) {
        if a.dest == self.me {
            return;
        }
        if self.gone.get(&a.dest).is_some_and(|g| *g >= a.inc) {
            self.stats.ignored_stale += 1;
            return;
        }
        // A poisoned reverse: n's path goes through us, so it already gets our changes.
        let poisoned = a.hops == POISON;
        let h = a.hops.min(self.inf);
        // `hops` is from the wire: with a machine bound of u32::MAX, a poisoned advert would
        // overflow.
        let cand = h.saturating_add(1).min(self.inf);
        let via_n = Route {
            next: n,
            hops: cand,
            inc: a.inc,
        };
        let Some(r) = self.routes.get(&a.dest).copied() else {
            if cand < self.inf {
                self.set_route(a.dest, via_n);
            }
            return;
        };
        if a.inc < r.inc {
            // n knows an older life of the destination: tell it about the current one.
            self.stats.ignored_stale += 1;
            self.reply(n, a.dest, &r);
        } else if a.inc > r.inc || r.next == n || cand < r.hops {
            // A newer incarnation, news from our own next hop (better or worse), or a shorter path.
            self.set_route(a.dest, via_n);
        } else if !poisoned && r.hops < self.inf && r.hops + 1 < h {
            // n could do better through us (e.g. it just lost its path): corrective reply.
            self.reply(n, a.dest, &r);
        }
    }

    fn reply(&mut self, n: HostId, dest: HostId, r: &Route) {
        if r.next != n && r.hops < self.inf {
            self.stats.corrective_replies += 1;
            self.direct.entry(n).or_default().insert(dest);
        }
    }

    fn set_route(&mut self, d: HostId, new: Route) {
        let old = self.routes.insert(d, new);
        if old == Some(new) {
            return;
        }
        let finite = |r: Option<Route>| r.filter(|r| r.hops < self.inf);
        if finite(old) != finite(Some(new)) {
            self.version += 1;
        }
        self.dirty.insert(d);
    }

    /// What to advertise to neighbour `m` about `d`: poisoned reverse (unreachable) if our path
    /// goes through `m`.
    fn advert_for(&self, m: HostId, d: HostId) -> Option<Advert> {
        let r = self.routes.get(&d)?;
        let hops = if r.next == m && d != self.me {
            POISON
        } else {
            r.hops.min(self.inf)
        };
        Some(Advert {
            dest: d,
            inc: r.inc,
            hops,
        })
    }

    /// Frames to send, in order: control frames, then at most one update per neighbour.
    pub fn take_outgoing(&mut self) -> Vec<(HostId, Frame)> {
        let mut out: Vec<(HostId, Frame)> = std::mem::take(&mut self.control)
            .into_iter()
            .map(|(to, body)| (to, self.frame(body)))
            .collect();
        if self.state == State::Active {
            let neighbors: Vec<HostId> = self.neighbors.keys().copied().collect();
            for m in neighbors {
                let mut dests: BTreeSet<HostId> = if self.dump.contains(&m) {
                    self.routes.keys().copied().collect()
                } else {
                    self.dirty.clone()
                };
                if let Some(extra) = self.direct.get(&m) {
                    dests.extend(extra.iter().copied());
                }
                let adverts: Vec<Advert> = dests
                    .into_iter()
                    .filter(|d| *d != m)
                    .filter_map(|d| self.advert_for(m, d))
                    .collect();
                let gone: Vec<Tomb> = self
                    .tombs_out
                    .iter()
                    .filter(|(t, from)| *from != Some(m) && t.host != m)
                    .map(|(t, _)| *t)
                    .collect();
                if adverts.is_empty() && gone.is_empty() {
                    continue;
                }
                self.stats.adverts_out += adverts.len() as u64;
                out.push((m, self.frame(Body::Update { adverts, gone })));
            }
            // Withdrawals have been advertised: unreachable routes can go.
            let inf = self.inf;
            self.routes.retain(|_, r| r.hops < inf);
            self.dirty.clear();
            self.direct.clear();
            self.dump.clear();
            self.tombs_out.clear();
        }
        self.stats.frames_out += out.len() as u64;
        out
    }

    fn frame(&self, body: Body) -> Frame {
        Frame {
            src: self.me,
            inc: self.inc,
            body,
        }
    }
}
