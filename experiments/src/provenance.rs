//! Where a run came from: the commit of the source tree, the date, and the machine (cores, CPU
//! model, OS). Recorded in result.json so a real-mode figure says what produced it.

use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Provenance {
    /// `git describe --always --dirty` of the source tree, or "unknown".
    pub commit: String,
    /// UTC, RFC 3339 (seconds).
    pub date: String,
    pub cores: usize,
    pub cpu: String,
    pub os: String,
}

impl Provenance {
    /// This source tree and this machine, now.
    pub fn here() -> Self {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Provenance {
            commit: commit(Path::new(env!("CARGO_MANIFEST_DIR"))),
            date: rfc3339_utc(secs),
            cores: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            cpu: cpu_model(),
            os: os_name(),
        }
    }

    /// One line for the report.
    pub fn describe(&self) -> String {
        format!(
            "commit {}, {}, {} cores ({}), {}",
            self.commit, self.date, self.cores, self.cpu, self.os
        )
    }
}

/// Where a real-mode run ran: on this machine's processes over loopback, or on cluster hosts
/// (which host ran which role, at which address, with how many cores, on what machine).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Placement {
    /// `local` (processes of this machine over loopback) or `cluster` (workers on the hosts of
    /// a hosts file, launched through GXP over ssh).
    pub transport: String,
    #[serde(default)]
    pub workers: Vec<PlacedWorker>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct PlacedWorker {
    pub role: String,
    /// The hosts-file target.
    pub target: String,
    /// The name the host's GXP daemon reported.
    pub host: String,
    /// Where the worker listened.
    pub addr: String,
    /// Cores the hosts file gives the host.
    pub cores: Option<u32>,
    /// Logins from this machine to the host (1: direct; more: through gateways).
    #[serde(default)]
    pub hops: usize,
    /// The worker's own view of its machine.
    pub machine: Option<Provenance>,
}

impl Placement {
    pub fn local() -> Placement {
        Placement {
            transport: "local".into(),
            workers: Vec::new(),
        }
    }

    /// One line for the report.
    pub fn describe(&self) -> String {
        if self.workers.is_empty() {
            return "this machine (local processes over loopback)".into();
        }
        let w: Vec<String> = self
            .workers
            .iter()
            .map(|w| {
                let cores = w
                    .cores
                    .map(|c| format!("cores={c} in the hosts file"))
                    .unwrap_or_else(|| "cores not stated".into());
                let m = w
                    .machine
                    .as_ref()
                    .map(|m| format!("; its machine: {} cores, {}", m.cores, m.cpu))
                    .unwrap_or_default();
                let via = if w.hops > 1 {
                    format!(", {} logins away", w.hops)
                } else {
                    String::new()
                };
                format!("{} on {} ({}, {}{m}{via})", w.role, w.host, w.addr, cores)
            })
            .collect();
        format!("cluster via GXP/ssh: {}", w.join("; "))
    }
}

fn commit(dir: &Path) -> String {
    Command::new("git")
        .args(["describe", "--always", "--dirty", "--abbrev=12"])
        .current_dir(dir)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

fn os_name() -> String {
    let pretty = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        });
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .map(|k| k.trim().to_string());
    match (pretty, kernel) {
        (Some(p), Some(k)) => format!("{p}, Linux {k}"),
        (Some(p), None) => p,
        (None, Some(k)) => format!("Linux {k}"),
        (None, None) => std::env::consts::OS.to_string(),
    }
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (civil-from-days, proleptic Gregorian).
pub fn rfc3339_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::rfc3339_utc;

    #[test]
    fn dates_are_civil_utc() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_utc(1_709_210_096), "2024-02-29T12:34:56Z");
        assert_eq!(rfc3339_utc(4_102_444_799), "2099-12-31T23:59:59Z");
    }
}
