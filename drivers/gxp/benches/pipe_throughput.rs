//! Throughput of a real network pipe on 4 local test hosts (local launcher): 16 MiB from a local
//! producer broadcast to every host's stdin under the stdin window, and 16 MiB from every host
//! merged into a local consumer under the output window.

use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gridbed_gxp::front::pipe::parse;
use gridbed_gxp_driver::{start_root, Program, ShellLocal};

const HOSTS: usize = 4;
const BYTES: u64 = 16 << 20;

fn bench(c: &mut Criterion) {
    let home = std::env::temp_dir().join(format!("gxp-pipe-bench-{}", std::process::id()));
    std::env::set_var("GXP_LOCAL_ROOT", &home);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut ctl = rt.block_on(async {
        let mut ctl =
            start_root(Program::load(Path::new(env!("CARGO_BIN_EXE_gxp"))).expect("program"));
        ctl.rules.add_line("use local .* p[0-9]+").expect("rule");
        let targets: Vec<String> = (1..=HOSTS).map(|i| format!("p{i}")).collect();
        let r = ctl.explore(&targets).await.expect("explore");
        assert_eq!(r.reached.len(), HOSTS, "{r:?}");
        ctl.selection
            .by_regex(&ctl.table, "p[0-9]+")
            .expect("select");
        ctl
    });
    let mut g = c.benchmark_group("network_pipe_4_local_hosts");
    g.sample_size(10);
    // Bytes delivered: to every host (broadcast), or from every host (merge).
    g.throughput(Throughput::Bytes(BYTES * HOSTS as u64));
    let cases = [
        (
            "broadcast 16 MiB",
            format!("head -c {BYTES} /dev/zero {{{{ wc -c }}}}"),
        ),
        (
            "merge 4 x 16 MiB",
            format!("{{{{ head -c {BYTES} /dev/zero }}}} wc -c"),
        ),
    ];
    for (name, line) in cases {
        let p = parse(&line).expect("pipeline");
        g.bench_function(name, |b| {
            b.iter(|| {
                let r = rt.block_on(ctl.pipe(&p, &ShellLocal, None)).expect("pipe");
                assert!(r.success(), "{r:?}");
            })
        });
    }
    g.finish();
    ctl.quit();
    let _ = std::fs::remove_dir_all(&home);
}

criterion_group!(benches, bench);
criterion_main!(benches);
