//! migration-bandwidth: the simulated Figure 3 ([`super::bandwidth_sim`]) and, in real mode, the
//! same block sizes moved between two OS processes on this machine.

use std::process::Command;

use crate::outcome::{ExperimentOutput, Mode, Series};
use gridbed_migration_driver::blocks::{self, BlockPath};
use serde::{Deserialize, Serialize};

/// The AIX 4.3 default socket buffer (tcp_sendspace = tcp_recvspace = 16384), the paper's setup.
pub const PAPER_SOCKET_BUFFER: u64 = 16 * 1024;

/// What a researcher can change.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Socket buffer (TCP flow-control window) of the simulated TCP transports; LAPI has none.
    pub socket_buffer_bytes: u64,
    /// The sweep's largest block is 2^this bytes (from 1 KiB up).
    pub largest_block_log2: u32,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            socket_buffer_bytes: PAPER_SOCKET_BUFFER,
            largest_block_log2: 26,
        }
    }
}

pub const PARAM_SPECS: &[(&str, &str, &str)] = &[
    (
        "socket_buffer_bytes",
        "bytes",
        "AIX 4.3 default tcp_sendspace/tcp_recvspace (sim/src/presets.rs)",
    ),
    (
        "largest_block_log2",
        "log2 bytes",
        "document 1, Figure 3: blocks of 1 KiB to 64 MiB",
    ),
];

/// Most bytes a socket buffer may be set to (the simulator's window is a byte count; beyond this
/// no 2000-era kernel allowed it).
const MAX_SOCKET_BUFFER: u64 = 1 << 30;

pub fn run(mode: Mode, seed: u64) -> anyhow::Result<ExperimentOutput> {
    run_with(mode, seed, &Params::default())
}

pub fn run_with(mode: Mode, seed: u64, p: &Params) -> anyhow::Result<ExperimentOutput> {
    anyhow::ensure!(
        (1..=MAX_SOCKET_BUFFER).contains(&p.socket_buffer_bytes),
        "socket_buffer_bytes must be 1 to {MAX_SOCKET_BUFFER}, got {}",
        p.socket_buffer_bytes
    );
    anyhow::ensure!(
        (10..=26).contains(&p.largest_block_log2),
        "largest_block_log2 must be 10 to 26 (1 KiB to 64 MiB), got {}",
        p.largest_block_log2
    );
    match mode {
        Mode::Sim => super::bandwidth_sim::simulate_with(seed, p),
        Mode::Real => real(p),
    }
}

/// Real mode: three paths between this process and a sink child process. The figure keeps the
/// simulated SP/2 curves beside "this machine" for comparison.
fn real(p: &Params) -> anyhow::Result<ExperimentOutput> {
    let exe = std::env::current_exe()?;
    let sizes = real_sizes(p);
    let paths = [
        (
            BlockPath::TcpLimitedWrites(8 * 1024),
            "tcp_8k_writes_mbit_s",
        ),
        (BlockPath::TcpLargeWrites, "tcp_large_writes_mbit_s"),
        (BlockPath::Unix, "unix_socket_mbit_s"),
    ];
    let mut measured = Vec::new();
    for (path, metric) in paths {
        let mut cmd = Command::new(&exe);
        cmd.arg("__sink");
        let points = blocks::measure(&mut cmd, path, &sizes, 3)?;
        measured.push((path.label(), metric.to_string(), points));
    }
    real_output(
        p,
        measured,
        "Real mode: blocks move between this process and a child process over loopback; best of 3 per size. The SP/2 curves are the simulated ones, shown for comparison.",
    )
}

/// The block sizes of a real run: Figure 3's up to `largest_block_log2`.
pub fn real_sizes(p: &Params) -> Vec<usize> {
    gridbed_migration::block_sizes()
        .into_iter()
        .filter(|&b| b <= 1usize << p.largest_block_log2)
        .collect()
}

/// One measured path: its label in the figures, its metric name, (bytes, seconds) per block.
pub type MeasuredPath = (String, String, Vec<(usize, f64)>);

/// A real-mode result from measured paths (label, metric name, (bytes, seconds) points): the
/// largest block's bandwidth and time as metrics, the curves beside the simulated SP/2 ones.
pub fn real_output(
    p: &Params,
    measured: Vec<MeasuredPath>,
    note: &str,
) -> anyhow::Result<ExperimentOutput> {
    let mut out = super::bandwidth_sim::simulate_with(0, p)?;
    out.metrics.clear();
    out.paper.clear();
    out.tolerance.clear();
    out.units.clear();
    out.trace = None;
    out.notes.clear();
    for (label, metric, points) in measured {
        let (b, s) = *points
            .last()
            .ok_or_else(|| anyhow::anyhow!("no block measured on {label}"))?;
        let time_metric = format!("{}_64mib_s", metric.trim_end_matches("_mbit_s"));
        out.metrics.insert(metric.clone(), b as f64 * 8.0 / s / 1e6);
        out.metrics.insert(time_metric.clone(), s);
        out.units.insert(metric, "Mbit/s".into());
        out.units.insert(time_metric, "s".into());
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
    out.notes.push(note.into());
    Ok(out)
}
