//! Load sharing with and without migration of running processes: the question of Eager, Lazowska
//! & Zahorjan (SIGMETRICS 1988), document 1's reference \[1\], as a discrete-event model.
//!
//! N identical hosts, each a processor-sharing server (a time-shared UNIX CPU, as in
//! Harchol-Balter & Downey 1996 and in `gridbed-sim`'s CPU model), speed 1, each with Poisson
//! arrivals. Policies:
//! - `None`: every job runs where it arrives.
//! - `Placement`: the threshold policy of Eager, Lazowska & Zahorjan (1986): a job arriving at a
//!   host with at least `threshold` jobs probes up to `probe_limit` random other hosts and goes to
//!   the first with fewer than `threshold`; placement moves no running state and costs nothing.
//! - `Migration`: placement, plus: when a host is left with fewer than `threshold` jobs (a
//!   completion, or every `rebalance_period`), it probes up to `probe_limit` hosts for one with
//!   more than `threshold` and takes its oldest running job if that job's attained CPU time is at
//!   least the migration cost (age-based, after Harchol-Balter & Downey). A migrating job is
//!   frozen for `migration_cost` (the image in transit), served nowhere, then joins the taker.
//!
//! The run is a pure function of the parameters and seed: arrivals and demands come from one
//! ChaCha stream (the same jobs for every policy: common random numbers), probes from another.

use std::collections::{BTreeMap, BTreeSet};

use gridbed_runtime::rng::{mix64, SplitMix64};

/// The model's random stream: the three draws it needs, over one seeded generator (swapping the
/// generator changes only this type).
pub struct Stream(SplitMix64);

impl Stream {
    pub fn new(seed: u64) -> Self {
        Stream(SplitMix64(mix64(seed)))
    }
    /// Uniform in (0, 1): the midpoint of one of 2^53 equal cells, so never 0 (safe under `ln`)
    /// and never 1.
    pub fn unit_open(&mut self) -> f64 {
        ((self.0.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    /// Uniform in 0..n (n > 0): the high half of a 64×64-bit product (Lemire), no modulo bias
    /// worth measuring at these n.
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.0.next_u64()) * n as u128) >> 64) as usize
    }
    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.0.unit() < p.clamp(0.0, 1.0)
    }
}

/// Service-demand distribution, mean 1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Demand {
    /// Exponential for cv = 1; balanced-means two-stage hyper-exponential for cv > 1.
    Cv(f64),
    /// Bounded Pareto on [k, k * range] with shape `alpha`, scaled to mean 1.
    Pareto { alpha: f64, range: f64 },
}

impl Demand {
    /// Draws one demand.
    pub fn sample(&self, rng: &mut Stream) -> f64 {
        let u = rng.unit_open();
        match *self {
            Demand::Cv(cv) if cv <= 1.0 => -u.ln(),
            Demand::Cv(cv) => {
                let c2 = cv * cv;
                let p1 = 0.5 * (1.0 + ((c2 - 1.0) / (c2 + 1.0)).sqrt());
                let rate = if rng.chance(p1) {
                    2.0 * p1
                } else {
                    2.0 * (1.0 - p1)
                };
                -u.ln() / rate
            }
            Demand::Pareto { alpha, range } => {
                let (k, h) = pareto_bounds(alpha, range);
                // Inverse CDF of the bounded Pareto.
                let ka = k.powf(alpha);
                let ha = h.powf(alpha);
                (-(u * ha - u * ka - ha) / (ha * ka)).powf(-1.0 / alpha)
            }
        }
    }

    /// The distribution's coefficient of variation (analytic).
    pub fn cv(&self) -> f64 {
        match *self {
            Demand::Cv(cv) => cv.max(1.0),
            Demand::Pareto { alpha, range } => {
                let (k, h) = pareto_bounds(alpha, range);
                let m2 = bp_moment(alpha, k, h, 2.0);
                (m2 - 1.0).max(0.0).sqrt()
            }
        }
    }
}

/// E[X^j] of a bounded Pareto(alpha) on [k, h].
fn bp_moment(alpha: f64, k: f64, h: f64, j: f64) -> f64 {
    let c = alpha * k.powf(alpha) / (1.0 - (k / h).powf(alpha));
    if (j - alpha).abs() < 1e-12 {
        c * (h / k).ln()
    } else {
        c * (h.powf(j - alpha) - k.powf(j - alpha)) / (j - alpha)
    }
}

/// Lower and upper bound giving mean 1 for the given shape and range h/k.
fn pareto_bounds(alpha: f64, range: f64) -> (f64, f64) {
    let m = bp_moment(alpha, 1.0, range, 1.0);
    (1.0 / m, range / m)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    None,
    Placement,
    Migration,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub hosts: usize,
    /// Offered load per host (arrival rate × mean demand).
    pub load: f64,
    pub demand: Demand,
    pub policy: Policy,
    pub threshold: usize,
    pub probe_limit: usize,
    /// Time a migrating job is frozen, in units of the mean demand.
    pub migration_cost: f64,
    pub rebalance_period: f64,
    /// Jobs to complete; the first `warmup` of them are not counted.
    pub jobs: usize,
    pub warmup: usize,
    pub seed: u64,
}

/// What a run measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Outcome {
    pub mean_response: f64,
    /// Mean of response − demand: time lost to sharing the CPU and to migration (the "delay" of
    /// Harchol-Balter & Downey).
    pub mean_delay: f64,
    /// Mean of response / demand.
    pub mean_slowdown: f64,
    pub placements: u64,
    pub migrations: u64,
    pub counted: u64,
}

struct Job {
    arrival: f64,
    demand: f64,
    /// Virtual finish time on its current host (host's attained-service clock + remaining work).
    finish_v: f64,
}

/// One processor-sharing host: every job attains service at 1/n; `v` is the service each
/// resident job has attained since the host's clock started, so a job finishes when `v` reaches
/// its `finish_v`.
#[derive(Default)]
struct Host {
    v: f64,
    queue: BTreeSet<(OrdF64, u64)>,
}

/// An f64 ordered by `total_cmp`, for keys of ordered sets.
#[derive(Clone, Copy, Debug)]
struct OrdF64(f64);
impl PartialEq for OrdF64 {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o).is_eq()
    }
}
impl Eq for OrdF64 {}
impl PartialOrd for OrdF64 {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for OrdF64 {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&o.0)
    }
}

impl Host {
    fn n(&self) -> usize {
        self.queue.len()
    }
    fn advance(&mut self, dt: f64) {
        if !self.queue.is_empty() {
            self.v += dt / self.n() as f64;
        }
    }
    /// Time from now until the next completion.
    fn next_completion(&self) -> Option<f64> {
        self.queue
            .first()
            .map(|(f, _)| ((f.0 - self.v) * self.n() as f64).max(0.0))
    }
}

struct Sim<'a> {
    cfg: &'a Config,
    now: f64,
    hosts: Vec<Host>,
    jobs: BTreeMap<u64, Job>,
    in_transit: BTreeSet<(OrdF64, u64, usize)>,
    probe_rng: Stream,
    /// Migration probes draw from their own stream, so placement sees the same random hosts
    /// whether or not migration is on.
    pull_rng: Stream,
    done: usize,
    sum_response: f64,
    sum_slowdown: f64,
    sum_demand: f64,
    out: Outcome,
}

impl Sim<'_> {
    fn join(&mut self, h: usize, id: u64, remaining: f64) {
        let host = &mut self.hosts[h];
        let f = host.v + remaining;
        self.jobs.get_mut(&id).expect("live job").finish_v = f;
        host.queue.insert((OrdF64(f), id));
    }

    fn random_other(&mut self, h: usize, for_pull: bool) -> usize {
        let n = self.hosts.len();
        let rng = if for_pull {
            &mut self.pull_rng
        } else {
            &mut self.probe_rng
        };
        (h + 1 + rng.below(n - 1)) % n
    }

    fn place(&mut self, arrived_at: usize) -> usize {
        if self.cfg.policy == Policy::None
            || self.hosts.len() < 2
            || self.hosts[arrived_at].n() < self.cfg.threshold
        {
            return arrived_at;
        }
        for _ in 0..self.cfg.probe_limit {
            let t = self.random_other(arrived_at, false);
            if self.hosts[t].n() < self.cfg.threshold {
                self.out.placements += 1;
                return t;
            }
        }
        arrived_at
    }

    /// Host `h` is underloaded: try to take a running job from an overloaded host.
    fn pull(&mut self, h: usize) {
        if self.cfg.policy != Policy::Migration
            || self.hosts.len() < 2
            || self.hosts[h].n() >= self.cfg.threshold
        {
            return;
        }
        for _ in 0..self.cfg.probe_limit {
            let s = self.random_other(h, true);
            if self.hosts[s].n() <= self.cfg.threshold {
                continue;
            }
            // Oldest by attained CPU time = the one that has been resident and served longest;
            // attained = demand - remaining.
            let v = self.hosts[s].v;
            let best = self.hosts[s]
                .queue
                .iter()
                .map(|&(f, id)| {
                    let j = &self.jobs[&id];
                    (OrdF64(j.demand - (f.0 - v)), f, id)
                })
                .max();
            let Some((age, f, id)) = best else { continue };
            if age.0 < self.cfg.migration_cost {
                continue;
            }
            self.hosts[s].queue.remove(&(f, id));
            let remaining = f.0 - v;
            self.jobs.get_mut(&id).expect("live").finish_v = remaining;
            self.in_transit
                .insert((OrdF64(self.now + self.cfg.migration_cost), id, h));
            self.out.migrations += 1;
            return;
        }
    }
}

/// Runs one configuration.
pub fn simulate(cfg: &Config) -> Outcome {
    let mut arrivals = Stream::new(cfg.seed);
    let mut sim = Sim {
        cfg,
        now: 0.0,
        hosts: (0..cfg.hosts.max(1)).map(|_| Host::default()).collect(),
        jobs: BTreeMap::new(),
        in_transit: BTreeSet::new(),
        probe_rng: Stream::new(cfg.seed ^ 0x005e_ed0f_0be5_u64),
        pull_rng: Stream::new(cfg.seed ^ 0x0070_11ed_u64),
        done: 0,
        sum_response: 0.0,
        sum_slowdown: 0.0,
        sum_demand: 0.0,
        out: Outcome {
            mean_response: f64::NAN,
            mean_delay: f64::NAN,
            mean_slowdown: f64::NAN,
            placements: 0,
            migrations: 0,
            counted: 0,
        },
    };
    let n = sim.hosts.len();
    let rate = cfg.load * n as f64;
    let exp = |rng: &mut Stream| -rng.unit_open().ln() / rate;
    let mut next_arrival = exp(&mut arrivals);
    let mut next_rebalance = cfg.rebalance_period;
    let mut next_id = 0u64;
    while sim.done < cfg.jobs {
        let completion = (0..n)
            .filter_map(|h| sim.hosts[h].next_completion().map(|dt| (sim.now + dt, h)))
            .min_by(|a, b| a.0.total_cmp(&b.0));
        let transit = sim.in_transit.first().map(|&(t, _, _)| t.0);
        let mut t = next_arrival;
        let mut kind = 0;
        if let Some((c, _)) = completion {
            if c < t {
                t = c;
                kind = 1;
            }
        }
        if let Some(tr) = transit {
            if tr < t {
                t = tr;
                kind = 2;
            }
        }
        if cfg.policy == Policy::Migration && next_rebalance < t {
            t = next_rebalance;
            kind = 3;
        }
        let dt = (t - sim.now).max(0.0);
        for host in &mut sim.hosts {
            host.advance(dt);
        }
        sim.now = t;
        match kind {
            0 => {
                let at = arrivals.below(n);
                let demand = cfg.demand.sample(&mut arrivals);
                next_arrival = sim.now + exp(&mut arrivals);
                let id = next_id;
                next_id += 1;
                sim.jobs.insert(
                    id,
                    Job {
                        arrival: sim.now,
                        demand,
                        finish_v: 0.0,
                    },
                );
                let h = sim.place(at);
                sim.join(h, id, demand);
            }
            1 => {
                let (_, h) = completion.expect("kind 1");
                let (_, id) = sim.hosts[h].queue.pop_first().expect("has a job");
                let job = sim.jobs.remove(&id).expect("live");
                sim.done += 1;
                if sim.done > cfg.warmup {
                    let response = sim.now - job.arrival;
                    sim.sum_response += response;
                    sim.sum_demand += job.demand;
                    sim.sum_slowdown += response / job.demand;
                    sim.out.counted += 1;
                }
                sim.pull(h);
            }
            2 => {
                let (_, id, h) = sim.in_transit.pop_first().expect("kind 2");
                let remaining = sim.jobs[&id].finish_v;
                sim.join(h, id, remaining);
            }
            _ => {
                next_rebalance += cfg.rebalance_period;
                for h in 0..n {
                    sim.pull(h);
                }
            }
        }
    }
    let counted = sim.out.counted.max(1) as f64;
    sim.out.mean_response = sim.sum_response / counted;
    sim.out.mean_delay = (sim.sum_response - sim.sum_demand) / counted;
    sim.out.mean_slowdown = sim.sum_slowdown / counted;
    sim.out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(policy: Policy, demand: Demand, load: f64) -> Config {
        Config {
            hosts: 8,
            load,
            demand,
            policy,
            threshold: 2,
            probe_limit: 3,
            migration_cost: 0.0,
            rebalance_period: 0.5,
            jobs: 60_000,
            warmup: 5_000,
            seed: 11,
        }
    }

    #[test]
    fn demands_have_mean_one_and_the_stated_cv() {
        let mut rng = Stream::new(1);
        for d in [Demand::Cv(1.0), Demand::Cv(4.0)] {
            let xs: Vec<f64> = (0..400_000).map(|_| d.sample(&mut rng)).collect();
            let m = xs.iter().sum::<f64>() / xs.len() as f64;
            let v = xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / xs.len() as f64;
            assert!((m - 1.0).abs() < 0.03, "{d:?} mean {m}");
            assert!(
                (v.sqrt() / m / d.cv() - 1.0).abs() < 0.1,
                "{d:?} cv {}",
                v.sqrt() / m
            );
        }
        let p = Demand::Pareto {
            alpha: 1.0,
            range: 1e5,
        };
        let xs: Vec<f64> = (0..400_000).map(|_| p.sample(&mut rng)).collect();
        let m = xs.iter().sum::<f64>() / xs.len() as f64;
        assert!((m - 1.0).abs() < 0.15, "pareto mean {m}");
        assert!(p.cv() > 10.0);
    }

    #[test]
    fn no_sharing_matches_m_m_1_ps() {
        // M/G/1-PS: mean response = demand / (1 - load), insensitive to the distribution.
        let o = simulate(&cfg(Policy::None, Demand::Cv(1.0), 0.7));
        assert!((o.mean_response / (1.0 / 0.3) - 1.0).abs() < 0.06, "{o:?}");
    }

    #[test]
    fn placement_helps_and_costly_migration_is_not_taken() {
        let none = simulate(&cfg(Policy::None, Demand::Cv(1.0), 0.9));
        let place = simulate(&cfg(Policy::Placement, Demand::Cv(1.0), 0.9));
        assert!(
            place.mean_response < 0.6 * none.mean_response,
            "{none:?} {place:?}"
        );
        let mut c = cfg(Policy::Migration, Demand::Cv(1.0), 0.9);
        c.migration_cost = 1e9;
        let m = simulate(&c);
        assert_eq!(m.migrations, 0);
        // Same jobs, same placements (rebalance ticks only split the float steps).
        assert!(
            (m.mean_response / place.mean_response - 1.0).abs() < 1e-9,
            "{m:?} {place:?}"
        );
        c.migration_cost = 0.0;
        let free = simulate(&c);
        assert!(
            free.migrations > 0 && free.mean_response < place.mean_response,
            "{free:?}"
        );
    }
}
