//! Transport counters of one real host, for tests, the chaos figures and operators' logs.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default, Debug)]
pub(crate) struct Stats {
    pub reconnects: AtomicU64,
    pub retransmitted: AtomicU64,
    pub discarded_by_peer: AtomicU64,
    pub duplicates_dropped: AtomicU64,
    pub auth_failures: AtomicU64,
    pub rejected_connections: AtomicU64,
    pub accept_errors: AtomicU64,
}

/// A snapshot of [`crate::RealHost::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Outgoing connections opened again after an earlier one to the same peer was lost.
    pub reconnects: u64,
    /// Frames written again on a new connection because they were not acknowledged.
    pub retransmitted: u64,
    /// Accepted frames dropped because the peer `disconnect`ed this host (see the runtime docs).
    pub discarded_by_peer: u64,
    /// Incoming frames already delivered (a retransmission that crossed an acknowledgement).
    pub duplicates_dropped: u64,
    /// Handshakes that failed the HMAC check, either side.
    pub auth_failures: u64,
    /// Incoming connections closed for a protocol violation (bad frame, wrong source, gap).
    pub rejected_connections: u64,
    /// Errors of the listening socket's accept (retried with backoff).
    pub accept_errors: u64,
}

impl Stats {
    pub fn add(&self, c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> LinkStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        LinkStats {
            reconnects: g(&self.reconnects),
            retransmitted: g(&self.retransmitted),
            discarded_by_peer: g(&self.discarded_by_peer),
            duplicates_dropped: g(&self.duplicates_dropped),
            auth_failures: g(&self.auth_failures),
            rejected_connections: g(&self.rejected_connections),
            accept_errors: g(&self.accept_errors),
        }
    }
}
