//! Message transport: per-message cost from the transport model, FIFO occupancy of the resources on
//! the path, per-pair ordering, faults.
//!
//! Sharing is FIFO per resource at message granularity (each host's send and receive stack, each
//! LAN's uplink and downlink), not flow-level max-min: it costs O(path length) per message, which
//! keeps 1000-host runs fast, and it is what a NIC queue does. Its limitation: a bulk transfer delays
//! a later small message on the same resource by its whole length (no packet interleaving).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::task::Waker;
use std::time::Duration;

use gridbed_runtime::{Addr, HostId, Message};

use crate::platform::{HostSpec, Platform};
use crate::transport::Cost;

/// A message on its way, ordered by (arrival time, send sequence).
pub struct InFlight {
    pub arrival: Duration,
    pub seq: u64,
    pub from: Addr,
    pub payload: Vec<u8>,
}

impl PartialEq for InFlight {
    fn eq(&self, o: &Self) -> bool {
        (self.arrival, self.seq) == (o.arrival, o.seq)
    }
}
impl Eq for InFlight {}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for InFlight {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.arrival, self.seq).cmp(&(o.arrival, o.seq))
    }
}

/// One port's queue.
#[derive(Default)]
pub struct Port {
    pub bound: bool,
    pub queue: BinaryHeap<Reverse<InFlight>>,
    pub waker: Option<Waker>,
}

/// What a send decided.
pub enum SendOutcome {
    /// Queued for delivery; the sender's buffer is free at `sender_free`.
    Queued {
        sender_free: Duration,
        arrival: Duration,
    },
    /// Dropped by a fault; the sender still spent its time.
    Dropped {
        sender_free: Duration,
        why: &'static str,
    },
}

pub struct Network {
    lan_costs: Vec<Cost>,
    uplink_s_per_byte: f64,
    backbone_latency: Duration,
    tx_free: Vec<Duration>,
    rx_free: Vec<Duration>,
    up_free: Vec<Duration>,
    down_free: Vec<Duration>,
    pub ports: Vec<BTreeMap<u16, Port>>,
    pub partitions: BTreeSet<(usize, usize)>,
    seq: u64,
    pub delivered: u64,
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

impl Network {
    pub fn new(platform: &Platform, hosts: usize) -> Self {
        let lans = platform.lans.len();
        Network {
            lan_costs: (0..lans).map(|l| platform.transport_of(l).cost()).collect(),
            uplink_s_per_byte: 8.0 / (platform.backbone.uplink_mbit_s * 1e6),
            backbone_latency: secs(platform.backbone.latency_us * 1e-6),
            tx_free: vec![Duration::ZERO; hosts],
            rx_free: vec![Duration::ZERO; hosts],
            up_free: vec![Duration::ZERO; lans],
            down_free: vec![Duration::ZERO; lans],
            ports: (0..hosts).map(|_| BTreeMap::new()).collect(),
            partitions: BTreeSet::new(),
            seq: 0,
            delivered: 0,
        }
    }

    pub fn partitioned(&self, a: usize, b: usize) -> bool {
        a != b && self.partitions.contains(&(a.min(b), a.max(b)))
    }

    /// Schedules a message; `dst_alive` and `lost` are decided by the caller (faults).
    #[allow(clippy::too_many_arguments)]
    pub fn send(
        &mut self,
        specs: &[HostSpec],
        now: Duration,
        from: Addr,
        to: Addr,
        payload: Vec<u8>,
        dst_alive: bool,
        lost: bool,
    ) -> SendOutcome {
        let (src, dst) = (from.host.0 as usize, to.host.0 as usize);
        let (sl, dl) = (specs[src].lan, specs[dst].lan);
        let bytes = payload.len() as f64;
        let (alpha, beta, cross) = if sl == dl {
            let c = &self.lan_costs[sl];
            (c.alpha_s, c.beta_s, false)
        } else {
            let (a, b) = (&self.lan_costs[sl], &self.lan_costs[dl]);
            let beta = a.beta_s.max(b.beta_s).max(self.uplink_s_per_byte);
            (
                a.alpha_s.max(b.alpha_s) + self.backbone_latency.as_secs_f64(),
                beta,
                true,
            )
        };
        let mut start = now.max(self.tx_free[src]).max(self.rx_free[dst]);
        if cross {
            start = start.max(self.up_free[sl]).max(self.down_free[dl]);
        }
        let busy = secs(bytes * beta);
        self.tx_free[src] = start + busy;
        self.rx_free[dst] = start + busy;
        if cross {
            let link = secs(bytes * self.uplink_s_per_byte);
            self.up_free[sl] = start + link;
            self.down_free[dl] = start + link;
        }
        let sender_free = start + busy;
        let why = if !dst_alive {
            Some("host-down")
        } else if self.partitioned(sl, dl) {
            Some("partition")
        } else if lost {
            Some("loss")
        } else {
            None
        };
        if let Some(why) = why {
            return SendOutcome::Dropped { sender_free, why };
        }
        // FIFO per host pair holds without bookkeeping: a sender's next transfer starts no earlier
        // than this one ends (tx_free), and alpha is fixed per LAN pair, so arrivals never decrease;
        // equal arrivals are ordered by `seq`.
        let arrival = start + secs(alpha) + busy;
        self.seq += 1;
        let port = self.ports[dst].entry(to.port).or_default();
        let becomes_head = port
            .queue
            .peek()
            .is_none_or(|Reverse(h)| arrival < h.arrival);
        port.queue.push(Reverse(InFlight {
            arrival,
            seq: self.seq,
            from,
            payload,
        }));
        if becomes_head {
            if let Some(w) = port.waker.take() {
                w.wake();
            }
        }
        SendOutcome::Queued {
            sender_free,
            arrival,
        }
    }

    /// Drops every queue of a crashed host.
    pub fn reset_host(&mut self, h: HostId) {
        for (_, port) in std::mem::take(&mut self.ports[h.0 as usize]) {
            if let Some(w) = port.waker {
                w.wake();
            }
        }
    }
}

/// What a receive found.
pub enum Pop {
    Msg(Message),
    /// Dropped at delivery (partition began while in flight); look again.
    Dropped(Addr),
    /// Nothing ready; the head arrives at this time (None = queue empty).
    Wait(Option<Duration>),
}

impl Network {
    /// Discards every message from `peer` to any port of `host` that is still on its way at `now`
    /// (what a closed connection loses). Returns how many were discarded.
    pub fn discard_in_flight(&mut self, host: HostId, peer: HostId, now: Duration) -> usize {
        let mut discarded = 0;
        for p in self.ports[host.0 as usize].values_mut() {
            let before = p.queue.len();
            p.queue
                .retain(|Reverse(m)| m.from.host != peer || m.arrival <= now);
            discarded += before - p.queue.len();
        }
        discarded
    }

    pub fn pop(
        &mut self,
        specs: &[HostSpec],
        host: HostId,
        port: u16,
        now: Duration,
        waker: &Waker,
    ) -> Pop {
        let partitions_active = !self.partitions.is_empty();
        let Some(p) = self.ports[host.0 as usize].get_mut(&port) else {
            return Pop::Wait(None);
        };
        match p.queue.peek() {
            Some(Reverse(head)) if head.arrival <= now => {
                let Reverse(m) = p.queue.pop().expect("peeked");
                if partitions_active {
                    let (a, b) = (
                        specs[m.from.host.0 as usize].lan,
                        specs[host.0 as usize].lan,
                    );
                    if a != b && self.partitions.contains(&(a.min(b), a.max(b))) {
                        return Pop::Dropped(m.from);
                    }
                }
                self.delivered += 1;
                Pop::Msg(Message {
                    from: m.from,
                    payload: m.payload,
                })
            }
            Some(Reverse(head)) => {
                let t = head.arrival;
                p.waker = Some(waker.clone());
                Pop::Wait(Some(t))
            }
            None => {
                p.waker = Some(waker.clone());
                Pop::Wait(None)
            }
        }
    }
}
