//! The simulated GXP daemon: the shared daemon loop ([`crate::tree::daemon`]) with effects over runtime
//! messages. One task runs the loop (charging `msg_cycles` per message, the cost of a Python
//! daemon); helper tasks pump each link, perform logins and run commands, and feed it through one
//! channel.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures::channel::mpsc::{unbounded, UnboundedReceiver, UnboundedSender};
use futures::StreamExt;
use gridbed_runtime::{Addr, HostId, HostRef, Mailbox};

use super::builtins::{self, Out};
use super::sshd::{client_handshake, recv_from, send, LinkMsg, Purpose};
use super::world::World;
use crate::tree::daemon::{Daemon, Effects};
use crate::tree::proto::{
    self, Body, Down, ExecSpec, LoginMethod, Status, Stream, Up, OUTPUT_CHUNK,
};
use gridbed_runtime::BoxFuture;

type Input = crate::tree::daemon::Input<ChildLink>;

/// Our end of a child link: the local port and the child's session address.
pub(crate) struct ChildLink {
    port: u16,
    addr: Addr,
}

/// Where this daemon's events go.
pub(crate) enum Parent {
    /// The root: the controller, in-process.
    Controller(UnboundedSender<Up>),
    /// A child: the session the parent logged in through.
    Session { port: u16, addr: Addr },
}

struct Exec {
    stdin: UnboundedSender<Option<Vec<u8>>>,
    killed: Arc<AtomicBool>,
}

/// The simulated driver's side of a daemon.
struct SimEffects {
    host: HostRef,
    world: Arc<World>,
    /// Sha256 of the program this daemon runs: the root's, verified at every hop; logins pass it
    /// on and install exactly that.
    sha: String,
    parent: Parent,
    execs: BTreeMap<u64, Exec>,
    tx: UnboundedSender<Input>,
}

/// Runs the daemon loop until the daemon stops or its inputs end.
async fn run(index: u32, mut fx: SimEffects, mut rx: UnboundedReceiver<Input>) {
    let mut d = Daemon::new(index);
    while let Some(input) = rx.next().await {
        if !d.step(&mut fx, input).await {
            return;
        }
    }
}

/// Runs the root daemon on the login host: orders from `orders`, events to `events`.
pub(crate) fn spawn_root(
    host: HostRef,
    world: Arc<World>,
    orders: UnboundedReceiver<Down>,
    events: UnboundedSender<Up>,
) {
    let (tx, rx) = unbounded();
    let fwd = tx.clone();
    host.spawn(
        "gxp-root-orders",
        Box::pin(async move {
            let mut orders = orders;
            while let Some(d) = orders.next().await {
                if fwd.unbounded_send(Input::FromParent(d)).is_err() {
                    break;
                }
            }
        }),
    );
    let fx = SimEffects {
        host: host.clone(),
        sha: world.binary().1.to_string(),
        world,
        parent: Parent::Controller(events),
        execs: BTreeMap::new(),
        tx,
    };
    host.spawn("gxp-root", Box::pin(run(0, fx, rx)));
}

/// Runs a child daemon on its login session (`port`, bound as `mb`) whose peer is `parent`.
pub(crate) async fn run_child(
    host: HostRef,
    world: Arc<World>,
    index: u32,
    sha: String,
    port: u16,
    mb: Box<dyn Mailbox>,
    parent: Addr,
) {
    let hello = Body::Hello {
        name: world.name(host.id()),
        version: crate::VERSION.to_string(),
    };
    if send_body(&host, port, parent, &hello).await.is_err() {
        return;
    }
    let (tx, rx) = unbounded();
    let (h, t) = (host.clone(), tx.clone());
    host.spawn("gxp-uplink", Box::pin(pump_parent(h, port, mb, parent, t)));
    let fx = SimEffects {
        host,
        world,
        sha,
        parent: Parent::Session { port, addr: parent },
        execs: BTreeMap::new(),
        tx,
    };
    run(index, fx, rx).await;
}

/// Sends one protocol body as a link frame. A body over the frame limit is not sent (the peer
/// would refuse the frame): an error instead.
async fn send_body(host: &HostRef, port: u16, to: Addr, body: &Body) -> Result<(), String> {
    let bytes = proto::try_encode(body).map_err(|e| e.to_string())?;
    send(host, port, to, &LinkMsg::Frame(bytes)).await
}

/// Orders from the parent; answers keepalive pings at once (as sshd would keep the TCP link alive).
async fn pump_parent(
    host: HostRef,
    port: u16,
    mut mb: Box<dyn Mailbox>,
    parent: Addr,
    tx: UnboundedSender<Input>,
) {
    while let Ok(m) = mb.recv().await {
        if m.from != parent {
            continue; // only the login channel's peer may talk to this daemon
        }
        let Some(LinkMsg::Frame(bytes)) = super::sshd::decode(&m.payload) else {
            continue;
        };
        match proto::decode(&bytes) {
            Ok(Body::Down(d)) => {
                let sent = tx.unbounded_send(Input::FromParent(d));
                if sent.is_err() {
                    return; // the daemon stopped
                }
            }
            Ok(Body::Ping) => {
                let _ = send_body(&host, port, parent, &Body::Pong).await;
            }
            _ => {}
        }
    }
}

/// Events from a child; pings it when silent and declares it lost when pings go unanswered.
async fn pump_child(
    host: HostRef,
    world: Arc<World>,
    child: u32,
    port: u16,
    mut mb: Box<dyn Mailbox>,
    addr: Addr,
    tx: UnboundedSender<Input>,
) {
    let mut silent = 0;
    loop {
        match recv_from(&host, &mut mb, |a| a == addr, world.cost.keepalive_interval).await {
            Ok((_, LinkMsg::Frame(bytes))) => {
                silent = 0;
                if let Ok(Body::Up(up)) = proto::decode(&bytes) {
                    if tx.unbounded_send(Input::FromChild(child, up)).is_err() {
                        return;
                    }
                }
            }
            Ok(_) => silent = 0,
            Err(_) => {
                silent += 1;
                if silent > world.cost.keepalive_count {
                    let _ = tx.unbounded_send(Input::ChildLost(child));
                    return;
                }
                let _ = send_body(&host, port, addr, &Body::Ping).await;
            }
        }
    }
}

impl Effects for SimEffects {
    type Link = ChildLink;

    fn on_input(&mut self) -> BoxFuture<'_, ()> {
        self.host.compute(self.world.cost.msg_cycles)
    }

    fn to_parent(&mut self, up: Up) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            match &self.parent {
                Parent::Controller(tx) => {
                    let _ = tx.unbounded_send(up);
                }
                Parent::Session { port, addr } => {
                    let _ = send_body(&self.host, *port, *addr, &Body::Up(up)).await;
                }
            }
        })
    }

    fn to_child(&mut self, l: &ChildLink, down: Down) -> BoxFuture<'_, ()> {
        let (port, addr) = (l.port, l.addr);
        Box::pin(async move {
            let _ = send_body(&self.host, port, addr, &Body::Down(down)).await;
        })
    }

    fn login(&mut self, child: u32, index: u32, target: String, method: LoginMethod) {
        SimEffects::login(self, child, index, target, method)
    }

    fn run(&mut self, spec: ExecSpec, exec_idx: u32) {
        self.start_exec(spec, exec_idx)
    }

    fn stdin(&mut self, exec: u64, data: Vec<u8>) -> Option<u64> {
        let bytes = data.len() as u64;
        // The built-ins drain their whole stdin before working, so a chunk handed to the command
        // counts as consumed (real mode acknowledges after the pipe write).
        self.execs
            .get(&exec)
            .is_some_and(|e| e.stdin.unbounded_send(Some(data)).is_ok())
            .then_some(bytes)
    }

    fn stdin_eof(&mut self, exec: u64) {
        if let Some(e) = self.execs.get(&exec) {
            let _ = e.stdin.unbounded_send(None);
        }
    }

    // The built-ins hand over their output whole when they end: nothing to hold back.
    fn output_ack(&mut self, _exec: u64, _bytes: u64) {}

    fn kill(&mut self, exec: u64) {
        if let Some(e) = self.execs.get(&exec) {
            e.killed.store(true, Ordering::SeqCst);
        }
    }

    fn exited(&mut self, exec: u64) {
        self.execs.remove(&exec);
    }

    fn shutdown(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

impl SimEffects {
    fn login(&self, child: u32, index: u32, target: String, _method: LoginMethod) {
        let (host, world, tx) = (self.host.clone(), self.world.clone(), self.tx.clone());
        let sha = self.sha.clone();
        self.host.spawn(
            "gxp-login",
            Box::pin(async move {
                let Some(tid) = world.resolve(&target) else {
                    let _ = tx.unbounded_send(Input::LoginDone {
                        child,
                        index,
                        target: target.clone(),
                        outcome: Err(format!("unknown host {target}")),
                    });
                    return;
                };
                let port = world.fresh_port(host.id());
                let mut mb = match host.bind(port) {
                    Ok(mb) => mb,
                    Err(e) => {
                        let _ = tx.unbounded_send(Input::LoginDone {
                            child,
                            index,
                            target,
                            outcome: Err(e.to_string()),
                        });
                        return;
                    }
                };
                match login_gxp(&host, &world, port, &mut mb, tid, index, &sha).await {
                    Ok((name, addr)) => {
                        let link = ChildLink { port, addr };
                        let _ = tx.unbounded_send(Input::LoginDone {
                            child,
                            index,
                            target,
                            outcome: Ok((name, link)),
                        });
                        pump_child(host, world, child, port, mb, addr, tx).await;
                    }
                    Err(e) => {
                        host.event(&format!("login {} failed: {e}", world.name(tid)));
                        let _ = tx.unbounded_send(Input::LoginDone {
                            child,
                            index,
                            target,
                            outcome: Err(e),
                        });
                    }
                }
            }),
        );
    }

    fn start_exec(&mut self, spec: ExecSpec, exec_idx: u32) {
        let (stdin_tx, stdin_rx) = unbounded();
        if !spec.stdin_open {
            let _ = stdin_tx.unbounded_send(None);
        }
        let killed = Arc::new(AtomicBool::new(false));
        self.execs.insert(
            spec.exec,
            Exec {
                stdin: stdin_tx,
                killed: killed.clone(),
            },
        );
        let (host, world, tx) = (self.host.clone(), self.world.clone(), self.tx.clone());
        let mut env: BTreeMap<String, String> = spec.env.iter().cloned().collect();
        env.insert("GXP_HOSTNAME".into(), world.name(host.id()));
        env.insert("GXP_EXEC_IDX".into(), exec_idx.to_string());
        env.insert("GXP_NUM_EXECS".into(), spec.num_execs.to_string());
        self.host.spawn(
            "gxp-exec",
            Box::pin(async move {
                host.compute(world.cost.spawn_cycles).await;
                let mut out = ToNode {
                    exec: spec.exec,
                    tx: tx.clone(),
                };
                let mut status =
                    builtins::run(&host, &world, &spec.cmd, &env, stdin_rx, &mut out).await;
                if killed.load(Ordering::SeqCst) {
                    status = Status::Signal(9);
                }
                let _ = tx.unbounded_send(Input::Exited {
                    exec: spec.exec,
                    status,
                });
            }),
        );
    }
}

struct ToNode {
    exec: u64,
    tx: UnboundedSender<Input>,
}

impl ToNode {
    fn emit(&mut self, stream: Stream, data: Vec<u8>) {
        for c in data.chunks(OUTPUT_CHUNK) {
            let _ = self.tx.unbounded_send(Input::Output {
                exec: self.exec,
                stream,
                data: c.to_vec(),
            });
        }
    }
}

impl Out for ToNode {
    fn stdout(&mut self, data: Vec<u8>) {
        self.emit(Stream::Stdout, data)
    }
    fn stderr(&mut self, data: Vec<u8>) {
        self.emit(Stream::Stderr, data)
    }
}

/// Logs into `target` and brings up a daemon there; returns its reported name and session address.
async fn login_gxp(
    host: &HostRef,
    world: &World,
    port: u16,
    mb: &mut Box<dyn Mailbox>,
    target: HostId,
    index: u32,
    sha: &str,
) -> Result<(String, Addr), String> {
    let purpose = Purpose::Gxp {
        index,
        sha: sha.to_string(),
    };
    let session = client_handshake(host, world, port, mb, target, purpose).await?;
    let name = world.name(target);
    let timeout = world.cost.login_timeout;
    loop {
        let (_, msg) = recv_from(host, mb, |a| a == session, timeout)
            .await
            .map_err(|e| format!("{name}: bootstrap {e}"))?;
        match msg {
            LinkMsg::Have => {}
            LinkMsg::Need => {
                // This daemon's own program, the one its parent verified.
                let bytes = world
                    .read(host.id(), &super::world::install_path(sha))
                    .ok_or_else(|| format!("{name}: no program here to install"))?;
                send(host, port, session, &LinkMsg::Binary(bytes.to_vec())).await?;
            }
            LinkMsg::InstallFailed(e) => return Err(format!("{name}: install failed: {e}")),
            LinkMsg::Frame(b) => {
                return match proto::decode(&b) {
                    Ok(Body::Hello { name, version }) if version == crate::VERSION => {
                        Ok((name, session))
                    }
                    Ok(Body::Hello { version, .. }) => Err(format!(
                        "{name}: daemon version {version} != {}",
                        crate::VERSION
                    )),
                    Ok(_) => Err(format!("{name}: expected hello")),
                    Err(e) => Err(format!("{name}: {e}")),
                };
            }
            other => return Err(format!("{name}: protocol error ({other:?})")),
        }
    }
}

/// Runs one command as a plain ssh session would (flat baseline): spawn cost + built-in.
pub(crate) async fn run_once(host: &HostRef, world: &Arc<World>, cmd: &str) -> (Vec<u8>, i32) {
    struct Collect(Vec<u8>);
    impl Out for Collect {
        fn stdout(&mut self, d: Vec<u8>) {
            self.0.extend(d)
        }
        fn stderr(&mut self, _: Vec<u8>) {}
    }
    host.compute(world.cost.spawn_cycles).await;
    let (tx, rx) = unbounded();
    let _ = tx.unbounded_send(None);
    let mut c = Collect(Vec::new());
    let code = match builtins::run(host, world, cmd, &BTreeMap::new(), rx, &mut c).await {
        Status::Code(c) => c,
        _ => 255,
    };
    (c.0, code)
}
