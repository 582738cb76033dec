//! Runtime conformance: each scenario is written once against the runtime interface and run on
//! the simulator and on the real TCP backend; both must give the answer the interface documents.

use std::time::Duration;

use gridbed_real::{Limits, LocalRunner};
use gridbed_runtime::{Addr, BoxFuture, ClusterRef, HostId, Mailbox, NetError, Runner, Scenario};

/// The answer of `make()`'s scenario on `runner`, which must have `n` hosts.
fn on<R: Runner, T: Send + 'static>(runner: &R, n: usize, make: &impl Fn() -> Scenario<T>) -> T {
    assert_eq!(runner.hosts(), n, "{} runner", runner.backend());
    runner.run(make()).unwrap_or_else(|e| panic!("{e}")).value
}

/// Runs `make()` on `n` simulated hosts and on `n` real hosts with `limits`; returns both answers.
fn both<T: Send + 'static>(n: usize, limits: Limits, make: impl Fn() -> Scenario<T>) -> (T, T) {
    let platform = gridbed_sim::Platform::lans(1, n, "gige-tcp").expect("platform");
    let sim = gridbed_sim::SimRunner::new(gridbed_sim::SimConfig::new(platform, 1));
    let mut real = LocalRunner::new(n, Duration::from_secs(60));
    real.opts.limits = limits;
    (on(&sim, n, &make), on(&real, n, &make))
}

fn num(i: u32) -> Vec<u8> {
    i.to_le_bytes().to_vec()
}

fn unnum(p: &[u8]) -> u32 {
    u32::from_le_bytes(p[..4].try_into().expect("numbered message"))
}

async fn take(mb: &mut Box<dyn Mailbox>, n: usize) -> Vec<u32> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        match mb.recv().await {
            Ok(m) => got.push(unnum(&m.payload)),
            Err(_) => break,
        }
    }
    got
}

/// Two senders interleave messages to one port: each sender's messages arrive in send order.
#[test]
fn ordering_per_sender() {
    let (sim, real) = both(3, Limits::default(), || {
        Box::new(|c: ClusterRef| -> BoxFuture<'static, Vec<u32>> {
            Box::pin(async move {
                let h = c.hosts();
                let mut mb = h[2].bind(1).unwrap();
                for i in 0..300u32 {
                    let from = &h[(i % 2) as usize];
                    from.send(1, Addr::new(HostId(2), 1), num(i)).await.unwrap();
                }
                take(&mut mb, 300).await
            })
        })
    });
    for got in [&sim, &real] {
        assert_eq!(got.len(), 300);
        for parity in 0..2 {
            let mine: Vec<u32> = got.iter().copied().filter(|i| i % 2 == parity).collect();
            assert_eq!(
                mine,
                (0..300).filter(|i| i % 2 == parity).collect::<Vec<_>>()
            );
        }
    }
}

/// A message for a port bound later is kept and delivered at the bind.
#[test]
fn unbound_port_keeps_messages_until_bind() {
    let (sim, real) = both(2, Limits::default(), || {
        Box::new(|c: ClusterRef| -> BoxFuture<'static, Vec<u32>> {
            Box::pin(async move {
                let h = c.hosts();
                for i in 0..5 {
                    h[0].send(7, Addr::new(HostId(1), 7), num(i)).await.unwrap();
                }
                c.sleep(Duration::from_millis(100)).await;
                let mut mb = h[1].bind(7).unwrap();
                take(&mut mb, 5).await
            })
        })
    });
    assert_eq!(sim, vec![0, 1, 2, 3, 4]);
    assert_eq!(sim, real);
}

/// After `disconnect`, what was received stays, nothing arrives twice or out of order, and later
/// sends get through on a new connection.
#[test]
fn disconnect_then_reconnect() {
    let (sim, real) = both(2, Limits::default(), || {
        Box::new(|c: ClusterRef| -> BoxFuture<'static, Vec<u32>> {
            Box::pin(async move {
                let h = c.hosts();
                let mut mb = h[1].bind(9).unwrap();
                let mut got = take(&mut mb, 0).await;
                for i in 0..400u32 {
                    h[0].send(9, Addr::new(HostId(1), 9), num(i)).await.unwrap();
                    if i == 100 {
                        // Long enough for what was sent so far to arrive on either backend.
                        c.sleep(Duration::from_millis(50)).await;
                        while let Some(m) = mb.try_recv() {
                            got.push(unnum(&m.payload));
                        }
                        h[1].disconnect(HostId(0));
                    }
                    if i >= 300 {
                        c.sleep(Duration::from_millis(1)).await;
                    }
                }
                c.sleep(Duration::from_millis(200)).await;
                while let Some(m) = mb.try_recv() {
                    got.push(unnum(&m.payload));
                }
                got
            })
        })
    });
    for got in [&sim, &real] {
        assert!(got.windows(2).all(|w| w[0] < w[1]), "{got:?}");
        assert!(got.iter().any(|&n| n <= 100), "nothing before the drop");
        assert_eq!(got.last(), Some(&399), "no reconnect: {got:?}");
    }
}

/// A crashed host's mailboxes close; after a restart it binds again and receives what is sent
/// from then on, in order, and nothing sent to its earlier incarnation before the crash.
#[test]
fn crash_and_restart() {
    let (sim, real) = both(2, Limits::default(), || {
        Box::new(
            |c: ClusterRef| -> BoxFuture<'static, (Vec<u32>, bool, Vec<u32>)> {
                Box::pin(async move {
                    let h = c.hosts();
                    let to = Addr::new(HostId(1), 3);
                    let mut mb = h[1].bind(3).unwrap();
                    for i in 0..10 {
                        h[0].send(3, to, num(i)).await.unwrap();
                    }
                    let before = take(&mut mb, 10).await;
                    c.sleep(Duration::from_millis(100)).await;
                    c.crash(HostId(1));
                    let closed = mb.recv().await == Err(NetError::Closed);
                    c.sleep(Duration::from_millis(100)).await;
                    c.restart(HostId(1));
                    let mut mb = h[1].bind(3).unwrap();
                    for i in 100..120 {
                        h[0].send(3, to, num(i)).await.unwrap();
                    }
                    (before, closed, take(&mut mb, 20).await)
                })
            },
        )
    });
    for (before, closed, after) in [&sim, &real] {
        assert_eq!(before, &(0..10).collect::<Vec<_>>());
        assert!(closed, "mailbox not closed by the crash");
        assert_eq!(after, &(100..120).collect::<Vec<_>>());
    }
}

/// A receiver that does not read while a sender sends far more than the real backend's queues
/// hold: the sender is held back, not failed, and every message arrives once, in order.
#[test]
fn backpressure_loses_nothing() {
    const N: u32 = 3000;
    let small = Limits {
        outbox_frames: 64,
        mailbox_frames: 64,
        ..Limits::default()
    };
    let (sim, real) = both(2, small, || {
        Box::new(|c: ClusterRef| -> BoxFuture<'static, Vec<u32>> {
            Box::pin(async move {
                let h = c.hosts();
                let mut mb = h[1].bind(5).unwrap();
                let sender = h[0].clone();
                h[0].spawn(
                    "flood",
                    Box::pin(async move {
                        for i in 0..N {
                            sender
                                .send(5, Addr::new(HostId(1), 5), num(i))
                                .await
                                .unwrap();
                        }
                    }),
                );
                c.sleep(Duration::from_millis(300)).await;
                take(&mut mb, N as usize).await
            })
        })
    });
    assert_eq!(sim, (0..N).collect::<Vec<_>>());
    assert_eq!(sim, real);
}

/// A large message arrives intact on both; over the real backend's frame limit the send is
/// refused with `TooLarge` (the simulator has no frame limit and delivers it).
#[test]
fn large_and_oversized_messages() {
    let mut limits = Limits::default();
    limits.port_max_frame.insert(6, 1 << 20);
    let (sim, real) = both(2, limits, || {
        Box::new(
            |c: ClusterRef| -> BoxFuture<'static, (usize, Result<(), NetError>)> {
                Box::pin(async move {
                    let h = c.hosts();
                    let mut mb = h[1].bind(8).unwrap();
                    let big: Vec<u8> = (0..8_000_000u32).map(|i| (i % 251) as u8).collect();
                    h[0].send(8, Addr::new(HostId(1), 8), big.clone())
                        .await
                        .unwrap();
                    let m = mb.recv().await.unwrap();
                    let intact = if m.payload == big { m.payload.len() } else { 0 };
                    let over = h[0]
                        .send(6, Addr::new(HostId(1), 6), vec![0; (1 << 20) + 1])
                        .await;
                    (intact, over)
                })
            },
        )
    });
    assert_eq!(sim.0, 8_000_000);
    assert_eq!(real.0, 8_000_000);
    assert_eq!(sim.1, Ok(()));
    assert_eq!(
        real.1,
        Err(NetError::TooLarge {
            size: (1 << 20) + 1,
            limit: 1 << 20
        })
    );
}

/// The runners say what they are: the simulator's run is reproducible (same digest, same virtual
/// time for the same seed), the real one is not (no digest).
#[test]
fn runners_report_backend_time_and_trace() {
    let make = || -> Scenario<u32> {
        Box::new(|c: ClusterRef| -> BoxFuture<'static, u32> {
            Box::pin(async move {
                let h = c.hosts();
                let mut mb = h[1].bind(3).unwrap();
                for i in 0..10 {
                    h[0].send(3, Addr::new(HostId(1), 3), num(i)).await.unwrap();
                }
                take(&mut mb, 10).await.iter().sum()
            })
        })
    };
    let platform = gridbed_sim::Platform::lans(1, 2, "gige-tcp").expect("platform");
    let sim = gridbed_sim::SimRunner::new(gridbed_sim::SimConfig::new(platform, 9));
    let (a, b) = (sim.run(make()).unwrap(), sim.run(make()).unwrap());
    assert_eq!(sim.backend(), "sim");
    assert_eq!(a.value, 45);
    assert_eq!(a, b, "same seed, same run");
    assert!(a.trace_digest.is_some() && a.elapsed > Duration::ZERO);
    let real = LocalRunner::new(2, Duration::from_secs(30));
    let r = real.run(make()).unwrap();
    assert_eq!(
        (real.backend(), r.value, r.trace_digest),
        ("real", 45, None)
    );
}
