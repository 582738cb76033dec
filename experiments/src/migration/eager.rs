//! eager-1988: does migrating running processes add to what initial placement already gives?
//! (Eager, Lazowska & Zahorjan, SIGMETRICS 1988, document 1's reference \[1\].) Mean response time
//! relative to no load sharing, swept over demand variability, load and migration cost, on the
//! processor-sharing model of `gridbed_migration::sharing`.

use crate::outcome::{ExperimentOutput, Figure, Mode, Series, TraceRecord};
use gridbed_migration::sharing::{simulate, Config, Demand, Outcome, Policy};
use serde::{Deserialize, Serialize};

/// What a researcher can change (see PARAM_SPECS for units and sources).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    pub hosts: u32,
    pub loads: Vec<f64>,
    pub cvs: Vec<f64>,
    pub pareto: bool,
    pub pareto_alpha: f64,
    pub pareto_range: f64,
    pub migration_costs: Vec<f64>,
    pub headline_cost: f64,
    pub threshold: u32,
    pub probe_limit: u32,
    pub rebalance_period: f64,
    pub jobs: u32,
    pub replications: u32,
    pub warmup_fraction: f64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            hosts: 16,
            loads: vec![0.5, 0.7, 0.9],
            cvs: vec![1.0, 2.0, 4.0, 8.0, 16.0],
            pareto: true,
            pareto_alpha: 1.0,
            pareto_range: 1e5,
            migration_costs: vec![0.0, 0.1, 0.3, 1.0],
            headline_cost: 0.1,
            threshold: 2,
            probe_limit: 3,
            rebalance_period: 0.5,
            jobs: 15_000,
            replications: 3,
            warmup_fraction: 0.1,
        }
    }
}

pub const PARAM_SPECS: &[(&str, &str, &str)] = &[
    ("hosts", "hosts", "chosen: a departmental cluster; Eager et al.'s own N not checked"),
    ("loads", "utilisation", "issue: 0.5 / 0.7 / 0.9"),
    ("cvs", "coefficient of variation", "issue: 1, 2, 4, 8, 16 (exponential; balanced-means two-stage hyper-exponential above 1)"),
    ("pareto", "bool", "issue: heavy-tailed arm (Harchol-Balter & Downey 1996)"),
    ("pareto_alpha", "shape", "Harchol-Balter & Downey 1996: UNIX CPU lifetimes P(T > t) ~ 1/t (recollection, unverified)"),
    ("pareto_range", "max/min demand", "chosen: bounds the Pareto so the mean is finite (10^5 gives CV ~ 27)"),
    ("migration_costs", "mean demands", "issue: 0 to 1x the mean demand"),
    ("headline_cost", "mean demands", "chosen: the cost of the *_gain_* headline metrics"),
    ("threshold", "jobs", "Eager, Lazowska & Zahorjan 1986 threshold policy, T = 2 (recollection, unverified)"),
    ("probe_limit", "hosts", "Eager, Lazowska & Zahorjan 1986, probe limit 3 (recollection, unverified)"),
    ("rebalance_period", "mean demands", "chosen: how often an underloaded host looks for a job besides at completions"),
    ("jobs", "jobs", "chosen: per run; heavy tails need many (larger sweeps: raise it)"),
    ("replications", "runs", "chosen: independent runs per cell; the *_se metrics are their standard error"),
    ("warmup_fraction", "fraction", "chosen: completions not counted while the system fills"),
];

impl Params {
    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!((2..=4096).contains(&self.hosts), "hosts must be 2..=4096");
        anyhow::ensure!(
            !self.loads.is_empty() && self.loads.iter().all(|l| *l > 0.0 && *l < 1.0),
            "loads must be non-empty, each in (0, 1)"
        );
        anyhow::ensure!(
            self.cvs
                .iter()
                .all(|c| c.is_finite() && (1.0..=1000.0).contains(c)),
            "cvs must be in [1, 1000]"
        );
        anyhow::ensure!(
            self.migration_costs
                .iter()
                .all(|c| c.is_finite() && *c >= 0.0)
                && self.headline_cost.is_finite()
                && self.headline_cost >= 0.0,
            "migration costs must be >= 0"
        );
        anyhow::ensure!(
            self.pareto_alpha > 0.0 && self.pareto_range > 1.0 && self.pareto_range <= 1e12,
            "pareto_alpha must be > 0 and pareto_range in (1, 1e12]"
        );
        anyhow::ensure!(
            (1_000..=100_000_000).contains(&self.jobs),
            "jobs must be 1000..=100000000"
        );
        anyhow::ensure!(
            (1..=1000).contains(&self.replications),
            "replications must be 1..=1000"
        );
        anyhow::ensure!(
            (0.0..0.9).contains(&self.warmup_fraction),
            "warmup_fraction must be in [0, 0.9)"
        );
        anyhow::ensure!(
            self.rebalance_period > 0.0 && self.rebalance_period.is_finite(),
            "rebalance_period must be > 0"
        );
        anyhow::ensure!(
            self.threshold >= 1 && self.probe_limit >= 1,
            "threshold and probe_limit must be >= 1"
        );
        Ok(())
    }

    fn demands(&self) -> Vec<(String, Demand)> {
        let mut d: Vec<(String, Demand)> = self
            .cvs
            .iter()
            .map(|&cv| (format!("cv{}", fmt_num(cv)), Demand::Cv(cv)))
            .collect();
        if self.pareto {
            d.push((
                "pareto".into(),
                Demand::Pareto {
                    alpha: self.pareto_alpha,
                    range: self.pareto_range,
                },
            ));
        }
        d
    }

    fn config(&self, seed: u64, load: f64, demand: Demand, policy: Policy, cost: f64) -> Config {
        Config {
            hosts: self.hosts as usize,
            load,
            demand,
            policy,
            threshold: self.threshold as usize,
            probe_limit: self.probe_limit as usize,
            migration_cost: cost,
            rebalance_period: self.rebalance_period,
            jobs: self.jobs as usize,
            warmup: (self.jobs as f64 * self.warmup_fraction) as usize,
            seed,
        }
    }
}

/// Mean and standard error of the mean (0 for a single value).
fn mean_se(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let m = xs.iter().sum::<f64>() / n;
    if xs.len() < 2 {
        return (m, 0.0);
    }
    let var = xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0);
    (m, (var / n).sqrt())
}

/// 0.5 -> "05", 16 -> "16", 0.1 -> "01".
fn fmt_num(x: f64) -> String {
    format!("{x}").replace('.', "")
}

/// One (distribution, load) cell.
struct Cell {
    none: Outcome,
    place: Outcome,
    /// (cost, outcome) of placement + migration, headline cost included.
    migrate: Vec<(f64, Outcome)>,
}

impl Cell {
    fn at(&self, cost: f64) -> &Outcome {
        &self
            .migrate
            .iter()
            .find(|(c, _)| *c == cost)
            .expect("headline cost simulated")
            .1
    }
}

pub fn run_with(mode: Mode, seed: u64, p: &Params) -> anyhow::Result<ExperimentOutput> {
    anyhow::ensure!(
        mode == Mode::Sim,
        "experiment 'eager-1988' has no {mode} mode"
    );
    p.validate()?;
    let mut costs = p.migration_costs.clone();
    if !costs.contains(&p.headline_cost) {
        costs.push(p.headline_cost);
    }
    costs.sort_by(f64::total_cmp);
    let mut out = ExperimentOutput::default();
    let demands = p.demands();
    let top_load = p.loads.iter().copied().fold(f64::MIN, f64::max);
    let mut figures = Vec::new();
    let mut conclusions = Vec::new();
    // The model is not event-traced job by job; each run's exact result is one trace event, so a
    // replay still detects any divergence.
    let mut events = Vec::new();
    let mut record = |what: String, o: &Outcome| {
        events.push(format!(
            "{what}: response {:016x} slowdown {:016x} placements {} migrations {} counted {}",
            o.mean_response.to_bits(),
            o.mean_slowdown.to_bits(),
            o.placements,
            o.migrations,
            o.counted
        ));
    };
    for &load in &p.loads {
        let lname = fmt_num(load);
        let mut place_series = Series {
            name: "initial placement (threshold)".into(),
            points: Vec::new(),
        };
        let mut mig_series: Vec<Series> = costs
            .iter()
            .map(|c| Series {
                name: format!("placement + migration, cost {c} x mean"),
                points: Vec::new(),
            })
            .collect();
        for (dname, demand) in &demands {
            let cells: Vec<Cell> = (0..p.replications)
                .map(|r| {
                    // Same seed for every policy of a replication: the same jobs arrive (common
                    // random numbers); replications differ.
                    let cell_seed = seed
                        ^ load.to_bits().rotate_left(17)
                        ^ demand.cv().to_bits()
                        ^ u64::from(r).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                    let cfg = |pol, cost| p.config(cell_seed, load, *demand, pol, cost);
                    Cell {
                        none: simulate(&cfg(Policy::None, 0.0)),
                        place: simulate(&cfg(Policy::Placement, 0.0)),
                        migrate: costs
                            .iter()
                            .map(|&c| (c, simulate(&cfg(Policy::Migration, c))))
                            .collect(),
                    }
                })
                .collect();
            for (r, cell) in cells.iter().enumerate() {
                record(format!("load {load} {dname} rep {r} none"), &cell.none);
                record(
                    format!("load {load} {dname} rep {r} placement"),
                    &cell.place,
                );
                for (c, o) in &cell.migrate {
                    record(format!("load {load} {dname} rep {r} migration cost {c}"), o);
                }
            }
            let over = |f: &dyn Fn(&Cell) -> f64| mean_se(&cells.iter().map(f).collect::<Vec<_>>());
            let x = demand.cv();
            let (rel_place, _) = over(&|c| c.place.mean_response / c.none.mean_response);
            let (place_gain, place_se) =
                over(&|c| 1.0 - c.place.mean_response / c.none.mean_response);
            place_series.points.push((x, rel_place));
            for (i, s) in mig_series.iter_mut().enumerate() {
                let (rel, _) = over(&|c| c.migrate[i].1.mean_response / c.none.mean_response);
                s.points.push((x, rel));
            }
            let head = p.headline_cost;
            let (extra, extra_se) =
                over(&|c| 1.0 - c.at(head).mean_response / c.place.mean_response);
            out.metrics
                .insert(format!("placement_gain_{dname}_load{lname}"), place_gain);
            out.metrics
                .insert(format!("migration_extra_gain_{dname}_load{lname}"), extra);
            if load == top_load {
                out.metrics
                    .insert(format!("placement_gain_{dname}_load{lname}_se"), place_se);
                out.metrics.insert(
                    format!("migration_extra_gain_{dname}_load{lname}_se"),
                    extra_se,
                );
                for (i, c) in costs.iter().enumerate() {
                    let (g, _) = over(&|cell| {
                        1.0 - cell.migrate[i].1.mean_response / cell.place.mean_response
                    });
                    out.metrics.insert(
                        format!(
                            "migration_extra_gain_{dname}_load{lname}_cost{}",
                            fmt_num(*c)
                        ),
                        g,
                    );
                }
                let (d, _) = over(&|c| 1.0 - c.at(head).mean_delay / c.place.mean_delay);
                out.metrics
                    .insert(format!("migration_extra_gain_delay_{dname}_load{lname}"), d);
                let (sl, _) = over(&|c| 1.0 - c.at(head).mean_slowdown / c.place.mean_slowdown);
                out.metrics.insert(
                    format!("migration_extra_gain_slowdown_{dname}_load{lname}"),
                    sl,
                );
                let (f, _) = over(&|c| c.at(head).migrations as f64 / p.jobs as f64);
                out.metrics
                    .insert(format!("migrated_fraction_{dname}_load{lname}"), f);
            }
            conclusions.push((load, dname.clone(), x, place_gain, extra));
        }
        figures.push(Figure {
            id: format!("response-load{lname}"),
            title: format!(
                "Mean response time relative to no load sharing, load {load} (Eager et al. 1988)"
            ),
            x_label: "coefficient of variation of service demand".into(),
            y_label: "mean response time / no sharing".into(),
            log_x: true,
            log_y: false,
            series: std::iter::once(place_series).chain(mig_series).collect(),
            paper_points: Vec::new(),
        });
    }
    out.notes.push(format!(
        "{} processor-sharing hosts, Poisson arrivals, {} replications of {} jobs per cell ({}% warm-up not counted); threshold placement T = {}, probe limit {}; migration: an underloaded host (fewer than T jobs, at completions and every {} mean demands) takes the oldest job of a host with more than T if that job's attained CPU time is at least the migration cost, and the job is frozen for the cost. Gains: placement_gain = 1 - R(placement)/R(none); migration_extra_gain = 1 - R(placement+migration)/R(placement), at migration cost {} x mean demand unless the name says otherwise.",
        p.hosts, p.replications, p.jobs, p.warmup_fraction * 100.0, p.threshold, p.probe_limit, p.rebalance_period, p.headline_cost
    ));
    out.notes.push(summarise(&conclusions, p.headline_cost));
    if let (Some(&top), Some(&dearest)) =
        (p.loads.iter().max_by(|a, b| a.total_cmp(b)), costs.last())
    {
        let parts: Vec<String> = demands
            .iter()
            .filter_map(|(d, _)| {
                let k = format!(
                    "migration_extra_gain_{d}_load{}_cost{}",
                    fmt_num(top),
                    fmt_num(dearest)
                );
                out.metrics
                    .get(&k)
                    .map(|v| format!("{d} {:+.1}%", v * 100.0))
            })
            .collect();
        out.notes.push(format!(
            "At load {top} with migration cost {dearest} x mean demand, migration adds over placement: {}.",
            parts.join(", ")
        ));
    }
    out.notes.push("Eager, Lazowska & Zahorjan's abstract (checked via the search tool): migratory load sharing offers modest benefits only under fairly extreme conditions and no major benefits under any. Which conditions those are (high variability of demands, high load, low migration cost) is from recollection, not verified against the paper's text, and so is the 'little gain for CV up to about 2' reading. Harchol-Balter & Downey (SIGMETRICS 1996, abstract checked): with measured heavy-tailed UNIX lifetimes, preemptive migration cut the mean delay by 35-50% against remote execution only; compare migration_extra_gain_delay_pareto_load09 (their placement was name-based, their hosts trace-driven, so the comparison is qualitative).".into());
    out.figures = figures;
    out.trace = Some(TraceRecord::from_events(events));
    // Gains are fractions of the no-sharing mean response time (or delay, or slowdown).
    let keys: Vec<String> = out.metrics.keys().cloned().collect();
    for k in keys {
        out.units.insert(k, "fraction".into());
    }
    Ok(out)
}

/// A sentence per load saying where migration adds more than 5% over placement.
fn summarise(cells: &[(f64, String, f64, f64, f64)], cost: f64) -> String {
    let mut s = format!("What the simulator supports (migration cost {cost} x mean): ");
    let mut loads: Vec<f64> = cells.iter().map(|c| c.0).collect();
    loads.dedup();
    for load in loads {
        let row: Vec<_> = cells.iter().filter(|c| c.0 == load).collect();
        let parts: Vec<String> = row
            .iter()
            .map(|c| format!("{} {:+.0}%/{:+.0}%", c.1, c.3 * 100.0, c.4 * 100.0))
            .collect();
        let big: Vec<&str> = row
            .iter()
            .filter(|c| c.4 > 0.05)
            .map(|c| c.1.as_str())
            .collect();
        s.push_str(&format!(
            "load {load}: placement/extra-from-migration {}; migration adds > 5% for {}. ",
            parts.join(", "),
            if big.is_empty() {
                "none".to_string()
            } else {
                big.join(", ")
            }
        ));
    }
    s
}

/// The reduced variant for the determinism test.
pub fn quick(seed: u64) -> anyhow::Result<ExperimentOutput> {
    let p = Params {
        hosts: 8,
        loads: vec![0.9],
        cvs: vec![1.0],
        migration_costs: vec![],
        jobs: 8_000,
        replications: 1,
        ..Params::default()
    };
    run_with(Mode::Sim, seed, &p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_variant_has_the_headline_metrics_and_bad_params_fail() {
        let out = quick(3).unwrap();
        for m in [
            "placement_gain_cv1_load09",
            "migration_extra_gain_cv1_load09",
            "placement_gain_pareto_load09",
            "migration_extra_gain_pareto_load09",
        ] {
            assert!(out.metrics[m].is_finite(), "{m}");
        }
        assert!(out.metrics["placement_gain_cv1_load09"] > 0.3);
        let bad = Params {
            loads: vec![1.2],
            ..Params::default()
        };
        assert!(run_with(Mode::Sim, 1, &bad).is_err());
    }
}
