//! Real mode between OS processes: each machine is a `phoenix-node` process over loopback TCP.
//! Machines join by starting a process and leave by stopping one (after handing off); every
//! message must be applied exactly once, in per-(sender, ID) order, to the data of its ID's owner.
//! Every wait is bounded; children are killed on every exit path.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use gridbed_phoenix::apps::ledger::check_exactly_once;
use gridbed_phoenix::apps::node_report::NodeReport;
use gridbed_phoenix::Id;

const SPACE: Id = 1000;
const WAIT: Duration = Duration::from_secs(30);
/// The cluster secret the test's machines share (handed over in their environment).
const TEST_SECRET: &str = "processes-test-cluster-secret";

/// One `phoenix-node` child with line-based stdin/stdout.
struct Proc {
    host: u32,
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    fn start(host: u32, peers: &str, initial: u32) -> Proc {
        Proc::start_listening(host, peers, initial, None)
    }

    /// Starts a machine that listens on `listen` while its peers dial its `peers` entry.
    fn start_listening(host: u32, peers: &str, initial: u32, listen: Option<SocketAddr>) -> Proc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_phoenix-node"))
            .env(gridbed_real::SECRET_ENV, TEST_SECRET)
            .args(["--host", &host.to_string(), "--peers", peers])
            .args(listen.map(|a| format!("--listen={a}")))
            .args([
                "--space",
                &SPACE.to_string(),
                "--initial",
                &initial.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start phoenix-node");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Proc {
            host,
            child,
            stdin,
            lines,
        }
    }

    fn cmd(&mut self, c: &str) {
        writeln!(self.stdin, "{c}").unwrap_or_else(|e| panic!("h{}: {c}: {e}", self.host));
    }

    /// The rest of the next line, which must start with `word`.
    fn expect(&mut self, word: &str) -> String {
        let line = self
            .lines
            .recv_timeout(WAIT)
            .unwrap_or_else(|e| panic!("h{}: no '{word}' line: {e}", self.host));
        let rest = line
            .strip_prefix(word)
            .unwrap_or_else(|| panic!("h{}: expected '{word}', got '{line}'", self.host));
        rest.trim().to_string()
    }

    fn report(&mut self) -> NodeReport {
        self.cmd("report");
        serde_json::from_str(&self.expect("report")).expect("report JSON")
    }

    /// Waits (bounded) for the process to exit by itself; returns whether it succeeded.
    fn wait_exit(&mut self) -> bool {
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("h{} did not exit", self.host);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `n` free loopback addresses (bound then released; the children bind them again).
fn free_addrs(n: usize) -> String {
    let ls: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    let addrs: Vec<SocketAddr> = ls.iter().map(|l| l.local_addr().expect("addr")).collect();
    addrs
        .iter()
        .map(SocketAddr::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

#[test]
fn processes_join_and_leave_with_exactly_once_delivery() {
    let peers = free_addrs(4);
    let (total, applied) = join_leave_traffic(&peers, &[None, None, None, None]);
    assert_eq!(total, 3 * 200 + 2 * 300 + 300 + 200 + 100);
    assert_eq!(applied, total);
}

/// The join/leave scenario with every machine behind a proxy that resets, stalls and delays its
/// connections at random: still every message applied exactly once, in order.
#[test]
fn processes_join_and_leave_across_a_chaos_proxy() {
    use gridbed_real::proxy::{Chaos, ChaosProxy};
    use std::sync::atomic::Ordering;
    let listen: Vec<SocketAddr> = free_addrs(4)
        .split(',')
        .map(|a| a.parse().expect("address"))
        .collect();
    let proxies: Vec<ChaosProxy> = listen
        .iter()
        .enumerate()
        .map(|(i, &a)| {
            let chaos = Chaos {
                seed: 0x5EED ^ i as u64,
                reset: 0.15,
                stall: 0.02,
                stall_max: Duration::from_millis(300),
                delay: 0.10,
                delay_max: Duration::from_millis(5),
                max_faults: 100,
                window: Duration::from_secs(20),
            };
            ChaosProxy::start(a, chaos).expect("proxy")
        })
        .collect();
    let peers = proxies
        .iter()
        .map(|p| p.addr().to_string())
        .collect::<Vec<_>>()
        .join(",");
    let listen: Vec<Option<SocketAddr>> = listen.into_iter().map(Some).collect();
    let (total, applied) = join_leave_traffic(&peers, &listen);
    let sum = |f: fn(&gridbed_real::proxy::ProxyStats) -> u64| -> u64 {
        proxies.iter().map(|p| f(p.stats())).sum()
    };
    let resets = sum(|s| s.resets.load(Ordering::Relaxed));
    println!(
        "chaos: messages sent {total}, applied {applied}, connections {}, resets survived \
         {resets}, stalls {}, delays {}, lost {}, duplicated or out of order 0 (checked per \
         sender and ID)",
        sum(|s| s.connections.load(Ordering::Relaxed)),
        sum(|s| s.stalls.load(Ordering::Relaxed)),
        sum(|s| s.delays.load(Ordering::Relaxed)),
        total - applied,
    );
    assert!(resets >= 3, "the proxies reset only {resets} connections");
}

/// Three machines send, one leaves, one joins, all keep sending; checks that every message was
/// applied exactly once in order (panics otherwise) and returns how many were sent and applied.
fn join_leave_traffic(peers: &str, listen: &[Option<SocketAddr>]) -> (u64, u64) {
    let peers = peers.to_string();
    let start = |h: u32| Proc::start_listening(h, &peers, 3, listen[h as usize]);
    let mut p: Vec<Proc> = (0..3).map(start).collect();
    for q in &mut p {
        q.expect("ready");
    }
    for q in &mut p {
        q.cmd("send 200");
    }
    for q in &mut p {
        q.expect("sent");
    }
    // h2 leaves (its process stops) while h0 and h1 keep sending, some of it to h2's IDs.
    p[2].cmd("leave");
    p[0].cmd("send 300");
    p[1].cmd("send 300");
    let left: NodeReport = serde_json::from_str(&p[2].expect("left")).expect("left JSON");
    assert!(p[2].wait_exit(), "the leaver exits cleanly");
    assert_eq!(left.phase, "Departed");
    assert!(
        left.owned.is_empty() && left.ledger.log.is_empty(),
        "{left:?}"
    );
    p[0].expect("sent");
    p[1].expect("sent");
    // A new process joins while traffic continues, then sends too.
    p[0].cmd("send 300");
    let mut joiner = start(3);
    joiner.expect("joined");
    joiner.cmd("send 200");
    p[1].cmd("send 100");
    p[0].expect("sent");
    joiner.expect("sent");
    p[1].expect("sent");
    let mut live = vec![p.remove(0), p.remove(0), joiner];

    // Every message sent must be applied; wait (bounded) for the last ones in flight.
    let mut sent: BTreeMap<(u32, Id), u64> = BTreeMap::new();
    let end = Instant::now() + WAIT;
    let reports = loop {
        let reports: Vec<NodeReport> = live.iter_mut().map(Proc::report).collect();
        sent.clear();
        for r in reports.iter().chain([&left]) {
            for &(id, n) in &r.sent {
                sent.insert((r.host, id), n);
            }
        }
        let total: u64 = sent.values().sum();
        let applied: u64 = reports.iter().map(NodeReport::applied).sum();
        if applied >= total || Instant::now() > end {
            break reports;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let applied: u64 = reports.iter().map(NodeReport::applied).sum();
    let bad = check_exactly_once(&sent, reports.iter().map(|r| &r.ledger));
    assert!(bad.is_empty(), "{bad:#?}");
    // Exactly one owner per ID, and each ID's data lives with its owner.
    let mut owned: Vec<(Id, Id)> = reports
        .iter()
        .flat_map(|r| r.owned.iter().map(|o| (o.start, o.end)))
        .collect();
    owned.sort();
    let mut next = 0;
    for (s, e) in owned {
        assert_eq!(s, next, "gap or overlap at {s}");
        next = e;
    }
    assert_eq!(next, SPACE);
    for r in &reports {
        assert!(
            r.owned.iter().any(|o| !o.is_empty()),
            "h{} owns IDs",
            r.host
        );
        for id in r.ledger.log.keys() {
            assert!(
                r.owned.iter().any(|o| o.contains(*id)),
                "h{}: data of {id}",
                r.host
            );
        }
        assert_eq!(
            (
                r.duplicates,
                r.bound_violations,
                r.after_departure,
                r.parked
            ),
            (0, 0, 0, 0),
            "h{}",
            r.host
        );
    }
    for q in &mut live {
        q.cmd("quit");
        assert!(q.wait_exit());
    }
    (sent.values().sum(), applied)
}

/// A peer that sends garbage: the connection is dropped and the machine keeps working; a
/// well-framed transport message (after an authenticated handshake) with a bad Phoenix body is
/// rejected and counted.
#[test]
fn garbage_from_a_peer_is_dropped_and_the_node_survives() {
    use gridbed_real::frame::Header;
    use gridbed_real::handshake::{dial_blocking, Hello};
    let peers = free_addrs(1);
    let mut q = Proc::start(0, &peers, 1);
    q.expect("ready");
    let addr: SocketAddr = peers.parse().expect("one address");
    let mut s = TcpStream::connect(addr).expect("connect");
    s.write_all(b"GET / HTTP/1.0\r\n\r\n")
        .expect("write garbage");
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    let secret = gridbed_real::ClusterSecret::new(TEST_SECRET).expect("secret");
    dial_blocking(&mut s, &secret, &Hello::new(0, 0, 12345)).expect("handshake");
    let body = vec![0xF5, 1, 0xFF, 0xFF, 0xFF];
    let hdr = Header::data(
        gridbed_phoenix::PORT,
        gridbed_phoenix::PORT,
        0,
        1,
        body.len() as u32,
    );
    s.write_all(&hdr.encode()).expect("header");
    s.write_all(&body).expect("body");
    let end = Instant::now() + WAIT;
    loop {
        let r = q.report();
        if r.rejected == 1 || Instant::now() > end {
            assert_eq!(r.rejected, 1, "{r:?}");
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // The node closed the connection that carried the bad body (an acknowledgement may come first).
    let mut buf = [0u8; 64];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            other => panic!("connection still open after a malformed frame: {other:?}"),
        }
    }
    q.cmd("send 10");
    q.expect("sent");
    let r = q.report();
    assert_eq!(r.applied(), 10, "still delivering after the garbage");
    q.cmd("quit");
    assert!(q.wait_exit());
}

/// Without the cluster secret in its environment a machine refuses to start, with a clear error.
#[test]
fn a_missing_cluster_secret_is_a_one_line_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_phoenix-node"))
        .env_remove(gridbed_real::SECRET_ENV)
        .args(["--host", "0", "--peers", &free_addrs(1)])
        .stdin(Stdio::null())
        .output()
        .expect("run phoenix-node");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(gridbed_real::SECRET_ENV), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bad_arguments_are_one_line_errors() {
    for args in [
        vec!["--host", "3", "--peers", "127.0.0.1:1"],
        vec!["--host", "0", "--peers", "nonsense"],
        vec!["--host", "0", "--peers", "127.0.0.1:1", "--initial", "2"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_phoenix-node"))
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .expect("run phoenix-node");
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(!err.trim().is_empty(), "{args:?}");
    }
}
