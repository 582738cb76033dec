//! Small-message throughput and round-trip latency between two real hosts (loopback TCP, genuine
//! sockets via gridbed-real): Phoenix `send` to a virtual ID vs a raw `Host::send` with the same
//! framing underneath. Each measurement runs its messages inside one `run_local` cluster and times
//! only the message exchange. `protocol-cpu` isolates Phoenix's own cost per message (routing,
//! encoding, decoding, delivery) without sockets.
//!
//! `CARGO_TARGET_DIR=... cargo bench -p gridbed-phoenix --bench phoenix_vs_raw`

// A benchmark on real sockets measures wall time; no simulated code runs here.
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gridbed_phoenix::{wire, Config, Entry, IdRange, NoData, Node, Phoenix, RoutingTable, Start};
use gridbed_runtime::{Addr, BoxFuture, ClusterRef, HostId};

const PAYLOAD: usize = 64;
const SPACE: u64 = 1 << 32;
const RAW_PORT: u16 = 7500;

/// h0 owns ID 0, h1 owns everything else.
fn table() -> RoutingTable {
    let mut t = RoutingTable::whole(SPACE, HostId(0));
    t.merge(Entry {
        range: IdRange::new(1, SPACE),
        owner: HostId(1),
        epoch: 1,
    });
    t
}

fn cluster<F>(f: F) -> Duration
where
    F: FnOnce(ClusterRef) -> BoxFuture<'static, Duration> + Send + 'static,
{
    gridbed_real::run_local(2, Duration::from_secs(120), f).expect("real cluster")
}

/// Phoenix: h0 sends `n` messages to ID 42 (owned by h1); h1 receives them all.
fn phoenix_stream(n: u64, round_trip: bool) -> Duration {
    cluster(move |c| {
        Box::pin(async move {
            let hosts = c.hosts();
            let (h0, h1) = (hosts[0].clone(), hosts[1].clone());
            let (tx, rx) = std::sync::mpsc::channel();
            let none = Arc::new(Default::default());
            let mut p1 = Phoenix::start(
                h1.clone(),
                Config::new(SPACE),
                NoData,
                Start::Initial { table: table() },
                Arc::clone(&none),
            )
            .await
            .expect("h1");
            h1.spawn(
                "sink",
                Box::pin(async move {
                    for _ in 0..n {
                        p1.recv().await.expect("recv");
                        if round_trip {
                            p1.send(0, vec![0; PAYLOAD]).await.expect("reply");
                        }
                    }
                    let _ = tx.send(());
                }),
            );
            let mut p0 = Phoenix::start(
                h0.clone(),
                Config::new(SPACE),
                NoData,
                Start::Initial { table: table() },
                none,
            )
            .await
            .expect("h0");
            let t = Instant::now();
            for _ in 0..n {
                p0.send(42, vec![0; PAYLOAD]).await.expect("send");
                if round_trip {
                    p0.recv().await.expect("reply");
                }
            }
            while rx.try_recv().is_err() {
                c.sleep(Duration::from_micros(50)).await;
            }
            t.elapsed()
        })
    })
}

/// Raw: the same exchange with `Host::send` on a bound port (same transport framing).
fn raw_stream(n: u64, round_trip: bool) -> Duration {
    cluster(move |c| {
        Box::pin(async move {
            let hosts = c.hosts();
            let (h0, h1) = (hosts[0].clone(), hosts[1].clone());
            let (tx, rx) = std::sync::mpsc::channel();
            let mut m1 = h1.bind(RAW_PORT).expect("bind");
            let mut m0 = h0.bind(RAW_PORT).expect("bind");
            let h1c = h1.clone();
            h1.spawn(
                "sink",
                Box::pin(async move {
                    for _ in 0..n {
                        m1.recv().await.expect("recv");
                        if round_trip {
                            h1c.send(RAW_PORT, Addr::new(HostId(0), RAW_PORT), vec![0; PAYLOAD])
                                .await
                                .expect("reply");
                        }
                    }
                    let _ = tx.send(());
                }),
            );
            let t = Instant::now();
            for _ in 0..n {
                h0.send(RAW_PORT, Addr::new(HostId(1), RAW_PORT), vec![0; PAYLOAD])
                    .await
                    .expect("send");
                if round_trip {
                    m0.recv().await.expect("reply");
                }
            }
            while rx.try_recv().is_err() {
                c.sleep(Duration::from_micros(50)).await;
            }
            t.elapsed()
        })
    })
}

/// Phoenix's own CPU cost per message, without sockets: send on one node, encode, decode, handle
/// on the owner, receive.
fn protocol_only(c: &mut Criterion) {
    let node = |h| {
        Node::new(
            HostId(h),
            Config::new(SPACE),
            NoData,
            Start::Initial { table: table() },
            0,
        )
    };
    let (mut a, mut b) = (node(0), node(1));
    let mut g = c.benchmark_group("protocol-cpu-64B");
    g.throughput(Throughput::Elements(1));
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    g.bench_function("phoenix", |bch| {
        bch.iter(|| {
            a.send(42, vec![0; PAYLOAD]).expect("send");
            for f in a.take_outgoing() {
                b.handle_bytes(&wire::encode(&f)).expect("decode");
            }
            b.try_recv().expect("delivered")
        })
    });
    g.finish();
}

fn bench(c: &mut Criterion) {
    protocol_only(c);
    let mut g = c.benchmark_group("throughput-64B");
    g.throughput(Throughput::Elements(1));
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    g.bench_function("raw", |b| b.iter_custom(|n| raw_stream(n, false)));
    g.bench_function("phoenix", |b| b.iter_custom(|n| phoenix_stream(n, false)));
    g.finish();
    let mut g = c.benchmark_group("round-trip-64B");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    g.bench_function("raw", |b| b.iter_custom(|n| raw_stream(n, true)));
    g.bench_function("phoenix", |b| b.iter_custom(|n| phoenix_stream(n, true)));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
