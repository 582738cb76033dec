//! Property tests of the cost models.

use std::time::Duration;

use gridbed_runtime::{Addr, HostId};
use gridbed_sim::cpu::Cpu;
use gridbed_sim::presets::{transport, PRESET_NAMES};
use gridbed_sim::{run, Platform, SimConfig};
use proptest::prelude::*;

fn preset() -> impl Strategy<Value = &'static str> {
    proptest::sample::select(PRESET_NAMES.to_vec())
}

/// Simulated time for h0 to deliver `parts` (sent back to back) to h1, with `competitors` other
/// hosts sending `competitor_bytes` each to h1 at the same moment.
fn delivery_time(
    preset: &str,
    parts: Vec<usize>,
    competitors: usize,
    competitor_bytes: usize,
) -> Duration {
    let platform = Platform::lans(1, 2 + competitors, preset).unwrap();
    run(SimConfig::new(platform, 1), move |cluster| {
        Box::pin(async move {
            let hosts = cluster.hosts();
            let mut mb = hosts[1].bind(1).unwrap();
            for c in 0..competitors {
                let h = hosts[2 + c].clone();
                h.clone().spawn(
                    "competitor",
                    Box::pin(async move {
                        let _ = h
                            .send(2, Addr::new(HostId(1), 2), vec![0; competitor_bytes])
                            .await;
                    }),
                );
            }
            let n = parts.len();
            let src = hosts[0].clone();
            hosts[0].spawn(
                "sender",
                Box::pin(async move {
                    for p in parts {
                        src.send(1, Addr::new(HostId(1), 1), vec![0; p])
                            .await
                            .unwrap();
                    }
                }),
            );
            for _ in 0..n {
                mb.recv().await.unwrap();
            }
            cluster.now()
        })
    })
    .value
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn transfer_time_is_monotone_in_size(p in preset(), a in 0u64..100_000_000, b in 0u64..100_000_000) {
        let c = transport(p).unwrap().cost();
        let (lo, hi) = (a.min(b), a.max(b));
        prop_assert!(c.transfer_time(lo) <= c.transfer_time(hi));
    }

    #[test]
    fn splitting_never_makes_a_transfer_faster(p in preset(), sizes in proptest::collection::vec(1usize..2_000_000, 2..5)) {
        let total: usize = sizes.iter().sum();
        let whole = delivery_time(p, vec![total], 0, 0);
        let split = delivery_time(p, sizes, 0, 0);
        prop_assert!(split >= whole, "split {split:?} < whole {whole:?}");
    }

    #[test]
    fn sharing_a_link_never_makes_a_transfer_faster(p in preset(), size in 1usize..4_000_000, others in 1usize..4, other_size in 1usize..4_000_000) {
        let alone = delivery_time(p, vec![size], 0, 0);
        let shared = delivery_time(p, vec![size], others, other_size);
        prop_assert!(shared >= alone, "shared {shared:?} < alone {alone:?}");
    }

    #[test]
    fn processor_sharing_conserves_work(jobs in proptest::collection::vec((0u64..1_000_000, 1u64..5_000_000), 1..8), bg in 0u32..3) {
        // Jobs arrive at given ns offsets; advancing to the end must deliver exactly their cycles.
        let hz = 1e9;
        let mut cpu = Cpu::new(hz, bg);
        let mut arrivals = jobs.clone();
        arrivals.sort();
        let total: f64 = arrivals.iter().map(|j| j.1 as f64).sum();
        for (at, cycles) in &arrivals {
            cpu.add(Duration::from_nanos(*at), *cycles as f64);
        }
        // Long enough for every job to finish even with background load.
        let end = Duration::from_secs_f64(1.0 + total * f64::from(bg + 1) * jobs.len() as f64 / hz);
        cpu.advance(end);
        prop_assert!((cpu.delivered_cycles - total).abs() <= 1e-6 * total.max(1.0), "{} vs {}", cpu.delivered_cycles, total);
    }
}
