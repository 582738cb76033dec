//! One Phoenix machine in its own OS process, over genuine TCP (the `gridbed-real` host).
//!
//! Every process of a run gets the same `--peers` list (one `ip:port` per machine, index = host
//! ID) and listens on its own entry. Machines `0..initial` start with the even initial layout; a
//! process started later with a higher `--host` joins through `--contact`. Joining is starting a
//! process; leaving is the `leave` command, after which the process hands off its IDs and data and
//! exits. The application keeps a [`Ledger`] per ID, so the driver can check exactly-once delivery
//! across processes.
//!
//! Commands on stdin, one per line; each answer is one line on stdout:
//! - `send N`: sends N small messages to random IDs → `sent N`
//! - `report` → `report {json NodeReport}`
//! - `leave`: leaves, then exits → `left {json NodeReport}`
//! - `quit` (or end of stdin): exits at once.
//!
//! The cluster secret comes from the environment (`GRIDBED_CLUSTER_SECRET`), never the command
//! line; every machine of a run needs the same one.
//!
//! On start it prints `ready` (initial machine) or `joined <seconds to join>` (joiner). Bad
//! arguments or a failure print one line on stderr and exit non-zero.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use gridbed_phoenix::apps::ledger::Ledger;
use gridbed_phoenix::apps::node_report::NodeReport;
use gridbed_phoenix::{Config, Id, Phoenix, RoutingTable, Start};
use gridbed_real::{ClusterSecret, RealHost};
use gridbed_runtime::{HostId, HostRef};
use tokio::sync::mpsc;

#[derive(Parser, Debug)]
#[command(name = "phoenix-node", about = "Runs one Phoenix machine over TCP")]
struct Args {
    /// This machine's index in `--peers` (its host ID).
    #[arg(long)]
    host: u32,
    /// Listening address of every machine of the run, comma-separated, in host-ID order.
    #[arg(long, value_delimiter = ',', required = true)]
    peers: Vec<SocketAddr>,
    /// Size of the virtual ID space.
    #[arg(long, default_value_t = 1 << 32)]
    space: Id,
    /// Machines that start with the even initial layout (hosts 0..initial).
    #[arg(long, default_value_t = 1)]
    initial: u32,
    /// The member a joining machine asks (any member; it forwards to the coordinator).
    #[arg(long, default_value_t = 0)]
    contact: u32,
    /// Payload size of each message sent by `send N`.
    #[arg(long, default_value_t = 16)]
    payload: usize,
    /// Where to listen, when peers reach this machine through another address (a proxy);
    /// default: this machine's `--peers` entry.
    #[arg(long)]
    listen: Option<SocketAddr>,
}

enum Cmd {
    Send(u64),
    Report,
    Leave,
    Quit,
}

fn parse_cmd(line: &str) -> Result<Cmd, String> {
    let mut words = line.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some("send"), Some(n), None) => n
            .parse()
            .map(Cmd::Send)
            .map_err(|_| format!("'{n}' is not a message count")),
        (Some("report"), None, None) => Ok(Cmd::Report),
        (Some("leave"), None, None) => Ok(Cmd::Leave),
        (Some("quit"), None, None) => Ok(Cmd::Quit),
        _ => Err(format!("unknown command '{line}'")),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("phoenix-node: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(a: Args) -> anyhow::Result<()> {
    let n = a.peers.len() as u32;
    if a.host >= n {
        bail!("--host {} is not an index of the {n} peers", a.host);
    }
    if a.initial == 0 || a.initial > n || a.space < u64::from(a.initial) {
        bail!(
            "--initial {} must be in 1..={n} and at most --space {}",
            a.initial,
            a.space
        );
    }
    if a.host >= a.initial && a.contact >= a.initial {
        bail!("--contact {} is not an initial machine", a.contact);
    }
    // One thread: the machine's protocol loop and its socket tasks share it, as a single-CPU node.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    rt.block_on(serve(a))
}

/// Reads commands on a plain thread (stdin is blocking) and hands them to the protocol loop.
fn stdin_commands() -> mpsc::UnboundedReceiver<Cmd> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if line.trim().is_empty() {
                continue;
            }
            match parse_cmd(&line) {
                Ok(c) => {
                    if tx.send(c).is_err() {
                        return;
                    }
                }
                Err(e) => eprintln!("phoenix-node: {e}"),
            }
        }
        // End of input: the driver is gone, so this machine stops too.
        let _ = tx.send(Cmd::Quit);
    });
    rx
}

async fn serve(a: Args) -> anyhow::Result<()> {
    let me = HostId(a.host);
    let secret = ClusterSecret::from_env()?;
    let listen = a.listen.unwrap_or(a.peers[a.host as usize]);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let t0 = Instant::now();
    let host: HostRef = RealHost::start(
        me,
        listener,
        Arc::new(a.peers.clone()),
        t0,
        tokio::runtime::Handle::current(),
        secret,
    );
    let joining = a.host >= a.initial;
    let start = if joining {
        Start::join_via(HostId(a.contact), a.initial)
    } else {
        Start::Initial {
            table: RoutingTable::even(a.space, a.initial),
        }
    };
    let mut cmds = stdin_commands();
    let cfg = Config::new(a.space);
    let mut ph = Phoenix::start(
        host.clone(),
        cfg,
        Ledger::default(),
        start,
        Arc::new(BTreeMap::new()),
    )
    .await?;
    if joining {
        ph.wait_joined().await?;
        println!("joined {:.6}", t0.elapsed().as_secs_f64());
    } else {
        println!("ready");
    }
    let mut sent: BTreeMap<Id, u64> = BTreeMap::new();
    let sent_list = |s: &BTreeMap<Id, u64>| s.iter().map(|(&k, &v)| (k, v)).collect::<Vec<_>>();
    loop {
        // Serve the protocol between commands: forwarding, hand-offs and membership steps.
        ph.step(Duration::from_millis(2)).await?;
        apply_inbox(&mut ph);
        let cmd = match cmds.try_recv() {
            Ok(c) => c,
            Err(mpsc::error::TryRecvError::Empty) => continue,
            Err(mpsc::error::TryRecvError::Disconnected) => Cmd::Quit,
        };
        match cmd {
            Cmd::Send(count) => {
                for _ in 0..count {
                    let id = host.rng_u64() % a.space;
                    ph.send(id, vec![0xAB; a.payload]).await?;
                    *sent.entry(id).or_insert(0) += 1;
                    ph.poll().await;
                    apply_inbox(&mut ph);
                }
                println!("sent {count}");
            }
            Cmd::Report => {
                let r = NodeReport::of(ph.node(), &sent_list(&sent));
                println!("report {}", serde_json::to_string(&r)?);
            }
            Cmd::Leave => {
                let node = ph.leave().await?;
                let r = NodeReport::of(&node, &sent_list(&sent));
                println!("left {}", serde_json::to_string(&r)?);
                // Let the kernel deliver our last frames (`Gone`) before the sockets close.
                tokio::time::sleep(Duration::from_millis(100)).await;
                return Ok(());
            }
            Cmd::Quit => return Ok(()),
        }
    }
}

/// The application: every delivered message is applied to its ID's ledger.
fn apply_inbox(ph: &mut Phoenix<Ledger>) {
    while let Some(d) = ph.try_recv() {
        ph.node_mut().data_mut().apply(&d);
    }
}
