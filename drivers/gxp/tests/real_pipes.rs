//! Real network pipes through local-launcher hosts: the three stages run concurrently, an endless
//! producer or a consumer that stops early ends the pipe (as `yes | head` does), and large data
//! crosses under flow control without being held whole in the controller's memory. Also: hosts in
//! their own network namespaces, where the machine allows unprivileged ones.

mod support;

use std::time::Duration;

use support::{gxp, run_gxp};

fn local_env(home: &tempfile::TempDir) -> Vec<(&'static str, String)> {
    vec![
        ("GXP_LOCAL_ROOT", home.path().display().to_string()),
        ("GXP_NAME", "root".into()),
    ]
}

fn with_hosts(rest: &[&str]) -> Vec<String> {
    let mut l = vec!["use local .* n[0-9]".to_string(), "explore n1 n2".into()];
    l.extend(rest.iter().map(|s| s.to_string()));
    l
}

#[test]
fn endless_producer_or_early_closing_consumer_ends_the_pipe() {
    let home = tempfile::tempdir().unwrap();
    let env = local_env(&home);
    // cmd1 never ends: it is stopped once every host's head has read its two lines.
    let out = gxp(
        &with_hosts(&["yes {{ head -n 2 }}"]),
        &env,
        Duration::from_secs(60),
    );
    let s = String::from_utf8_lossy(&out.stdout);
    assert_eq!(s.matches("y\n").count(), 6, "3 hosts x 2 lines: {s}");
    assert!(s.contains("3 hosts: 3 ok, 0 failed"), "{s}");
    assert_eq!(
        out.status.code(),
        Some(0),
        "a cut producer is no failure: {s}"
    );
    // cmd2 never ends: cmd3 stops reading after 3 lines and the hosts are stopped (SIGPIPE-like).
    let out = gxp(
        &with_hosts(&["{{ yes }} head -n 3"]),
        &env,
        Duration::from_secs(60),
    );
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.contains("3 hosts alive\ny\ny\ny\n3 hosts: ") && s.contains("consumer stopped reading"),
        "exactly cmd3's 3 lines, then the summary: {s}"
    );
    assert_eq!(out.status.code(), Some(0), "{s}");
    // What the host's shell started in the background is stopped with it (its process group):
    // otherwise the `sleep` would hold the output pipes open for 60 s.
    let t0 = std::time::Instant::now();
    let out = gxp(
        &with_hosts(&["{{ sleep 60 & yes }} head -n 1"]),
        &env,
        Duration::from_secs(50),
    );
    assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn large_data_streams_both_ways_in_bounded_memory() {
    let home = tempfile::tempdir().unwrap();
    let env = local_env(&home);
    // Baseline: the controller's memory with nothing streaming (it holds its own program, which it
    // would install on new hosts).
    let (base, base_kb) = run_gxp(
        &with_hosts(&["e true"]),
        &env,
        Duration::from_secs(60),
        None,
    );
    assert_eq!(base.status.code(), Some(0));
    const MB: u64 = 128;
    let bytes = MB << 20;
    // Into the hosts: cmd1 is far faster than the hosts, which do not read for a second; without the
    // stdin window the controller would queue the whole input.
    let (up, up_kb) = run_gxp(
        &with_hosts(&[&format!(
            "head -c {bytes} /dev/zero {{{{ sleep 1; wc -c }}}} sort"
        )]),
        &env,
        Duration::from_secs(120),
        None,
    );
    let s = String::from_utf8_lossy(&up.stdout);
    assert_eq!(
        s.matches(&format!("{bytes}\n")).count(),
        3,
        "every host read all {MB} MiB: {s}"
    );
    // Out of the hosts: 3 x 128 MiB into a consumer that starts reading a second late.
    let (down, down_kb) = run_gxp(
        &with_hosts(&[&format!(
            "{{{{ head -c {bytes} /dev/zero }}}} sh -c 'sleep 1; wc -c'"
        )]),
        &env,
        Duration::from_secs(120),
        None,
    );
    let s = String::from_utf8_lossy(&down.stdout);
    assert!(s.contains(&format!("{}\n", 3 * bytes)), "{s}");
    println!("controller peak RSS: baseline {base_kb} KiB, stdin stream {up_kb} KiB, stdout stream {down_kb} KiB");
    // The windows bound what is in flight to a few MiB; 64 MiB leaves room for allocator slack.
    for (what, kb) in [("stdin", up_kb), ("stdout", down_kb)] {
        assert!(
            kb < base_kb + 64 * 1024,
            "{what}: controller peaked at {kb} KiB with a {base_kb} KiB baseline while streaming {MB} MiB per host"
        );
    }
}

#[test]
fn hosts_in_their_own_network_namespaces() {
    let probe = std::process::Command::new("unshare")
        .args(["-rn", "true"])
        .output();
    if !probe.as_ref().is_ok_and(|o| o.status.success()) {
        println!(
            "SKIP: unprivileged network namespaces unavailable here (`unshare -rn true`: {})",
            match &probe {
                Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
                Err(e) => e.to_string(),
            }
        );
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let lines: Vec<String> = [
        "use netns root n[0-9]",
        "use netns n1 m[0-9]", // m1 only through n1: a namespace inside a namespace
        "explore n1 n2 m1",
        "sel re [nm].",
        "eg tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; readlink /proc/self/ns/net",
    ]
    .map(String::from)
    .to_vec();
    let out = gxp(&lines, &local_env(&home), Duration::from_secs(60));
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("reached 3 of 3 targets"), "{s}");
    // Three hosts, three different namespaces, each with nothing but its loopback.
    assert_eq!(s.matches("\nlo\nnet:[").count(), 3, "{s}");
    assert_eq!(
        s.matches("(1)\n").count(),
        3,
        "no two hosts share a namespace: {s}"
    );
    let root_ns = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert!(!s.contains(&root_ns.display().to_string()), "{s}");
    assert_eq!(out.status.code(), Some(0), "{s}");
}
