//! The wire protocol between a parent daemon and a child daemon.
//!
//! A child talks only over the stdin/stdout of the login command that started it (GXP's design: no
//! listening port anywhere), so everything is a stream of frames: `[u32 little-endian length][postcard
//! body]`. Every body carries the protocol version; frames are length-checked before decoding because
//! the bytes come from another machine. In simulation one runtime message carries one body.

use serde::{Deserialize, Serialize};

/// Bumped on any incompatible change of `Frame`; a peer with another version is refused.
pub const PROTOCOL_VERSION: u16 = 2;
/// Largest frame accepted. Outputs are chunked well below this (see [`OUTPUT_CHUNK`]); the limit
/// only protects a daemon from a hostile or corrupt length prefix.
pub const MAX_FRAME_BYTES: usize = 16 << 20;
/// Outputs and stdin travel in chunks of at most this many bytes so one busy host cannot hog a link.
pub const OUTPUT_CHUNK: usize = 64 << 10;

/// Which output stream a chunk comes from.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// How a command ended on one host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// Exit code of the command (0 = success).
    Code(i32),
    /// Killed by a signal (real mode).
    Signal(i32),
    /// The command could not be started (bad syntax, unknown command, spawn failure).
    Failed(String),
    /// The host (or a daemon between it and the root) was lost before the command ended.
    Lost,
}

impl Status {
    pub fn success(&self) -> bool {
        matches!(self, Status::Code(0))
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Status::Code(c) => write!(f, "exit {c}"),
            Status::Signal(s) => write!(f, "signal {s}"),
            Status::Failed(e) => write!(f, "failed: {e}"),
            Status::Lost => f.write_str("host lost"),
        }
    }
}

/// Which hosts run a broadcast command: all, or a set of host indices (a bitmap keeps the order
/// small at 10,000 hosts: 1.25 KB).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Selection {
    All,
    Indices(#[serde(with = "serde_bytes")] Vec<u8>),
}

impl Selection {
    pub fn from_indices<I: IntoIterator<Item = u32>>(idx: I) -> Self {
        let mut bits: Vec<u8> = Vec::new();
        for i in idx {
            let byte = (i / 8) as usize;
            if bits.len() <= byte {
                bits.resize(byte + 1, 0);
            }
            bits[byte] |= 1 << (i % 8);
        }
        Selection::Indices(bits)
    }

    pub fn contains(&self, i: u32) -> bool {
        match self {
            Selection::All => true,
            Selection::Indices(bits) => bits
                .get((i / 8) as usize)
                .is_some_and(|b| b & (1 << (i % 8)) != 0),
        }
    }

    /// Number of selected indices below `i` (the host's `GXP_EXEC_IDX`); `None` for `All`.
    pub fn rank(&self, i: u32) -> Option<u32> {
        match self {
            Selection::All => None,
            Selection::Indices(bits) => {
                let full = (i / 8) as usize;
                let mut n: u32 = bits.iter().take(full).map(|b| b.count_ones()).sum();
                if let Some(b) = bits.get(full) {
                    n += (b & ((1u16 << (i % 8)) - 1) as u8).count_ones();
                }
                Some(n)
            }
        }
    }
}

/// A command to run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecSpec {
    /// Unique per controller; outputs and stdin name it.
    pub exec: u64,
    /// The shell command line.
    pub cmd: String,
    /// Working directory (None: the daemon's).
    pub cwd: Option<String>,
    pub selection: Selection,
    /// `GXP_NUM_EXECS`.
    pub num_execs: u32,
    /// `GXP_EXEC_IDX` for a command sent to one host (task farm); broadcast commands compute it.
    pub exec_idx: Option<u32>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// Whether stdin data follows (then `StdinEof`); false: the command's stdin is empty.
    pub stdin_open: bool,
    /// Output flow control: a host stops reading the command's stdout while this many bytes are
    /// unacknowledged ([`Order::OutputAck`]). None: unlimited (`e`, whose output the controller
    /// takes at once); network pipes set it so a slow or closed consumer holds the hosts back.
    pub output_window: Option<u64>,
}

/// How a daemon logs into a new host. Resolved at the root from the login rules, so children need
/// no configuration of their own (multi-hop logins carry their method with them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginMethod {
    /// Rule method name: `ssh`, `local`, or a custom one.
    pub name: String,
    /// Command prefix in real mode; the bootstrap script is appended as the last argument
    /// (`{host}` is replaced by the target).
    pub argv: Vec<String>,
    /// Environment for the login command (local launcher: the fake host's name and home).
    pub env: Vec<(String, String)>,
}

/// What the controller asks of a daemon.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Order {
    /// Log into `target` and make it child number `child` with host index `index`.
    Login {
        child: u32,
        index: u32,
        target: String,
        method: LoginMethod,
    },
    Exec(ExecSpec),
    Stdin {
        exec: u64,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    StdinEof {
        exec: u64,
    },
    /// `bytes` of the command's stdout were consumed by the controller (see `output_window`).
    OutputAck {
        exec: u64,
        bytes: u64,
    },
    Kill {
        exec: u64,
    },
    /// Stop the whole subtree.
    Quit,
}

/// Parent → child.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Down {
    /// For the daemon at `path` below the receiver (empty: the receiver itself).
    To { path: Vec<u32>, order: Order },
    /// For the receiver and every descendant.
    All { order: Order },
}

/// What a daemon reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// Sent by the parent that tried the login: `Ok(host name the child reported)` or the error.
    LoginDone {
        child: u32,
        index: u32,
        target: String,
        outcome: Result<String, String>,
    },
    Output {
        exec: u64,
        stream: Stream,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    Exited {
        exec: u64,
        status: Status,
    },
    /// `bytes` more of the command's stdin were consumed (written to it, or dropped because it
    /// closed its stdin): the controller's flow-control credit for that host.
    StdinAck {
        exec: u64,
        bytes: u64,
    },
    /// The link to child `child` broke (daemon died, host crashed, ssh exited).
    ChildLost {
        child: u32,
    },
}

/// Child → parent. `route` is filled by the parents on the way up (each prepends the index of the
/// link it arrived on), never by the sender: a host cannot make its output appear as another's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Up {
    pub route: Vec<u32>,
    pub event: Event,
}

/// Everything that crosses a parent–child link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// First frame a new daemon sends: its host name and build.
    Hello {
        name: String,
        version: String,
    },
    Down(Down),
    Up(Up),
    /// Keepalive (ssh's ServerAliveInterval at the application level).
    Ping,
    Pong,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Frame {
    version: u16,
    body: Body,
}

/// [`Frame`] by reference: encoding does not copy the body (outputs are up to 64 KiB each).
#[derive(Serialize)]
struct FrameRef<'a> {
    version: u16,
    body: &'a Body,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtoError {
    #[error("frame of {0} bytes exceeds the limit of {MAX_FRAME_BYTES} bytes")]
    TooLarge(usize),
    #[error("peer speaks protocol version {0}, this daemon speaks {PROTOCOL_VERSION}")]
    Version(u16),
    #[error("malformed frame: {0}")]
    Malformed(String),
}

/// Encodes a body (without the stream length prefix), or refuses one the peer would reject
/// (larger than [`MAX_FRAME_BYTES`]).
pub fn try_encode(body: &Body) -> Result<Vec<u8>, ProtoError> {
    let b = postcard::to_allocvec(&FrameRef {
        version: PROTOCOL_VERSION,
        body,
    })
    .map_err(|e| ProtoError::Malformed(e.to_string()))?;
    if b.len() > MAX_FRAME_BYTES {
        return Err(ProtoError::TooLarge(b.len()));
    }
    Ok(b)
}

/// Encodes a body the daemons build themselves (outputs and stdin are chunked at
/// [`OUTPUT_CHUNK`], names and command lines are short), so it is within [`MAX_FRAME_BYTES`].
/// An oversized body becomes an empty vector, which every peer rejects as malformed, rather than a
/// frame whose length prefix lies; use [`try_encode`] for bodies of unbounded size.
pub fn encode(body: &Body) -> Vec<u8> {
    try_encode(body).unwrap_or_default()
}

/// Decodes one body, checking size and version, and that nothing follows it.
pub fn decode(bytes: &[u8]) -> Result<Body, ProtoError> {
    if bytes.len() > MAX_FRAME_BYTES {
        return Err(ProtoError::TooLarge(bytes.len()));
    }
    // The version is the first field: read it alone first so a newer peer gets a version error,
    // not a confusing decode error.
    let (version, _) = postcard::take_from_bytes::<u16>(bytes)
        .map_err(|e| ProtoError::Malformed(e.to_string()))?;
    if version != PROTOCOL_VERSION {
        return Err(ProtoError::Version(version));
    }
    let (frame, rest) = postcard::take_from_bytes::<Frame>(bytes)
        .map_err(|e| ProtoError::Malformed(e.to_string()))?;
    // Bytes after the body mean the peer and this daemon disagree on the format: refuse them
    // rather than act on a frame that may have been parsed differently than it was meant.
    if !rest.is_empty() {
        return Err(ProtoError::Malformed(format!(
            "{} trailing bytes after the body",
            rest.len()
        )));
    }
    Ok(frame.body)
}

/// Encodes a body with its stream length prefix, or refuses one the peer would reject.
pub fn try_encode_framed(body: &Body) -> Result<Vec<u8>, ProtoError> {
    let b = try_encode(body)?;
    let mut out = Vec::with_capacity(b.len() + 4);
    // Cannot truncate: `try_encode` bounds the length by MAX_FRAME_BYTES.
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(&b);
    Ok(out)
}

/// Encodes a body with its stream length prefix (see [`encode`] for the size precondition; an
/// oversized body becomes a zero-length frame, which the peer rejects as malformed).
pub fn encode_framed(body: &Body) -> Vec<u8> {
    try_encode_framed(body).unwrap_or_else(|_| 0u32.to_le_bytes().to_vec())
}

/// Splits a byte stream into frames (sans-IO: feed bytes, take bodies).
#[derive(Default)]
pub struct FrameReader {
    buf: Vec<u8>,
}

impl FrameReader {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed.
    pub fn next_body(&mut self) -> Result<Option<Body>, ProtoError> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_le_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len > MAX_FRAME_BYTES {
            return Err(ProtoError::TooLarge(len));
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let body = decode(&self.buf[4..4 + len]);
        self.buf.drain(..4 + len);
        body.map(Some)
    }

    /// Bytes buffered but not yet part of a complete frame.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_through_stream_in_pieces() {
        let bodies = vec![
            Body::Hello {
                name: "h1".into(),
                version: "x".into(),
            },
            Body::Up(Up {
                route: vec![1, 2],
                event: Event::Output {
                    exec: 3,
                    stream: Stream::Stdout,
                    data: b"hello\n".to_vec(),
                },
            }),
            Body::Down(Down::All {
                order: Order::StdinEof { exec: 9 },
            }),
        ];
        let mut stream = Vec::new();
        for b in &bodies {
            stream.extend(encode_framed(b));
        }
        let mut r = FrameReader::default();
        let mut got = Vec::new();
        for chunk in stream.chunks(3) {
            r.push(chunk);
            while let Some(b) = r.next_body().unwrap() {
                got.push(b);
            }
        }
        assert_eq!(got, bodies);
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn rejects_other_version_and_garbage_and_huge_length() {
        let mut bytes = encode(&Body::Ping);
        bytes[0] = 7; // version varint 1 -> 7
        assert_eq!(decode(&bytes), Err(ProtoError::Version(7)));
        assert!(matches!(
            decode(&[PROTOCOL_VERSION as u8, 0xff, 0xff]),
            Err(ProtoError::Malformed(_))
        ));
        let mut r = FrameReader::default();
        r.push(&u32::MAX.to_le_bytes());
        assert!(matches!(r.next_body(), Err(ProtoError::TooLarge(_))));
    }

    #[test]
    fn selection_rank_and_contains() {
        let s = Selection::from_indices([1, 3, 8, 20]);
        assert!(s.contains(3) && s.contains(20) && !s.contains(2) && !s.contains(100));
        assert_eq!(s.rank(1), Some(0));
        assert_eq!(s.rank(8), Some(2));
        assert_eq!(s.rank(20), Some(3));
        assert_eq!(Selection::All.rank(5), None);
    }
}
