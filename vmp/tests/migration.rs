//! A running guest migrated between simulated hosts by the migration daemons, at random moments
//! (so at random instruction counts), several times, under message loss and destination crashes
//! before acknowledgment: it must end exactly like the unmigrated run, in exactly one place, and
//! never run in two places at once. 1000 seeds (`GRIDBED_MIGRATION_SEEDS=N` to change it;
//! `GRIDBED_LONG=1` runs 20 000).

use std::sync::Arc;
use std::time::Duration;

use gridbed_migration::daemon::{daemon, Census, DaemonConfig, Transport, MIGRATION_PORT};
use gridbed_migration::wire::Msg;
use gridbed_runtime::{Addr, HostId};
use gridbed_sim::{run, FaultPlan, Platform, SimConfig};
use gridbed_vmp::guest::{build_image, programs, UserProgram};
use gridbed_vmp::machine::{ArchState, Config, Exit, Machine};
use gridbed_vmp::time::Preset;

const PRESETS: [&str; 4] = ["sp2-lapi", "sp2-tcp", "ethernet-100", "10g-tcp"];
const HOSTS: u32 = 3;

fn guest() -> Vec<UserProgram> {
    vec![
        programs::chatter(0, b'A', 12).unwrap(),
        programs::getpid_loop(1, 2_000).unwrap(),
    ]
}

fn boot() -> Machine {
    let image = build_image(&guest(), 20_000).unwrap();
    let mut m = Machine::new(Config::Vmp, Preset::PC_2005.cpu, &image).unwrap();
    m.set_budget(50_000_000);
    m
}

#[derive(Debug, PartialEq)]
struct End {
    exit: u32,
    console: Vec<u8>,
    arch: ArchState,
    retired: u64,
    cycles: u64,
}

fn end_of(m: &Machine, exit: u32) -> End {
    End {
        exit,
        console: m.console().to_vec(),
        arch: m.arch_state().unwrap(),
        retired: m.monitor().retired,
        cycles: m.monitor().cycles(),
    }
}

/// SplitMix64: the test's own parameter draws per seed.
struct Draw(u64);
impl Draw {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Outcome {
    finished: Vec<(u32, u32, End)>,
    max_running: usize,
    failures: Vec<String>,
    committed: usize,
    attempts: usize,
    /// For failure messages: who ran at the end, and every attempt.
    story: String,
}

fn scenario(seed: u64) -> Outcome {
    let mut d = Draw(seed);
    let preset = PRESETS[d.below(PRESETS.len() as u64) as usize];
    let transport = if d.below(2) == 0 {
        Transport::Put
    } else {
        Transport::Stream { chunk: 16 << 10 }
    };
    let loss = [0.0, 0.0, 0.02, 0.1][d.below(4) as usize];
    let requests = 1 + d.below(4);
    let crash_dst = d.below(3) == 0;
    let slice = 200 + d.below(800);
    // Slow hosts stretch a short guest over several migrations without more emulation work.
    let platform = Platform::lans(1, HOSTS as usize, preset)
        .unwrap()
        .with_cpu_hz(20e6);
    let cfg = SimConfig::new(platform, seed).with_faults(FaultPlan {
        schedule: Vec::new(),
        loss_rate: loss,
    });
    let dcfg = DaemonConfig {
        transport,
        slice,
        retry: Duration::from_millis(20),
    };
    let out = run(cfg, move |cluster| {
        Box::pin(async move {
            let census: Arc<Census<Machine>> = Arc::new(Census::default());
            let hosts = cluster.hosts();
            for (i, h) in hosts.iter().enumerate() {
                let p = (i == 0).then(boot);
                h.spawn("migd", Box::pin(daemon(h.clone(), p, dcfg, census.clone())));
            }
            let mut draw = Draw(seed ^ 0xABCD);
            for _ in 0..requests {
                cluster.sleep(Duration::from_micros(draw.below(1500))).await;
                let dst = draw.below(HOSTS as u64) as u32;
                let msg = Msg::Migrate { dst }.encode();
                for h in 0..HOSTS {
                    // The request comes from host 0's controller port; it never crashes.
                    let _ = hosts[0]
                        .send(7, Addr::new(HostId(h), MIGRATION_PORT), msg.clone())
                        .await;
                }
                if crash_dst {
                    // Fail the destination while it receives, before it can acknowledge.
                    for _ in 0..200 {
                        cluster.sleep(Duration::from_micros(50)).await;
                        if let Some(r) = census.with(|s| s.receiving) {
                            if r != 0 && draw.below(2) == 0 {
                                cluster.crash(HostId(r));
                                cluster.sleep(Duration::from_millis(5)).await;
                                cluster.restart(HostId(r));
                                let h = hosts[r as usize].clone();
                                h.spawn(
                                    "migd",
                                    Box::pin(daemon(h.clone(), None, dcfg, census.clone())),
                                );
                            }
                            break;
                        }
                    }
                }
            }
            for _ in 0..10_000 {
                let done = census.with(|s| !s.finished.is_empty() || !s.failures.is_empty());
                if done {
                    break;
                }
                cluster.sleep(Duration::from_millis(1)).await;
            }
            // A second copy (a source that resumed while its destination also runs) would end
            // later: give it time to show up, far beyond the protocol's timeouts.
            cluster.sleep(Duration::from_millis(500)).await;
            census.with(|s| Outcome {
                finished: s
                    .finished
                    .drain(..)
                    .map(|(h, st, m)| (h, st, end_of(&m, st)))
                    .collect(),
                max_running: s.max_running,
                failures: s.failures.clone(),
                committed: s.migrations.iter().filter(|m| m.committed).count(),
                attempts: s.migrations.len(),
                story: format!(
                    "{preset} {transport:?} loss {loss} crash {crash_dst}: running {:?}, receiving {:?}, {:?}",
                    s.running, s.receiving, s.migrations
                ),
            })
        })
    });
    out.value
}

#[test]
fn migrated_guest_ends_like_the_unmigrated_one_exactly_once() {
    let mut reference = boot();
    let Exit::PowerOff(code) = reference.run(None).unwrap() else {
        unreachable!()
    };
    let reference = end_of(&reference, code);
    let seeds: u64 = if std::env::var_os("GRIDBED_LONG").is_some() {
        20_000
    } else {
        std::env::var("GRIDBED_MIGRATION_SEEDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1000)
    };
    let (mut committed, mut attempts, mut moved_end) = (0, 0, 0);
    for seed in 0..seeds {
        let o = scenario(seed);
        assert!(o.failures.is_empty(), "seed {seed}: {:?}", o.failures);
        assert_eq!(o.max_running, 1, "seed {seed}: two copies ran at once");
        assert_eq!(
            o.finished.len(),
            1,
            "seed {seed}: the process did not end once; {}",
            o.story
        );
        let (host, _, end) = &o.finished[0];
        assert_eq!(end, &reference, "seed {seed}: ended differently");
        committed += o.committed;
        attempts += o.attempts;
        moved_end += (*host != 0) as usize;
    }
    // The property is only meaningful if migrations did happen and some were refused.
    assert!(committed > seeds as usize / 4, "{committed} of {attempts}");
    assert!(moved_end > 0);
    eprintln!("{seeds} seeds: {committed} of {attempts} migrations committed, {moved_end} ended away from host 0");
}
