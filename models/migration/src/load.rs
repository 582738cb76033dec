//! Per-host load monitor, as a load daemon measures it: a short CPU-bound probe runs every sampling
//! period and the host's load is read off how much of the processor the probe obtained.
//!
//! - In sim, the probe is a `Host::compute` job in the host's processor-sharing run queue, so with
//!   k runnable jobs besides it, it gets 1/(k+1) of the cycles and takes (k+1) times its nominal
//!   time: the measured `runnable` is exactly k+1 averaged over the probe's duration.
//! - In real mode, `compute` returns at once, so the probe also runs a real busy loop of the same
//!   nominal length; its wall time, against the fastest probe this monitor has seen (the
//!   calibration a real daemon does), gives the share the OS scheduler granted it.
//!
//! Samples go to the controller as small fixed-format messages ([`LoadSample::encode`]).

use std::time::Duration;

use gridbed_runtime::{secs, Addr, HostId, HostRef};

/// Port a monitor sends its samples from.
pub const MONITOR_PORT: u16 = 41;

/// How a monitor samples.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProbeConfig {
    /// Time between the end of one probe and the start of the next.
    pub period_s: f64,
    /// Nominal length of one probe on an idle processor.
    pub probe_s: f64,
}

/// One measurement of one host.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LoadSample {
    pub host: HostId,
    /// When the probe ended.
    pub at: Duration,
    /// Runnable jobs during the probe, the probe included (1.0 = idle host).
    pub runnable: f64,
}

/// First byte of a sample message (the controller's port also receives progress reports).
pub const SAMPLE_TAG: u8 = b'L';
const SAMPLE_VERSION: u8 = 1;
const SAMPLE_LEN: usize = 2 + 4 + 8 + 8;

impl LoadSample {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(SAMPLE_LEN);
        b.push(SAMPLE_TAG);
        b.push(SAMPLE_VERSION);
        b.extend_from_slice(&self.host.0.to_le_bytes());
        b.extend_from_slice(&(self.at.as_nanos() as u64).to_le_bytes());
        b.extend_from_slice(&self.runnable.to_le_bytes());
        b
    }

    /// Parses a sample; `None` for anything of the wrong length, version or value range.
    pub fn decode(b: &[u8]) -> Option<LoadSample> {
        if b.len() != SAMPLE_LEN || b[0] != SAMPLE_TAG || b[1] != SAMPLE_VERSION {
            return None;
        }
        let host = HostId(u32::from_le_bytes(b[2..6].try_into().ok()?));
        let at = Duration::from_nanos(u64::from_le_bytes(b[6..14].try_into().ok()?));
        let runnable = f64::from_le_bytes(b[14..22].try_into().ok()?);
        (runnable.is_finite() && runnable >= 0.0).then_some(LoadSample { host, at, runnable })
    }
}

/// The probe and its calibration.
pub struct Probe {
    cfg: ProbeConfig,
    /// Fastest probe seen so far, seconds (starts at the nominal length).
    baseline_s: f64,
    /// Iterations of the real busy loop that take `probe_s` on this machine, once calibrated.
    spin_iters: u64,
}

impl Probe {
    pub fn new(cfg: ProbeConfig) -> Self {
        Probe {
            cfg,
            baseline_s: cfg.probe_s,
            spin_iters: 0,
        }
    }

    /// Whether the probe found itself on a real backend and calibrated its busy loop.
    pub fn calibrated(&self) -> bool {
        self.spin_iters > 0
    }

    /// Runs one probe on `host` and returns the sample.
    pub async fn sample(&mut self, host: &HostRef) -> LoadSample {
        let cycles = (self.cfg.probe_s * host.cpu_hz()).max(1.0) as u64;
        let t0 = host.now();
        spin(self.spin_iters);
        host.compute(cycles).await;
        let elapsed = (host.now() - t0).as_secs_f64();
        if self.spin_iters == 0 && elapsed < self.cfg.probe_s / 2.0 {
            // `compute` did not take the nominal time: a real backend. Calibrate the busy loop.
            self.spin_iters = calibrate(host, self.cfg.probe_s);
            self.baseline_s = self.cfg.probe_s;
        }
        if elapsed > 0.0 && elapsed < self.baseline_s && self.spin_iters > 0 {
            self.baseline_s = elapsed;
        }
        let runnable = if elapsed > 0.0 {
            (elapsed / self.baseline_s).max(1.0)
        } else {
            1.0
        };
        LoadSample {
            host: host.id(),
            at: host.now(),
            runnable,
        }
    }
}

/// A busy loop the optimiser cannot remove.
fn spin(iters: u64) {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..iters {
        x = std::hint::black_box(x.rotate_left(7) ^ i);
    }
    std::hint::black_box(x);
}

/// Iterations of [`spin`] that take about `target_s` of wall time on an unloaded processor
/// (the fastest of a few tries).
fn calibrate(host: &HostRef, target_s: f64) -> u64 {
    const TRIAL: u64 = 200_000;
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t0 = host.now();
        spin(TRIAL);
        best = best.min((host.now() - t0).as_secs_f64());
    }
    if best <= 0.0 {
        return TRIAL;
    }
    ((target_s / best) * TRIAL as f64).clamp(1.0, 1e10) as u64
}

/// Spawns the monitor daemon on `host`: forever, probe then send the sample to `controller`, then
/// sleep one period. It dies with the host.
pub fn spawn_monitor(host: HostRef, cfg: ProbeConfig, controller: Addr) {
    let h = host.clone();
    host.spawn(
        "load-monitor",
        Box::pin(async move {
            let Ok(_port) = h.bind(MONITOR_PORT) else {
                h.event("load-monitor: port in use, not started");
                return;
            };
            let mut probe = Probe::new(cfg);
            loop {
                let s = probe.sample(&h).await;
                if h.send(MONITOR_PORT, controller, s.encode()).await.is_err() {
                    h.event("load-monitor: controller unreachable");
                }
                h.sleep(secs(cfg.period_s)).await;
            }
        }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_round_trips_and_rejects_garbage() {
        let s = LoadSample {
            host: HostId(7),
            at: Duration::from_millis(1500),
            runnable: 2.5,
        };
        assert_eq!(LoadSample::decode(&s.encode()), Some(s));
        let mut bad = s.encode();
        bad[1] = 9;
        assert_eq!(LoadSample::decode(&bad), None);
        assert_eq!(LoadSample::decode(&s.encode()[..10]), None);
        let mut nan = s.encode();
        nan[14..22].copy_from_slice(&f64::NAN.to_le_bytes());
        assert_eq!(LoadSample::decode(&nan), None);
    }
}
