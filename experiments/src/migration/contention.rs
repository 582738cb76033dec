//! migration-contention (document 1, Figure 1): a bulk-synchronous job of P ranks on P hosts;
//! another user's job arrives on one rank's host; without migration every iteration waits for the
//! slowed rank; with the load monitors and controller the rank moves to a spare host and the
//! delay vanishes. Run once per transport of Figure 3, plus the ideal (no other user).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::outcome::{ExperimentOutput, Figure, Mode, Series, TraceRecord};
use gridbed_migration::bsp::{self, BspJob, MigrationLog, MigrationRecord};
use gridbed_migration::controller::Policy;
use gridbed_migration::controller_daemon::{spawn_controller, CONTROLLER_PORT};
use gridbed_migration::cost::{MigrationCost, TransferCost};
use gridbed_migration::load::{spawn_monitor, ProbeConfig};
use gridbed_runtime::{secs, Addr, HostId};
use gridbed_sim::{presets, run, Platform, SimConfig};
use serde::{Deserialize, Serialize};

/// (preset, label, metric suffix)
pub const TRANSPORTS: [(&str, &str, &str); 3] = [
    ("sp2-lapi", "LAPI / SP Switch", "lapi"),
    ("sp2-tcp", "TCP / SP Switch", "sp_tcp"),
    ("ethernet-100", "TCP / 100Base-TX", "ethernet"),
];

/// What a researcher can change (see PARAM_SPECS for units and sources).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    pub ranks: u32,
    pub spare_hosts: u32,
    pub iterations: u32,
    pub compute_s: f64,
    pub image_mb: f64,
    pub background_at_s: f64,
    pub background_jobs: u32,
    pub restart_s: f64,
    pub slice_s: f64,
    pub period_s: f64,
    pub probe_s: f64,
    pub smoothing: f64,
    pub threshold_jobs: f64,
    pub hysteresis_jobs: f64,
    pub min_residence_s: f64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            ranks: 4,
            spare_hosts: 1,
            iterations: 30,
            compute_s: 1.0,
            image_mb: 40.0,
            background_at_s: 5.5,
            background_jobs: 1,
            restart_s: 0.01,
            slice_s: 0.01,
            period_s: 0.5,
            probe_s: 0.005,
            smoothing: 0.5,
            threshold_jobs: 0.5,
            hysteresis_jobs: 0.5,
            min_residence_s: 5.0,
        }
    }
}

pub const PARAM_SPECS: &[(&str, &str, &str)] = &[
    ("ranks", "processes", "chosen: small enough for CI; any P works (one rank per host)"),
    ("spare_hosts", "hosts", "chosen: Figure 1 moves the delayed process to a lightly loaded node, so one idle node exists"),
    ("iterations", "iterations", "chosen: long enough to show the delay before and after the migration"),
    ("compute_s", "s", "chosen: compute phase per iteration at full speed on a 1 GHz simulated CPU"),
    ("image_mb", "MB (10^6 bytes)", "document 1: the 40 MB example moved by LAPI in 0.722 s"),
    ("background_at_s", "s", "chosen: mid-iteration 6, after the job has settled"),
    ("background_jobs", "jobs", "chosen: one CPU-bound job of another user (Figure 1)"),
    ("restart_s", "s", "estimate, not in the document (unverified): process creation + return from the signal handler on a late-1990s AIX node, order of 10 ms; the image lands in place by LAPI_Put"),
    ("slice_s", "s", "chosen: how often a rank checks for an order (its stop points)"),
    ("period_s", "s", "policy: sampling and decision period"),
    ("probe_s", "s", "policy: probe length (1% of each period)"),
    ("smoothing", "weight", "policy: weight of a new load sample"),
    ("threshold_jobs", "jobs", "policy: other users' jobs that make a host overloaded"),
    ("hysteresis_jobs", "jobs", "policy: minimum drop in competitors a move must bring"),
    ("min_residence_s", "s", "policy: minimum stay on a host between two moves"),
];

impl Params {
    fn policy(&self) -> Policy {
        Policy {
            period_s: self.period_s,
            smoothing: self.smoothing,
            threshold_jobs: self.threshold_jobs,
            hysteresis_jobs: self.hysteresis_jobs,
            min_residence_s: self.min_residence_s,
        }
    }

    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!((1..=256).contains(&self.ranks), "ranks must be 1..=256");
        anyhow::ensure!(self.spare_hosts <= 256, "spare_hosts must be <= 256");
        anyhow::ensure!(
            (1..=10_000).contains(&self.iterations),
            "iterations must be 1..=10000"
        );
        for (name, v) in [
            ("compute_s", self.compute_s),
            ("slice_s", self.slice_s),
            ("period_s", self.period_s),
            ("probe_s", self.probe_s),
        ] {
            anyhow::ensure!(
                v.is_finite() && v > 0.0 && v <= 3600.0,
                "{name} must be in (0, 3600] s"
            );
        }
        anyhow::ensure!(
            self.image_mb.is_finite() && (0.0..=1e6).contains(&self.image_mb),
            "image_mb must be in [0, 1e6]"
        );
        anyhow::ensure!(
            self.restart_s.is_finite() && self.restart_s >= 0.0,
            "restart_s must be >= 0"
        );
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.smoothing) && self.smoothing > 0.0,
            "smoothing must be in (0, 1]"
        );
        Ok(())
    }
}

/// The cost the controller predicts for `preset`: the transport's alpha + beta model (what
/// `move_block` measures for Figure 3) plus the restart time.
pub fn transfer_cost(preset: &str, restart_s: f64) -> anyhow::Result<TransferCost> {
    let c = presets::transport(preset)
        .ok_or_else(|| anyhow::anyhow!("unknown transport preset '{preset}'"))?
        .cost();
    Ok(TransferCost {
        fixed_s: c.alpha_s,
        s_per_byte: c.beta_s,
        restart_s,
    })
}

/// What one run produced.
pub struct Run {
    /// Seconds of each iteration.
    pub iteration_s: Vec<f64>,
    pub migrations: Vec<MigrationRecord>,
    pub trace: TraceRecord,
}

impl Run {
    pub fn total_s(&self) -> f64 {
        self.iteration_s.iter().sum()
    }

    /// Mean iteration time over iterations that start at or after `from_s`.
    pub fn mean_from(&self, from_s: f64) -> f64 {
        let mut t = 0.0;
        let (mut sum, mut n) = (0.0, 0);
        for &d in &self.iteration_s {
            if t >= from_s {
                sum += d;
                n += 1;
            }
            t += d;
        }
        if n == 0 {
            f64::NAN
        } else {
            sum / n as f64
        }
    }
}

/// How one run is set up.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Arm {
    Ideal,
    NoMigration,
    Migration,
}

/// One simulated run: host 0 is the front end (barrier master, controller), hosts 1..=P the
/// ranks' hosts, then the spares. The other user's job arrives on rank 0's host.
pub fn simulate(preset: &str, arm: Arm, seed: u64, p: &Params) -> anyhow::Result<Run> {
    p.validate()?;
    let hosts = 1 + p.ranks as usize + p.spare_hosts as usize;
    let platform = Platform::lans(1, hosts, preset)?;
    let hz = platform.cpu_hz;
    let cost: Arc<dyn MigrationCost> = Arc::new(transfer_cost(preset, p.restart_s)?);
    let managed = arm == Arm::Migration;
    let job = Arc::new(BspJob {
        ranks: p.ranks,
        iterations: p.iterations,
        compute_cycles: (p.compute_s * hz) as u64,
        slice_cycles: ((p.slice_s * hz) as u64).max(1),
        image_bytes: (p.image_mb * 1e6) as u64,
        restart_s: p.restart_s,
        master: HostId(0),
        controller: managed.then_some(Addr::new(HostId(0), CONTROLLER_PORT)),
    });
    let p = p.clone();
    let out = run(SimConfig::new(platform, seed), move |cluster| {
        Box::pin(async move {
            let all = cluster.hosts();
            let log: MigrationLog = Arc::new(Mutex::new(Vec::new()));
            let probe = ProbeConfig {
                period_s: p.period_s,
                probe_s: p.probe_s,
            };
            for h in &all[1..] {
                bsp::start_restart_daemon(h.clone(), job.clone(), log.clone());
                if managed {
                    spawn_monitor(h.clone(), probe, Addr::new(HostId(0), CONTROLLER_PORT));
                }
            }
            if managed {
                let horizon = Duration::from_secs_f64(p.iterations as f64 * p.compute_s * 4.0);
                let decisions = Arc::new(Mutex::new(Vec::new()));
                spawn_controller(all[0].clone(), p.policy(), cost, horizon, decisions);
            }
            for r in 0..p.ranks {
                bsp::start_rank(all[1 + r as usize].clone(), job.clone(), r);
            }
            if arm != Arm::Ideal {
                let c = cluster.clone();
                let (at, jobs) = (p.background_at_s, p.background_jobs);
                all[0].spawn(
                    "other-user",
                    Box::pin(async move {
                        c.sleep(secs(at)).await;
                        c.set_background_load(HostId(1), jobs);
                    }),
                );
            }
            let t0 = cluster.now();
            let ends = bsp::run_master(all[0].clone(), p.ranks, p.iterations).await;
            let migrations = log.lock().expect("migration log").clone();
            (ends.map(|e| (t0, e)), migrations)
        })
    });
    let (ends, migrations) = out.value;
    let (t0, ends) = ends?;
    let mut prev = t0;
    let iteration_s = ends
        .iter()
        .map(|&e| {
            let d = (e - prev).as_secs_f64();
            prev = e;
            d
        })
        .collect();
    Ok(Run {
        iteration_s,
        migrations,
        trace: out.trace,
    })
}

fn series(name: &str, r: &Run) -> Series {
    Series {
        name: name.into(),
        points: r
            .iteration_s
            .iter()
            .enumerate()
            .map(|(i, &s)| (i as f64 + 1.0, s))
            .collect(),
    }
}

pub fn run_with(mode: Mode, seed: u64, p: &Params) -> anyhow::Result<ExperimentOutput> {
    anyhow::ensure!(
        mode == Mode::Sim,
        "experiment 'migration-contention' has no {mode} mode"
    );
    p.validate()?;
    let mut out = ExperimentOutput::default();
    let mut trace = TraceRecord::default();
    let mut fig = Figure {
        id: "iteration-time".into(),
        title: "Time per iteration of a bulk-synchronous job; another user's job arrives on one host (document 1, Figure 1)".into(),
        x_label: "iteration".into(),
        y_label: "iteration time (s)".into(),
        log_x: false,
        log_y: false,
        series: Vec::new(),
        paper_points: Vec::new(),
    };
    for (preset, label, suffix) in TRANSPORTS {
        let ideal = simulate(preset, Arm::Ideal, seed, p)?;
        let none = simulate(preset, Arm::NoMigration, seed, p)?;
        let mig = simulate(preset, Arm::Migration, seed, p)?;
        let ideal_s = ideal.mean_from(0.0);
        let tail_from = p.background_at_s;
        let slow_none = none.mean_from(tail_from) / ideal_s;
        let cost = transfer_cost(preset, p.restart_s)?;
        let predicted = cost.predict_s((p.image_mb * 1e6) as u64, HostId(1), HostId(0));
        out.metrics
            .insert(format!("migrations_{suffix}"), mig.migrations.len() as f64);
        if let Some(m) = mig.migrations.first() {
            let took = (m.resumed - m.stopped).as_secs_f64();
            let after = mig.mean_from(m.resumed.as_secs_f64()) / ideal_s;
            // Gross gain: what the move saved, before paying for it.
            let gain = none.total_s() - mig.total_s() + took;
            out.metrics.insert(format!("migration_s_{suffix}"), took);
            out.metrics.insert(
                format!("reaction_s_{suffix}"),
                m.stopped.as_secs_f64() - p.background_at_s,
            );
            out.metrics.insert(
                if suffix == "lapi" {
                    "slowdown_after_migration".into()
                } else {
                    format!("slowdown_after_migration_{suffix}")
                },
                after,
            );
            out.metrics.insert(
                format!("job_speedup_{suffix}"),
                none.total_s() / mig.total_s(),
            );
            out.metrics.insert(
                format!("breakeven_mb_{suffix}"),
                cost.break_even_bytes(gain) / 1e6,
            );
            out.notes.push(format!(
                "{label}: rank 0 moved h{}->h{} at {:.2} s, frozen {took:.3} s (controller predicted {predicted:.3} s); gross gain {gain:.1} s, so images up to {:.0} MB would have paid off; each second saved pays for {:.1} MB",
                m.from.0,
                m.to.0,
                m.stopped.as_secs_f64(),
                cost.break_even_bytes(gain) / 1e6,
                1e-6 / cost.s_per_byte,
            ));
        } else {
            out.notes.push(format!(
                "{label}: the controller did not migrate (predicted cost {predicted:.3} s)"
            ));
        }
        if suffix == "lapi" {
            out.metrics.insert("ideal_iteration_s".into(), ideal_s);
            out.metrics
                .insert("slowdown_no_migration".into(), slow_none);
            fig.series.push(series("ideal (no other user)", &ideal));
            fig.series.push(series("no migration", &none));
        }
        fig.series
            .push(series(&format!("migration over {label}"), &mig));
        for r in [ideal, none, mig] {
            trace.absorb(r.trace);
        }
    }
    let pol = p.policy();
    out.notes.push(format!(
        "P = {} ranks on P hosts + {} spare, {} iterations of {} s compute, image {} MB, other user's job ({} CPU-bound) from t = {} s on rank 0's host. Policy: sample/decide every {} s (probe {} s), smoothing {}, threshold {} jobs, hysteresis {} jobs, minimum residence {} s; restart {} s (estimate).",
        p.ranks, p.spare_hosts, p.iterations, p.compute_s, p.image_mb, p.background_jobs,
        p.background_at_s, pol.period_s, p.probe_s, pol.smoothing, pol.threshold_jobs,
        pol.hysteresis_jobs, pol.min_residence_s, p.restart_s
    ));
    out.notes.push("Slowdowns are iteration time over the ideal run on the same transport; 'after migration' averages the iterations that start once the rank resumed, so it includes the monitors' probe overhead. Document 1 gives no numbers for Figure 1 (a schematic), so no paper values.".into());
    out.figures = vec![fig];
    out.trace = Some(trace);
    let units: Vec<(String, &str)> = out
        .metrics
        .keys()
        .map(|k| {
            let unit = if k.starts_with("breakeven_mb_") {
                "MB"
            } else if k.starts_with("migrations_") {
                "count"
            } else if k.starts_with("slowdown_") || k.starts_with("job_speedup_") {
                "x"
            } else {
                "s"
            };
            (k.clone(), unit)
        })
        .collect();
    for (k, unit) in units {
        out.units.insert(k, unit.into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn short() -> Params {
        Params {
            ranks: 3,
            iterations: 14,
            ..Params::default()
        }
    }

    #[test]
    fn migration_removes_the_delay_over_lapi() {
        let p = short();
        let ideal = simulate("sp2-lapi", Arm::Ideal, 3, &p)
            .unwrap()
            .mean_from(0.0);
        let none = simulate("sp2-lapi", Arm::NoMigration, 3, &p).unwrap();
        let mig = simulate("sp2-lapi", Arm::Migration, 3, &p).unwrap();
        let slow = none.mean_from(p.background_at_s) / ideal;
        assert!(
            (slow - 2.0).abs() < 0.05,
            "one other job halves the rank: {slow}"
        );
        assert_eq!(mig.migrations.len(), 1, "{:?}", mig.migrations);
        let m = mig.migrations[0];
        assert_eq!((m.rank, m.from), (0, HostId(1)));
        assert_eq!(m.to, HostId(4), "the spare host");
        let after = mig.mean_from(m.resumed.as_secs_f64()) / ideal;
        assert!(after < 1.05, "delay gone after the move: {after}");
    }

    #[test]
    fn no_migration_when_the_image_costs_more_than_it_saves() {
        // 2 GB over 100Base-TX takes ~170 s; the job has under 10 s of work left to gain.
        let p = Params {
            image_mb: 2000.0,
            ..short()
        };
        let mig = simulate("ethernet-100", Arm::Migration, 3, &p).unwrap();
        assert!(mig.migrations.is_empty(), "{:?}", mig.migrations);
        let small = Params {
            image_mb: 4.0,
            ..short()
        };
        let mig = simulate("ethernet-100", Arm::Migration, 3, &small).unwrap();
        assert_eq!(mig.migrations.len(), 1, "a small image does move");
    }

    #[test]
    fn bad_parameters_are_refused() {
        let p = Params {
            ranks: 0,
            ..Params::default()
        };
        assert!(run_with(Mode::Sim, 1, &p).is_err());
        assert!(run_with(Mode::Real, 1, &Params::default()).is_err());
        // A misspelt parameter is an error, not a silently ignored default.
        let mut v = serde_json::to_value(Params::default()).unwrap();
        assert!(serde_json::from_value::<Params>(v.clone()).is_ok());
        v["rank"] = serde_json::json!(4);
        assert!(serde_json::from_value::<Params>(v).is_err());
    }
}
