//! A simulated OpenSSH: an sshd on port 22 of every host and the client side of a login. A login
//! costs `ssh_round_trips` exchanges of handshake messages plus the client's and the server's CPU
//! (see [`super::cost`]); then the session either bootstraps a GXP daemon (sending the program when
//! the host lacks it) or runs one command (the flat pdsh-style baseline), possibly through a
//! gateway (ProxyJump). The session endpoint is sshd's, never a port GXP opens: after bootstrap the
//! daemon speaks only through it, as through the stdin/stdout of the login command.

use std::sync::Arc;
use std::time::Duration;

use futures::future::{select, Either};
use gridbed_runtime::{Addr, HostId, HostRef, Mailbox};
use serde::{Deserialize, Serialize};

use super::world::World;
use crate::tree::explore::UNREACHABLE_PREFIX;

/// The sshd port.
pub const SSHD_PORT: u16 = 22;

/// What a login is for.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Purpose {
    /// Bootstrap a GXP daemon that becomes host index `index`, running the program whose sha256
    /// is `sha` (the root's, passed down by every parent).
    Gxp { index: u32, sha: String },
    /// Run one built-in command and return its output (pdsh-style).
    Exec { cmd: String },
    /// Log onward from this host to `target` and run `cmd` there (ProxyJump).
    Proxy { target: u32, cmd: String },
}

/// Messages of a simulated ssh connection.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum LinkMsg {
    Connect {
        purpose: Purpose,
    },
    Kex {
        step: u32,
        #[serde(with = "serde_bytes")]
        pad: Vec<u8>,
    },
    Denied,
    Have,
    Need,
    Binary(#[serde(with = "serde_bytes")] Vec<u8>),
    InstallFailed(String),
    /// A GXP protocol body ([`crate::tree::proto::encode`]) on an established daemon link.
    Frame(#[serde(with = "serde_bytes")] Vec<u8>),
    ExecResult {
        #[serde(with = "serde_bytes")]
        stdout: Vec<u8>,
        code: i32,
    },
    Error(String),
}

pub fn encode(m: &LinkMsg) -> Vec<u8> {
    postcard::to_allocvec(m).unwrap_or_default()
}

pub fn decode(b: &[u8]) -> Option<LinkMsg> {
    postcard::from_bytes(b).ok()
}

/// Receives the next message from `peer` (other senders are ignored), or fails after `timeout`.
pub async fn recv_from(
    host: &HostRef,
    mb: &mut Box<dyn Mailbox>,
    peer: impl Fn(Addr) -> bool,
    timeout: Duration,
) -> Result<(Addr, LinkMsg), String> {
    let deadline = host.now() + timeout;
    loop {
        let left = deadline.saturating_sub(host.now());
        if left.is_zero() {
            return Err("timeout".into());
        }
        match select(mb.recv(), host.sleep(left)).await {
            Either::Left((Ok(m), _)) => {
                if peer(m.from) {
                    if let Some(msg) = decode(&m.payload) {
                        return Ok((m.from, msg));
                    }
                }
            }
            Either::Left((Err(e), _)) => return Err(e.to_string()),
            Either::Right(_) => return Err("timeout".into()),
        }
    }
}

pub async fn send(host: &HostRef, port: u16, to: Addr, m: &LinkMsg) -> Result<(), String> {
    host.send(port, to, encode(m))
        .await
        .map_err(|e| e.to_string())
}

fn pad(world: &World) -> Vec<u8> {
    vec![0u8; world.cost.ssh_msg_bytes]
}

/// Client side of the handshake from `port` (already bound as `mb`) to `target`'s sshd. Returns the
/// session's address. Errors starting with [`UNREACHABLE_PREFIX`] mean "no route from here".
pub async fn client_handshake(
    host: &HostRef,
    world: &World,
    port: u16,
    mb: &mut Box<dyn Mailbox>,
    target: HostId,
    purpose: Purpose,
) -> Result<Addr, String> {
    let cost = &world.cost;
    let name = world.name(target);
    if !host.can_reach(target) {
        return Err(format!(
            "{UNREACHABLE_PREFIX} no route from {} to {name}",
            world.name(host.id())
        ));
    }
    if let Err(e) = send(
        host,
        port,
        Addr::new(target, SSHD_PORT),
        &LinkMsg::Connect { purpose },
    )
    .await
    {
        return Err(format!("{UNREACHABLE_PREFIX} {name}: {e}"));
    }
    let per_step = cost.ssh_client_cycles / cost.ssh_round_trips.max(1) as u64;
    let mut session = None;
    for step in 0..cost.ssh_round_trips {
        let (from, msg) = recv_from(host, mb, |a| a.host == target, cost.login_timeout)
            .await
            .map_err(|e| format!("ssh {name}: connection {e}"))?;
        match msg {
            LinkMsg::Kex { step: s, .. } if s == step => {
                session = Some(from);
                host.compute(per_step).await;
                send(
                    host,
                    port,
                    from,
                    &LinkMsg::Kex {
                        step,
                        pad: pad(world),
                    },
                )
                .await?;
            }
            LinkMsg::Denied => return Err(format!("ssh {name}: permission denied (publickey)")),
            other => return Err(format!("ssh {name}: protocol error ({other:?})")),
        }
    }
    session.ok_or_else(|| format!("ssh {name}: no handshake"))
}

/// Starts sshd on `host`: every connection gets its own session task and port.
pub fn start_sshd(host: HostRef, world: Arc<World>) {
    let h = host.clone();
    host.spawn(
        "sshd",
        Box::pin(async move {
            let Ok(mut mb) = h.bind(SSHD_PORT) else {
                return;
            };
            while let Ok(m) = mb.recv().await {
                if let Some(LinkMsg::Connect { purpose }) = decode(&m.payload) {
                    let (h2, w2) = (h.clone(), world.clone());
                    h.spawn(
                        "ssh-session",
                        Box::pin(async move { serve_session(h2, w2, m.from, purpose).await }),
                    );
                }
            }
        }),
    );
}

async fn serve_session(host: HostRef, world: Arc<World>, client: Addr, purpose: Purpose) {
    let cost = world.cost.clone();
    let port = world.fresh_port(host.id());
    let Ok(mut mb) = host.bind(port) else { return };
    let per_step = cost.ssh_server_cycles / cost.ssh_round_trips.max(1) as u64;
    for step in 0..cost.ssh_round_trips {
        host.compute(per_step).await;
        if world.is_denied(host.id()) && step + 1 == cost.ssh_round_trips {
            // Authentication is the last exchange: refused after the key exchange, as sshd does.
            let _ = send(&host, port, client, &LinkMsg::Denied).await;
            return;
        }
        if send(
            &host,
            port,
            client,
            &LinkMsg::Kex {
                step,
                pad: pad(&world),
            },
        )
        .await
        .is_err()
        {
            return;
        }
        match recv_from(&host, &mut mb, |a| a == client, cost.login_timeout).await {
            Ok((_, LinkMsg::Kex { step: s, .. })) if s == step => {}
            _ => return,
        }
    }
    match purpose {
        Purpose::Gxp { index, sha } => bootstrap(host, world, port, mb, client, index, sha).await,
        Purpose::Exec { cmd } => {
            let (stdout, code) = super::daemon::run_once(&host, &world, &cmd).await;
            let _ = send(&host, port, client, &LinkMsg::ExecResult { stdout, code }).await;
        }
        Purpose::Proxy { target, cmd } => {
            // The gateway's sshd opens the onward connection (ProxyJump) and relays the result.
            let fwd = world.fresh_port(host.id());
            let reply = match host.bind(fwd) {
                Ok(mut fmb) => match client_handshake(
                    &host,
                    &world,
                    fwd,
                    &mut fmb,
                    HostId(target),
                    Purpose::Exec { cmd },
                )
                .await
                {
                    Ok(_) => match recv_from(
                        &host,
                        &mut fmb,
                        |a| a.host == HostId(target),
                        cost.login_timeout,
                    )
                    .await
                    {
                        Ok((_, m @ LinkMsg::ExecResult { .. })) => m,
                        Ok((_, other)) => LinkMsg::Error(format!("protocol error ({other:?})")),
                        Err(e) => LinkMsg::Error(e),
                    },
                    Err(e) => LinkMsg::Error(e),
                },
                Err(e) => LinkMsg::Error(e.to_string()),
            };
            let _ = send(&host, port, client, &reply).await;
        }
    }
}

/// The bootstrap a login runs: start the installed GXP if its content hashes to `sha` (a copy under
/// the right name is re-hashed, never trusted by its name), or receive it, install it atomically
/// (temporary name, checksum, rename) and start it.
async fn bootstrap(
    host: HostRef,
    world: Arc<World>,
    port: u16,
    mut mb: Box<dyn Mailbox>,
    client: Addr,
    index: u32,
    sha: String,
) {
    if world.verified_copy(host.id(), &sha) {
        if send(&host, port, client, &LinkMsg::Have).await.is_err() {
            return;
        }
    } else {
        if send(&host, port, client, &LinkMsg::Need).await.is_err() {
            return;
        }
        let bytes = match recv_from(&host, &mut mb, |a| a == client, world.cost.login_timeout).await
        {
            Ok((_, LinkMsg::Binary(b))) => b,
            _ => return,
        };
        if let Err(e) = world.install(host.id(), bytes, port, &sha) {
            let _ = send(&host, port, client, &LinkMsg::InstallFailed(e)).await;
            return;
        }
        host.event(&format!("gxp installed on {}", world.name(host.id())));
    }
    host.compute(world.cost.daemon_start_cycles).await;
    super::daemon::run_child(host, world, index, sha, port, mb, client).await;
}
