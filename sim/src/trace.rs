//! The event trace of a simulated run. Events are formatted text with the virtual time in
//! nanoseconds first, so a divergence report can show both sides verbatim.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Default)]
pub struct Trace {
    events: Vec<String>,
}

impl Trace {
    pub fn record(&mut self, at: Duration, what: std::fmt::Arguments<'_>) {
        self.events.push(format!("{} {}", at.as_nanos(), what));
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    pub fn into_record(self) -> TraceRecord {
        TraceRecord::from_events(self.events)
    }
}

/// Most trace events kept verbatim in a record; beyond it only the digest and count grow.
pub const TRACE_EVENTS_KEPT: usize = 50_000;

/// The trace of one or more simulated runs: every event folded into a SHA-256 digest, and the first
/// [`TRACE_EVENTS_KEPT`] events kept verbatim so a replay can name where two runs diverge.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TraceRecord {
    pub digest: String,
    pub count: u64,
    pub events: Vec<String>,
}

impl Default for TraceRecord {
    fn default() -> Self {
        TraceRecord {
            digest: hex_sha256(b""),
            count: 0,
            events: Vec::new(),
        }
    }
}

impl TraceRecord {
    /// Builds a record from an ordered list of events.
    pub fn from_events<I: IntoIterator<Item = String>>(events: I) -> Self {
        let mut rec = TraceRecord::default();
        let mut hasher = Sha256::new();
        for e in events {
            hasher.update(e.as_bytes());
            hasher.update(b"\n");
            rec.count += 1;
            if rec.events.len() < TRACE_EVENTS_KEPT {
                rec.events.push(e);
            }
        }
        rec.digest = hex(&hasher.finalize());
        rec
    }

    /// Appends another run's trace (runs of a sweep, in order): digest = H(self.digest, other.digest).
    pub fn absorb(&mut self, other: TraceRecord) {
        let mut hasher = Sha256::new();
        hasher.update(self.digest.as_bytes());
        hasher.update(other.digest.as_bytes());
        self.digest = hex(&hasher.finalize());
        self.count += other.count;
        let room = TRACE_EVENTS_KEPT.saturating_sub(self.events.len());
        self.events.extend(other.events.into_iter().take(room));
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_sha256(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}
