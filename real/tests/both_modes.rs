//! One scenario, written once against the runtime interface, run on the simulator and on real TCP.

use std::time::Duration;

use gridbed_runtime::{Addr, BoxFuture, ClusterRef, HostId};

/// A token passes around a ring of hosts `rounds` times; returns the hosts it visited in order.
fn ring(rounds: usize) -> impl FnOnce(ClusterRef) -> BoxFuture<'static, Vec<u32>> + Send + 'static {
    move |cluster| {
        Box::pin(async move {
            let hosts = cluster.hosts();
            let n = hosts.len() as u32;
            for h in hosts.iter().skip(1) {
                let mut mb = h.bind(5).unwrap();
                let me = h.clone();
                h.spawn(
                    "relay",
                    Box::pin(async move {
                        while let Ok(m) = mb.recv().await {
                            let next = HostId((me.id().0 + 1) % n);
                            let mut p = m.payload;
                            p.push(me.id().0 as u8);
                            if me.send(5, Addr::new(next, 5), p).await.is_err() {
                                return;
                            }
                        }
                    }),
                );
            }
            let mut home = hosts[0].bind(5).unwrap();
            let mut token = Vec::new();
            for _ in 0..rounds {
                hosts[0]
                    .send(5, Addr::new(HostId(1), 5), token)
                    .await
                    .unwrap();
                token = home.recv().await.unwrap().payload;
            }
            token.into_iter().map(u32::from).collect()
        })
    }
}

#[test]
fn ring_runs_identically_on_sim_and_real_tcp() {
    let sim = gridbed_sim::run(
        gridbed_sim::SimConfig::new(gridbed_sim::Platform::lans(1, 4, "gige-tcp").unwrap(), 1),
        ring(3),
    )
    .value;
    let real = gridbed_real::run_local(4, Duration::from_secs(20), ring(3)).unwrap();
    assert_eq!(sim, vec![1, 2, 3, 1, 2, 3, 1, 2, 3]);
    assert_eq!(sim, real);
}

#[test]
fn real_scenario_that_hangs_is_stopped_by_the_deadline() {
    let err = gridbed_real::run_local(1, Duration::from_millis(200), |cluster| {
        Box::pin(async move {
            let mut mb = cluster.hosts()[0].bind(1).unwrap();
            let _ = mb.recv().await;
        })
    })
    .unwrap_err();
    assert!(err.to_string().contains("did not finish"), "{err}");
}

/// h0 streams numbered messages to h1; half way h1 drops the connection (as after a malformed
/// frame). Returns the numbers h1 received: increasing, and some after the drop (h0 reconnects).
fn stream_across_disconnect() -> impl FnOnce(ClusterRef) -> BoxFuture<'static, Vec<u32>> + Send {
    |cluster| {
        Box::pin(async move {
            let hosts = cluster.hosts();
            let mut mb = hosts[1].bind(9).unwrap();
            let to = Addr::new(HostId(1), 9);
            let mut got = Vec::new();
            for i in 0u32..4000 {
                // A send may fail once when it finds the connection closed: the next one reconnects.
                let _ = hosts[0].send(9, to, i.to_le_bytes().to_vec()).await;
                if i == 100 {
                    while let Some(m) = mb.try_recv() {
                        got.push(u32::from_le_bytes(m.payload[..4].try_into().unwrap()));
                    }
                    hosts[1].disconnect(HostId(0));
                }
                cluster.sleep(Duration::from_micros(200)).await;
                while let Some(m) = mb.try_recv() {
                    got.push(u32::from_le_bytes(m.payload[..4].try_into().unwrap()));
                }
                if got.last().is_some_and(|&n| n > 150) {
                    break;
                }
            }
            got
        })
    }
}

#[test]
fn disconnect_then_reconnect_on_sim_and_real_tcp() {
    let sim = gridbed_sim::run(
        gridbed_sim::SimConfig::new(gridbed_sim::Platform::preset("gige-tcp").unwrap(), 2),
        stream_across_disconnect(),
    )
    .value;
    let real =
        gridbed_real::run_local(2, Duration::from_secs(20), stream_across_disconnect()).unwrap();
    for got in [&sim, &real] {
        assert!(
            got.windows(2).all(|w| w[0] < w[1]),
            "out of order or duplicate: {got:?}"
        );
        assert!(
            got.iter().any(|&n| n <= 100),
            "nothing before the drop: {got:?}"
        );
        assert!(
            got.last().is_some_and(|&n| n > 150),
            "no reconnect: {got:?}"
        );
    }
}
