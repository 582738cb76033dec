//! The worker side (`experiment __worker`, started by the launcher through GXP on a cluster host):
//! read the secret and the job from stdin, listen, report the address, learn the peers' addresses,
//! run the role, report its result. The worker stops itself when its stdin ends (the launcher or
//! the GXP tree is gone), when the job's deadline passes, and when a rendezvous step times out,
//! so nothing of a run outlives it.

use std::io::{BufRead, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::sync::mpsc;
use std::time::Duration;

use gridbed_real::ClusterSecret;

use crate::proto::{self, Job, MAX_LINE};

/// How long a worker waits for the secret and the job after it started.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Exit status of a worker whose launcher went away (stdin closed) before the role finished.
pub const EXIT_LAUNCHER_GONE: i32 = 3;
/// Exit status of a worker stopped by the job's deadline.
pub const EXIT_DEADLINE: i32 = 4;

/// What a role's code gets.
pub struct WorkerCtx {
    /// GXP_EXEC_IDX: this worker's place in the job.
    pub idx: u32,
    /// Workers in the job.
    pub n: u32,
    pub role: serde_json::Value,
    /// Cores the hosts file gives this host (None: not stated).
    pub cores: Option<u32>,
    /// The run's cluster secret (from the launcher over the login channel).
    pub secret: ClusterSecret,
    /// A listener on this worker's address (bound before it was reported).
    pub listener: TcpListener,
    pub addr: SocketAddr,
    /// Every worker's address, by index (this one's included).
    pub peers: Vec<SocketAddr>,
    /// GXP's name of this host.
    pub host: String,
}

enum Ev {
    Line(String),
    Eof,
    TooLong,
    Done(anyhow::Result<serde_json::Value>),
}

fn emit(s: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(s.as_bytes());
    let _ = out.flush();
}

/// The address the parent reached this host's ssh server at (`SSH_CONNECTION`'s third field):
/// where peers can reach this host too, unless the hosts file says otherwise.
fn ssh_server_addr() -> Option<IpAddr> {
    let v = std::env::var("SSH_CONNECTION").ok()?;
    v.split_whitespace().nth(2)?.parse().ok()
}

/// Runs the worker; returns the process exit status. `handler` runs the role.
pub fn serve<F>(handler: F) -> i32
where
    F: FnOnce(WorkerCtx) -> anyhow::Result<serde_json::Value> + Send + 'static,
{
    let env_u32 = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u32>().ok());
    let (Some(idx), Some(n)) = (env_u32("GXP_EXEC_IDX"), env_u32("GXP_NUM_EXECS")) else {
        eprintln!("experiment __worker: started outside the cluster launcher (GXP_EXEC_IDX / GXP_NUM_EXECS unset)");
        return 2;
    };
    let fail = |why: String| {
        emit(&proto::fail_line(idx, &why));
        1
    };
    let (tx, rx) = mpsc::channel::<Ev>();
    let stdin_tx = tx.clone();
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut r = stdin.lock();
        loop {
            let mut buf = Vec::new();
            // Bounded before buffering: a line longer than MAX_LINE is refused.
            match std::io::Read::take(&mut r, MAX_LINE as u64 + 1).read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => {
                    let _ = stdin_tx.send(Ev::Eof);
                    return;
                }
                Ok(_) if buf.len() > MAX_LINE => {
                    let _ = stdin_tx.send(Ev::TooLong);
                    return;
                }
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                    if stdin_tx.send(Ev::Line(line)).is_err() {
                        return;
                    }
                }
            }
        }
    });
    let next = |what: &str, limit: Duration| -> Result<String, String> {
        match rx.recv_timeout(limit) {
            Ok(Ev::Line(l)) => Ok(l),
            Ok(Ev::Eof) => Err(format!("the launcher closed the channel before the {what}")),
            Ok(Ev::TooLong) => Err(format!(
                "a line over {MAX_LINE} bytes instead of the {what}"
            )),
            Ok(Ev::Done(_)) => Err("internal: result before start".into()),
            Err(_) => Err(format!("no {what} from the launcher within {limit:?}")),
        }
    };
    let secret = match next("secret", START_TIMEOUT).and_then(|l| {
        let s = proto::parse_to_worker(&l, "SECRET")?.to_string();
        ClusterSecret::new(s.into_bytes()).map_err(|e| e.to_string())
    }) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let job: Job = match next("job", START_TIMEOUT).and_then(|l| {
        let j = proto::parse_to_worker(&l, "JOB")?;
        serde_json::from_str(j).map_err(|e| format!("bad job: {e}"))
    }) {
        Ok(j) => j,
        Err(e) => return fail(e),
    };
    let i = idx as usize;
    if job.roles.len() != n as usize || i >= job.roles.len() {
        return fail(format!(
            "the job has {} roles for {n} workers; this is worker {idx}",
            job.roles.len()
        ));
    }
    // The deadline holds from here whatever the role does.
    let deadline = Duration::from_secs(job.deadline_s.max(1));
    std::thread::spawn(move || {
        std::thread::sleep(deadline);
        emit(&proto::fail_line(
            idx,
            &format!("stopped by the job deadline ({deadline:?})"),
        ));
        std::process::exit(EXIT_DEADLINE);
    });
    let ip = job
        .listen
        .get(i)
        .copied()
        .flatten()
        .or_else(ssh_server_addr)
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let listener = match TcpListener::bind((ip, 0)) {
        Ok(l) => l,
        Err(e) => return fail(format!("cannot listen on {ip}: {e}")),
    };
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => return fail(format!("listener address: {e}")),
    };
    emit(&proto::ready_line(idx, addr));
    let peers: Vec<SocketAddr> = match next(
        "peers' addresses",
        Duration::from_secs(job.rendezvous_s.max(1)),
    )
    .and_then(|l| {
        let p = proto::parse_to_worker(&l, "PEERS")?;
        serde_json::from_str(p).map_err(|e| format!("bad peers: {e}"))
    }) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    if peers.len() != n as usize || peers[i] != addr {
        return fail(format!(
            "the peer list has {} addresses for {n} workers, or does not hold this worker's {addr} at {idx}",
            peers.len()
        ));
    }
    let ctx = WorkerCtx {
        idx,
        n,
        role: job.roles[i].clone(),
        cores: job.cores.get(i).copied().flatten(),
        secret,
        listener,
        addr,
        peers,
        host: std::env::var("GXP_HOSTNAME").unwrap_or_default(),
    };
    std::thread::spawn(move || {
        let _ = tx.send(Ev::Done(handler(ctx)));
    });
    loop {
        match rx.recv() {
            Ok(Ev::Done(Ok(v))) => {
                emit(&proto::result_line(idx, &v));
                return 0;
            }
            Ok(Ev::Done(Err(e))) => return fail(format!("{e:#}")),
            // Nothing more is expected on stdin; its end means the launcher is gone.
            Ok(Ev::Line(_)) => {}
            Ok(Ev::Eof) | Ok(Ev::TooLong) | Err(_) => {
                eprintln!("experiment __worker {idx}: the launcher is gone; stopping");
                return EXIT_LAUNCHER_GONE;
            }
        }
    }
}
