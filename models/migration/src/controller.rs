//! The load-driven migration policy (the external controller document 1 left for later): from the
//! hosts' load samples and the managed processes' progress, decide which process to move where.
//!
//! A process is moved off its host when (all of):
//! - it has stayed there at least `min_residence_s` (bounds how often one process can move);
//! - its host's load from others (runnable jobs other than the probe and this process) is at least
//!   `threshold_jobs`;
//! - the least-loaded monitored host would give it at least `hysteresis_jobs` fewer competitors
//!   (counting the process itself there, so a move never just swaps the imbalance);
//! - the predicted gain, remaining work × the difference in competitors, exceeds the predicted
//!   migration cost (image transfer + restart, from [`MigrationCost`]).
//!
//! An order the process does not carry out (lost, or the image could not be sent) is given up
//! once the process still reports from its old host well after the move should have finished.
//!
//! Decisions of one round see each other: a host chosen as a destination counts its incoming
//! process at once, so two overloaded hosts do not both pile onto the same idle one.

use std::collections::BTreeMap;
use std::time::Duration;

use gridbed_runtime::{Addr, HostId};

use crate::cost::MigrationCost;
use crate::load::LoadSample;

/// The controller's explicit parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Policy {
    /// Time between decisions (and between a monitor's samples).
    pub period_s: f64,
    /// Weight of a new sample in the smoothed load (1 = use the last sample only).
    pub smoothing: f64,
    /// Minimum load from other jobs on a host before its process is considered for moving.
    pub threshold_jobs: f64,
    /// Minimum drop in competitors a move must bring.
    pub hysteresis_jobs: f64,
    /// Minimum time a process stays on a host before it may move again.
    pub min_residence_s: f64,
}

/// What the controller knows of one managed process.
#[derive(Clone, Debug, PartialEq)]
pub struct Managed {
    pub id: u32,
    pub host: HostId,
    /// Where migration orders for this process go.
    pub control: Addr,
    pub image_bytes: u64,
    /// Predicted remaining CPU time at full speed; `None` = predict from age (a process that has
    /// run t seconds is expected to run about t more: Harchol-Balter & Downey 1996).
    pub remaining_s: Option<f64>,
    pub started: Duration,
    pub resident_since: Duration,
    /// An order was sent and the process has not reported from a new host yet.
    pub moving_to: Option<HostId>,
}

/// One migration order and why it was given.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Decision {
    pub process: u32,
    pub from: HostId,
    pub to: HostId,
    pub at: Duration,
    pub gain_s: f64,
    pub cost_s: f64,
}

/// The policy's state: smoothed loads and the managed processes.
pub struct Controller {
    pub policy: Policy,
    loads: BTreeMap<HostId, f64>,
    procs: BTreeMap<u32, Managed>,
    /// When an order in flight is given up if the process still reports from its old host (the
    /// order or the image was lost): twice the predicted cost plus four periods.
    deadlines: BTreeMap<u32, Duration>,
    pub decisions: Vec<Decision>,
}

impl Controller {
    pub fn new(policy: Policy) -> Self {
        Controller {
            policy,
            loads: BTreeMap::new(),
            procs: BTreeMap::new(),
            deadlines: BTreeMap::new(),
            decisions: Vec::new(),
        }
    }

    /// Folds one sample into its host's smoothed load.
    pub fn observe(&mut self, s: &LoadSample) {
        let w = self.policy.smoothing.clamp(0.0, 1.0);
        let e = self.loads.entry(s.host).or_insert(s.runnable);
        *e = (1.0 - w) * *e + w * s.runnable;
    }

    /// A process reports where it runs and how much work it has left. A report from a new host
    /// ends a migration and restarts the residence clock.
    pub fn report(&mut self, now: Duration, p: Managed) {
        match self.procs.get_mut(&p.id) {
            Some(m) => {
                if m.host != p.host {
                    m.resident_since = now;
                    m.moving_to = None;
                    self.deadlines.remove(&p.id);
                } else if self.deadlines.get(&p.id).is_some_and(|&d| now > d) {
                    m.moving_to = None;
                    self.deadlines.remove(&p.id);
                }
                m.host = p.host;
                m.control = p.control;
                m.image_bytes = p.image_bytes;
                m.remaining_s = p.remaining_s;
            }
            None => {
                let mut p = p;
                p.resident_since = now;
                p.moving_to = None;
                self.procs.insert(p.id, p);
            }
        }
    }

    /// Forgets a finished process.
    pub fn finished(&mut self, id: u32) {
        self.procs.remove(&id);
        self.deadlines.remove(&id);
    }

    pub fn process(&self, id: u32) -> Option<&Managed> {
        self.procs.get(&id)
    }

    /// Managed processes on `h`, counting those on their way there and not those leaving.
    fn managed_on(&self, h: HostId) -> f64 {
        self.procs
            .values()
            .filter(|m| m.moving_to.unwrap_or(m.host) == h)
            .count() as f64
    }

    /// Runnable jobs on `h` that are neither the probe nor a managed process.
    pub fn others_on(&self, h: HostId) -> Option<f64> {
        let resident = self.procs.values().filter(|m| m.host == h).count() as f64;
        self.loads.get(&h).map(|l| (l - 1.0 - resident).max(0.0))
    }

    /// One decision round: the orders to give now (already recorded as in flight).
    pub fn decide(&mut self, now: Duration, cost: &dyn MigrationCost) -> Vec<Decision> {
        let ids: Vec<u32> = self.procs.keys().copied().collect();
        let mut out = Vec::new();
        for id in ids {
            let m = &self.procs[&id];
            let residence = now.saturating_sub(m.resident_since).as_secs_f64();
            if m.moving_to.is_some() || residence < self.policy.min_residence_s {
                continue;
            }
            let Some(others) = self.others_on(m.host) else {
                continue;
            };
            if others < self.policy.threshold_jobs {
                continue;
            }
            // Competitors here: other users' jobs plus the other managed processes on this host.
            let here = others + self.managed_on(m.host) - 1.0;
            let Some((to, there)) = self.least_loaded(m.host) else {
                continue;
            };
            let drop = here - there;
            if drop < self.policy.hysteresis_jobs {
                continue;
            }
            let remaining = m
                .remaining_s
                .unwrap_or_else(|| now.saturating_sub(m.started).as_secs_f64());
            let gain_s = remaining * drop;
            let cost_s = cost.predict_s(m.image_bytes, m.host, to);
            if gain_s <= cost_s {
                continue;
            }
            let d = Decision {
                process: id,
                from: m.host,
                to,
                at: now,
                gain_s,
                cost_s,
            };
            self.procs.get_mut(&id).expect("listed").moving_to = Some(to);
            let wait = 2.0 * cost_s + 4.0 * self.policy.period_s;
            self.deadlines
                .insert(id, now + Duration::from_secs_f64(wait.min(1e9)));
            self.decisions.push(d);
            out.push(d);
        }
        out
    }

    /// The monitored host other than `except` where a newcomer would have the fewest competitors
    /// (ties: lowest id), and that number.
    fn least_loaded(&self, except: HostId) -> Option<(HostId, f64)> {
        let mut best: Option<(HostId, f64)> = None;
        for &h in self.loads.keys() {
            if h == except {
                continue;
            }
            let there = self.others_on(h).unwrap_or(0.0) + self.managed_on(h);
            if best.is_none_or(|(_, b)| there < b) {
                best = Some((h, there));
            }
        }
        best
    }
}
