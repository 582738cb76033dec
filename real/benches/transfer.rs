//! Real transfer layer vs a bare socket copy: 40 MB over loopback TCP, side by side in one run.
//! `cargo bench -p gridbed-real --bench transfer`

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gridbed_runtime::{Addr, HostId};

const BYTES: usize = 40_000_000;

fn bare_copy() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let reader = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        // The receiver ends up holding the bytes, as a gridbed message does.
        let mut got = Vec::with_capacity(BYTES);
        (&mut s).take(BYTES as u64).read_to_end(&mut got).unwrap();
        assert_eq!(got.len(), BYTES);
        s.write_all(&[1]).unwrap();
    });
    let mut s = TcpStream::connect(addr).unwrap();
    let block = vec![7u8; BYTES];
    s.write_all(&block).unwrap();
    let mut ack = [0u8; 1];
    s.read_exact(&mut ack).unwrap();
    reader.join().unwrap();
}

fn gridbed_layer() {
    gridbed_real::run_local(2, Duration::from_secs(60), |cluster| {
        Box::pin(async move {
            let hosts = cluster.hosts();
            let mut mb = hosts[1].bind(1).unwrap();
            hosts[0]
                .send(1, Addr::new(HostId(1), 1), vec![7u8; BYTES])
                .await
                .unwrap();
            assert_eq!(mb.recv().await.unwrap().payload.len(), BYTES);
        })
    })
    .unwrap();
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("loopback-40MB");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(8))
        .throughput(Throughput::Bytes(BYTES as u64));
    g.bench_function("bare-socket-copy", |b| b.iter(bare_copy));
    g.bench_function("gridbed-real-send", |b| b.iter(gridbed_layer));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
