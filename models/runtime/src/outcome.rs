//! What an experiment returns to the runner: metrics, the paper's values, figures and the trace of
//! its simulated runs. Systems build these; `experiments` renders them. Kept here (not in
//! `experiments`) so model crates can return results without depending on the runner.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

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
}

/// Most trace events kept verbatim in a record; beyond it only the digest and count grow.
pub const TRACE_EVENTS_KEPT: usize = 50_000;

/// The trace of one or more simulated runs: every event folded into a SHA-256 digest, and the first
/// [`TRACE_EVENTS_KEPT`] events kept verbatim so a replay can name where two runs diverge.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TraceRecord {
    pub digest: String,
    pub count: u64,
    pub events: Vec<String>,
}

impl Default for TraceRecord {
    fn default() -> Self {
        TraceRecord {
            digest: hex_sha256(b""),
            count: 0,
            events: Vec::new(),
        }
    }
}

impl TraceRecord {
    /// Builds a record from an ordered list of events.
    pub fn from_events<I: IntoIterator<Item = String>>(events: I) -> Self {
        let mut rec = TraceRecord::default();
        let mut hasher = Sha256::new();
        for e in events {
            hasher.update(e.as_bytes());
            hasher.update(b"\n");
            rec.count += 1;
            if rec.events.len() < TRACE_EVENTS_KEPT {
                rec.events.push(e);
            }
        }
        rec.digest = hex(&hasher.finalize());
        rec
    }

    /// Appends another run's trace (runs of a sweep, in order): digest = H(self.digest, other.digest).
    pub fn absorb(&mut self, other: TraceRecord) {
        let mut hasher = Sha256::new();
        hasher.update(self.digest.as_bytes());
        hasher.update(other.digest.as_bytes());
        self.digest = hex(&hasher.finalize());
        self.count += other.count;
        let room = TRACE_EVENTS_KEPT.saturating_sub(self.events.len());
        self.events.extend(other.events.into_iter().take(room));
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_sha256(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
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
    /// Why a metric lies outside its paper value's tolerance, when the cause is known (one line;
    /// the report shows the verdict "outside, explained" with this reason).
    #[serde(default)]
    pub explained: BTreeMap<String, String>,
}
