//! `experiment run … --mode real --hosts FILE` on a cluster this test makes: four hosts, each
//! with its own loopback address, sshd and home (`gridbed_cluster_driver::testcluster`). The
//! `experiment` binary is installed on every host by GXP's bootstrap, workers run there, results
//! say where they ran; bad hosts files, unreachable and refusing hosts and a killed worker end in
//! one line per problem and a non-zero exit; nothing is left running on any host.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use gridbed_cluster_driver::testcluster::{StartError, TestCluster};
use serde_json::Value;

fn cluster() -> Option<TestCluster> {
    match TestCluster::start(4) {
        Ok(c) => Some(c),
        Err(StartError::NoSshd(why)) => {
            println!("SKIP: no sshd on this machine: {why}");
            None
        }
        Err(e) => panic!("test cluster: {e}"),
    }
}

/// Runs `experiment ARGS`, killing it after `limit` (a hang fails the test); `during` is polled
/// every 20 ms while it runs.
fn experiment(args: &[&str], limit: Duration, mut during: impl FnMut() -> bool) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_experiment"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run experiment");
    let drain = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let end = Instant::now() + limit;
    let mut active = true;
    let status = loop {
        if let Ok(Some(st)) = child.try_wait() {
            break st;
        }
        if active {
            active = during();
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("experiment {args:?} hung for {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn error_lines(o: &Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stderr)
        .lines()
        .filter(|l| l.starts_with("error: "))
        .map(String::from)
        .collect()
}

fn assert_idle(c: &TestCluster, what: &str) {
    let left = c.wait_idle(Duration::from_secs(10));
    assert!(
        left.is_empty(),
        "{what}: still running on the hosts: {left:?}"
    );
}

fn installed(c: &TestCluster, host: usize) -> Vec<String> {
    std::fs::read_dir(c.hosts[host].home.join("bin"))
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn result(out: &Path, dir: &str) -> Value {
    let p = out.join(dir).join("result.json");
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p:?}: {e}")))
        .unwrap()
}

#[test]
fn experiments_run_on_cluster_hosts_and_say_where() {
    let Some(c) = cluster() else { return };
    let hosts = c.write_hosts_file("hosts", "");
    let out = tempfile::tempdir().unwrap();
    let o = out.path().to_str().unwrap();
    let h = hosts.to_str().unwrap();

    // vmp-getpid: the whole real measurement in one worker on the first host.
    let r = experiment(
        &[
            "run",
            "vmp-getpid",
            "--mode",
            "real",
            "--repeat",
            "1",
            "--hosts",
            h,
            "--out",
            o,
        ],
        Duration::from_secs(120),
        || true,
    );
    assert!(r.status.success(), "{}", text(&r));
    println!("{}", text(&r));
    let res = result(out.path(), "vmp-getpid-real");
    println!("{}", res["placement"]);
    let pl = &res["placement"];
    assert_eq!(pl["transport"], "cluster", "{res}");
    assert_eq!(pl["workers"][0]["host"], "h1", "{res}");
    assert!(
        pl["workers"][0]["addr"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.2:"),
        "the worker listened on its host's own address: {pl}"
    );
    assert_eq!(pl["workers"][0]["cores"], 1);
    assert!(
        res["metrics"]["vmp_wall_s"].as_f64().unwrap() > 0.0,
        "{res}"
    );
    assert!(
        res["command"].as_str().unwrap().contains("--hosts"),
        "rerun command names the hosts file: {res}"
    );
    for k in 0..4 {
        assert_eq!(
            installed(&c, k).len(),
            1,
            "host {k}: the program installed once, no temporary file left"
        );
    }
    assert_idle(&c, "after vmp-getpid");

    // migration-bandwidth: source on h1, sink on h2, over their own addresses; h2 is reached
    // through h1 (`via=`, a two-hop GXP tree). Installed copies are reused (same checksum).
    let via = c.dir.path().join("hosts-via");
    std::fs::write(
        &via,
        c.hosts_file_text("").replace(
            "h2 cores=1 addr=127.0.0.3\n",
            "h2 cores=1 addr=127.0.0.3 via=h1\n",
        ),
    )
    .unwrap();
    assert!(std::fs::read_to_string(&via).unwrap().contains("via=h1"));
    let h = via.to_str().unwrap();
    let r = experiment(
        &[
            "run",
            "migration-bandwidth",
            "--mode",
            "real",
            "--repeat",
            "1",
            "--set",
            "largest_block_log2=20",
            "--hosts",
            h,
            "--out",
            o,
        ],
        Duration::from_secs(120),
        || true,
    );
    assert!(r.status.success(), "{}", text(&r));
    println!("{}", text(&r));
    let res = result(out.path(), "migration-bandwidth-real");
    println!("{}\n{}", res["placement"], res["metrics"]);
    let w = &res["placement"]["workers"];
    assert_eq!(w[0]["role"], "source", "{res}");
    assert_eq!(w[0]["host"], "h1");
    assert_eq!(w[1]["role"], "sink");
    assert_eq!(w[1]["host"], "h2");
    assert_eq!(w[0]["hops"], 1, "h1 directly: {w}");
    assert_eq!(w[1]["hops"], 2, "h2 through h1: {w}");
    assert!(
        w[1]["addr"].as_str().unwrap().starts_with("127.0.0.3:"),
        "{w}"
    );
    for m in ["tcp_8k_writes_mbit_s", "tcp_large_writes_mbit_s"] {
        assert!(res["metrics"][m].as_f64().unwrap() > 0.0, "{m}: {res}");
    }
    assert!(
        res["notes"].to_string().contains("Cluster mode"),
        "{}",
        res["notes"]
    );
    assert_eq!(installed(&c, 0).len(), 1, "reused, not installed again");
    assert_idle(&c, "after migration-bandwidth");
}

#[test]
fn bad_hosts_and_failures_are_one_line_each_and_leave_nothing_running() {
    let Some(c) = cluster() else { return };
    let out = tempfile::tempdir().unwrap();
    let o = out.path().to_str().unwrap();
    let run = |hosts: &Path, limit: u64, during: &mut dyn FnMut() -> bool| {
        experiment(
            &[
                "run",
                "vmp-getpid",
                "--mode",
                "real",
                "--repeat",
                "1",
                "--hosts",
                hosts.to_str().unwrap(),
                "--out",
                o,
            ],
            Duration::from_secs(limit),
            during,
        )
    };

    // An experiment without a cluster placement: refused before any login.
    let hosts = c.write_hosts_file("hosts", "");
    let r = experiment(
        &[
            "run",
            "phoenix-raytrace",
            "--mode",
            "real",
            "--hosts",
            hosts.to_str().unwrap(),
        ],
        Duration::from_secs(20),
        || true,
    );
    assert_eq!(r.status.code(), Some(2), "{}", text(&r));
    assert_eq!(error_lines(&r).len(), 1, "{}", text(&r));
    assert!(text(&r).contains("has no cluster mode yet"), "{}", text(&r));
    assert!(!text(&r).contains("logging into"), "{}", text(&r));
    // A missing hosts file: one line, exit 2.
    let r = experiment(
        &[
            "run",
            "vmp-getpid",
            "--mode",
            "real",
            "--hosts",
            "/nonexistent/hosts",
        ],
        Duration::from_secs(20),
        || true,
    );
    assert_eq!(r.status.code(), Some(2), "{}", text(&r));
    assert!(
        text(&r).contains("hosts file /nonexistent/hosts"),
        "{}",
        text(&r)
    );

    // A syntax error: refused before any login, naming the line.
    let bad = c.write_hosts_file("bad", "h9 cores=many\n");
    let r = run(&bad, 20, &mut || true);
    assert_eq!(r.status.code(), Some(2), "{}", text(&r));
    let e = error_lines(&r);
    assert_eq!(e.len(), 1, "{}", text(&r));
    assert!(e[0].contains("line 8: cores=\"many\""), "{}", text(&r));

    // An unknown host and a host refusing the login: one line each, the run does not start.
    let unreachable = c.write_hosts_file("unreachable", "nosuchhost.invalid\nrefuse\n");
    let r = run(&unreachable, 90, &mut || true);
    println!("{}", text(&r));
    assert_eq!(r.status.code(), Some(1), "{}", text(&r));
    let e = error_lines(&r);
    assert_eq!(e.len(), 2, "{}", text(&r));
    assert!(
        e.iter()
            .any(|l| l.contains("host nosuchhost.invalid (hosts file line 8): login failed")),
        "{e:?}"
    );
    assert!(
        e.iter().any(
            |l| l.contains("host refuse (hosts file line 9): login failed")
                && l.contains("Permission denied")
        ),
        "{e:?}"
    );
    assert_idle(&c, "after the failed logins");

    // A host that accepts the connection and never answers: ssh's ConnectTimeout (5 s in the
    // file) ends the login; one line, no hang.
    let silent = c.write_hosts_file("silent", "silent\n");
    let t0 = Instant::now();
    let r = run(&silent, 60, &mut || true);
    println!("{}", text(&r));
    assert_eq!(r.status.code(), Some(1), "{}", text(&r));
    let e = error_lines(&r);
    assert_eq!(e.len(), 1, "{}", text(&r));
    assert!(
        e[0].contains("host silent (hosts file line 8): login failed"),
        "{e:?}"
    );
    assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
    assert_idle(&c, "after the silent host");

    // A worker killed mid-run (the sink of a 64 MiB block transfer): one line for it, one for
    // the source that lost its peer; non-zero; nothing left on any host.
    let mut killed = false;
    let mut kill_sink = || {
        for (pid, cmd) in c.processes() {
            // The second worker: the one whose daemon runs under h2's home.
            if cmd.contains("__worker")
                && std::fs::read_link(format!("/proc/{pid}/exe"))
                    .is_ok_and(|e| e.starts_with(&c.hosts[1].home))
            {
                // Let the transfer start before the kill.
                std::thread::sleep(Duration::from_millis(300));
                // SAFETY: kill(2) on a worker process of this test's cluster.
                unsafe {
                    libc::kill(pid as i32, libc::SIGKILL);
                }
                killed = true;
                return false;
            }
        }
        true
    };
    let r = experiment(
        &[
            "run",
            "migration-bandwidth",
            "--mode",
            "real",
            "--repeat",
            "1",
            "--hosts",
            hosts.to_str().unwrap(),
            "--out",
            o,
        ],
        Duration::from_secs(120),
        &mut kill_sink,
    );
    println!("{}", text(&r));
    assert!(killed, "a worker was seen running: {}", text(&r));
    assert_eq!(r.status.code(), Some(1), "{}", text(&r));
    let e = error_lines(&r);
    assert!(
        e.iter()
            .any(|l| l.contains("sink worker on host h2: worker ended without a result (signal 9)")),
        "{}",
        text(&r)
    );
    assert!(
        e.iter().any(|l| l.contains("source worker on host h1:")),
        "{}",
        text(&r)
    );
    assert!(!String::from_utf8_lossy(&r.stderr).contains("panicked"));
    assert_idle(&c, "after the killed worker");

    // A worker killed in the second of three runs: the first run's result is kept, marked
    // partial; the run still fails.
    let mut first: Option<u32> = None;
    let mut killed = false;
    let mut kill_second = || {
        for (pid, cmd) in c.processes() {
            if cmd.contains("__worker") {
                match first {
                    None => first = Some(pid),
                    Some(f) if f != pid => {
                        // SAFETY: kill(2) on a worker process of this test's cluster.
                        unsafe {
                            libc::kill(pid as i32, libc::SIGKILL);
                        }
                        killed = true;
                        return false;
                    }
                    _ => {}
                }
            }
        }
        true
    };
    let partial = tempfile::tempdir().unwrap();
    let r = experiment(
        &[
            "run",
            "vmp-getpid",
            "--mode",
            "real",
            "--repeat",
            "3",
            "--hosts",
            hosts.to_str().unwrap(),
            "--out",
            partial.path().to_str().unwrap(),
        ],
        Duration::from_secs(120),
        &mut kill_second,
    );
    println!("{}", text(&r));
    assert!(killed, "the second run's worker was seen: {}", text(&r));
    assert_eq!(r.status.code(), Some(1), "{}", text(&r));
    let res = result(partial.path(), "vmp-getpid-real");
    let note = res["notes"][0].as_str().unwrap_or("");
    assert!(
        note.starts_with("PARTIAL: 1 of 3 runs completed; run 2 failed:")
            && note.contains("worker on host h1"),
        "{res}"
    );
    assert!(res["metrics"]["vmp_wall_s"].as_f64().is_some(), "{res}");
    assert_idle(&c, "after the partial run");
}

/// A worker started by hand with the protocol on its stdin, as the launcher starts it.
struct Worker {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Worker {
    fn start(idx: u32, n: u32) -> Worker {
        let mut child = Command::new(env!("CARGO_BIN_EXE_experiment"))
            .arg("__worker")
            .env("GXP_EXEC_IDX", idx.to_string())
            .env("GXP_NUM_EXECS", n.to_string())
            .env("GXP_HOSTNAME", format!("w{idx}"))
            .env_remove("SSH_CONNECTION")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run experiment __worker");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for l in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(l);
            }
        });
        Worker {
            stdin: child.stdin.take(),
            child,
            lines,
        }
    }

    fn send(&mut self, s: &str) {
        use std::io::Write;
        let w = self.stdin.as_mut().unwrap();
        w.write_all(s.as_bytes()).unwrap();
        w.flush().unwrap();
    }

    fn line(&self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(30))
            .expect("a line from the worker within 30 s")
    }

    fn exit(&mut self) -> i32 {
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code().unwrap_or(-1);
            }
            assert!(Instant::now() < end, "worker did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Source and sink workers holding different secrets: neither accepts the other, each says so in
/// one line and exits non-zero; a worker whose launcher goes away stops.
#[test]
fn workers_with_different_secrets_refuse_each_other() {
    let job = serde_json::json!({
        "roles": [
            {"kind": "blocks-source", "sink": 1, "sizes": [1024], "writes": [null], "reps": 1},
            {"kind": "blocks-sink", "source": 0, "sessions": 1}
        ],
        "listen": ["127.0.0.1", "127.0.0.1"],
        "cores": [null, null],
        "rendezvous_s": 20,
        "deadline_s": 60
    });
    let mut w: Vec<Worker> = (0..2).map(|i| Worker::start(i, 2)).collect();
    for (k, secret) in ["0123456789abcdef0123", "not-the-same-secret!"]
        .iter()
        .enumerate()
    {
        w[k].send(&format!("GBW1 SECRET {secret}\nGBW1 JOB {job}\n"));
    }
    let addrs: Vec<String> = w
        .iter()
        .enumerate()
        .map(|(k, w)| {
            let l = w.line();
            let want = format!("GBW1 READY {k} 127.0.0.1:");
            assert!(l.starts_with(&want), "{l}");
            l.rsplit(' ').next().unwrap().to_string()
        })
        .collect();
    let peers = format!("GBW1 PEERS {}\n", serde_json::json!(addrs));
    for x in &mut w {
        x.send(&peers);
    }
    let (src, sink) = (w[0].line(), w[1].line());
    assert!(
        src.starts_with("GBW1 FAIL 0 the sink did not connect within 10s (1 connection(s) refused")
            && sink.starts_with("GBW1 FAIL 1 source at "),
        "{src}\n{sink}"
    );
    assert!(
        sink.contains("authentication failed: the peer does not hold this cluster's secret"),
        "{sink}"
    );
    assert_eq!(w[0].exit(), 1);
    assert_eq!(w[1].exit(), 1);

    // Same secret, but a stranger connects to the source first with a bad handshake: refused,
    // and the real sink still gets through.
    let mut w: Vec<Worker> = (0..2).map(|i| Worker::start(i, 2)).collect();
    for x in &mut w {
        x.send(&format!(
            "GBW1 SECRET 0123456789abcdef0123\nGBW1 JOB {job}\n"
        ));
    }
    let addrs: Vec<String> = w
        .iter()
        .map(|w| w.line().rsplit(' ').next().unwrap().to_string())
        .collect();
    let mut stranger = std::net::TcpStream::connect(&addrs[0]).unwrap();
    std::io::Write::write_all(&mut stranger, &[0x47; 52]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let peers = format!("GBW1 PEERS {}\n", serde_json::json!(addrs));
    for x in &mut w {
        x.send(&peers);
    }
    let (src, sink) = (w[0].line(), w[1].line());
    assert!(src.starts_with("GBW1 RESULT 0 "), "{src}");
    assert!(sink.starts_with("GBW1 RESULT 1 "), "{sink}");
    assert!(src.contains("\"points\":[[1024,"), "{src}");
    assert_eq!(w[0].exit(), 0);
    assert_eq!(w[1].exit(), 0);
    drop(stranger);

    // The launcher goes away (stdin closes) while the worker waits for its peers: it stops.
    let mut lone = Worker::start(0, 2);
    lone.send(&format!(
        "GBW1 SECRET 0123456789abcdef0123\nGBW1 JOB {job}\n"
    ));
    assert!(lone.line().starts_with("GBW1 READY 0 "));
    lone.stdin = None;
    assert!(lone.line().contains("the launcher closed the channel"));
    assert_eq!(lone.exit(), 1);

    // Garbage instead of the secret: one line, non-zero.
    let mut bad = Worker::start(0, 1);
    bad.send("hello\n");
    let l = bad.line();
    assert!(l.starts_with("GBW1 FAIL 0 expected a SECRET line"), "{l}");
    assert_eq!(bad.exit(), 1);
}

#[test]
fn sweep_spreads_seeds_over_the_cluster_hosts_with_the_task_farm() {
    let Some(c) = cluster() else { return };
    let hosts = c.write_hosts_file("hosts", "");
    let out = tempfile::tempdir().unwrap();
    let o = out.path().join("sw");
    let r = experiment(
        &[
            "sweep",
            "phoenix-scale",
            "--seeds",
            "1..12",
            "--quick",
            "--hosts",
            hosts.to_str().unwrap(),
            "--out",
            o.to_str().unwrap(),
        ],
        Duration::from_secs(180),
        || true,
    );
    assert!(r.status.success(), "{}", text(&r));
    println!("{}", text(&r));
    let s: Value = serde_json::from_slice(&std::fs::read(o.join("sweep.json")).unwrap()).unwrap();
    assert_eq!(s["seeds"], 12, "{s}");
    assert_eq!(s["failed"].as_array().unwrap().len(), 0, "{s}");
    assert!(
        s["spread"].as_str().unwrap().contains("4 hosts"),
        "{}",
        s["spread"]
    );
    // A seed gives on a cluster host exactly what it gives here.
    let exp = gridbed_experiments::registry::find("phoenix-scale").unwrap();
    let here = gridbed_experiments::sweep::record::run_one(&exp, 5, None, true);
    assert_eq!(s["digests"][4]["seed"], 5);
    assert_eq!(s["digests"][4]["digest"].as_str(), here.digest.as_deref());
    for k in 0..4 {
        assert_eq!(
            installed(&c, k).len(),
            1,
            "host {k}: the program installed once"
        );
    }
    assert_idle(&c, "after the sweep");
}
