//! Latency of `e hostname` on 32 local test hosts (real mode, local launcher: one daemon process
//! per host, the tree built by explore), and — where `pdsh` is installed — the same 32 runs through
//! `pdsh -R exec` (one fork per host per command, no persistent daemons), side by side.

use std::path::Path;
use std::process::Command;

use criterion::{criterion_group, criterion_main, Criterion};
use gridbed_gxp::front::controller::ExecOptions;
use gridbed_gxp_driver::{start_root, Program};

const HOSTS: usize = 32;

fn bench(c: &mut Criterion) {
    let home = std::env::temp_dir().join(format!("gxp-bench-{}", std::process::id()));
    std::env::set_var("GXP_LOCAL_ROOT", &home);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut ctl = rt.block_on(async {
        let mut ctl =
            start_root(Program::load(Path::new(env!("CARGO_BIN_EXE_gxp"))).expect("program"));
        ctl.rules.add_line("use local .* b[0-9]+").expect("rule");
        let targets: Vec<String> = (1..=HOSTS).map(|i| format!("b{i}")).collect();
        let r = ctl.explore(&targets).await.expect("explore");
        assert_eq!(r.reached.len(), HOSTS, "{r:?}");
        ctl.selection
            .by_regex(&ctl.table, "b[0-9]+")
            .expect("select");
        ctl
    });
    let mut g = c.benchmark_group("e_hostname_32_local_hosts");
    g.sample_size(20);
    g.bench_function("gxp tree", |b| {
        b.iter(|| {
            let rep = rt
                .block_on(ctl.exec("hostname", ExecOptions::default()))
                .expect("exec");
            assert_eq!(rep.succeeded(), HOSTS);
        })
    });
    if Command::new("pdsh").arg("-V").output().is_ok() {
        g.bench_function("pdsh -R exec", |b| {
            b.iter(|| {
                let out = Command::new("pdsh")
                    .args([
                        "-R",
                        "exec",
                        "-f",
                        "32",
                        "-w",
                        &format!("b[1-{HOSTS}]"),
                        "hostname",
                    ])
                    .output()
                    .expect("pdsh");
                assert!(out.status.success());
            })
        });
    } else {
        eprintln!("pdsh not installed: only the GXP side is measured");
    }
    g.finish();
    ctl.quit();
    let _ = std::fs::remove_dir_all(&home);
}

criterion_group!(benches, bench);
criterion_main!(benches);
