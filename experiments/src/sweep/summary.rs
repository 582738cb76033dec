//! Merging a sweep's records: per-metric distributions, every seed's digest, the failing seeds
//! with the command that reproduces each, and a histogram figure per metric. The summary depends
//! only on the records (sorted by seed), never on the order the seeds finished in.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::record::SeedRecord;
use crate::page::fmt_value;
use crate::render;
use crate::report::{write_atomic, Spread};

/// Bins of each histogram.
const BINS: usize = 20;
/// Histogram figures drawn at most (metrics beyond are in `sweep.json` only).
const MAX_FIGURES: usize = 64;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Distribution {
    /// Seeds that gave a finite value.
    pub n: usize,
    pub min: f64,
    pub median: f64,
    pub max: f64,
    pub mean: f64,
    pub unit: String,
    /// Seeds on which the metric missed its paper value or target.
    pub off_target: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub seed: u64,
    pub why: String,
    /// The command that reproduces this seed alone.
    pub reproduce: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeedDigest {
    pub seed: u64,
    pub digest: Option<String>,
    pub trace_events: Option<u64>,
}

/// `sweep.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub experiment: String,
    pub quick: bool,
    pub values: Option<serde_json::Value>,
    pub first_seed: u64,
    pub last_seed: u64,
    pub seeds: usize,
    pub failed: Vec<Failure>,
    /// Seeds with at least one metric off target (listed only when `--fail-on-target` is off).
    pub off_target_seeds: Vec<u64>,
    pub metrics: BTreeMap<String, Distribution>,
    pub digests: Vec<SeedDigest>,
    pub distinct_digests: usize,
    /// Sum of the seeds' own wall times (CPU-seconds of simulation, roughly).
    pub run_s: f64,
    /// This run's wall time and where its seeds ran (set by the sweep, not by [`merge`]; a
    /// resumed sweep counts only the seeds it ran).
    #[serde(default)]
    pub wall_s: f64,
    #[serde(default)]
    pub ran_seeds: usize,
    #[serde(default)]
    pub spread: String,
}

/// What reproduces one seed: `experiment run` for a full run, the sweep itself for `--quick`.
pub fn reproduce_command(name: &str, seed: u64, quick: bool, sets: &[String]) -> String {
    let mut cmd = if quick {
        format!("experiment sweep {name} --seeds {seed} --quick --out /tmp/{name}-seed-{seed}")
    } else {
        format!("experiment run {name} --seed {seed}")
    };
    for s in sets {
        // A platform file's text travels as a setting; the command names the file instead.
        if s.starts_with("platform=") {
            continue;
        }
        match s.strip_prefix("platform_file=") {
            Some(f) => cmd.push_str(&format!(" --platform {f}")),
            None => cmd.push_str(&format!(" --set '{}'", s.replace('\'', "'\\''"))),
        }
    }
    cmd
}

pub fn merge(
    experiment: &str,
    quick: bool,
    values: Option<serde_json::Value>,
    sets: &[String],
    fail_on_target: bool,
    records: &BTreeMap<u64, SeedRecord>,
) -> Summary {
    let mut failed = Vec::new();
    let mut off_target_seeds = Vec::new();
    let mut by_metric: BTreeMap<&str, (Vec<f64>, usize, &str)> = BTreeMap::new();
    for r in records.values() {
        let why = match (&r.error, fail_on_target && !r.off_target.is_empty()) {
            (Some(e), _) => Some(e.clone()),
            (None, true) => Some(format!("off target: {}", r.off_target.join(", "))),
            (None, false) => None,
        };
        if let Some(why) = why {
            failed.push(Failure {
                seed: r.seed,
                why,
                reproduce: reproduce_command(experiment, r.seed, quick, sets),
            });
        } else if !r.off_target.is_empty() {
            off_target_seeds.push(r.seed);
        }
        for (k, &v) in &r.metrics {
            let unit = r.units.get(k).map(String::as_str).unwrap_or("");
            let e = by_metric.entry(k).or_insert((Vec::new(), 0, unit));
            if v.is_finite() {
                e.0.push(v);
            }
            if r.off_target.iter().any(|m| m == k) {
                e.1 += 1;
            }
        }
    }
    let metrics = by_metric
        .into_iter()
        .filter_map(|(k, (vals, off, unit))| {
            let s = Spread::of(&vals)?;
            Some((
                k.to_string(),
                Distribution {
                    n: vals.len(),
                    min: s.min,
                    median: s.median,
                    max: s.max,
                    mean: vals.iter().sum::<f64>() / vals.len() as f64,
                    unit: unit.to_string(),
                    off_target: off,
                },
            ))
        })
        .collect();
    let digests: Vec<SeedDigest> = records
        .values()
        .map(|r| SeedDigest {
            seed: r.seed,
            digest: r.digest.clone(),
            trace_events: r.trace_events,
        })
        .collect();
    let distinct = digests
        .iter()
        .filter_map(|d| d.digest.as_deref())
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    Summary {
        experiment: experiment.into(),
        quick,
        values,
        first_seed: records.keys().next().copied().unwrap_or(0),
        last_seed: records.keys().next_back().copied().unwrap_or(0),
        seeds: records.len(),
        failed,
        off_target_seeds,
        metrics,
        digests,
        distinct_digests: distinct,
        run_s: records.values().map(|r| r.wall_s).sum(),
        wall_s: 0.0,
        ran_seeds: 0,
        spread: String::new(),
    }
}

/// Counts of `values` in `bins` equal bins over [min, max] (one bin when all are equal), as
/// (bin start, bin end, count).
pub fn histogram(values: &[f64], bins: usize) -> Vec<(f64, f64, usize)> {
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    let Some(lo) = finite.iter().copied().reduce(f64::min) else {
        return Vec::new();
    };
    let hi = finite.iter().copied().fold(lo, f64::max);
    if hi == lo || bins <= 1 {
        return vec![(lo, hi, finite.len())];
    }
    let w = (hi - lo) / bins as f64;
    let mut counts = vec![0usize; bins];
    for v in finite {
        let i = (((v - lo) / w) as usize).min(bins - 1);
        counts[i] += 1;
    }
    counts
        .into_iter()
        .enumerate()
        .map(|(i, c)| (lo + w * i as f64, lo + w * (i + 1) as f64, c))
        .collect()
}

/// One line: experiment, seeds, failures, distinct digests.
pub fn headline(s: &Summary) -> String {
    format!(
        "{}{}: seeds {}..{} ({} seeds), {} failed, {} distinct trace digests",
        s.experiment,
        if s.quick { " (quick)" } else { "" },
        s.first_seed,
        s.last_seed,
        s.seeds,
        s.failed.len(),
        s.distinct_digests
    )
}

/// The summary as text: what the sweep prints and its `README.md` holds.
pub fn text(s: &Summary, out: &Path) -> String {
    let (wall_s, spread) = (s.wall_s, &s.spread);
    let mut t = String::new();
    let _ = writeln!(t, "sweep {}", headline(s));
    if wall_s > 0.0 {
        let _ = writeln!(
            t,
            "  {wall_s:.1} s wall for {} seeds, {spread}: {:.2} seeds/s (seeds' own run time {:.1} s)",
            s.ran_seeds,
            s.ran_seeds as f64 / wall_s,
            s.run_s
        );
    }
    let _ = writeln!(
        t,
        "  {:36} {:>12} {:>12} {:>12}  unit",
        "metric", "min", "median", "max"
    );
    for (k, d) in &s.metrics {
        let off = if d.off_target > 0 {
            format!("  off target on {} seeds", d.off_target)
        } else {
            String::new()
        };
        let _ = writeln!(
            t,
            "  {k:36} {:>12} {:>12} {:>12}  {}{off}",
            fmt_value(d.min, &d.unit),
            fmt_value(d.median, &d.unit),
            fmt_value(d.max, &d.unit),
            d.unit
        );
    }
    for f in &s.failed {
        let _ = writeln!(
            t,
            "  FAILED seed {}: {}\n    reproduce: {}",
            f.seed, f.why, f.reproduce
        );
    }
    let _ = writeln!(t, "  summary: {}", out.join("sweep.json").display());
    t
}

/// The metrics that get a histogram: those that vary (a constant has nothing to show), by name,
/// at most `MAX_FIGURES`.
pub fn drawn_metrics(s: &Summary) -> Vec<&String> {
    s.metrics
        .iter()
        .filter(|(_, d)| d.max > d.min)
        .map(|(k, _)| k)
        .take(MAX_FIGURES)
        .collect()
}

/// File stem of a metric's histogram.
pub fn histogram_id(metric: &str) -> String {
    let m: String = metric
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    format!("hist-{m}")
}

/// Writes `sweep.json`, `README.md` and the histograms into `out`.
pub fn write(
    s: &Summary,
    records: &BTreeMap<u64, SeedRecord>,
    text: &str,
    out: &Path,
) -> anyhow::Result<()> {
    write_atomic(&out.join("sweep.json"), &serde_json::to_vec_pretty(s)?)?;
    let mut md = format!("# Sweep of {}\n\n```\n{text}```\n", s.experiment);
    for k in drawn_metrics(s) {
        let d = &s.metrics[k];
        let vals: Vec<f64> = records
            .values()
            .filter_map(|r| r.metrics.get(k).copied())
            .collect();
        let id = histogram_id(k);
        let title = format!("{}: {k} over {} seeds", s.experiment, vals.len());
        let x_label = if d.unit.is_empty() {
            k.clone()
        } else {
            format!("{k} ({})", d.unit)
        };
        let bins = histogram(&vals, BINS);
        render::render_histogram(
            &render::Histogram {
                id: &id,
                title: &title,
                x_label: &x_label,
                bins: &bins,
            },
            out,
        )?;
        let _ = writeln!(md, "![{k}]({id}.svg)\n");
    }
    write_atomic(&out.join("README.md"), md.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seed: u64, v: f64, err: Option<&str>, off: bool) -> SeedRecord {
        let mut r = SeedRecord::failed(seed, String::new(), 1.0);
        r.error = err.map(String::from);
        if err.is_none() {
            r.metrics.insert("t".into(), v);
            r.units.insert("t".into(), "s".into());
            r.digest = Some(format!("d{}", seed % 2));
        }
        if off {
            r.off_target.push("t".into());
        }
        r
    }

    #[test]
    fn merges_in_seed_order_with_failures_and_their_commands() {
        let mut recs = BTreeMap::new();
        for (s, v) in [(3, 3.0), (1, 1.0), (2, 2.0), (5, 10.0)] {
            recs.insert(s, rec(s, v, None, s == 5));
        }
        recs.insert(4, rec(4, 0.0, Some("timed out after 1 s"), false));
        let sets = vec!["n=3".to_string()];
        let s = merge("exp", false, None, &sets, false, &recs);
        assert_eq!((s.first_seed, s.last_seed, s.seeds), (1, 5, 5));
        let d = &s.metrics["t"];
        assert_eq!(
            (d.n, d.min, d.median, d.max, d.mean),
            (4, 1.0, 2.5, 10.0, 4.0)
        );
        assert_eq!(d.off_target, 1);
        assert_eq!(s.failed.len(), 1);
        assert_eq!(s.failed[0].seed, 4);
        assert_eq!(
            s.failed[0].reproduce,
            "experiment run exp --seed 4 --set 'n=3'"
        );
        assert_eq!(s.off_target_seeds, vec![5]);
        assert_eq!(s.distinct_digests, 2);
        assert_eq!(
            s.digests.iter().map(|d| d.seed).collect::<Vec<_>>(),
            vec![1, 2, 3, 4, 5]
        );
        // Off-target seeds fail when asked.
        let strict = merge("exp", true, None, &[], true, &recs);
        assert_eq!(
            strict.failed.iter().map(|f| f.seed).collect::<Vec<_>>(),
            vec![4, 5]
        );
        assert!(strict.failed[1].reproduce.contains("--quick"));
    }

    #[test]
    fn histogram_counts_every_value_once() {
        let vals: Vec<f64> = (0..100).map(|i| i as f64).collect();
        let h = histogram(&vals, 10);
        assert_eq!(h.len(), 10);
        assert!(h.iter().all(|&(_, _, c)| c == 10));
        assert_eq!(h[9].1, 99.0);
        assert_eq!(histogram(&[2.0, 2.0, f64::NAN], 10), vec![(2.0, 2.0, 2)]);
        assert!(histogram(&[], 10).is_empty());
        let total: usize = histogram(&[0.1, 5.0, 5.0, 7.3, 1e9], 20)
            .iter()
            .map(|b| b.2)
            .sum();
        assert_eq!(total, 5);
    }
}
