//! Real mode against hosts that lie or stall: a planted program under the install name is not
//! trusted, a daemon whose executable is not the tree's refuses to start, and a daemon that stops
//! answering is declared lost by its parent's keepalive instead of hanging the command.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use gridbed_gxp::front::controller::ExecOptions;
use gridbed_gxp::tree::proto::{LoginMethod, Status};
use gridbed_gxp_driver::{start_root_with, Keepalive, Program};
use support::gxp;

fn program() -> Program {
    Program::load(Path::new(env!("CARGO_BIN_EXE_gxp"))).unwrap()
}

/// The local launcher with its homes under `root` (set here, not through the environment, so the
/// tests of this file can run in parallel).
fn local_method(root: &Path) -> LoginMethod {
    LoginMethod {
        name: "local".into(),
        argv: vec!["sh".into(), "-c".into()],
        env: vec![
            ("GXP_NAME".into(), "{host}".into()),
            (
                "GXP_HOME".into(),
                root.join("{host}").to_string_lossy().into_owned(),
            ),
        ],
    }
}

#[test]
fn a_planted_program_under_the_install_name_is_rehashed_and_replaced() {
    let home = tempfile::tempdir().unwrap();
    let p = program();
    let bin = home.path().join("n1/bin");
    std::fs::create_dir_all(&bin).unwrap();
    let installed = bin.join(format!("gxp-{}", &p.sha[..16]));
    std::fs::write(&installed, "#!/bin/sh\necho planted >&2\nexit 7\n").unwrap();
    std::fs::set_permissions(&installed, std::fs::Permissions::from_mode(0o755)).unwrap();
    let lines: Vec<String> = ["use local .* n1", "explore n1", "e echo $GXP_HOSTNAME"]
        .map(String::from)
        .to_vec();
    let out = gxp(
        &lines,
        &[
            ("GXP_LOCAL_ROOT", home.path().display().to_string()),
            ("GXP_NAME", "root".into()),
        ],
        Duration::from_secs(60),
    );
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.contains("reached 1 of 1") && s.contains("n1: n1\n"),
        "{s}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(&installed).unwrap(),
        *p.bytes,
        "the planted file was replaced by the tree's program"
    );
}

#[test]
fn a_daemon_whose_executable_is_not_the_trees_refuses_to_start() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gxp"))
        .args(["daemon", "--index", "1", "--sha", &"0".repeat(64)])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("refusing to start") && err.trim().lines().count() == 1,
        "{err}"
    );
    assert!(out.stdout.is_empty(), "no hello from a refused daemon");
}

#[test]
fn a_stopped_daemon_is_declared_lost_by_keepalive_not_waited_for() {
    let home = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ka = Keepalive {
            interval: Duration::from_millis(300),
            count: 2,
        };
        let mut ctl = start_root_with(program(), ka);
        ctl.rules.set_method(local_method(home.path()));
        ctl.rules.add_line("use local .* n[0-9]").unwrap();
        let ex = ctl.explore(&["n1".into(), "n2".into()]).await.unwrap();
        assert_eq!(ex.reached.len(), 2, "{ex:?}");
        ctl.selection.by_regex(&ctl.table, "n.").unwrap();
        let t0 = Instant::now();
        // n2 stops its own daemon (the parent of `sh -c`): it neither exits nor answers pings.
        let cmd = "if [ $GXP_HOSTNAME = n2 ]; then kill -STOP $PPID; fi; echo ok";
        let rep = tokio::time::timeout(
            Duration::from_secs(20),
            ctl.exec(cmd, ExecOptions::default()),
        )
        .await
        .expect("the command hung on a stopped daemon")
        .unwrap();
        let by = |n: &str| rep.results.iter().find(|r| r.name == n).unwrap();
        assert_eq!(by("n1").status, Status::Code(0));
        assert_eq!(by("n2").status, Status::Lost, "{rep:?}");
        assert!(t0.elapsed() >= ka.interval * 2, "lost only after the pings");
        ctl.quit();
        tokio::time::sleep(Duration::from_millis(100)).await;
    });
}

#[test]
fn timeout_stops_hosts_that_do_not_finish_and_reports_them_failed() {
    let home = tempfile::tempdir().unwrap();
    let lines: Vec<String> = [
        "use local .* n[0-9]",
        "explore n1 n2",
        "sel re n.",
        "timeout 1",
        "e if [ $GXP_HOSTNAME = n2 ]; then sleep 30; fi; echo done",
        "timeout off",
        "e echo again",
    ]
    .map(String::from)
    .to_vec();
    let t0 = Instant::now();
    let out = gxp(
        &lines,
        &[
            ("GXP_LOCAL_ROOT", home.path().display().to_string()),
            ("GXP_NAME", "root".into()),
        ],
        Duration::from_secs(60),
    );
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(t0.elapsed() < Duration::from_secs(20), "{s}");
    assert!(
        s.contains("n1: done\n")
            && s.contains("2 hosts: 1 ok, 1 failed (n2: failed: no answer before the deadline)"),
        "{s}"
    );
    assert!(
        s.contains("2 hosts: 2 ok, 0 failed"),
        "n2 still works after its command was stopped: {s}"
    );
    assert_eq!(out.status.code(), Some(1), "{s}");
}
