//! migration-bandwidth: the simulated Figure 3 (from `gridbed-migration`) and, in real mode, the
//! same block sizes moved between two OS processes on this machine.

use std::process::Command;

use gridbed_real::blocks::{self, BlockPath};
use gridbed_runtime::outcome::{ExperimentOutput, Mode, Series};

pub fn run(mode: Mode, seed: u64) -> anyhow::Result<ExperimentOutput> {
    match mode {
        Mode::Sim => gridbed_migration::bandwidth::simulate(seed),
        Mode::Real => real(),
    }
}

/// Real mode: three paths between this process and a sink child process. The figure keeps the
/// simulated SP/2 curves beside "this machine" for comparison.
fn real() -> anyhow::Result<ExperimentOutput> {
    let mut out = gridbed_migration::bandwidth::simulate(0)?;
    out.metrics.clear();
    out.paper.clear();
    out.tolerance.clear();
    out.units.clear();
    out.trace = None;
    out.notes.clear();
    let exe = std::env::current_exe()?;
    let sizes = gridbed_migration::block_sizes();
    let paths = [
        (
            BlockPath::TcpLimitedWrites(8 * 1024),
            "tcp_8k_writes_mbit_s",
        ),
        (BlockPath::TcpLargeWrites, "tcp_large_writes_mbit_s"),
        (BlockPath::Unix, "unix_socket_mbit_s"),
    ];
    for (path, metric) in paths {
        let mut cmd = Command::new(&exe);
        cmd.arg("__sink");
        let points = blocks::measure(&mut cmd, path, &sizes, 3)?;
        let (b, s) = *points.last().expect("sizes non-empty");
        let time_metric = format!("{}_64mib_s", metric.trim_end_matches("_mbit_s"));
        out.metrics.insert(metric.into(), b as f64 * 8.0 / s / 1e6);
        out.metrics.insert(time_metric.clone(), s);
        out.units.insert(metric.into(), "Mbit/s".into());
        out.units.insert(time_metric, "s".into());
        let label = path.label();
        out.figures[0].series.push(Series {
            name: label.clone(),
            points: points.iter().map(|&(b, s)| (b as f64, s)).collect(),
        });
        out.figures[1].series.push(Series {
            name: label,
            points: points
                .iter()
                .map(|&(b, s)| (b as f64, b as f64 * 8.0 / s / 1e6))
                .collect(),
        });
    }
    out.notes.push("Real mode: blocks move between this process and a child process over loopback; best of 3 per size. The SP/2 curves are the simulated ones, shown for comparison.".into());
    Ok(out)
}
