//! The migration mechanism: one daemon per host, written against the runtime interface.
//!
//! The daemon holding the process runs it in slices (instruction boundaries) and charges each
//! slice to its host's CPU. Between slices it reads its mailbox: a `Migrate` message stops the
//! process there (the paper's SIGALRM handler), captures it, sends the image (one-sided put or
//! stream), and waits for the destination's verdict.
//!
//! Exactly once. The source keeps the (frozen) process until the destination acknowledges a
//! complete image that restored; only then does it decide `Commit`, record the decision, give the
//! process up and tell the destination, which runs the copy only on `Commit`. Without an `Ack` in
//! time (destination down, message lost) or on a `Nack`, the source decides `Abort` and resumes.
//! A destination holding a restored copy without a decision asks the source (`Query`) until it
//! hears one; the source answers from its decision record. So at every moment at most one copy
//! runs, and — in the fault model below — exactly one exists.
//!
//! Fault model: message loss and partitions anywhere, crash of the destination before it has
//! acknowledged. A crash of the host that currently runs the process kills the process, as it
//! would an unmigrated one; a source crash after deciding `Commit` but before any `Commit`
//! message got through leaves the destination asking forever (the blocking case of two-phase
//! commit; no failure detector is assumed).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use gridbed_runtime::{Addr, Host, HostId, HostRef, Mailbox, Message, NetError};

use crate::wire::Msg;
use crate::Migratable;

/// Port of every host's migration daemon.
pub const MIGRATION_PORT: u16 = 46;

/// How the image moves.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    /// One-sided put of the whole image into a buffer the destination registered beforehand
    /// (the `LAPI_Put` analogue): one message.
    Put,
    /// A byte stream written `chunk` bytes per write (the TCP socket loop of the paper).
    Stream { chunk: usize },
}

#[derive(Copy, Clone, Debug)]
pub struct DaemonConfig {
    pub transport: Transport,
    /// Guest instructions per slice: how often the daemon looks at its mailbox.
    pub slice: u64,
    /// Base of the timeouts: the source waits this (plus four times the send time) for an
    /// `Ack`; a destination without a decision re-asks this often.
    pub retry: Duration,
}

/// One migration attempt, as the source saw it.
#[derive(Clone, Debug, PartialEq)]
pub struct MigrationStats {
    pub src: u32,
    pub dst: u32,
    pub image_bytes: u64,
    /// Bytes put on the wire for the image.
    pub wire_bytes: u64,
    pub committed: bool,
    /// From freeze at the source to the first slice at the destination (commit) or to the
    /// resumption at the source (abort), seconds. Stop-and-copy: total = downtime.
    pub downtime_s: f64,
    pub total_s: f64,
}

/// What every daemon reports, shared by all of them (instrumentation for tests and experiments;
/// it never steers the mechanism).
pub struct Census<P> {
    st: Mutex<CensusState<P>>,
}

pub struct CensusState<P> {
    /// Hosts running a copy now; the largest number ever seen at once.
    pub running: Vec<u32>,
    pub max_running: usize,
    /// The destination of the transfer in progress, until it acknowledges (or the source gives
    /// up): the window in which a destination crash is inside the fault model.
    pub receiving: Option<u32>,
    frozen: Option<(Duration, usize)>,
    pub migrations: Vec<MigrationStats>,
    /// (host, exit status, the finished process).
    pub finished: Vec<(u32, u32, P)>,
    pub failures: Vec<String>,
}

impl<P> Default for Census<P> {
    fn default() -> Self {
        Census {
            st: Mutex::new(CensusState {
                running: Vec::new(),
                max_running: 0,
                receiving: None,
                frozen: None,
                migrations: Vec::new(),
                finished: Vec::new(),
                failures: Vec::new(),
            }),
        }
    }
}

impl<P> Census<P> {
    pub fn with<T>(&self, f: impl FnOnce(&mut CensusState<P>) -> T) -> T {
        f(&mut self.st.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn start(&self, host: u32, now: Duration) {
        self.with(|s| {
            s.running.push(host);
            s.max_running = s.max_running.max(s.running.len());
            if let Some((t, i)) = s.frozen.take() {
                if let Some(m) = s.migrations.get_mut(i) {
                    m.downtime_s = (now - t).as_secs_f64();
                    m.total_s = m.total_s.max(m.downtime_s);
                }
            }
        });
    }

    fn stop(&self, host: u32) {
        self.with(|s| s.running.retain(|h| *h != host));
    }
}

/// Waits for a message at most `d`; None on timeout.
async fn recv_within(
    mb: &mut dyn Mailbox,
    host: &dyn Host,
    d: Duration,
) -> Option<Result<Message, NetError>> {
    let mut r = mb.recv();
    let mut s = host.sleep(d);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(m) = r.as_mut().poll(cx) {
            return Poll::Ready(Some(m));
        }
        if s.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await
}

async fn tell(host: &dyn Host, to: u32, m: &Msg) -> Result<(), NetError> {
    host.send(
        MIGRATION_PORT,
        Addr::new(HostId(to), MIGRATION_PORT),
        m.encode(),
    )
    .await
}

/// An image arriving as a stream.
struct Incoming {
    id: u64,
    from: u32,
    next: u32,
    bytes: Vec<u8>,
}

struct Daemon<P> {
    host: HostRef,
    me: u32,
    mb: Box<dyn Mailbox>,
    cfg: DaemonConfig,
    census: Arc<Census<P>>,
    /// Source side: migration id → committed?
    decided: BTreeMap<u64, bool>,
    incoming: Option<Incoming>,
}

/// Runs host `host`'s daemon, holding `process` if it starts there, until the host goes down.
pub async fn daemon<P: Migratable + Send + 'static>(
    host: HostRef,
    process: Option<P>,
    cfg: DaemonConfig,
    census: Arc<Census<P>>,
) {
    let Ok(mb) = host.bind(MIGRATION_PORT) else {
        return;
    };
    let me = host.id().0;
    let mut d = Daemon {
        host,
        me,
        mb,
        cfg,
        census,
        decided: BTreeMap::new(),
        incoming: None,
    };
    let mut held = process;
    if held.is_some() {
        d.census.start(me, d.host.now());
    }
    loop {
        held = match held {
            Some(p) => d.run_slice(p).await,
            None => match d.mb.recv().await {
                Ok(m) => d.as_destination(m).await,
                Err(_) => return,
            },
        };
    }
}

impl<P: Migratable + Send + 'static> Daemon<P> {
    /// One slice of the held process, then the mailbox. Returns the process if still held.
    async fn run_slice(&mut self, mut p: P) -> Option<P> {
        let c0 = p.cycles();
        let res = p.run_for(self.cfg.slice);
        let spent = p.cycles().saturating_sub(c0);
        if spent > 0 {
            self.host.compute(spent).await;
        }
        match res {
            Err(e) => {
                self.census.stop(self.me);
                self.census.with(|s| s.failures.push(format!("{e:#}")));
                return None;
            }
            Ok(Some(status)) => {
                self.census.stop(self.me);
                self.census.with(|s| s.finished.push((self.me, status, p)));
                return None;
            }
            Ok(None) => {}
        }
        while let Some(m) = self.mb.try_recv() {
            match Msg::decode(&m.payload) {
                Some(Msg::Migrate { dst }) if dst != self.me => {
                    p = self.migrate(p, dst).await?;
                }
                Some(Msg::Query { id }) => self.answer(m.from.host.0, id).await,
                Some(Msg::Put { id, .. }) | Some(Msg::Done { id, .. }) => {
                    // Someone else's copy while this host runs the process: refuse it.
                    let _ = tell(&*self.host, m.from.host.0, &Msg::Nack { id }).await;
                }
                _ => {}
            }
        }
        Some(p)
    }

    async fn answer(&mut self, to: u32, id: u64) {
        if let Some(&c) = self.decided.get(&id) {
            let m = if c {
                Msg::Commit { id }
            } else {
                Msg::Abort { id }
            };
            let _ = tell(&*self.host, to, &m).await;
        }
    }

    /// Source side: the process back when it stays here, None when the destination took it.
    async fn migrate(&mut self, p: P, dst: u32) -> Option<P> {
        let host = self.host.clone();
        let t0 = host.now();
        self.census.stop(self.me);
        let id = host.rng_u64();
        let mut image = Vec::new();
        let captured = p.capture(&mut image);
        let image_bytes = image.len() as u64;
        self.census.with(|s| s.receiving = Some(dst));
        let mut wire_bytes = 0u64;
        let sent = match captured {
            Err(e) => Err(NetError::Io(format!("capture: {e:#}"))),
            Ok(_) => match self.cfg.transport {
                Transport::Put => {
                    let m = Msg::Put { id, image };
                    wire_bytes += m.encode().len() as u64;
                    tell(&*host, dst, &m).await
                }
                Transport::Stream { chunk } => {
                    let mut r = Ok(());
                    let n = image.len();
                    let mut seq = 0u32;
                    for piece in image.chunks(chunk.max(1)) {
                        let m = Msg::Chunk {
                            id,
                            seq,
                            bytes: piece.to_vec(),
                        };
                        wire_bytes += m.encode().len() as u64;
                        r = tell(&*host, dst, &m).await;
                        seq += 1;
                        if r.is_err() {
                            break;
                        }
                    }
                    if r.is_ok() {
                        let m = Msg::Done {
                            id,
                            chunks: seq,
                            len: n as u64,
                        };
                        r = tell(&*host, dst, &m).await;
                    }
                    r
                }
            },
        };
        let mut committed = false;
        if sent.is_ok() {
            let wait = self.cfg.retry + (host.now() - t0) * 4;
            let deadline = host.now() + wait;
            while host.now() < deadline {
                let left = deadline - host.now();
                let m = match recv_within(&mut *self.mb, &*host, left).await {
                    None => continue,
                    Some(Err(_)) => break,
                    Some(Ok(m)) => m,
                };
                match Msg::decode(&m.payload) {
                    Some(Msg::Ack { id: a }) if a == id => {
                        committed = true;
                        break;
                    }
                    Some(Msg::Nack { id: a }) if a == id => break,
                    Some(Msg::Query { id: q }) => self.answer(m.from.host.0, q).await,
                    _ => {}
                }
            }
        }
        self.decided.insert(id, committed);
        self.census.with(|s| s.receiving = None);
        let verdict = if committed {
            Msg::Commit { id }
        } else {
            Msg::Abort { id }
        };
        let _ = tell(&*host, dst, &verdict).await;
        let now = host.now();
        self.census.with(|s| {
            s.migrations.push(MigrationStats {
                src: self.me,
                dst,
                image_bytes,
                wire_bytes,
                committed,
                downtime_s: 0.0,
                total_s: (now - t0).as_secs_f64(),
            });
            s.frozen = Some((t0, s.migrations.len() - 1));
        });
        if committed {
            return None;
        }
        self.census.start(self.me, now);
        Some(p)
    }

    /// Destination side, while holding nothing. Returns the process when one was committed here.
    async fn as_destination(&mut self, m: Message) -> Option<P> {
        let from = m.from.host.0;
        let complete = match Msg::decode(&m.payload)? {
            Msg::Query { id } => {
                self.answer(from, id).await;
                return None;
            }
            Msg::Put { id, image } => Some((id, image)),
            Msg::Chunk { id, seq, bytes } => {
                let fresh = seq == 0;
                let inc = self.incoming.get_or_insert_with(|| Incoming {
                    id,
                    from,
                    next: 0,
                    bytes: Vec::new(),
                });
                if fresh {
                    *inc = Incoming {
                        id,
                        from,
                        next: 0,
                        bytes: Vec::new(),
                    };
                }
                if inc.id == id && inc.from == from && inc.next == seq {
                    inc.bytes.extend_from_slice(&bytes);
                    inc.next += 1;
                }
                None
            }
            Msg::Done { id, chunks, len } => match self.incoming.take() {
                Some(inc)
                    if inc.id == id && inc.next == chunks && inc.bytes.len() as u64 == len =>
                {
                    Some((id, inc.bytes))
                }
                _ => {
                    let _ = tell(&*self.host, from, &Msg::Nack { id }).await;
                    None
                }
            },
            _ => None,
        };
        let (id, image) = complete?;
        let restored = P::restore(&mut &image[..]);
        drop(image);
        let p = match restored {
            Ok(p) => p,
            Err(_) => {
                let _ = tell(&*self.host, from, &Msg::Nack { id }).await;
                return None;
            }
        };
        let me = self.me;
        self.census.with(|s| {
            if s.receiving == Some(me) {
                s.receiving = None;
            }
        });
        let _ = tell(&*self.host, from, &Msg::Ack { id }).await;
        if self.await_decision(from, id).await {
            self.census.start(self.me, self.host.now());
            Some(p)
        } else {
            None
        }
    }

    /// Holding a restored copy: waits for the source's decision, asking again after silence.
    async fn await_decision(&mut self, src: u32, id: u64) -> bool {
        let host = self.host.clone();
        loop {
            match recv_within(&mut *self.mb, &*host, self.cfg.retry).await {
                None => {
                    let _ = tell(&*host, src, &Msg::Query { id }).await;
                }
                Some(Err(_)) => return false,
                Some(Ok(m)) => match Msg::decode(&m.payload) {
                    Some(Msg::Commit { id: c }) if c == id => return true,
                    Some(Msg::Abort { id: a }) if a == id => return false,
                    Some(Msg::Put { id: other, .. }) | Some(Msg::Done { id: other, .. }) => {
                        let _ = tell(&*host, m.from.host.0, &Msg::Nack { id: other }).await;
                    }
                    Some(Msg::Query { id: q }) => self.answer(m.from.host.0, q).await,
                    _ => {}
                },
            }
        }
    }
}
