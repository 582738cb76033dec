//! The sending half of a host-pair link: numbered messages kept until the peer acknowledges them,
//! and one task that (re)connects, authenticates, retransmits what is unacknowledged and writes the
//! rest.
//!
//! A send is *accepted* once it has a sequence number in the outbox; from then on it is written
//! again after every reconnect until acknowledged, so a connection reset loses nothing. The outbox
//! is bounded: a send that finds it full waits for acknowledgements, up to `send_timeout`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use gridbed_runtime::{HostId, NetError};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::frame::{read_frame, Header, Kind};
use crate::handshake::{proof, ClusterSecret, Hello, Reply, Resume, REPLY_LEN, RESUME_LEN};
use crate::limits::{admits, Limits};
use crate::stats::Stats;

struct Pending {
    seq: u64,
    from_port: u16,
    to_port: u16,
    payload: Arc<Vec<u8>>,
}

#[derive(Default)]
struct Outbox {
    next_seq: u64,
    frames: VecDeque<Pending>,
    bytes: usize,
    /// Highest sequence number ever written (frames at or below it are retransmissions).
    written: u64,
    /// Why the last connection attempt failed, for the error of a send that times out.
    last_error: Option<String>,
    /// Set while the peer fails authentication: sends fail at once instead of queueing.
    auth_error: Option<String>,
}

/// What a link needs to know about its own host.
pub(crate) struct LinkCtx {
    pub me: u32,
    pub epoch: u64,
    pub secret: ClusterSecret,
    pub limits: Limits,
    pub stats: Arc<Stats>,
}

pub(crate) struct Link {
    peer: HostId,
    out: Mutex<Outbox>,
    /// New frames, or frames to retransmit.
    work: Notify,
    /// Frames acknowledged or discarded: room for blocked senders.
    room: Notify,
    /// Asks the writer to drop its connection (`disconnect`).
    kick: Notify,
    ctx: Arc<LinkCtx>,
}

const MAX_BACKOFF: Duration = Duration::from_secs(1);
const FIRST_BACKOFF: Duration = Duration::from_millis(5);
/// Frames written per batch before the writer looks for acknowledgements and new work again.
const BATCH: usize = 256;

impl Link {
    pub fn new(peer: HostId, ctx: Arc<LinkCtx>) -> Arc<Link> {
        Arc::new(Link {
            peer,
            out: Mutex::new(Outbox {
                next_seq: 1,
                ..Outbox::default()
            }),
            work: Notify::new(),
            room: Notify::new(),
            kick: Notify::new(),
            ctx,
        })
    }

    /// Accepts a message for the peer, waiting (bounded) for room.
    pub async fn send(
        &self,
        from_port: u16,
        to_port: u16,
        payload: Vec<u8>,
    ) -> Result<(), NetError> {
        let l = &self.ctx.limits;
        let limit = l.frame_limit(to_port);
        if payload.len() > limit {
            return Err(NetError::TooLarge {
                size: payload.len(),
                limit,
            });
        }
        let deadline = tokio::time::Instant::now() + l.send_timeout;
        let payload = Arc::new(payload);
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            {
                let mut o = self.out.lock();
                if let Some(e) = &o.auth_error {
                    return Err(NetError::Io(e.clone()));
                }
                if admits(
                    o.frames.len(),
                    o.bytes,
                    payload.len(),
                    l.outbox_frames,
                    l.outbox_bytes,
                ) {
                    let seq = o.next_seq;
                    o.next_seq += 1;
                    o.bytes += payload.len();
                    o.frames.push_back(Pending {
                        seq,
                        from_port,
                        to_port,
                        payload,
                    });
                    drop(o);
                    self.work.notify_one();
                    return Ok(());
                }
            }
            if tokio::time::timeout_at(deadline, room).await.is_err() {
                let why = self.out.lock().last_error.clone();
                return Err(NetError::Io(format!(
                    "link to {} full for {:?}: peer not acknowledging{}",
                    self.peer,
                    l.send_timeout,
                    why.map(|w| format!(" ({w})")).unwrap_or_default()
                )));
            }
        }
    }

    /// Drops the current connection; unacknowledged frames are retransmitted on the next one.
    pub fn kick(&self) {
        self.kick.notify_one();
    }

    /// Accepted messages not yet acknowledged.
    pub fn unacked(&self) -> usize {
        self.out.lock().frames.len()
    }

    fn has_frames(&self) -> bool {
        !self.out.lock().frames.is_empty()
    }

    /// Removes frames up to `seq` (acknowledged) and wakes blocked senders.
    fn acked(&self, seq: u64) -> Result<(), String> {
        let mut o = self.out.lock();
        if seq >= o.next_seq {
            return Err(format!("acknowledgement of {seq}, never sent"));
        }
        while o.frames.front().is_some_and(|f| f.seq <= seq) {
            let f = o.frames.pop_front().expect("front exists");
            o.bytes -= f.payload.len();
        }
        drop(o);
        self.room.notify_waiters();
        Ok(())
    }

    /// Applies the peer's resume point; returns the first sequence number to (re)write.
    fn resume(&self, r: Resume) -> Result<u64, String> {
        match r {
            Resume::From(seq) => self.acked(seq)?,
            Resume::Fresh => {}
            Resume::Discard(delivered) => {
                self.acked(delivered)?;
                let mut o = self.out.lock();
                let mut n = 0;
                while o.frames.front().is_some_and(|f| f.seq <= o.written) {
                    let f = o.frames.pop_front().expect("front exists");
                    o.bytes -= f.payload.len();
                    n += 1;
                }
                drop(o);
                self.ctx.stats.add(&self.ctx.stats.discarded_by_peer, n);
                self.room.notify_waiters();
            }
        }
        let o = self.out.lock();
        Ok(o.frames.front().map_or(o.next_seq, |f| f.seq))
    }

    /// Up to `BATCH` frames from `cursor` on.
    fn batch(&self, cursor: u64) -> Vec<(Header, Arc<Vec<u8>>)> {
        let o = self.out.lock();
        let Some(first) = o.frames.front().map(|f| f.seq) else {
            return Vec::new();
        };
        let skip = cursor.saturating_sub(first) as usize;
        o.frames
            .iter()
            .skip(skip)
            .take(BATCH)
            .map(|f| {
                let h = Header::data(
                    f.from_port,
                    f.to_port,
                    self.ctx.me,
                    f.seq,
                    f.payload.len() as u32,
                );
                (h, f.payload.clone())
            })
            .collect()
    }

    /// The link's writer: runs until the host stops (the task is aborted).
    pub async fn drive(self: Arc<Self>, addr: SocketAddr) {
        let mut backoff = FIRST_BACKOFF;
        let mut connected_before = false;
        loop {
            {
                // Scoped: a registered but unpolled waiter would swallow the wake-ups meant for
                // the connection's own waiter below.
                let work = self.work.notified();
                tokio::pin!(work);
                work.as_mut().enable();
                if !self.has_frames() {
                    work.await;
                    continue;
                }
            }
            let dial = tokio::time::timeout(self.ctx.limits.connect_timeout, self.dial(addr)).await;
            let (stream, start) = match dial {
                Ok(Ok(s)) => s,
                failed => {
                    let why = match failed {
                        Ok(Err(e)) => e,
                        _ => format!(
                            "connect/handshake timed out after {:?}",
                            self.ctx.limits.connect_timeout
                        ),
                    };
                    tracing::debug!(me = self.ctx.me, peer = %self.peer, "link down: {why}");
                    self.out.lock().last_error = Some(why);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            backoff = FIRST_BACKOFF;
            self.out.lock().last_error = None;
            if connected_before {
                self.ctx.stats.add(&self.ctx.stats.reconnects, 1);
            }
            connected_before = true;
            if let Err(e) = self.serve(stream, start).await {
                tracing::debug!(me = self.ctx.me, peer = %self.peer, "connection lost: {e}");
            }
        }
    }

    /// Connects and authenticates; returns the stream and the first sequence number to write.
    async fn dial(&self, addr: SocketAddr) -> Result<(TcpStream, u64), String> {
        let mut s = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let _ = s.set_nodelay(true);
        let hello = Hello::new(self.ctx.me, self.peer.0, self.ctx.epoch);
        let h = hello.encode();
        let io = |e: std::io::Error| format!("handshake with {} at {addr}: {e}", self.peer);
        s.write_all(&h).await.map_err(io)?;
        let mut r = [0u8; REPLY_LEN];
        s.read_exact(&mut r).await.map_err(io)?;
        let reply = Reply(r);
        if let Err(e) = reply.verify(&self.ctx.secret, &h, self.peer.0) {
            self.ctx.stats.add(&self.ctx.stats.auth_failures, 1);
            tracing::warn!(me = self.ctx.me, peer = %self.peer, "{addr}: {e}");
            let why = format!("{} at {addr}: {e}", self.peer);
            self.out.lock().auth_error = Some(why.clone());
            return Err(why);
        }
        s.write_all(&proof(&self.ctx.secret, &h, &reply))
            .await
            .map_err(io)?;
        let mut res = [0u8; RESUME_LEN];
        s.read_exact(&mut res).await.map_err(io)?;
        let resume = Resume::decode(&res).map_err(|e| e.to_string())?;
        self.out.lock().auth_error = None;
        let start = self.resume(resume)?;
        Ok((s, start))
    }

    /// Writes frames from `cursor` on and reads acknowledgements until the connection fails.
    async fn serve(&self, stream: TcpStream, mut cursor: u64) -> Result<(), String> {
        let (mut rd, wr) = stream.into_split();
        let mut wr = BufWriter::with_capacity(64 * 1024, wr);
        let acks = async {
            loop {
                let (h, _) = read_frame(&mut rd, |_| 0)
                    .await
                    .map_err(|e| e.to_string())?;
                if h.kind != Kind::Ack || h.from_host != self.peer.0 {
                    return Err::<(), String>(format!(
                        "unexpected {:?} frame from h{}",
                        h.kind, h.from_host
                    ));
                }
                self.acked(h.seq)?;
            }
        };
        tokio::pin!(acks);
        let limits = &self.ctx.limits;
        loop {
            let work = self.work.notified();
            tokio::pin!(work);
            work.as_mut().enable();
            let batch = self.batch(cursor);
            if batch.is_empty() {
                tokio::select! {
                    r = &mut acks => return r,
                    _ = &mut work => continue,
                    _ = self.kick.notified() => return Err("disconnected by this host".into()),
                }
            }
            let next = batch.last().map_or(cursor, |(h, _)| h.seq + 1);
            let write = async {
                for (h, payload) in &batch {
                    wr.write_all(&h.encode()).await?;
                    wr.write_all(payload).await?;
                }
                wr.flush().await
            };
            tokio::select! {
                r = &mut acks => return r,
                _ = self.kick.notified() => return Err("disconnected by this host".into()),
                w = tokio::time::timeout(limits.write_timeout, write) => match w {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(format!("write: {e}")),
                    Err(_) => return Err(format!("write stalled for {:?}", limits.write_timeout)),
                },
            }
            {
                let mut o = self.out.lock();
                let again = batch.iter().filter(|(h, _)| h.seq <= o.written).count();
                o.written = o.written.max(next - 1);
                drop(o);
                self.ctx
                    .stats
                    .add(&self.ctx.stats.retransmitted, again as u64);
            }
            cursor = next;
        }
    }
}
