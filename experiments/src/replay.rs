//! `experiment replay RUNFILE`: re-run a recorded simulated run and compare traces event by event.

use std::path::Path;

use crate::outcome::{Mode, TraceRecord};
use anyhow::Context;
use gridbed_sim::trace::TRACE_EVENTS_KEPT;

use crate::registry;
use crate::report::{RunFile, RUN_FORMAT};

/// The verdict of a replay.
#[derive(Debug, PartialEq, Eq)]
pub enum Replay {
    Identical {
        events: u64,
        digest: String,
    },
    Diverged {
        index: usize,
        recorded: Option<String>,
        replayed: Option<String>,
    },
}

/// Largest run file read: a trace keeps at most [`TRACE_EVENTS_KEPT`] events (the biggest
/// report's run.json is a few MB); anything far beyond is not a run file, and is not read whole.
pub const MAX_RUN_FILE_BYTES: u64 = 256 << 20;

/// Reads and checks a run file.
pub fn load(path: &Path) -> anyhow::Result<RunFile> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("cannot read run file {}", path.display()))?
        .len();
    anyhow::ensure!(
        size <= MAX_RUN_FILE_BYTES,
        "{}: {size} bytes is too large for a run file (at most {MAX_RUN_FILE_BYTES})",
        path.display()
    );
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read run file {}", path.display()))?;
    parse(&text).map_err(|e| anyhow::anyhow!("{}: {e:#}", path.display()))
}

/// Parses and checks the text of a run file: the format, a registered experiment, a trace whose
/// digest is SHA-256 hex and that keeps no more events than it counts (nor than a trace keeps),
/// and parameters that the experiment accepts, each given once.
pub fn parse(text: &str) -> anyhow::Result<RunFile> {
    let run: RunFile =
        serde_json::from_str(text).map_err(|e| anyhow::anyhow!("not a gridbed run file: {e}"))?;
    anyhow::ensure!(
        run.format == RUN_FORMAT,
        "run file format {} is not supported (expected {RUN_FORMAT})",
        run.format
    );
    let t = &run.trace;
    anyhow::ensure!(
        t.digest.len() == 64
            && t.digest
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "trace digest is not a SHA-256 in lowercase hex"
    );
    anyhow::ensure!(
        t.events.len() <= TRACE_EVENTS_KEPT && t.events.len() as u64 <= t.count,
        "trace keeps {} events but counts {} (at most {TRACE_EVENTS_KEPT} are kept)",
        t.events.len(),
        t.count
    );
    let exp = registry::find(&run.experiment)?;
    let mut names = std::collections::BTreeSet::new();
    if let Some(p) = run.params.iter().find(|p| !names.insert(p.name.as_str())) {
        anyhow::bail!("parameter '{}' is recorded twice", p.name);
    }
    match &exp.params {
        Some(def) => {
            def.from_records(Mode::Sim, &run.params)?;
        }
        None => anyhow::ensure!(
            run.params.is_empty(),
            "experiment '{}' has no parameters, but the run file records some",
            run.experiment
        ),
    }
    Ok(run)
}

/// First index where two traces differ (None = the same events).
pub fn first_divergence(a: &TraceRecord, b: &TraceRecord) -> Option<usize> {
    let n = a.events.len().max(b.events.len());
    (0..n)
        .find(|&i| a.events.get(i) != b.events.get(i))
        .or(if a.digest != b.digest { Some(n) } else { None })
}

/// Re-runs the recorded experiment with its seed and compares.
pub fn replay(run: &RunFile) -> anyhow::Result<Replay> {
    let exp = registry::find(&run.experiment)?;
    let values = match &exp.params {
        Some(def) if !run.params.is_empty() => Some(def.from_records(Mode::Sim, &run.params)?),
        _ => None,
    };
    let (out, _) = exp.run_values(Mode::Sim, run.seed, values.as_ref())?;
    let now = out
        .trace
        .context("experiment produced no trace in sim mode")?;
    Ok(match first_divergence(&run.trace, &now) {
        None => Replay::Identical {
            events: now.count,
            digest: now.digest,
        },
        Some(i) => Replay::Diverged {
            index: i,
            recorded: run.trace.events.get(i).cloned(),
            replayed: now.events.get(i).cloned(),
        },
    })
}
