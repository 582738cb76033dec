//! Files an experiment run writes: result.json, run.json (the trace, for replay), figures,
//! artifacts, and the index pages (index.html, README.md) over every result in the directory.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use gridbed_runtime::outcome::{ExperimentOutput, Mode, TraceRecord};
use serde::{Deserialize, Serialize};

use crate::params::ParamRecord;
use crate::registry::Experiment;
use crate::render;

/// `<dir>/<name>/result.json`.
#[derive(Serialize, Deserialize)]
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
    /// The parameters of the run: value, default, unit, source (empty: none declared).
    #[serde(default)]
    pub params: Vec<ParamRecord>,
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

/// Directory of one experiment's results in one mode.
pub fn result_dir(out: &Path, name: &str, mode: Mode) -> PathBuf {
    match mode {
        Mode::Sim => out.join(name),
        Mode::Real => out.join(format!("{name}-real")),
    }
}

/// Writes everything for one run; returns the result directory.
pub fn write(
    out_dir: &Path,
    exp: &Experiment,
    mode: Mode,
    seed: u64,
    out: ExperimentOutput,
    params: Vec<ParamRecord>,
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
        std::fs::write(dir.join(name), bytes).with_context(|| format!("cannot write {name}"))?;
        artifacts.push(name.clone());
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
        params: params.clone(),
    };
    std::fs::write(
        dir.join("result.json"),
        serde_json::to_string_pretty(&result)? + "\n",
    )?;
    if let Some(trace) = out.trace {
        let run = RunFile {
            format: RUN_FORMAT,
            experiment: exp.name.into(),
            seed,
            trace,
            params,
        };
        std::fs::write(dir.join("run.json"), serde_json::to_string(&run)?)?;
    }
    write_index(out_dir)?;
    Ok(dir)
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

fn load_results(out_dir: &Path) -> anyhow::Result<Vec<ResultFile>> {
    let mut results = Vec::new();
    let mut dirs: Vec<_> = std::fs::read_dir(out_dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.join("result.json").is_file())
        .collect();
    dirs.sort();
    for d in dirs {
        let text = std::fs::read_to_string(d.join("result.json"))?;
        // A stale or foreign file is skipped, not fatal: the index covers what it can read.
        if let Ok(r) = serde_json::from_str::<ResultFile>(&text) {
            results.push(r);
        }
    }
    Ok(results)
}

fn dir_name(r: &ResultFile) -> String {
    match r.mode {
        Mode::Sim => r.experiment.clone(),
        Mode::Real => format!("{}-real", r.experiment),
    }
}

fn fmt_num(v: f64) -> String {
    if v == 0.0 || (1e-3..1e6).contains(&v.abs()) {
        format!("{v:.4}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    } else {
        format!("{v:.4e}")
    }
}

/// Regenerates `index.html` and `README.md` from every result in `out_dir`.
pub fn write_index(out_dir: &Path) -> anyhow::Result<()> {
    let results = load_results(out_dir)?;
    let mut md = String::from("# gridbed — reproduced results\n\nGenerated by `experiment run`; do not edit by hand. Each section: what was run, the paper-vs-reproduced table, the figures.\n");
    let mut html = String::from("<!doctype html><html><head><meta charset=\"utf-8\"><title>gridbed results</title><style>body{font-family:sans-serif;max-width:1000px;margin:auto}table{border-collapse:collapse}td,th{border:1px solid #999;padding:3px 8px;text-align:right}td:first-child{text-align:left}.ok{color:#070}.bad{color:#b00}img{max-width:100%}</style></head><body><h1>gridbed — reproduced results</h1>\n");
    for r in &results {
        let d = dir_name(r);
        let _ = write!(
            md,
            "\n## {} ({})\n\n{}\n\nReproduces: {}. Seed {}",
            r.experiment, r.mode, r.about, r.reproduces, r.seed
        );
        let _ = write!(
            html,
            "<h2>{} ({})</h2><p>{}</p><p>Reproduces: {}. Seed {}",
            esc(&r.experiment),
            r.mode,
            esc(&r.about),
            esc(&r.reproduces),
            r.seed
        );
        if let Some(dg) = &r.trace_digest {
            let _ = write!(
                md,
                ", trace digest `{}` ({} events)",
                &dg[..16.min(dg.len())],
                r.trace_events.unwrap_or(0)
            );
            let _ = write!(
                html,
                ", trace digest <code>{}</code>",
                esc(&dg[..16.min(dg.len())])
            );
        }
        md.push_str(".\n\n| metric | reproduced | paper | ratio | within tolerance |\n|---|---|---|---|---|\n");
        html.push_str(".</p><table><tr><th>metric</th><th>reproduced</th><th>paper</th><th>ratio</th><th>within tolerance</th></tr>");
        for (name, v) in &r.metrics {
            let (paper, ratio, ok) = match verdict(r, name) {
                Some((p, ratio, ok)) => {
                    let tol = r
                        .tolerance
                        .get(name)
                        .map(|t| format!("{} (±{:.0}%)", if ok { "yes" } else { "NO" }, t * 100.0))
                        .unwrap_or_else(|| "—".into());
                    (fmt_num(p), format!("{ratio:.3}"), tol)
                }
                None => ("—".into(), "—".into(), "—".into()),
            };
            let _ = writeln!(
                md,
                "| {name} | {} | {paper} | {ratio} | {ok} |",
                fmt_num(*v)
            );
            let class = if ok.starts_with("NO") { "bad" } else { "ok" };
            let _ = write!(html, "<tr><td>{}</td><td>{}</td><td>{paper}</td><td>{ratio}</td><td class=\"{class}\">{}</td></tr>", esc(name), fmt_num(*v), esc(&ok));
        }
        html.push_str("</table>");
        for f in &r.figures {
            let _ = write!(md, "\n![{f}]({d}/{f}.png)\n");
            let _ = write!(html, "<p><img src=\"{d}/{f}.svg\" alt=\"{f}\"></p>");
        }
        for a in r.artifacts.iter().filter(|a| a.ends_with(".png")) {
            let _ = write!(md, "\n![{a}]({d}/{a})\n");
            let _ = write!(html, "<p><img src=\"{d}/{a}\" alt=\"{a}\"></p>");
        }
        if !r.notes.is_empty() {
            md.push_str("\nNotes:\n");
            html.push_str("<ul>");
            for n in &r.notes {
                let _ = writeln!(md, "- {n}");
                let _ = write!(html, "<li>{}</li>", esc(n));
            }
            html.push_str("</ul>");
        }
        html.push('\n');
    }
    html.push_str("</body></html>\n");
    std::fs::write(out_dir.join("README.md"), md)?;
    std::fs::write(out_dir.join("index.html"), html)?;
    Ok(())
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
