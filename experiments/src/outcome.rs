//! What an experiment returns to the runner: metrics, the paper's values, figures and the trace of
//! its simulated runs (the simulator's [`TraceRecord`]). Experiments build these; the report
//! renders them. Model crates know nothing of them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use gridbed_sim::TraceRecord;

/// How an experiment is executed.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Deterministic simulator: a pure function of (scenario, parameters, seed).
    Sim,
    /// Real sockets / real execution on this machine.
    Real,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Sim => "sim",
            Mode::Real => "real",
        })
    }
}

/// One plotted line.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// One figure: a set of series on shared axes.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Figure {
    /// File stem, e.g. `transfer-time`.
    pub id: String,
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub log_x: bool,
    pub log_y: bool,
    pub series: Vec<Series>,
    /// The source document's published values on the same axes, drawn as marked points (not
    /// lines) so a reader sees the reproduction against the paper; `paper_points[i]` is drawn in
    /// the colour of `series[i]`.
    #[serde(default)]
    pub paper_points: Vec<Series>,
}

/// Everything an experiment produced.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ExperimentOutput {
    /// Reproduced values, by metric name.
    pub metrics: BTreeMap<String, f64>,
    /// The source document's values for (some of) the same metric names.
    pub paper: BTreeMap<String, f64>,
    /// Relative tolerance per paper metric (0.05 = within 5%); metrics absent here are shown only.
    pub tolerance: BTreeMap<String, f64>,
    pub figures: Vec<Figure>,
    /// Extra files to write beside result.json (name, bytes), e.g. a rendered image.
    pub artifacts: Vec<(String, Vec<u8>)>,
    /// Trace of the simulated runs (None for a real-mode experiment).
    pub trace: Option<TraceRecord>,
    /// Short remarks for the report: parameters used, caveats.
    pub notes: Vec<String>,
    /// Unit of every metric ("s", "Mbit/s", "count", "x" for a factor, "fraction", ...).
    #[serde(default)]
    pub units: BTreeMap<String, String>,
    /// Why a metric lies outside its paper value's tolerance, when the cause is known (one line;
    /// the report shows the verdict "outside, explained" with this reason).
    #[serde(default)]
    pub explained: BTreeMap<String, String>,
}

impl ExperimentOutput {
    /// Declares the unit of each named metric.
    pub fn set_units(&mut self, units: &[(&str, &str)]) {
        for (metric, unit) in units {
            self.units
                .insert((*metric).to_string(), (*unit).to_string());
        }
    }

    /// Metrics that declare no unit (the report cannot print them properly).
    pub fn metrics_without_unit(&self) -> Vec<String> {
        self.metrics
            .keys()
            .filter(|k| !self.units.contains_key(*k))
            .cloned()
            .collect()
    }
}
