//! The migration protocol's messages and their encoding (network input: every field is
//! length-checked before anything is allocated).
//!
//! ```text
//! message = tag u8 | migration id u64 | body
//! ```
//! Little-endian integers. Bodies: `Migrate` dst u32; `Put` crc u32 | image; `Chunk` seq u32 |
//! bytes; `Done` chunks u32 | len u64; the others have none. The image checks itself (its records
//! and whole are checksummed), so the protocol adds no checksum of its own.

/// One protocol message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Msg {
    /// Driver (or controller) → holder: migrate the process to host `dst` at the next
    /// instruction boundary (the paper's message that starts the SIGALRM handler).
    Migrate { dst: u32 },
    /// Source → destination, one-sided put: the whole image into the destination's buffer.
    Put { id: u64, image: Vec<u8> },
    /// Source → destination, stream: one piece of the image.
    Chunk { id: u64, seq: u32, bytes: Vec<u8> },
    /// Source → destination, stream: the image is complete.
    Done { id: u64, chunks: u32, len: u64 },
    /// Destination → source: image complete, checksummed and restored; waiting for `Commit`.
    Ack { id: u64 },
    /// Destination → source: the image was incomplete or did not restore.
    Nack { id: u64 },
    /// Source → destination: the source has given the process up; run it.
    Commit { id: u64 },
    /// Source → destination: the source kept the process; discard the copy.
    Abort { id: u64 },
    /// Destination → source: what was decided about migration `id`?
    Query { id: u64 },
}

/// Largest image accepted in one message (a 256 MiB guest's worst case, raw pages plus state).
pub const MAX_IMAGE: usize = 320 << 20;

const T_MIGRATE: u8 = 1;
const T_PUT: u8 = 2;
const T_CHUNK: u8 = 3;
const T_DONE: u8 = 4;
const T_ACK: u8 = 5;
const T_NACK: u8 = 6;
const T_COMMIT: u8 = 7;
const T_ABORT: u8 = 8;
const T_QUERY: u8 = 9;

impl Msg {
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::new();
        let mut head = |t: u8, id: u64| {
            v.push(t);
            v.extend_from_slice(&id.to_le_bytes());
        };
        match self {
            Msg::Migrate { dst } => {
                head(T_MIGRATE, 0);
                v.extend_from_slice(&dst.to_le_bytes());
            }
            Msg::Put { id, image } => {
                head(T_PUT, *id);
                v.extend_from_slice(image);
            }
            Msg::Chunk { id, seq, bytes } => {
                head(T_CHUNK, *id);
                v.extend_from_slice(&seq.to_le_bytes());
                v.extend_from_slice(bytes);
            }
            Msg::Done { id, chunks, len } => {
                head(T_DONE, *id);
                v.extend_from_slice(&chunks.to_le_bytes());
                v.extend_from_slice(&len.to_le_bytes());
            }
            Msg::Ack { id } => head(T_ACK, *id),
            Msg::Nack { id } => head(T_NACK, *id),
            Msg::Commit { id } => head(T_COMMIT, *id),
            Msg::Abort { id } => head(T_ABORT, *id),
            Msg::Query { id } => head(T_QUERY, *id),
        }
        v
    }

    /// Decodes a message; None for anything malformed (the caller drops it).
    pub fn decode(b: &[u8]) -> Option<Msg> {
        if b.len() < 9 || b.len() > MAX_IMAGE + 9 {
            return None;
        }
        let id = u64::from_le_bytes(b[1..9].try_into().ok()?);
        let body = &b[9..];
        let u32_at = |at: usize| -> Option<u32> {
            Some(u32::from_le_bytes(body.get(at..at + 4)?.try_into().ok()?))
        };
        let exact = |n: usize| body.len() == n;
        Some(match b[0] {
            T_MIGRATE if exact(4) => Msg::Migrate { dst: u32_at(0)? },
            T_PUT => Msg::Put {
                id,
                image: body.to_vec(),
            },
            T_CHUNK if body.len() >= 4 => Msg::Chunk {
                id,
                seq: u32_at(0)?,
                bytes: body[4..].to_vec(),
            },
            T_DONE if exact(12) => Msg::Done {
                id,
                chunks: u32_at(0)?,
                len: u64::from_le_bytes(body[4..12].try_into().ok()?),
            },
            T_ACK if exact(0) => Msg::Ack { id },
            T_NACK if exact(0) => Msg::Nack { id },
            T_COMMIT if exact(0) => Msg::Commit { id },
            T_ABORT if exact(0) => Msg::Abort { id },
            T_QUERY if exact(0) => Msg::Query { id },
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_round_trips_and_garbage_is_refused() {
        let all = [
            Msg::Migrate { dst: 3 },
            Msg::Put {
                id: 7,
                image: vec![1, 2, 3],
            },
            Msg::Chunk {
                id: 7,
                seq: 2,
                bytes: vec![5; 10],
            },
            Msg::Done {
                id: 7,
                chunks: 4,
                len: 1 << 33,
            },
            Msg::Ack { id: 1 },
            Msg::Nack { id: 2 },
            Msg::Commit { id: 3 },
            Msg::Abort { id: 4 },
            Msg::Query { id: 5 },
        ];
        for m in all {
            let e = m.encode();
            assert_eq!(Msg::decode(&e), Some(m.clone()));
            assert_ne!(Msg::decode(&e[..e.len() - 1]).as_ref(), Some(&m));
        }
        assert_eq!(Msg::decode(&[0; 9]), None);
        assert_eq!(Msg::decode(&[T_ACK; 3]), None);
    }
}
