//! A host's ports: bounded per-port queues, bound or not, all under one lock.
//!
//! A message for a port nobody has bound yet is parked in that port's queue, and `bind` adopts the
//! queue: looking the port up, parking and binding happen under the same lock, so a message can
//! never be stranded between a reader's lookup and a concurrent bind. Full queues push back: the
//! delivering connection waits for room instead of the queue growing.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use gridbed_runtime::{Addr, BoxFuture, HostId, Mailbox, Message, NetError};
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::limits::{admits, Limits};

#[derive(Default)]
struct Port {
    bound: bool,
    msgs: VecDeque<Message>,
    bytes: usize,
    readable: Arc<Notify>,
}

#[derive(Default)]
struct Table {
    ports: BTreeMap<u16, Port>,
    parked_frames: usize,
    parked_bytes: usize,
    /// Bumped when the host stops: mailboxes of an earlier generation are closed.
    generation: u64,
}

pub(crate) struct Ports {
    table: Mutex<Table>,
    /// Woken whenever room appears anywhere (a receive, a bind, a mailbox dropped, a stop).
    room: Notify,
    limits: Limits,
}

impl Ports {
    pub fn new(limits: Limits) -> Arc<Ports> {
        Arc::new(Ports {
            table: Mutex::default(),
            room: Notify::new(),
            limits,
        })
    }

    /// Queues `msg` for `port`, waiting while that queue (or the host's parked total) is full.
    pub async fn deliver(&self, port: u16, msg: Message) {
        let len = msg.payload.len();
        let mut msg = Some(msg);
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            {
                let mut t = self.table.lock();
                let t = &mut *t;
                let l = &self.limits;
                let p = t.ports.entry(port).or_default();
                let fits = if p.bound {
                    admits(
                        p.msgs.len(),
                        p.bytes,
                        len,
                        l.mailbox_frames,
                        l.mailbox_bytes,
                    )
                } else {
                    admits(
                        t.parked_frames,
                        t.parked_bytes,
                        len,
                        l.parked_frames,
                        l.parked_bytes,
                    )
                };
                if fits {
                    if !p.bound {
                        t.parked_frames += 1;
                        t.parked_bytes += len;
                    }
                    p.msgs.push_back(msg.take().expect("delivered once"));
                    p.bytes += len;
                    p.readable.notify_one();
                    return;
                }
            }
            room.await;
        }
    }

    pub fn bind(self: &Arc<Self>, host: HostId, port: u16) -> Result<Box<dyn Mailbox>, NetError> {
        let mut t = self.table.lock();
        let t = &mut *t;
        let p = t.ports.entry(port).or_default();
        if p.bound {
            return Err(NetError::PortInUse(port));
        }
        p.bound = true;
        t.parked_frames -= p.msgs.len();
        t.parked_bytes -= p.bytes;
        let mb = RealMailbox {
            addr: Addr::new(host, port),
            ports: self.clone(),
            generation: t.generation,
            readable: p.readable.clone(),
        };
        self.room.notify_waiters();
        Ok(Box::new(mb))
    }

    /// Closes every port and drops every queued message (the host crashed).
    pub fn clear(&self) {
        let mut t = self.table.lock();
        t.generation += 1;
        for (_, p) in std::mem::take(&mut t.ports) {
            p.readable.notify_waiters();
            p.readable.notify_one();
        }
        t.parked_frames = 0;
        t.parked_bytes = 0;
        self.room.notify_waiters();
    }

    /// Messages parked for unbound ports (count).
    pub fn parked(&self) -> usize {
        self.table.lock().parked_frames
    }

    fn pop(&self, port: u16, generation: u64) -> Result<Option<Message>, NetError> {
        let mut t = self.table.lock();
        if t.generation != generation {
            return Err(NetError::Closed);
        }
        let Some(p) = t.ports.get_mut(&port) else {
            return Err(NetError::Closed);
        };
        let m = p.msgs.pop_front();
        if let Some(m) = &m {
            p.bytes -= m.payload.len();
            self.room.notify_waiters();
        }
        Ok(m)
    }
}

struct RealMailbox {
    addr: Addr,
    ports: Arc<Ports>,
    generation: u64,
    readable: Arc<Notify>,
}

impl Mailbox for RealMailbox {
    fn addr(&self) -> Addr {
        self.addr
    }
    fn recv(&mut self) -> BoxFuture<'_, Result<Message, NetError>> {
        Box::pin(async move {
            loop {
                let readable = self.readable.clone();
                let ready = readable.notified();
                tokio::pin!(ready);
                ready.as_mut().enable();
                if let Some(m) = self.ports.pop(self.addr.port, self.generation)? {
                    return Ok(m);
                }
                ready.await;
            }
        })
    }
    fn try_recv(&mut self) -> Option<Message> {
        self.ports
            .pop(self.addr.port, self.generation)
            .ok()
            .flatten()
    }
}

impl Drop for RealMailbox {
    fn drop(&mut self) {
        let mut t = self.ports.table.lock();
        if t.generation == self.generation {
            // Queued messages go with the mailbox; later ones park until the next bind.
            t.ports.remove(&self.addr.port);
        }
        self.ports.room.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn msg(n: u8) -> Message {
        Message {
            from: Addr::new(HostId(0), 1),
            payload: vec![n; 10],
        }
    }

    /// Readers delivering to a port while another task binds it: nothing is stranded in the parked
    /// queue once the bind returns, whatever the interleaving.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bind_racing_deliveries_strands_nothing() {
        for round in 0..200u16 {
            let ports = Ports::new(Limits::default());
            let port = round;
            let p2 = ports.clone();
            let writer = tokio::spawn(async move {
                for i in 0..50u8 {
                    p2.deliver(port, msg(i)).await;
                    if i % 8 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            });
            tokio::task::yield_now().await;
            let mut mb = ports.bind(HostId(1), port).unwrap();
            writer.await.unwrap();
            let mut got = Vec::new();
            while let Some(m) = mb.try_recv() {
                got.push(m.payload[0]);
            }
            assert_eq!(got, (0..50).collect::<Vec<_>>(), "round {round}");
            assert_eq!(ports.parked(), 0);
        }
    }

    #[tokio::test]
    async fn a_full_mailbox_pushes_back_until_received() {
        let limits = Limits {
            mailbox_frames: 2,
            ..Limits::default()
        };
        let ports = Ports::new(limits);
        let mut mb = ports.bind(HostId(1), 3).unwrap();
        ports.deliver(3, msg(0)).await;
        ports.deliver(3, msg(1)).await;
        let third = tokio::time::timeout(Duration::from_millis(50), ports.deliver(3, msg(2))).await;
        assert!(third.is_err(), "a third message fitted a 2-message mailbox");
        assert_eq!(mb.recv().await.unwrap().payload[0], 0);
        tokio::time::timeout(Duration::from_secs(1), ports.deliver(3, msg(2)))
            .await
            .expect("room after a receive");
        assert_eq!(mb.recv().await.unwrap().payload[0], 1);
        assert_eq!(mb.recv().await.unwrap().payload[0], 2);
    }

    #[tokio::test]
    async fn parked_messages_are_bounded_host_wide() {
        let limits = Limits {
            parked_frames: 3,
            ..Limits::default()
        };
        let ports = Ports::new(limits);
        for p in 0..3 {
            ports.deliver(p, msg(p as u8)).await;
        }
        let fourth =
            tokio::time::timeout(Duration::from_millis(50), ports.deliver(9, msg(9))).await;
        assert!(fourth.is_err(), "parked beyond the host-wide bound");
        let _mb = ports.bind(HostId(1), 0).unwrap();
        tokio::time::timeout(Duration::from_secs(1), ports.deliver(9, msg(9)))
            .await
            .expect("room after a bind adopted a parked queue");
    }

    #[tokio::test]
    async fn clear_closes_mailboxes() {
        let ports = Ports::new(Limits::default());
        let mut mb = ports.bind(HostId(1), 3).unwrap();
        ports.clear();
        assert_eq!(mb.recv().await, Err(NetError::Closed));
    }
}
