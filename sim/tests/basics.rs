//! End-to-end checks of the simulator through the runtime interface.

use std::time::Duration;

use gridbed_runtime::{Addr, HostId};
use gridbed_sim::{run, Fault, FaultPlan, Platform, SimConfig};

/// Sends one block from h0 to h1 and returns the virtual time it took to arrive.
fn transfer_time(preset: &str, bytes: usize, seed: u64) -> Duration {
    let cfg = SimConfig::new(Platform::preset(preset).unwrap(), seed);
    run(cfg, move |cluster| {
        Box::pin(async move {
            let hosts = cluster.hosts();
            let mut mb = hosts[1].bind(7).unwrap();
            let t0 = cluster.now();
            hosts[0]
                .send(7, Addr::new(HostId(1), 7), vec![0u8; bytes])
                .await
                .unwrap();
            let m = mb.recv().await.unwrap();
            assert_eq!(m.payload.len(), bytes);
            cluster.now() - t0
        })
    })
    .value
}

#[test]
fn lapi_40mb_matches_cost_model() {
    let t = transfer_time("sp2-lapi", 40_000_000, 1).as_secs_f64();
    let model = gridbed_sim::presets::transport("sp2-lapi")
        .unwrap()
        .cost()
        .transfer_time(40_000_000);
    assert!((t - model).abs() < 1e-4, "sim {t} vs model {model}");
}

#[test]
fn same_seed_same_digest_and_different_seeds_run() {
    let go = |seed| {
        let cfg = SimConfig::new(Platform::lans(2, 4, "gige-tcp").unwrap(), seed);
        run(cfg, |cluster| {
            Box::pin(async move {
                let hosts = cluster.hosts();
                for h in &hosts {
                    let h2 = h.clone();
                    let mut mb = h.bind(1).unwrap();
                    h.spawn(
                        "echo",
                        Box::pin(async move {
                            while let Ok(m) = mb.recv().await {
                                let _ = h2.send(1, m.from, m.payload).await;
                            }
                        }),
                    );
                }
                let mut me = hosts[0].bind(2).unwrap();
                for i in 1..hosts.len() as u32 {
                    let jitter = hosts[0].rng_u64() % 1000;
                    hosts[0].sleep(Duration::from_nanos(jitter)).await;
                    hosts[0]
                        .send(2, Addr::new(HostId(i), 1), vec![i as u8; 100])
                        .await
                        .unwrap();
                }
                let mut n = 0;
                while n < hosts.len() - 1 {
                    me.recv().await.unwrap();
                    n += 1;
                }
                cluster.now()
            })
        })
    };
    let a = go(7);
    let b = go(7);
    assert_eq!(a.trace.digest, b.trace.digest);
    assert_eq!(a.value, b.value);
    assert!(a.trace.count > 20);
    let c = go(8);
    assert_ne!(
        a.trace.digest, c.trace.digest,
        "a different seed should change jitter and trace"
    );
}

#[test]
fn processor_sharing_with_background_load() {
    let platform = Platform::preset("gige-tcp")
        .unwrap()
        .with_cpu_hz(1e9)
        .with_background_load(HostId(1), 3);
    let out = run(SimConfig::new(platform, 3), |cluster| {
        Box::pin(async move {
            let hosts = cluster.hosts();
            let t0 = cluster.now();
            hosts[0].compute(1_000_000_000).await;
            let alone = cluster.now() - t0;
            let t1 = cluster.now();
            hosts[1].compute(1_000_000_000).await;
            let loaded = cluster.now() - t1;
            (alone.as_secs_f64(), loaded.as_secs_f64())
        })
    });
    let (alone, loaded) = out.value;
    assert!((alone - 1.0).abs() < 1e-3, "alone {alone}");
    assert!(
        (loaded - 4.0).abs() < 4e-3,
        "1 job + 3 background jobs share 4 ways: {loaded}"
    );
}

#[test]
fn crash_drops_messages_and_restart_revives() {
    let plan = FaultPlan {
        schedule: vec![
            (Duration::from_millis(1), Fault::Crash(HostId(1))),
            (Duration::from_millis(5), Fault::Restart(HostId(1))),
        ],
        loss_rate: 0.0,
    };
    let cfg = SimConfig::new(Platform::preset("gige-tcp").unwrap(), 1).with_faults(plan);
    let out = run(cfg, |cluster| {
        Box::pin(async move {
            let hosts = cluster.hosts();
            cluster.sleep(Duration::from_millis(2)).await;
            hosts[0]
                .send(1, Addr::new(HostId(1), 9), vec![1])
                .await
                .unwrap();
            cluster.sleep(Duration::from_millis(4)).await;
            let mut mb = hosts[1].bind(9).unwrap();
            hosts[0]
                .send(1, Addr::new(HostId(1), 9), vec![2])
                .await
                .unwrap();
            mb.recv().await.unwrap().payload
        })
    });
    assert_eq!(
        out.value,
        vec![2],
        "the message sent while h1 was down must be lost"
    );
    assert!(out.trace.events.iter().any(|e| e.contains("host-down")));
}

#[test]
fn disconnect_discards_what_is_still_on_the_wire_and_later_sends_arrive() {
    let cfg = SimConfig::new(Platform::preset("ethernet-100").unwrap(), 3);
    let got = run(cfg, |cluster| {
        Box::pin(async move {
            let hosts = cluster.hosts();
            let mut mb = hosts[1].bind(7).unwrap();
            let to = Addr::new(HostId(1), 7);
            // A large message is still on the wire when h1 drops the connection.
            hosts[0].send(7, to, vec![1u8; 1 << 20]).await.unwrap();
            hosts[1].disconnect(HostId(0));
            hosts[0].send(7, to, vec![2u8; 8]).await.unwrap();
            let m = mb.recv().await.unwrap();
            (m.payload[0], m.payload.len(), mb.try_recv().is_none())
        })
    })
    .value;
    assert_eq!(got, (2, 8, true));
}
