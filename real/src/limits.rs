//! The bounds that keep one real host's memory and waiting time finite whatever its peers do.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::frame::MAX_PAYLOAD;

/// Transport bounds of a real host. Every host of a cluster should use the same values: a sender
/// refuses (`TooLarge`) what the receiver's frame limit would reject.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest message payload, for every port without an entry in `port_max_frame`.
    pub max_frame: usize,
    /// Per-port payload limits (checked from the header, before the payload is buffered).
    pub port_max_frame: BTreeMap<u16, usize>,
    /// Accepted but unacknowledged messages per peer link, by count and by payload bytes; a send
    /// that finds the link full waits for acknowledgements (back-pressure).
    pub outbox_frames: usize,
    pub outbox_bytes: usize,
    /// How long a send waits for room in a full link before it fails (peer stalled or down).
    pub send_timeout: Duration,
    /// Queued messages per bound port, by count and bytes; when full, the connection delivering to
    /// it stops reading (head-of-line: other ports fed by the same peer wait too).
    pub mailbox_frames: usize,
    pub mailbox_bytes: usize,
    /// Messages held for ports not bound yet, summed over all ports of the host.
    pub parked_frames: usize,
    pub parked_bytes: usize,
    /// Connecting plus the handshake must finish within this time.
    pub connect_timeout: Duration,
    /// A write (a batch of frames, or an acknowledgement) must finish within this time; a peer
    /// that stops reading for longer loses the connection (and gets a retransmission later).
    pub write_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        // Sizes chosen here (not from a source document): large enough for the 40 MB transfer
        // bench and Phoenix's ray-tracer tiles, small enough that a few stalled peers cost a few
        // hundred MiB at most.
        Limits {
            max_frame: 256 << 20,
            port_max_frame: BTreeMap::new(),
            outbox_frames: 16_384,
            outbox_bytes: 64 << 20,
            send_timeout: Duration::from_secs(30),
            mailbox_frames: 65_536,
            mailbox_bytes: 256 << 20,
            parked_frames: 16_384,
            parked_bytes: 64 << 20,
            connect_timeout: Duration::from_secs(3),
            write_timeout: Duration::from_secs(10),
        }
    }
}

impl Limits {
    /// The largest payload accepted for `port`.
    pub fn frame_limit(&self, port: u16) -> usize {
        self.port_max_frame
            .get(&port)
            .copied()
            .unwrap_or(self.max_frame)
            .min(MAX_PAYLOAD)
    }
}

/// Whether a queue holding `frames` messages of `bytes` bytes takes one more of `len` bytes. An
/// empty queue takes any message the frame limit allowed, so a single large message always fits.
pub(crate) fn admits(
    frames: usize,
    bytes: usize,
    len: usize,
    max_frames: usize,
    max_bytes: usize,
) -> bool {
    frames == 0 || (frames < max_frames && bytes.saturating_add(len) <= max_bytes)
}
