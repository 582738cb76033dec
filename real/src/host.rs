//! A real host: a TCP listener on loopback (or any address), one outgoing connection per peer host,
//! and per-port mailboxes fed by a reader task per incoming connection.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gridbed_runtime::{Addr, BoxFuture, Host, HostId, Mailbox, Message, NetError};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::frame::{Header, HEADER_LEN};

type Ports = Arc<Mutex<BTreeMap<u16, mpsc::UnboundedSender<Message>>>>;
type Writer = Arc<tokio::sync::Mutex<BufWriter<OwnedWriteHalf>>>;

/// Incoming connections by number: the peer host (known after its first frame) and the reader task.
type Inbound = Arc<Mutex<BTreeMap<u64, (Option<u32>, tokio::task::AbortHandle)>>>;

pub struct RealHost {
    pub id: HostId,
    pub addrs: Arc<Vec<SocketAddr>>,
    pub epoch: Instant,
    pub rt: tokio::runtime::Handle,
    ports: Ports,
    /// Messages for ports not bound yet: kept until a bind (a peer may start first).
    parked: Arc<Mutex<BTreeMap<u16, Vec<Message>>>>,
    conns: Mutex<BTreeMap<u32, Writer>>,
    inbound: Inbound,
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
    /// Owned handle for futures started from `&self` trait methods.
    me: std::sync::Weak<RealHost>,
}

impl RealHost {
    /// Starts accepting peers on `listener`.
    pub fn start(
        id: HostId,
        listener: TcpListener,
        addrs: Arc<Vec<SocketAddr>>,
        epoch: Instant,
        rt: tokio::runtime::Handle,
    ) -> Arc<RealHost> {
        let host = Arc::new_cyclic(|me| RealHost {
            me: me.clone(),
            id,
            addrs,
            epoch,
            rt: rt.clone(),
            ports: Arc::default(),
            parked: Arc::default(),
            conns: Mutex::default(),
            inbound: Arc::default(),
            tasks: Mutex::default(),
        });
        let (ports, parked, inbound) = (
            host.ports.clone(),
            host.parked.clone(),
            host.inbound.clone(),
        );
        let accept = rt.spawn(async move {
            let mut next_conn = 0u64;
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                let conn = next_conn;
                next_conn += 1;
                // Registered under the lock so the reader cannot finish before its entry exists.
                let mut table = inbound.lock();
                let reader = tokio::spawn(read_frames(
                    stream,
                    ports.clone(),
                    parked.clone(),
                    Reader {
                        conn,
                        inbound: inbound.clone(),
                    },
                ));
                table.insert(conn, (None, reader.abort_handle()));
            }
        });
        host.tasks.lock().push(accept.abort_handle());
        host
    }

    /// Stops every task of this host (crash in real mode).
    pub fn stop(&self) {
        for t in self.tasks.lock().drain(..) {
            t.abort();
        }
        self.ports.lock().clear();
        self.conns.lock().clear();
        for (_, (_, reader)) in std::mem::take(&mut *self.inbound.lock()) {
            reader.abort();
        }
    }

    async fn connection(&self, to: HostId) -> Result<Writer, NetError> {
        if let Some(c) = self.conns.lock().get(&to.0) {
            return Ok(c.clone());
        }
        let sa = *self
            .addrs
            .get(to.0 as usize)
            .ok_or(NetError::Unreachable(Addr::new(to, 0)))?;
        let stream = TcpStream::connect(sa)
            .await
            .map_err(|e| NetError::Io(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let (_, w) = stream.into_split();
        let c = Arc::new(tokio::sync::Mutex::new(BufWriter::with_capacity(
            64 * 1024,
            w,
        )));
        // Two racing first sends may both connect; keep the first so order per pair is preserved.
        Ok(self.conns.lock().entry(to.0).or_insert(c).clone())
    }
}

/// A reader task's entry in the host's table of incoming connections.
struct Reader {
    conn: u64,
    inbound: Inbound,
}

impl Reader {
    /// Records which host this connection comes from (so `disconnect` can find it).
    fn learn_peer(&self, peer: u32) {
        if let Some(e) = self.inbound.lock().get_mut(&self.conn) {
            e.0 = Some(peer);
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.inbound.lock().remove(&self.conn);
    }
}

/// Reads frames from one peer connection until it closes or sends garbage.
async fn read_frames(
    stream: TcpStream,
    ports: Ports,
    parked: Arc<Mutex<BTreeMap<u16, Vec<Message>>>>,
    reader: Reader,
) {
    let mut peer = None;
    // Buffered: a small message costs one read syscall for many frames, not two per frame; large
    // payloads bypass the buffer.
    let mut stream = BufReader::with_capacity(64 * 1024, stream);
    let mut hdr = [0u8; HEADER_LEN];
    loop {
        if stream.read_exact(&mut hdr).await.is_err() {
            return;
        }
        let h = match Header::decode(&hdr) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!("closing connection: {e}");
                return;
            }
        };
        if peer != Some(h.from_host) {
            peer = Some(h.from_host);
            reader.learn_peer(h.from_host);
        }
        // Reading into spare capacity skips zero-filling the buffer (40 ms per GB).
        let len = h.len as usize;
        let mut payload = Vec::with_capacity(len);
        match (&mut stream)
            .take(len as u64)
            .read_to_end(&mut payload)
            .await
        {
            Ok(n) if n == len => {}
            _ => return,
        }
        let msg = Message {
            from: Addr::new(HostId(h.from_host), h.from_port),
            payload,
        };
        let tx = ports.lock().get(&h.to_port).cloned();
        match tx {
            Some(tx) => {
                let _ = tx.send(msg);
            }
            None => parked.lock().entry(h.to_port).or_default().push(msg),
        }
    }
}

struct RealMailbox {
    addr: Addr,
    rx: mpsc::UnboundedReceiver<Message>,
    ports: Ports,
}

impl Mailbox for RealMailbox {
    fn addr(&self) -> Addr {
        self.addr
    }
    fn recv(&mut self) -> BoxFuture<'_, Result<Message, NetError>> {
        Box::pin(async move { self.rx.recv().await.ok_or(NetError::Closed) })
    }
    fn try_recv(&mut self) -> Option<Message> {
        self.rx.try_recv().ok()
    }
}

impl Drop for RealMailbox {
    fn drop(&mut self) {
        self.ports.lock().remove(&self.addr.port);
    }
}

impl Host for RealHost {
    fn id(&self) -> HostId {
        self.id
    }
    fn name(&self) -> String {
        format!("h{}@{}", self.id.0, self.addrs[self.id.0 as usize])
    }
    fn hosts(&self) -> Vec<HostId> {
        (0..self.addrs.len() as u32).map(HostId).collect()
    }
    fn can_reach(&self, other: HostId) -> bool {
        (other.0 as usize) < self.addrs.len()
    }
    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }
    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(d))
    }
    fn rng_u64(&self) -> u64 {
        rand::random()
    }
    fn compute(&self, _cycles: u64) -> BoxFuture<'static, ()> {
        // Real work has already been done by the caller. Still a cooperative point, so a loop of
        // compute() calls cannot starve the other tasks, but it yields only once the task has used
        // its scheduling budget: a yield polls the sockets (an `epoll_wait`), which after every
        // small piece of work cost the ray tracer ~10 % of its CPU.
        Box::pin(tokio::task::consume_budget())
    }
    fn cpu_hz(&self) -> f64 {
        // Nominal: real-mode timing comes from the wall clock, not from this figure.
        1e9
    }
    fn spawn(&self, _name: &str, task: BoxFuture<'static, ()>) {
        let h = self.rt.spawn(task);
        self.tasks.lock().push(h.abort_handle());
    }
    fn bind(&self, port: u16) -> Result<Box<dyn Mailbox>, NetError> {
        let mut ports = self.ports.lock();
        if ports.contains_key(&port) {
            return Err(NetError::PortInUse(port));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        for m in self.parked.lock().remove(&port).unwrap_or_default() {
            let _ = tx.send(m);
        }
        ports.insert(port, tx);
        Ok(Box::new(RealMailbox {
            addr: Addr::new(self.id, port),
            rx,
            ports: self.ports.clone(),
        }))
    }
    fn send(
        &self,
        from_port: u16,
        to: Addr,
        payload: Vec<u8>,
    ) -> BoxFuture<'static, Result<(), NetError>> {
        let this = SendCtx {
            host: self.me.upgrade().expect("host is alive while borrowed"),
            from_port,
        };
        Box::pin(async move {
            if payload.len() > crate::frame::MAX_PAYLOAD {
                return Err(NetError::TooLarge {
                    size: payload.len(),
                    limit: crate::frame::MAX_PAYLOAD,
                });
            }
            let conn = this.host.connection(to.host).await?;
            let hdr = Header {
                from_port: this.from_port,
                to_port: to.port,
                from_host: this.host.id.0,
                len: payload.len() as u32,
            };
            let mut w = conn.lock().await;
            let io = async {
                w.write_all(&hdr.encode()).await?;
                w.write_all(&payload).await?;
                w.flush().await
            };
            let result = io.await.map_err(|e| NetError::Io(e.to_string()));
            if result.is_err() {
                // A broken connection (the peer closed it) is dropped; the next send reconnects.
                this.host.forget_connection(to.host, &conn);
            }
            result
        })
    }
    fn disconnect(&self, peer: HostId) {
        if let Some(w) = self.conns.lock().remove(&peer.0) {
            // Shut the write side down in the background: the peer's reader sees end of stream.
            self.rt.spawn(async move {
                let _ = w.lock().await.get_mut().shutdown().await;
            });
        }
        // Aborted outside the lock: a reader's clean-up takes the same lock.
        let readers: Vec<_> = self
            .inbound
            .lock()
            .values()
            .filter(|(from, _)| *from == Some(peer.0))
            .map(|(_, reader)| reader.clone())
            .collect();
        for r in readers {
            r.abort();
        }
        tracing::warn!(host = self.id.0, peer = peer.0, "connection closed");
    }
    fn event(&self, what: &str) {
        tracing::debug!(host = self.id.0, "{what}");
    }
}

impl RealHost {
    /// Removes `conn` from the outgoing connections if it is still the one used for `to`.
    fn forget_connection(&self, to: HostId, conn: &Writer) {
        let mut conns = self.conns.lock();
        if conns.get(&to.0).is_some_and(|c| Arc::ptr_eq(c, conn)) {
            conns.remove(&to.0);
        }
    }
}

struct SendCtx {
    host: Arc<RealHost>,
    from_port: u16,
}
