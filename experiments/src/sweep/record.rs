//! One seed of a sweep: what its run produced, and the in-process run behind the hidden
//! `experiment __sweep-one` command (each seed runs in its own process, so a panic, a hang or a
//! runaway allocation costs that seed only).

use std::collections::BTreeMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::catalogue::Verdict;
use crate::outcome::{ExperimentOutput, Mode};
use crate::page;
use crate::registry::Experiment;

/// The line a `__sweep-one` process prints its record after, so that nothing else the run may
/// print on stdout is taken for it.
pub const RECORD_MARK: &str = "gridbed-sweep-record ";

/// What one seed gave.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeedRecord {
    pub seed: u64,
    /// Why the run failed (error, panic, timeout, killed); None: it finished.
    pub error: Option<String>,
    pub metrics: BTreeMap<String, f64>,
    pub units: BTreeMap<String, String>,
    /// SHA-256 over the simulator's trace: same seed and parameters, same digest.
    pub digest: Option<String>,
    pub trace_events: Option<u64>,
    /// Metrics outside their paper tolerance (and not explained) or missing their target.
    pub off_target: Vec<String>,
    /// Wall time of the run, seconds (not part of any comparison: machines differ).
    pub wall_s: f64,
}

impl SeedRecord {
    /// A seed whose process did not deliver a record.
    pub fn failed(seed: u64, why: String, wall_s: f64) -> SeedRecord {
        SeedRecord {
            seed,
            error: Some(why),
            metrics: BTreeMap::new(),
            units: BTreeMap::new(),
            digest: None,
            trace_events: None,
            off_target: Vec::new(),
            wall_s,
        }
    }
}

/// The metrics of `out` that miss their paper value or target (the report's "outside
/// tolerance" and "target not met"; an explained deviation is not a miss).
pub fn off_target(name: &str, mode: Mode, out: &ExperimentOutput) -> Vec<String> {
    out.metrics
        .iter()
        .filter(|(k, &v)| {
            let verdict = page::verdict_of(
                name,
                mode,
                k,
                v,
                out.paper.get(*k).copied(),
                out.tolerance.get(*k).copied(),
                out.explained.get(*k),
            );
            matches!(verdict, Verdict::Outside | Verdict::TargetNotMet)
        })
        .map(|(k, _)| k.clone())
        .collect()
}

/// Runs `exp` in simulation at `seed` with `values` (None: its defaults), or its reduced-size
/// variant when `quick`.
pub fn run_one(
    exp: &Experiment,
    seed: u64,
    values: Option<&serde_json::Value>,
    quick: bool,
) -> SeedRecord {
    let t0 = Instant::now();
    let out = match (quick, exp.quick) {
        (true, Some(q)) => q(seed),
        _ => exp.run_values(Mode::Sim, seed, values).map(|(o, _)| o),
    };
    let wall_s = t0.elapsed().as_secs_f64();
    match out {
        Ok(out) => SeedRecord {
            seed,
            error: None,
            off_target: off_target(exp.name, Mode::Sim, &out),
            digest: out.trace.as_ref().map(|t| t.digest.clone()),
            trace_events: out.trace.as_ref().map(|t| t.count),
            metrics: out.metrics,
            units: out.units,
            wall_s,
        },
        Err(e) => SeedRecord::failed(seed, format!("{e:#}").replace('\n', " "), wall_s),
    }
}
