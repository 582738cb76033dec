//! Files an experiment run writes: result.json, run.json (the trace, for replay), figures,
//! artifacts, and the index pages (index.html, README.md) over every result in the directory.
//! Every file is written to a temporary name and renamed, so a reader (or a second run) never
//! sees half a file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::outcome::{ExperimentOutput, Mode, TraceRecord};
use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::params::ParamRecord;
use crate::provenance::{Placement, Provenance};
use crate::registry::Experiment;
use crate::{page, render};

/// Minimum, median and maximum of a metric over the repeats of a real-mode run.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct Spread {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

impl Spread {
    /// None for an empty list or one holding a non-finite value.
    pub fn of(values: &[f64]) -> Option<Spread> {
        if values.is_empty() || values.iter().any(|v| !v.is_finite()) {
            return None;
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Spread {
            min: v[0],
            median,
            max: v[n - 1],
        })
    }
}

/// `<dir>/<name>/result.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ResultFile {
    pub experiment: String,
    pub mode: Mode,
    pub seed: u64,
    pub trace_digest: Option<String>,
    pub trace_events: Option<u64>,
    pub metrics: BTreeMap<String, f64>,
    pub paper: BTreeMap<String, f64>,
    pub tolerance: BTreeMap<String, f64>,
    pub about: String,
    pub reproduces: String,
    pub figures: Vec<String>,
    pub artifacts: Vec<String>,
    pub notes: Vec<String>,
    #[serde(default)]
    pub units: BTreeMap<String, String>,
    #[serde(default)]
    pub explained: BTreeMap<String, String>,
    #[serde(default)]
    pub params: Vec<ParamRecord>,
    /// Number of runs the metrics summarise (real mode: `--repeat`).
    #[serde(default = "one")]
    pub repeats: u32,
    /// Per metric over the repeats (present when `repeats` > 1); `metrics` holds the medians.
    #[serde(default)]
    pub spread: BTreeMap<String, Spread>,
    /// The command that reruns this section.
    #[serde(default)]
    pub command: String,
    #[serde(default)]
    pub provenance: Option<Provenance>,
    /// Where a real-mode run ran (local processes or cluster hosts).
    #[serde(default)]
    pub placement: Option<Placement>,
}

fn one() -> u32 {
    1
}

/// `<dir>/<name>/run.json`: what `experiment replay` needs.
#[derive(Serialize, Deserialize)]
pub struct RunFile {
    pub format: u32,
    pub experiment: String,
    pub seed: u64,
    pub trace: TraceRecord,
    /// The parameters of the run, so that a replay re-runs with them.
    #[serde(default)]
    pub params: Vec<ParamRecord>,
}

pub const RUN_FORMAT: u32 = 1;

/// What the runner knows beyond the experiment's own output.
#[derive(Clone, Debug, Default)]
pub struct RunExtra {
    pub params: Vec<ParamRecord>,
    /// The metrics of every repeat, when the run was repeated (the output holds one of them).
    pub repeats: Vec<BTreeMap<String, f64>>,
    /// Extra command-line arguments that reproduce the run (e.g. `--set` pairs).
    pub args: Vec<String>,
    /// Where a real-mode run ran (None: this machine's processes).
    pub placement: Option<Placement>,
}

/// Directory of one experiment's results in one mode.
pub fn result_dir(out: &Path, name: &str, mode: Mode) -> PathBuf {
    out.join(dir_name(name, mode))
}

/// The directory (and HTML anchor) of one experiment in one mode.
pub fn dir_name(name: &str, mode: Mode) -> String {
    match mode {
        Mode::Sim => name.to_string(),
        Mode::Real => format!("{name}-real"),
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .context("output path has no file name")?;
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))
}

/// Writes everything for one run; returns the result directory.
pub fn write(
    out_dir: &Path,
    exp: &Experiment,
    mode: Mode,
    seed: u64,
    out: ExperimentOutput,
) -> anyhow::Result<PathBuf> {
    write_with(out_dir, exp, mode, seed, out, &RunExtra::default())
}

/// The command line that reruns one section.
pub fn rerun_command(name: &str, mode: Mode, seed: u64, repeats: u32, args: &[String]) -> String {
    let mut cmd = format!("experiment run {name} --mode {mode}");
    if mode == Mode::Sim {
        cmd.push_str(&format!(" --seed {seed}"));
    }
    if repeats > 1 {
        cmd.push_str(&format!(" --repeat {repeats}"));
    }
    for a in args {
        cmd.push(' ');
        cmd.push_str(a);
    }
    cmd
}

/// [`write()`] with the runner's parameters and repeats.
pub fn write_with(
    out_dir: &Path,
    exp: &Experiment,
    mode: Mode,
    seed: u64,
    mut out: ExperimentOutput,
    extra: &RunExtra,
) -> anyhow::Result<PathBuf> {
    let dir = result_dir(out_dir, exp.name, mode);
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create output directory {}", dir.display()))?;
    let mut figures = Vec::new();
    for fig in &out.figures {
        render::render(fig, &dir)?;
        figures.push(fig.id.clone());
    }
    let mut artifacts = Vec::new();
    for (name, bytes) in &out.artifacts {
        write_atomic(&dir.join(name), bytes)?;
        artifacts.push(name.clone());
    }
    let mut spread = BTreeMap::new();
    if extra.repeats.len() > 1 {
        for name in out.metrics.keys() {
            let values: Vec<f64> = extra
                .repeats
                .iter()
                .filter_map(|m| m.get(name).copied())
                .collect();
            if values.len() == extra.repeats.len() {
                if let Some(s) = Spread::of(&values) {
                    spread.insert(name.clone(), s);
                }
            }
        }
        for (name, s) in &spread {
            out.metrics.insert(name.clone(), s.median);
        }
    }
    let mut repeats = extra.repeats.len().max(1) as u32;
    if let Some(own) = own_repeats(&out.metrics) {
        // The experiment repeated itself and reports `<m>_min` / `<m>_max` beside the median run.
        repeats = own;
        for (name, &median) in &out.metrics {
            let lo = out.metrics.get(&format!("{name}_min"));
            let hi = out.metrics.get(&format!("{name}_max"));
            if let (Some(&min), Some(&max)) = (lo, hi) {
                spread.insert(name.clone(), Spread { min, median, max });
            }
        }
    }
    let result = ResultFile {
        experiment: exp.name.into(),
        mode,
        seed,
        trace_digest: out.trace.as_ref().map(|t| t.digest.clone()),
        trace_events: out.trace.as_ref().map(|t| t.count),
        metrics: out.metrics,
        paper: out.paper,
        tolerance: out.tolerance,
        about: exp.about.into(),
        reproduces: exp.reproduces.into(),
        figures,
        artifacts,
        notes: out.notes,
        units: out.units,
        explained: out.explained,
        params: extra.params.clone(),
        repeats,
        spread,
        command: rerun_command(exp.name, mode, seed, repeats, &extra.args),
        // A simulated result is a function of the code and the seed; the date and machine would
        // only make identical results differ.
        provenance: match mode {
            Mode::Real => Some(Provenance::here()),
            Mode::Sim => None,
        },
        placement: match mode {
            Mode::Real => Some(extra.placement.clone().unwrap_or_else(Placement::local)),
            Mode::Sim => None,
        },
    };
    if let Some(trace) = out.trace {
        let run = RunFile {
            format: RUN_FORMAT,
            experiment: exp.name.into(),
            seed,
            trace,
            params: extra.params.clone(),
        };
        write_atomic(
            &dir.join("run.json"),
            serde_json::to_string(&run)?.as_bytes(),
        )?;
    }
    // result.json last: its presence means the rest of the directory is complete.
    write_atomic(
        &dir.join("result.json"),
        (serde_json::to_string_pretty(&result)? + "\n").as_bytes(),
    )?;
    write_index(out_dir)?;
    Ok(dir)
}

/// Runs an experiment made itself, when it reports them in a `repeats` metric (more than one).
pub fn own_repeats(metrics: &BTreeMap<String, f64>) -> Option<u32> {
    metrics
        .get("repeats")
        .filter(|n| **n >= 2.0 && n.is_finite())
        .map(|n| *n as u32)
}

/// Whether a metric is within its tolerance of the paper value (None = no paper value).
pub fn verdict(r: &ResultFile, metric: &str) -> Option<(f64, f64, bool)> {
    let paper = *r.paper.get(metric)?;
    let got = *r.metrics.get(metric)?;
    let ratio = got / paper;
    let ok = r
        .tolerance
        .get(metric)
        .is_none_or(|tol| (ratio - 1.0).abs() <= *tol);
    Some((paper, ratio, ok))
}

/// One result directory as the index sees it.
pub enum Loaded {
    Ok(Box<ResultFile>),
    /// A result.json that does not parse: listed in the index with the reason.
    Corrupt {
        dir: String,
        error: String,
    },
}

/// Every `<out_dir>/*/result.json`, sorted by directory name.
pub fn load_results(out_dir: &Path) -> anyhow::Result<Vec<Loaded>> {
    let mut dirs: Vec<_> = std::fs::read_dir(out_dir)
        .with_context(|| format!("cannot read {}", out_dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.join("result.json").is_file())
        .collect();
    dirs.sort();
    let mut results = Vec::new();
    for d in dirs {
        let dir = d
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let parsed = std::fs::read_to_string(d.join("result.json"))
            .map_err(anyhow::Error::from)
            .and_then(|t| serde_json::from_str::<ResultFile>(&t).map_err(Into::into));
        results.push(match parsed {
            Ok(r) => Loaded::Ok(Box::new(r)),
            Err(e) => Loaded::Corrupt {
                dir,
                error: format!("{e:#}"),
            },
        });
    }
    Ok(results)
}

/// Largest `sweep.json` read into the report (a million seeds' digests is about 100 MiB).
const MAX_SWEEP_JSON: u64 = 256 << 20;

/// Every sweep under `<out_dir>/sweeps/` (each directory's `sweep.json`), by directory name; an
/// unreadable one is listed with the reason instead.
pub fn load_sweeps(
    out_dir: &Path,
) -> Vec<(String, Result<crate::sweep::summary::Summary, String>)> {
    let Ok(dirs) = std::fs::read_dir(out_dir.join("sweeps")) else {
        return Vec::new();
    };
    let mut v: Vec<_> = dirs
        .flatten()
        .filter(|e| e.path().join("sweep.json").is_file())
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let file = e.path().join("sweep.json");
            let read = std::fs::metadata(&file)
                .map_err(|e| e.to_string())
                .and_then(|m| {
                    if m.len() > MAX_SWEEP_JSON {
                        Err(format!("larger than {MAX_SWEEP_JSON} bytes"))
                    } else {
                        std::fs::read(&file).map_err(|e| e.to_string())
                    }
                })
                .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()));
            (name, read)
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Regenerates `index.html` and `README.md` from every result in `out_dir`.
pub fn write_index(out_dir: &Path) -> anyhow::Result<()> {
    let results = load_results(out_dir)?;
    let registered: Vec<&'static str> = crate::registry::all().iter().map(|e| e.name).collect();
    let sweeps = load_sweeps(out_dir);
    let pages = page::build(&results, &registered, &sweeps);
    write_atomic(&out_dir.join("README.md"), pages.markdown.as_bytes())?;
    write_atomic(&out_dir.join("index.html"), pages.html.as_bytes())?;
    Ok(())
}
