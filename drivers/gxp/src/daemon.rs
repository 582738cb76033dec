//! The real daemon: the shared daemon loop ([`gridbed_gxp::tree::daemon`]) with effects over processes
//! and pipes (tokio). A child daemon's parent link is its own stdin/stdout; its child links are
//! the stdin/stdout of the login commands it started.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::exec::{self, ExecEvent, ExecHandle};
use crate::login::{self, ChildProcess, Program};
use gridbed_gxp::tree::daemon::{Daemon, Effects};
use gridbed_gxp::tree::proto::{
    try_encode_framed, Body, Down, ExecSpec, FrameReader, LoginMethod, Up,
};
use gridbed_runtime::BoxFuture;

pub(crate) type Input = gridbed_gxp::tree::daemon::Input<UnboundedSender<Body>>;

pub(crate) enum Parent {
    Controller(futures::channel::mpsc::UnboundedSender<Up>),
    Stdout(UnboundedSender<Body>),
}

/// How a parent watches its child links: a child silent for `interval` is pinged; one that stays
/// silent for `count` more intervals (a stopped daemon, a hung host, a dead link that never
/// closed) is declared lost, so its commands end as `host lost` instead of hanging the tree.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Keepalive {
    pub interval: std::time::Duration,
    pub count: u32,
}

impl Default for Keepalive {
    /// ssh's ServerAliveInterval=30 / ServerAliveCountMax=3 of the default login method.
    fn default() -> Self {
        Keepalive {
            interval: std::time::Duration::from_secs(30),
            count: 3,
        }
    }
}

/// The real driver's side of a daemon.
struct RealEffects {
    keepalive: Keepalive,
    name: String,
    program: Arc<Program>,
    parent: Parent,
    execs: BTreeMap<u64, ExecHandle>,
    tx: UnboundedSender<Input>,
}

/// Runs the daemon loop until the daemon stops or its inputs end.
async fn run(index: u32, mut fx: RealEffects, mut rx: UnboundedReceiver<Input>) {
    let mut d = Daemon::new(index);
    while let Some(input) = rx.recv().await {
        if !d.step(&mut fx, input).await {
            return;
        }
    }
}

/// This machine's name: `GXP_NAME` (set by the local launcher or an ssh `SetEnv`) or the kernel's.
pub fn host_name() -> String {
    if let Ok(n) = std::env::var("GXP_NAME") {
        if !n.is_empty() {
            return n;
        }
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// Starts the root daemon in this process (on the current tokio runtime); returns the controller.
pub fn start_root(program: Program) -> gridbed_gxp::front::controller::Controller {
    start_root_with(program, Keepalive::default())
}

/// [`start_root`] with the root's own keepalive for its child links.
pub fn start_root_with(
    program: Program,
    keepalive: Keepalive,
) -> gridbed_gxp::front::controller::Controller {
    let (otx, mut orx) = futures::channel::mpsc::unbounded::<Down>();
    let (etx, erx) = futures::channel::mpsc::unbounded::<Up>();
    let (tx, rx) = unbounded_channel();
    let fwd = tx.clone();
    tokio::spawn(async move {
        use futures::StreamExt;
        while let Some(d) = orx.next().await {
            if fwd.send(Input::FromParent(d)).is_err() {
                break;
            }
        }
        let _ = fwd.send(Input::ParentGone);
    });
    let name = host_name();
    let fx = RealEffects {
        keepalive,
        name: name.clone(),
        program: Arc::new(program),
        parent: Parent::Controller(etx),
        execs: BTreeMap::new(),
        tx,
    };
    tokio::spawn(run(0, fx, rx));
    gridbed_gxp::front::controller::Controller::new(otx, erx, &name, &name)
}

/// `gxp daemon --index N --sha SHA`: a child daemon speaking frames on stdin/stdout. `sha` is the
/// checksum of the root's program, passed down by the parent: the daemon refuses to run (before
/// its hello, so the login fails) unless its own executable hashes to it, and installs exactly
/// that program further down.
pub async fn daemon_main(index: u32, sha: &str) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let program = Program::load(&exe)?;
    if program.sha != sha {
        anyhow::bail!(
            "executable {} has checksum {}, the tree runs {sha}: refusing to start",
            exe.display(),
            program.sha
        );
    }
    let name = host_name();
    let (out_tx, mut out_rx) = unbounded_channel::<Body>();
    let writer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(b) = out_rx.recv().await {
            let Some(frame) = frame_or_log(&b) else {
                continue;
            };
            if stdout.write_all(&frame).await.is_err() || stdout.flush().await.is_err() {
                break;
            }
        }
    });
    out_tx.send(Body::Hello {
        name: name.clone(),
        version: gridbed_gxp::VERSION.to_string(),
    })?;
    let (tx, rx) = unbounded_channel();
    let (t2, pong) = (tx.clone(), out_tx.clone());
    tokio::spawn(async move {
        let mut stdin = tokio::io::stdin();
        let mut r = FrameReader::default();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = stdin.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            r.push(&buf[..n]);
            loop {
                match r.next_body() {
                    Ok(Some(Body::Down(d))) => {
                        let _ = t2.send(Input::FromParent(d));
                    }
                    Ok(Some(Body::Ping)) => {
                        let _ = pong.send(Body::Pong);
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(e) => {
                        eprintln!("gxp daemon {index}: bad frame from parent: {e}");
                        let _ = t2.send(Input::ParentGone);
                        return;
                    }
                }
            }
        }
        let _ = t2.send(Input::ParentGone);
    });
    let fx = RealEffects {
        keepalive: Keepalive::default(),
        name,
        program: Arc::new(program),
        parent: Parent::Stdout(out_tx),
        execs: BTreeMap::new(),
        tx,
    };
    run(index, fx, rx).await;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), writer).await;
    Ok(())
}

impl Effects for RealEffects {
    type Link = UnboundedSender<Body>;

    fn on_input(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    fn to_parent(&mut self, up: Up) -> BoxFuture<'_, ()> {
        match &self.parent {
            Parent::Controller(tx) => {
                let _ = tx.unbounded_send(up);
            }
            Parent::Stdout(tx) => {
                let _ = tx.send(Body::Up(up));
            }
        }
        Box::pin(async {})
    }

    fn to_child(&mut self, link: &Self::Link, down: Down) -> BoxFuture<'_, ()> {
        let _ = link.send(Body::Down(down));
        Box::pin(async {})
    }

    fn login(&mut self, child: u32, index: u32, target: String, method: LoginMethod) {
        let (program, tx) = (self.program.clone(), self.tx.clone());
        let ka = self.keepalive;
        tokio::spawn(async move {
            let outcome = match login::login(&method, &target, index, &program).await {
                Ok(cp) => Ok(attach(child, cp, tx.clone(), ka)),
                Err(e) => Err(e),
            };
            let _ = tx.send(Input::LoginDone {
                child,
                index,
                target,
                outcome,
            });
        });
    }

    fn run(&mut self, spec: ExecSpec, exec_idx: u32) {
        let tx = self.tx.clone();
        let id = spec.exec;
        let h = exec::start(&spec, &self.name, exec_idx, move |ev| {
            let _ = tx.send(match ev {
                ExecEvent::Output(stream, data) => Input::Output {
                    exec: id,
                    stream,
                    data,
                },
                ExecEvent::StdinConsumed(bytes) => Input::StdinConsumed { exec: id, bytes },
                ExecEvent::Exited(status) => Input::Exited { exec: id, status },
            });
        });
        self.execs.insert(id, h);
    }

    /// Acknowledged once the command's pipe took the bytes (`Input::StdinConsumed`).
    fn stdin(&mut self, exec: u64, data: Vec<u8>) -> Option<u64> {
        if let Some(e) = self.execs.get(&exec) {
            let _ = e.stdin.send(Some(data));
        }
        None
    }

    fn stdin_eof(&mut self, exec: u64) {
        if let Some(e) = self.execs.get(&exec) {
            let _ = e.stdin.send(None);
        }
    }

    fn output_ack(&mut self, exec: u64, bytes: u64) {
        if let Some(e) = self.execs.get(&exec) {
            e.output_credit(bytes);
        }
    }

    fn kill(&mut self, exec: u64) {
        if let Some(e) = self.execs.get(&exec) {
            let _ = e.kill.send(());
        }
    }

    fn exited(&mut self, exec: u64) {
        self.execs.remove(&exec);
    }

    /// Kills running commands (the loop has closed the child links, which stops the children).
    fn shutdown(&mut self) -> BoxFuture<'_, ()> {
        for e in self.execs.values() {
            let _ = e.kill.send(());
        }
        let busy = !self.execs.is_empty();
        Box::pin(async move {
            if busy {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        })
    }
}

/// A body as a stream frame; a body over the frame limit is not sent (the peer would refuse it
/// and drop the link) but reported on stderr.
fn frame_or_log(b: &Body) -> Option<Vec<u8>> {
    match try_encode_framed(b) {
        Ok(f) => Some(f),
        Err(e) => {
            eprintln!("gxp daemon: frame not sent: {e}");
            None
        }
    }
}

/// Starts the pumps of a new child link; returns (its name, the sender of frames to it).
fn attach(
    child: u32,
    cp: ChildProcess,
    tx: UnboundedSender<Input>,
    ka: Keepalive,
) -> (String, UnboundedSender<Body>) {
    let ChildProcess {
        child: mut proc_,
        mut stdin,
        mut stdout,
        mut reader,
        name,
        installed,
    } = cp;
    if installed {
        tracing::debug!("installed GXP on {name}");
    }
    let (wtx, mut wrx) = unbounded_channel::<Body>();
    // Weak: pings must not keep the link open once the daemon dropped it (that closes the
    // child's stdin, which is how a child is told to stop).
    let pinger = wtx.downgrade();
    tokio::spawn(async move {
        while let Some(b) = wrx.recv().await {
            let Some(frame) = frame_or_log(&b) else {
                continue;
            };
            if stdin.write_all(&frame).await.is_err() || stdin.flush().await.is_err() {
                break;
            }
        }
        // Link dropped (Quit or shutdown): closing stdin tells the child daemon to stop.
    });
    let name2 = name.clone();
    tokio::spawn(async move {
        let name = name2;
        let mut buf = vec![0u8; 64 * 1024];
        let mut silent = 0u32;
        'outer: loop {
            loop {
                match reader.next_body() {
                    Ok(Some(Body::Up(up))) => {
                        let _ = tx.send(Input::FromChild(child, up));
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(e) => {
                        eprintln!("gxp: bad frame from child {child}: {e}");
                        break 'outer;
                    }
                }
            }
            match tokio::time::timeout(ka.interval, stdout.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => {
                    silent = 0;
                    reader.push(&buf[..n]);
                }
                Ok(_) => break,
                Err(_) => {
                    silent += 1;
                    if silent > ka.count {
                        eprintln!(
                            "gxp: child {child} ({name}) silent for {:?}: declared lost",
                            ka.interval * silent
                        );
                        break;
                    }
                    match pinger.upgrade() {
                        Some(w) if w.send(Body::Ping).is_ok() => {}
                        _ => break,
                    }
                }
            }
        }
        let _ = proc_.start_kill();
        let _ = proc_.wait().await;
        let _ = tx.send(Input::ChildLost(child));
    });
    (name, wtx)
}
