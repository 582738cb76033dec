//! The receiving half: the accept loop, the listener's side of the handshake, and one reader per
//! authenticated connection that delivers frames in sequence order and acknowledges them.
//!
//! Receive state (the peer's epoch and the last sequence number delivered) lives per peer, not per
//! connection, so a reconnect resumes where the last connection stopped; one reader per peer at a
//! time holds it (a newer connection from the same peer replaces the older one).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gridbed_runtime::{Addr, HostId, Message};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::frame::{read_frame, Header, Kind, ReadError};
use crate::handshake::{verify_proof, ClusterSecret, Hello, Reply, Resume, HELLO_LEN, PROOF_LEN};
use crate::limits::Limits;
use crate::ports::Ports;
use crate::stats::Stats;

#[derive(Default)]
struct RecvState {
    /// The peer incarnation this state belongs to.
    epoch: Option<u64>,
    /// Last sequence number delivered; `None`: the next frame starts the sequence.
    delivered: Option<u64>,
}

#[derive(Default)]
struct PeerRecv {
    state: Arc<tokio::sync::Mutex<RecvState>>,
    /// Set by `disconnect`: the peer's next handshake is answered with `Resume::Discard`.
    discard: AtomicBool,
}

pub(crate) struct InboundCtx {
    pub me: u32,
    pub n_hosts: u32,
    pub epoch: u64,
    pub secret: ClusterSecret,
    pub limits: Limits,
    pub stats: Arc<Stats>,
    pub ports: Arc<Ports>,
    peers: Mutex<BTreeMap<u32, Arc<PeerRecv>>>,
    /// Incoming connections by number: the authenticated peer (once known) and the reader task.
    conns: Mutex<BTreeMap<u64, (Option<u32>, tokio::task::AbortHandle)>>,
}

impl InboundCtx {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        me: u32,
        n_hosts: u32,
        epoch: u64,
        secret: ClusterSecret,
        limits: Limits,
        stats: Arc<Stats>,
        ports: Arc<Ports>,
    ) -> Arc<InboundCtx> {
        Arc::new(InboundCtx {
            me,
            n_hosts,
            epoch,
            secret,
            limits,
            stats,
            ports,
            peers: Mutex::default(),
            conns: Mutex::default(),
        })
    }

    fn peer(&self, peer: u32) -> Arc<PeerRecv> {
        self.peers.lock().entry(peer).or_default().clone()
    }

    /// Closes the connections from `peer` and discards what it sent that is not delivered yet.
    pub fn disconnect(&self, peer: u32) {
        self.peer(peer).discard.store(true, Ordering::SeqCst);
        self.abort_where(|p| p == Some(peer));
    }

    /// Stops every reader (the host stops).
    pub fn stop(&self) {
        self.abort_where(|_| true);
    }

    fn abort_where(&self, pick: impl Fn(Option<u32>) -> bool) {
        // Aborted outside the lock: a reader's clean-up takes the same lock.
        let readers: Vec<_> = self
            .conns
            .lock()
            .values()
            .filter(|(p, _)| pick(*p))
            .map(|(_, r)| r.clone())
            .collect();
        for r in readers {
            r.abort();
        }
    }
}

/// A source of incoming connections (a listener; a failing stand-in in tests).
pub(crate) trait Accept: Send + 'static {
    fn accept(&mut self) -> impl Future<Output = std::io::Result<TcpStream>> + Send;
}

impl Accept for TcpListener {
    async fn accept(&mut self) -> std::io::Result<TcpStream> {
        TcpListener::accept(self).await.map(|(s, _)| s)
    }
}

const FIRST_BACKOFF: Duration = Duration::from_millis(5);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Accepts connections until the task is aborted. An accept error (out of file descriptors, a
/// connection reset before it was accepted) is logged and retried after a growing pause.
pub(crate) async fn accept_loop(mut listener: impl Accept, ctx: Arc<InboundCtx>) {
    let mut next_conn = 0u64;
    let mut backoff = FIRST_BACKOFF;
    loop {
        match listener.accept().await {
            Ok(stream) => {
                backoff = FIRST_BACKOFF;
                let _ = stream.set_nodelay(true);
                let conn = next_conn;
                next_conn += 1;
                // Registered under the lock so the reader cannot finish before its entry exists.
                let mut table = ctx.conns.lock();
                let reader = tokio::spawn(serve(stream, conn, ctx.clone()));
                table.insert(conn, (None, reader.abort_handle()));
            }
            Err(e) => {
                ctx.stats.add(&ctx.stats.accept_errors, 1);
                tracing::warn!(host = ctx.me, "accept failed, retrying in {backoff:?}: {e}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Removes a connection's entry when its reader ends, however it ends.
struct Entry {
    conn: u64,
    ctx: Arc<InboundCtx>,
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.ctx.conns.lock().remove(&self.conn);
    }
}

async fn serve(mut stream: TcpStream, conn: u64, ctx: Arc<InboundCtx>) {
    let _entry = Entry {
        conn,
        ctx: ctx.clone(),
    };
    let auth = tokio::time::timeout(
        ctx.limits.connect_timeout,
        listen_handshake(&mut stream, &ctx),
    );
    let hello = match auth.await {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => {
            tracing::warn!(host = ctx.me, "refused a connection: {e}");
            return;
        }
        Err(_) => {
            tracing::warn!(host = ctx.me, "refused a connection: handshake timed out");
            return;
        }
    };
    let peer = hello.dialer;
    // Pin the peer, and retire older connections from it: one reader per peer.
    let older: Vec<_> = {
        let mut table = ctx.conns.lock();
        if let Some(e) = table.get_mut(&conn) {
            e.0 = Some(peer);
        }
        table
            .iter()
            .filter(|(&c, (p, _))| c != conn && *p == Some(peer))
            .map(|(_, (_, r))| r.clone())
            .collect()
    };
    for r in older {
        r.abort();
    }
    let pr = ctx.peer(peer);
    let mut st = pr.state.clone().lock_owned().await;
    let discard = pr.discard.swap(false, Ordering::SeqCst);
    let resume = if st.epoch != Some(hello.dialer_epoch) {
        *st = RecvState {
            epoch: Some(hello.dialer_epoch),
            delivered: None,
        };
        Resume::Fresh
    } else if discard {
        Resume::Discard(st.delivered.take().unwrap_or(0))
    } else {
        st.delivered.map_or(Resume::Fresh, Resume::From)
    };
    let resume = resume.encode();
    let sent = tokio::time::timeout(ctx.limits.write_timeout, stream.write_all(&resume));
    if !matches!(sent.await, Ok(Ok(()))) {
        return;
    }
    if let Err(why) = read_loop(&mut stream, peer, &mut st, &ctx).await {
        // Counted before the stream closes, so whoever sees the close also sees the count.
        ctx.stats.add(&ctx.stats.rejected_connections, 1);
        tracing::warn!(host = ctx.me, peer, "closing connection: {why}");
    }
    drop(stream);
}

/// The listener's side of the handshake; returns the authenticated dialer's hello.
async fn listen_handshake(s: &mut TcpStream, ctx: &InboundCtx) -> Result<Hello, String> {
    let io = |e: std::io::Error| format!("handshake: {e}");
    let mut h = [0u8; HELLO_LEN];
    s.read_exact(&mut h).await.map_err(io)?;
    let hello = Hello::decode(&h, ctx.me, ctx.n_hosts).map_err(|e| e.to_string())?;
    let reply = Reply::new(&ctx.secret, &h, ctx.me, ctx.epoch);
    s.write_all(&reply.0).await.map_err(io)?;
    let mut p = [0u8; PROOF_LEN];
    s.read_exact(&mut p).await.map_err(io)?;
    if let Err(e) = verify_proof(&ctx.secret, &h, &reply, &p) {
        ctx.stats.add(&ctx.stats.auth_failures, 1);
        return Err(format!("claimed h{}: {e}", hello.dialer));
    }
    Ok(hello)
}

/// Delivers frames from `peer` in sequence order until the connection ends. `Ok` is a plain end of
/// the connection; `Err` a protocol violation by the peer.
async fn read_loop(
    stream: &mut TcpStream,
    peer: u32,
    st: &mut RecvState,
    ctx: &InboundCtx,
) -> Result<(), String> {
    let (rd, mut wr) = stream.split();
    // Buffered: many small frames cost one read syscall. An acknowledgement goes out whenever the
    // buffer runs dry, so acks are batched exactly as reads are.
    let mut rd = BufReader::with_capacity(64 * 1024, rd);
    let mut acked = st.delivered;
    loop {
        if rd.buffer().is_empty() && st.delivered != acked {
            let seq = st.delivered.expect("something delivered");
            let ack = Header::ack(ctx.me, seq).encode();
            match tokio::time::timeout(ctx.limits.write_timeout, wr.write_all(&ack)).await {
                Ok(Ok(())) => acked = st.delivered,
                _ => return Ok(()),
            }
        }
        let (h, payload) = match read_frame(&mut rd, |p| ctx.limits.frame_limit(p)).await {
            Ok(f) => f,
            Err(ReadError::Io(_)) => return Ok(()),
            Err(ReadError::Frame(e)) => return Err(e.to_string()),
        };
        if h.kind != Kind::Data {
            return Err(format!("unexpected {:?} frame", h.kind));
        }
        if h.from_host != peer {
            return Err(format!(
                "frame claims to come from h{} on a connection authenticated as h{peer}",
                h.from_host
            ));
        }
        match st.delivered {
            Some(d) if h.seq <= d => {
                ctx.stats.add(&ctx.stats.duplicates_dropped, 1);
                continue;
            }
            Some(d) if Some(h.seq) != d.checked_add(1) => {
                return Err(format!("sequence gap: expected {}, got {}", d + 1, h.seq));
            }
            _ => {}
        }
        let msg = Message {
            from: Addr::new(HostId(peer), h.from_port),
            payload,
        };
        ctx.ports.deliver(h.to_port, msg).await;
        st.delivered = Some(h.seq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fails its first `errors` accepts, as a listener out of file descriptors does.
    struct Flaky {
        inner: TcpListener,
        errors: u32,
    }

    impl Accept for Flaky {
        async fn accept(&mut self) -> std::io::Result<TcpStream> {
            if self.errors > 0 {
                self.errors -= 1;
                return Err(std::io::Error::other("too many open files (simulated)"));
            }
            TcpListener::accept(&self.inner).await.map(|(s, _)| s)
        }
    }

    #[tokio::test]
    async fn accept_errors_are_retried_not_fatal() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let stats = Arc::new(Stats::default());
        let ctx = InboundCtx::new(
            0,
            1,
            1,
            ClusterSecret::random(),
            Limits::default(),
            stats.clone(),
            Ports::new(Limits::default()),
        );
        let task = tokio::spawn(accept_loop(
            Flaky {
                inner: l,
                errors: 3,
            },
            ctx.clone(),
        ));
        let mut s = TcpStream::connect(addr).await.unwrap();
        // The listener answers a hello only if the accept loop survived its errors.
        s.write_all(&Hello::new(0, 0, 1).encode()).await.unwrap();
        let mut reply = [0u8; crate::handshake::REPLY_LEN];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut reply))
            .await
            .expect("no answer: the accept loop ended")
            .unwrap();
        assert_eq!(stats.snapshot().accept_errors, 3);
        task.abort();
    }
}
