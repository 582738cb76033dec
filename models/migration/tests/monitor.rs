//! The monitor's probe measures a simulated host's run queue: it sees other users' jobs as a
//! load daemon would, through the CPU share its probe obtains.

use gridbed_migration::load::{spawn_monitor, LoadSample, ProbeConfig};
use gridbed_runtime::{secs, Addr, HostId};
use gridbed_sim::{run, Platform, SimConfig};

/// Samples host 1 while it carries `jobs` background jobs from t = 2 s; returns (runnable before,
/// runnable after) averaged over the samples of each phase.
fn measured(jobs: u32) -> (f64, f64) {
    let platform = Platform::lans(1, 2, "sp2-lapi").unwrap();
    let out = run(SimConfig::new(platform, 9), move |cluster| {
        Box::pin(async move {
            let hosts = cluster.hosts();
            let mut inbox = hosts[0].bind(50).unwrap();
            let cfg = ProbeConfig {
                period_s: 0.25,
                probe_s: 0.01,
            };
            spawn_monitor(hosts[1].clone(), cfg, Addr::new(HostId(0), 50));
            cluster.sleep(secs(2.0)).await;
            cluster.set_background_load(HostId(1), jobs);
            let mut samples = Vec::new();
            while samples.len() < 14 {
                let m = inbox.recv().await.unwrap();
                samples.push(LoadSample::decode(&m.payload).expect("well-formed sample"));
            }
            samples
        })
    });
    let mean = |f: &dyn Fn(&LoadSample) -> bool| {
        let xs: Vec<f64> = out
            .value
            .iter()
            .filter(|s| f(s))
            .map(|s| s.runnable)
            .collect();
        xs.iter().sum::<f64>() / xs.len() as f64
    };
    (
        mean(&|s| s.at.as_secs_f64() < 2.0),
        mean(&|s| s.at.as_secs_f64() > 2.1),
    )
}

#[test]
fn probe_counts_other_users_jobs() {
    let (before, after) = measured(2);
    assert!((before - 1.0).abs() < 0.01, "idle host: {before}");
    assert!((after - 3.0).abs() < 0.01, "probe + two jobs: {after}");
    let (_, one) = measured(1);
    assert!((one - 2.0).abs() < 0.01, "probe + one job: {one}");
}

/// Real mode: `compute` returns at once, so the probe must notice, calibrate its busy loop and
/// from then on spend about its nominal length of real CPU time per sample.
#[test]
fn real_probe_calibrates_and_spins() {
    use gridbed_migration::load::Probe;
    use std::time::Duration;
    let probe_s = 0.005;
    let (calibrated, runnable, spun_s) =
        gridbed_real::run_local(1, Duration::from_secs(30), move |cluster| {
            Box::pin(async move {
                let host = cluster.hosts()[0].clone();
                let mut probe = Probe::new(ProbeConfig {
                    period_s: 0.1,
                    probe_s,
                });
                probe.sample(&host).await;
                let t0 = host.now();
                let s = probe.sample(&host).await;
                (
                    probe.calibrated(),
                    s.runnable,
                    (host.now() - t0).as_secs_f64(),
                )
            })
        })
        .unwrap();
    assert!(calibrated);
    assert!(runnable.is_finite() && runnable >= 1.0, "{runnable}");
    // The loop ran: at least a fraction of the nominal length, whatever else the machine runs.
    assert!(spun_s >= probe_s * 0.3, "{spun_s}");
}
