//! Simulator throughput: simulated messages delivered per wall-second with 1000 hosts.
//! `cargo bench -p gridbed-sim --bench throughput`

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gridbed_runtime::{Addr, HostId};
use gridbed_sim::{run, Platform, SimConfig};

const HOSTS: usize = 1000;
const PER_HOST: usize = 200;

/// Every host sends PER_HOST small messages to pseudo-random peers and receives its share.
fn storm(record_trace: bool) -> u64 {
    let mut cfg = SimConfig::new(Platform::lans(10, HOSTS / 10, "10g-tcp").unwrap(), 7);
    cfg.record_trace = record_trace;
    let out = run(cfg, |cluster| {
        Box::pin(async move {
            let hosts = cluster.hosts();
            for h in &hosts {
                let mut mb = h.bind(1).unwrap();
                h.spawn(
                    "sink",
                    Box::pin(async move { while mb.recv().await.is_ok() {} }),
                );
                let me = h.clone();
                h.spawn(
                    "source",
                    Box::pin(async move {
                        for _ in 0..PER_HOST {
                            let to = HostId((me.rng_u64() % HOSTS as u64) as u32);
                            let _ = me.send(2, Addr::new(to, 1), vec![0u8; 64]).await;
                        }
                    }),
                );
            }
            cluster.sleep(Duration::from_secs(10)).await;
        })
    });
    assert_eq!(out.delivered, (HOSTS * PER_HOST) as u64);
    out.delivered
}

/// The floor under any message model built on madsim: the same 1000 hosts × 200 steps, where each
/// step is only one precise timer wait and one task wake-up (a message in gridbed needs two timers —
/// sender's serialisation, receiver's arrival — plus two wakes and the cost model).
fn bare_madsim_timers() -> u64 {
    let cfg = SimConfig::new(Platform::lans(10, HOSTS / 10, "10g-tcp").unwrap(), 7);
    let out = run(cfg, |cluster| {
        Box::pin(async move {
            for h in cluster.hosts() {
                let me = h.clone();
                h.spawn(
                    "timers",
                    Box::pin(async move {
                        for _ in 0..PER_HOST {
                            me.sleep(Duration::from_nanos(100 + me.rng_u64() % 1000))
                                .await;
                        }
                    }),
                );
            }
            cluster.sleep(Duration::from_secs(10)).await;
        })
    });
    out.end_time.as_nanos() as u64
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("sim-1000-hosts");
    g.sample_size(10)
        .throughput(Throughput::Elements((HOSTS * PER_HOST) as u64));
    g.bench_function("messages-no-trace", |b| b.iter(|| storm(false)));
    g.bench_function("messages-with-trace", |b| b.iter(|| storm(true)));
    g.bench_function("bare-madsim-timer-steps", |b| b.iter(bare_madsim_timers));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
