//! `experiment replay RUNFILE`: re-run a recorded simulated run and compare traces event by event.

use std::path::Path;

use crate::outcome::{Mode, TraceRecord};
use anyhow::Context;

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

/// Reads and checks a run file.
pub fn load(path: &Path) -> anyhow::Result<RunFile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read run file {}", path.display()))?;
    let run: RunFile = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{} is not a gridbed run file: {e}", path.display()))?;
    anyhow::ensure!(
        run.format == RUN_FORMAT,
        "{}: run file format {} is not supported (expected {RUN_FORMAT})",
        path.display(),
        run.format
    );
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
