//! Every figure the source documents give (and the project's own targets), the experiment and
//! metric that reproduces each, and how a result is judged against it. The report's summary table
//! is this catalogue evaluated against the `result.json` files present.

use crate::outcome::Mode;

use crate::report::ResultFile;

/// How a reproduced value is judged.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Check {
    /// Relative tolerance around the paper value (a tolerance in the result overrides it).
    Tolerance(f64),
    /// The project's target: the metric must not exceed this value.
    AtMost(f64),
    /// The project's target: the metric must reach this value.
    AtLeast(f64),
    /// The experiment reports the band its documented mechanisms allow (`<metric>_band_min`,
    /// `<metric>_band_max` of the row's metric prefix); the paper value is judged against it.
    Band,
    /// A reference range from another source (e.g. published downtimes): within or outside.
    InRange(f64, f64),
    /// A qualitative claim or a reference value from another source: shown, never judged.
    Reference,
}

/// One figure or sentence of a source document.
#[derive(Clone, Copy, Debug)]
pub struct Row {
    pub document: Document,
    /// Figure, table or sentence, in a few words.
    pub figure: &'static str,
    /// The published value, when the document gives a number.
    pub paper: Option<f64>,
    pub unit: &'static str,
    pub experiment: &'static str,
    pub mode: Mode,
    pub metric: &'static str,
    pub check: Check,
    /// Why a paper value may lie outside what the mechanism gives, when the document itself says
    /// so (shown with the verdict "outside, explained").
    pub caveat: Option<&'static str>,
}

/// The source documents, in the order the report presents them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Document {
    /// Yazawa & Horiguchi: process migration over LAPI (and the work it cites).
    Migration,
    /// Taura & Yonezawa labs: GXP, Phoenix and the Virtual Multiprocessor slides.
    Slides,
    /// Experiments no document figure refers to.
    Other,
}

impl Document {
    pub fn title(self) -> &'static str {
        match self {
            Document::Migration => {
                "Document 1 — Yazawa & Horiguchi, process migration over a user-level communication library (LAPI)"
            }
            Document::Slides => "Document 2 — GXP, Phoenix and the Virtual Multiprocessor (slides)",
            Document::Other => "Other experiments",
        }
    }
}

const VMP_CAVEAT: &str = "the slides call the prototype buggy and unstable, its consistency control partly naive, and the results for reference only";

#[allow(clippy::too_many_arguments)]
const fn row(
    document: Document,
    figure: &'static str,
    paper: Option<f64>,
    unit: &'static str,
    experiment: &'static str,
    mode: Mode,
    metric: &'static str,
    check: Check,
) -> Row {
    Row {
        document,
        figure,
        paper,
        unit,
        experiment,
        mode,
        metric,
        check,
        caveat: None,
    }
}

use Check::*;
use Document::*;
use Mode::{Real, Sim};

/// The catalogue, in the documents' order.
#[rustfmt::skip]
pub const ROWS: &[Row] = &[
    row(Migration, "Figure 3: LAPI over the SP Switch, bandwidth", Some(443.0), "Mbit/s", "migration-bandwidth", Sim, "lapi_mbit_s", Tolerance(0.05)),
    row(Migration, "Figure 3: TCP over the SP Switch, bandwidth", Some(148.0), "Mbit/s", "migration-bandwidth", Sim, "sp_tcp_mbit_s", Tolerance(0.05)),
    row(Migration, "Figure 3: TCP over 100Base-TX, bandwidth", Some(89.7), "Mbit/s", "migration-bandwidth", Sim, "ethernet_tcp_mbit_s", Tolerance(0.05)),
    row(Migration, "Text: 40 MB moved by LAPI in 0.722 s on average", Some(0.722), "s", "migration-bandwidth", Sim, "lapi_40mb_s", Tolerance(0.05)),
    row(Migration, "Figure 1: a process sharing its node delays the parallel job", None, "x", "migration-contention", Sim, "slowdown_no_migration", Reference),
    row(Migration, "Figure 1: after migration to a light node the delay disappears", None, "x", "migration-contention", Sim, "slowdown_after_migration", Reference),
    row(Migration, "Text: migration under 1 s expected (LAPI)", Some(1.0), "s", "migration-contention", Sim, "migration_s_lapi", AtMost(1.0)),
    row(Migration, "Migration time, TCP over the SP Switch", None, "s", "migration-contention", Sim, "migration_s_sp_tcp", Reference),
    row(Migration, "Migration time, TCP over 100Base-TX", None, "s", "migration-contention", Sim, "migration_s_ethernet", Reference),
    row(Migration, "Clark et al. NSDI'05: pre-copy downtime 60–210 ms (reference band)", None, "s", "migration-strategies", Sim, "precopy_downtime_s", InRange(0.06, 0.21)),
    row(Migration, "Stop-and-copy downtime (no paper value)", None, "s", "migration-strategies", Sim, "stopcopy_downtime_s", Reference),
    row(Migration, "Post-copy downtime (no paper value)", None, "s", "migration-strategies", Sim, "postcopy_downtime_s", Reference),
    row(Migration, "Stop-and-copy total migration time", None, "s", "migration-strategies", Sim, "stopcopy_total_s", Reference),
    row(Migration, "Pre-copy total migration time", None, "s", "migration-strategies", Sim, "precopy_total_s", Reference),
    row(Migration, "Post-copy total migration time", None, "s", "migration-strategies", Sim, "postcopy_total_s", Reference),
    row(Migration, "Eager et al. 1988 (cited): placement gains, CV 1, load 0.9", None, "fraction", "eager-1988", Sim, "placement_gain_cv1_load09", Reference),
    row(Migration, "Eager et al. 1988: migration adds little beyond placement (CV 1)", None, "fraction", "eager-1988", Sim, "migration_extra_gain_cv1_load09", Reference),
    row(Migration, "Eager et al. 1988: placement gain, Pareto job sizes", None, "fraction", "eager-1988", Sim, "placement_gain_pareto_load09", Reference),
    row(Migration, "Eager et al. 1988: migration extra gain, Pareto job sizes", None, "fraction", "eager-1988", Sim, "migration_extra_gain_pareto_load09", Reference),
    row(Slides, "GXP: a command on 300+ nodes in 5 LANs in about 0.6 s", Some(0.6), "s", "gxp-scale", Sim, "e_hostname_320_5lan_s", Tolerance(0.5)),
    row(Slides, "Target: `e hostname` on 1000 hosts in at most 0.5 s", Some(0.5), "s", "gxp-scale", Sim, "e_hostname_1000_s", AtMost(0.5)),
    row(Slides, "Target: explore 1000 hosts in at most 15 s", Some(15.0), "s", "gxp-scale", Sim, "explore_1000_s", AtMost(15.0)),
    row(Slides, "GXP make reached 60 tasks/s; target at least 1000 tasks/s", Some(1000.0), "tasks/s", "gxp-farm", Sim, "dispatch_tasks_per_s", AtLeast(1000.0)),
    row(Slides, "GXP at scale: ~350 CPUs (makespan, no paper value)", None, "s", "gxp-farm", Sim, "makespan_350_s", Reference),
    row(Slides, "GXP at scale: 1000 CPUs in 9 LANs (makespan, no paper value)", None, "s", "gxp-farm", Sim, "makespan_1000_s", Reference),
    row(Slides, "Phoenix ray tracing: throughput follows the ideal as machines leave and join (target ≥ 0.95)", Some(0.95), "fraction", "phoenix-raytrace", Sim, "efficiency_vs_ideal", AtLeast(0.95)),
    row(Slides, "Phoenix ray tracing on this machine (target ≥ 0.95)", Some(0.95), "fraction", "phoenix-raytrace", Real, "efficiency_vs_ideal", AtLeast(0.95)),
    row(Slides, "Kaneda et al. CCGrid'04: table construction ≈ 2× the offline calculation (400 nodes, 3 LANs)", Some(2.0), "x", "phoenix-routes", Sim, "build_over_offline", Tolerance(0.5)),
    row(Slides, "Phoenix virtual IDs at scale: mean hops per message (no paper value)", None, "hops", "phoenix-scale", Sim, "hops_mean", Reference),
    row(Slides, "VMP: 1000 getpid() in 0.54 s under the VM (1 CPU)", Some(0.54), "s", "vmp-getpid", Sim, "vm_s", Tolerance(0.1)),
    row(Slides, "VMP: getpid() about 500× the real machine", Some(500.0), "x", "vmp-getpid", Sim, "overhead_x", Tolerance(0.1)),
    Row { caveat: Some(VMP_CAVEAT), ..row(Slides, "VMP getpid: the paper's 0.54 s against the modelled band", Some(0.54), "s", "vmp-getpid", Sim, "vm_s", Band) },
    Row { caveat: Some(VMP_CAVEAT), ..row(Slides, "VMP getpid: the paper's ~500× against the modelled band", Some(500.0), "x", "vmp-getpid", Sim, "overhead_x", Band) },
    row(Slides, "Target: VMP getpid at most 50× the host on this machine", Some(50.0), "x", "vmp-getpid", Real, "vmp_over_host_x", AtMost(50.0)),
    row(Slides, "Target: at most 1 µs per trap-and-emulate on this machine", Some(1000.0), "ns", "vmp-getpid", Real, "vmp_ns_per_trap", AtMost(1000.0)),
    row(Slides, "VMP: two Fibonacci programs in parallel, 2 CPUs, in 0.63 s", Some(0.63), "s", "vmp-fib", Sim, "vm_s", Tolerance(0.1)),
    row(Slides, "VMP fib: about 2000× the real machine", Some(2000.0), "x", "vmp-fib", Sim, "overhead_x", Tolerance(0.1)),
    row(Slides, "VMP fib: VM process and monitor about half the time each", Some(0.5), "fraction", "vmp-fib", Sim, "vm_process_share", Tolerance(0.2)),
    row(Slides, "Target: two hosts at most 2× one CPU for fib", Some(2.0), "x", "vmp-fib", Real, "two_host_over_one_cpu_x", AtMost(2.0)),
];

/// The verdict of one row (or one metric of a section).
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    Within,
    Outside,
    /// Outside the tolerance or band, for the reason given.
    Explained(String),
    TargetMet,
    TargetNotMet,
    /// A value without a paper number or target.
    NoVerdict,
    /// No experiment of that name exists yet.
    NotBuilt,
    /// The experiment exists but has no result in this report.
    NotRun,
    /// The result exists but lacks the metric (the piece that computes it is not built yet).
    MissingMetric,
}

impl Verdict {
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Within => "within tolerance",
            Verdict::Outside => "outside tolerance",
            Verdict::Explained(_) => "outside, explained",
            Verdict::TargetMet => "target met",
            Verdict::TargetNotMet => "target not met",
            Verdict::NoVerdict => "no verdict",
            Verdict::NotBuilt => "not built yet",
            Verdict::NotRun => "not run yet",
            Verdict::MissingMetric => "not built yet (metric missing)",
        }
    }

    /// CSS class: good, bad, explained or neutral.
    pub fn class(&self) -> &'static str {
        match self {
            Verdict::Within | Verdict::TargetMet => "ok",
            Verdict::Outside | Verdict::TargetNotMet => "bad",
            Verdict::Explained(_) => "explained",
            _ => "none",
        }
    }
}

/// A row evaluated against the results present.
#[derive(Clone, Debug)]
pub struct Evaluated {
    /// The reproduced value, or the modelled band (min, max) for [`Check::Band`].
    pub value: Option<f64>,
    pub band: Option<(f64, f64)>,
    pub paper: Option<f64>,
    pub ratio: Option<f64>,
    pub verdict: Verdict,
}

/// Judges `value` against a paper value with a relative tolerance.
pub fn tolerance_verdict(value: f64, paper: f64, tol: f64, explained: Option<&String>) -> Verdict {
    if (value / paper - 1.0).abs() <= tol {
        Verdict::Within
    } else if let Some(why) = explained {
        Verdict::Explained(why.clone())
    } else {
        Verdict::Outside
    }
}

/// Evaluates one row; `result` is the row's experiment in the row's mode, if present, and
/// `registered` says whether the experiment exists in this build.
pub fn evaluate(row: &Row, result: Option<&ResultFile>, registered: bool) -> Evaluated {
    let mut e = Evaluated {
        value: None,
        band: None,
        paper: row.paper,
        ratio: None,
        verdict: if registered {
            Verdict::NotRun
        } else {
            Verdict::NotBuilt
        },
    };
    let Some(r) = result else { return e };
    if row.check == Band {
        let lo = r.metrics.get(&format!("{}_band_min", row.metric));
        let hi = r.metrics.get(&format!("{}_band_max", row.metric));
        let (Some(&lo), Some(&hi), Some(paper)) = (lo, hi, row.paper) else {
            e.verdict = Verdict::MissingMetric;
            return e;
        };
        e.band = Some((lo, hi));
        e.verdict = if (lo..=hi).contains(&paper) {
            Verdict::Within
        } else {
            let side = if paper > hi { hi } else { lo };
            e.ratio = Some(paper / side);
            let why = r
                .explained
                .get(&format!("{}_band", row.metric))
                .map(String::as_str)
                .or(row.caveat)
                .unwrap_or("the paper value lies outside what the documented mechanisms give");
            Verdict::Explained(why.to_string())
        };
        return e;
    }
    let Some(&value) = r.metrics.get(row.metric) else {
        e.verdict = Verdict::MissingMetric;
        return e;
    };
    e.value = Some(value);
    e.ratio = row.paper.map(|p| value / p);
    e.verdict = match row.check {
        Tolerance(tol) => {
            let tol = r.tolerance.get(row.metric).copied().unwrap_or(tol);
            let paper = r.paper.get(row.metric).copied().or(row.paper);
            match paper {
                Some(p) => {
                    e.paper = Some(p);
                    e.ratio = Some(value / p);
                    tolerance_verdict(value, p, tol, r.explained.get(row.metric))
                }
                None => Verdict::NoVerdict,
            }
        }
        AtMost(t) if value <= t => Verdict::TargetMet,
        AtLeast(t) if value >= t => Verdict::TargetMet,
        AtMost(_) | AtLeast(_) => Verdict::TargetNotMet,
        InRange(lo, hi) if (lo..=hi).contains(&value) => Verdict::Within,
        InRange(..) => match r.explained.get(row.metric) {
            Some(why) => Verdict::Explained(why.clone()),
            None => Verdict::Outside,
        },
        Reference | Band => Verdict::NoVerdict,
    };
    e
}

/// The project's target on one metric of one experiment and mode, if the catalogue sets one.
pub fn target(experiment: &str, mode: Mode, metric: &str) -> Option<Check> {
    ROWS.iter()
        .find(|r| {
            r.experiment == experiment
                && r.mode == mode
                && r.metric == metric
                && matches!(r.check, AtMost(_) | AtLeast(_))
        })
        .map(|r| r.check)
}

/// The document an experiment belongs to: that of its first catalogue row.
pub fn document_of(experiment: &str) -> Document {
    ROWS.iter()
        .find(|r| r.experiment == experiment)
        .map(|r| r.document)
        .unwrap_or(Other)
}

/// Position of an experiment in the documents' order (experiments outside the catalogue last).
pub fn order_of(experiment: &str) -> usize {
    let mut seen: Vec<&str> = Vec::new();
    for r in ROWS {
        if !seen.contains(&r.experiment) {
            seen.push(r.experiment);
        }
    }
    seen.iter()
        .position(|e| *e == experiment)
        .unwrap_or(seen.len())
}
