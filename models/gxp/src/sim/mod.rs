//! GXP on the simulator: hosts in LANs behind NAT gateways, a simulated OpenSSH with a login cost
//! model, the shared daemon logic, and the flat (pdsh-style) baseline.

pub mod builtins;
pub mod cost;
pub mod daemon;
pub mod sshd;
pub mod world;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use futures::channel::mpsc::{self, unbounded};
use futures::channel::oneshot;
use futures::future::Either;
use futures::{SinkExt, StreamExt};
use gridbed_runtime::{ClusterRef, HostId, HostRef};

use crate::front::controller::Controller;
use crate::front::pipe::{LocalProc, LocalRunner, LOCAL_QUEUE};
use crate::lang::rules::RuleSet;
use crate::tree::proto::{Status, OUTPUT_CHUNK};
use sshd::{client_handshake, recv_from, LinkMsg, Purpose};
use world::World;

/// Name of host `idx` of LAN `lan` (`l03h0017`); host 0 of a LAN is its gateway.
pub fn host_name(lan: usize, idx: usize) -> String {
    format!("l{lan:02}h{idx:04}")
}

/// Names and NAT gateways of a platform of `lans` LANs of `per_lan` hosts, host ids LAN by LAN;
/// LANs listed in `private` sit behind NAT with their first host as gateway.
pub fn layout(
    lans: usize,
    per_lan: usize,
    private: &[usize],
) -> (Vec<String>, Vec<Option<HostId>>) {
    layout_of(&vec![per_lan; lans], private)
}

/// [`layout`] with LANs of any sizes (`sizes[l]` hosts in LAN `l`).
pub fn layout_of(sizes: &[usize], private: &[usize]) -> (Vec<String>, Vec<Option<HostId>>) {
    let total: usize = sizes.iter().sum();
    let mut names = Vec::with_capacity(total);
    let mut gw = Vec::with_capacity(total);
    let mut first = 0;
    for (l, &n) in sizes.iter().enumerate() {
        for i in 0..n {
            names.push(host_name(l, i));
            let is_private = private.contains(&l) && i != 0;
            gw.push(is_private.then_some(HostId(first as u32)));
        }
        first += n;
    }
    (names, gw)
}

/// Login rules of that platform: public hosts log into public hosts and into gateways; inside a
/// private LAN, any host logs into any other of the same LAN.
pub fn rules_for(lans: usize, private: &[usize]) -> RuleSet {
    let mut r = RuleSet::default();
    let public: Vec<String> = (0..lans)
        .filter(|l| !private.contains(l))
        .map(|l| format!("{l:02}"))
        .collect();
    let pubre = format!("l(?:{})h[0-9]+", public.join("|"));
    // Adding a rule built from validated parts cannot fail; errors would be a bug caught by tests.
    let _ = r.add("ssh", &pubre, &pubre);
    if !private.is_empty() {
        let _ = r.add("ssh", &pubre, "l[0-9]+h0000");
    }
    for l in private {
        let lan = format!("l{l:02}h[0-9]+");
        let _ = r.add("ssh", &lan, &lan);
    }
    r
}

/// Starts sshd everywhere and the root daemon on host 0; returns the controller (usable from the
/// scenario driver: it only talks to the root daemon through channels).
pub fn start(cluster: &ClusterRef, world: Arc<World>) -> Controller {
    let hosts = cluster.hosts();
    for h in &hosts {
        sshd::start_sshd(h.clone(), world.clone());
    }
    let (otx, orx) = unbounded();
    let (etx, erx) = unbounded();
    daemon::spawn_root(hosts[0].clone(), world.clone(), orx, etx);
    let root = world.name(HostId(0));
    Controller::new(otx, erx, &root, &root)
}

/// The local ends of network pipes in sim: built-ins on the login host.
pub struct SimLocal {
    pub host: HostRef,
    pub world: Arc<World>,
}

impl LocalRunner for SimLocal {
    fn timer(&self, d: std::time::Duration) -> futures::future::BoxFuture<'static, ()> {
        self.host.sleep(d)
    }

    fn start(&self, cmd: &str) -> LocalProc {
        let (stdin, mut in_rx) = mpsc::channel::<Vec<u8>>(LOCAL_QUEUE);
        let (mut out_tx, stdout) = mpsc::channel::<Vec<u8>>(LOCAL_QUEUE);
        let (done_tx, done) = oneshot::channel();
        let (kill, kill_rx) = oneshot::channel::<()>();
        let (host, world, cmd) = (self.host.clone(), self.world.clone(), cmd.to_string());
        // The built-ins take their stdin as an unbounded stream of chunks ending with None.
        let (utx, urx) = unbounded();
        self.host.spawn(
            "gxp-local-stdin",
            Box::pin(async move {
                while let Some(d) = in_rx.next().await {
                    let _ = utx.unbounded_send(Some(d));
                }
                let _ = utx.unbounded_send(None);
            }),
        );
        self.host.spawn(
            "gxp-local",
            Box::pin(async move {
                struct Collect(Vec<u8>);
                impl builtins::Out for Collect {
                    fn stdout(&mut self, d: Vec<u8>) {
                        self.0.extend(d)
                    }
                    fn stderr(&mut self, _: Vec<u8>) {}
                }
                let mut c = Collect(Vec::new());
                let env = Default::default();
                let status = {
                    let run = builtins::run(&host, &world, &cmd, &env, urx, &mut c);
                    let st = match futures::future::select(Box::pin(run), kill_rx).await {
                        Either::Left((st, _)) => st,
                        Either::Right((Ok(()), _)) => Status::Signal(9),
                        Either::Right((Err(_), run)) => run.await,
                    };
                    st
                };
                // The built-ins produce their output at the end; it still leaves in bounded chunks.
                for chunk in c.0.chunks(OUTPUT_CHUNK) {
                    if out_tx.send(chunk.to_vec()).await.is_err() {
                        break;
                    }
                }
                drop(out_tx);
                let _ = done_tx.send(status);
            }),
        );
        LocalProc {
            stdin,
            stdout,
            done,
            kill,
        }
    }
}

/// Result of the flat baseline on one host.
pub type FlatResult = (HostId, Result<(Vec<u8>, i32), String>);

/// pdsh/pssh-style baseline: from `from`, one ssh login per target (through its gateway when it is
/// behind NAT), at most `fanout` at a time, each running `cmd`. Results in target order.
pub async fn flat_exec(
    from: HostRef,
    world: Arc<World>,
    targets: Vec<HostId>,
    cmd: String,
    fanout: usize,
) -> Vec<FlatResult> {
    let n = targets.len();
    let queue = Arc::new(Mutex::new(
        targets.into_iter().enumerate().collect::<VecDeque<_>>(),
    ));
    let (tx, mut rx) = unbounded();
    for _ in 0..fanout.max(1).min(n.max(1)) {
        let (h, w, q, tx, cmd) = (
            from.clone(),
            world.clone(),
            queue.clone(),
            tx.clone(),
            cmd.clone(),
        );
        from.spawn(
            "pdsh-worker",
            Box::pin(async move {
                loop {
                    let next = q.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
                    let Some((i, t)) = next else { return };
                    let r = flat_one(&h, &w, t, &cmd).await;
                    let _ = tx.unbounded_send((i, (t, r)));
                }
            }),
        );
    }
    drop(tx);
    let mut out: Vec<Option<FlatResult>> = vec![None; n];
    let mut got = 0;
    while got < n {
        match rx.next().await {
            Some((i, r)) => {
                out[i] = Some(r);
                got += 1;
            }
            None => break, // the login host died
        }
    }
    out.into_iter().flatten().collect()
}

async fn flat_one(h: &HostRef, w: &World, t: HostId, cmd: &str) -> Result<(Vec<u8>, i32), String> {
    let (dest, purpose) = match w.gateway(t) {
        Some(g) if !h.can_reach(t) => (
            g,
            Purpose::Proxy {
                target: t.0,
                cmd: cmd.to_string(),
            },
        ),
        _ => (
            t,
            Purpose::Exec {
                cmd: cmd.to_string(),
            },
        ),
    };
    let port = w.fresh_port(h.id());
    let mut mb = h.bind(port).map_err(|e| e.to_string())?;
    client_handshake(h, w, port, &mut mb, dest, purpose).await?;
    match recv_from(h, &mut mb, |a| a.host == dest, w.cost.login_timeout).await? {
        (_, LinkMsg::ExecResult { stdout, code }) => Ok((stdout, code)),
        (_, LinkMsg::Error(e)) => Err(e),
        (_, other) => Err(format!("protocol error ({other:?})")),
    }
}
