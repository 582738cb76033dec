//! The three strategies move a running, page-dirtying process from host 0 to host 1 in the
//! simulator: it ends with exactly the memory of an unmigrated run, and the strategies order as
//! they must (pre-copy's downtime below stop-and-copy's, post-copy's below both); post-copy
//! fails stop, with a clear error, when the source vanishes before the last page.

use std::time::Duration;

use gridbed_migration::paged::PagedProcess;
use gridbed_migration::strategies::{migrate, Strategy, StrategyConfig, StrategyReport};
use gridbed_runtime::HostId;
use gridbed_sim::{run, Platform, SimConfig};

const BYTES: usize = 4 << 20;
const WRITES_PER_S: f64 = 2000.0;
const RUN_S: f64 = 0.5;

fn cfg(strategy: Strategy) -> StrategyConfig {
    StrategyConfig {
        strategy,
        batch_bytes: 64 << 10,
        state_bytes: 80 << 10,
        tick_s: 0.001,
        start_after_s: 0.05,
        precopy_stop_pages: 64,
        precopy_max_rounds: 30,
        fetch_timeout: Duration::from_millis(200),
    }
}

fn once(strategy: Strategy, crash_source_at: Option<Duration>) -> anyhow::Result<StrategyReport> {
    let sim = SimConfig::new(Platform::preset("sp2-lapi").unwrap(), 3);
    run(sim, move |cluster| {
        Box::pin(async move {
            if let Some(at) = crash_source_at {
                let c = cluster.clone();
                let h = cluster.hosts()[1].clone();
                h.spawn(
                    "crash",
                    Box::pin(async move {
                        c.sleep(at).await;
                        c.crash(HostId(0));
                    }),
                );
            }
            let p = PagedProcess::new(BYTES, WRITES_PER_S, RUN_S);
            migrate(&cluster, p, &cfg(strategy)).await
        })
    })
    .value
}

#[test]
fn every_strategy_ends_with_the_unmigrated_memory_and_they_order_as_expected() {
    let mut reference = PagedProcess::new(BYTES, WRITES_PER_S, RUN_S);
    while !reference.finished() {
        reference.run(0.001).unwrap();
    }
    let r: Vec<StrategyReport> = Strategy::ALL
        .iter()
        .map(|s| once(*s, None).unwrap())
        .collect();
    for (s, rep) in Strategy::ALL.iter().zip(&r) {
        assert_eq!(rep.final_digest, reference.digest(), "{s:?}");
        assert!(rep.pages_sent >= (BYTES / 4096) as u64, "{s:?}: {rep:?}");
    }
    let (stop, pre, post) = (&r[0], &r[1], &r[2]);
    assert!((stop.total_s - stop.downtime_s).abs() < 1e-3, "{stop:?}");
    assert!(
        pre.downtime_s < stop.downtime_s / 4.0,
        "{pre:?} vs {stop:?}"
    );
    assert!(pre.pages_resent > 0 && pre.rounds > 1, "{pre:?}");
    assert!(post.downtime_s < pre.downtime_s, "{post:?} vs {pre:?}");
    assert!(post.demand_faults > 0, "{post:?}");
    assert!(post.total_s >= stop.total_s * 0.9, "{post:?}");
}

#[test]
fn post_copy_fails_stop_when_the_source_vanishes() {
    let err = once(Strategy::PostCopy, Some(Duration::from_millis(60))).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("post-copy") && msg.contains("both hosts"),
        "{msg}"
    );
}
