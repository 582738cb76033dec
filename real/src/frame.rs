//! The wire format between real hosts after the handshake: a fixed 24-byte header, then the payload.
//!
//! `magic "GB" | version u8 | kind u8 | from_port u16 | to_port u16 | from_host u32 | seq u64 |
//! len u32` (big endian). A `Data` frame carries one message with its link sequence number; an
//! `Ack` frame (receiver → sender on the same connection, `len` 0) acknowledges every sequence
//! number up to `seq`. Input from the network is untrusted: the version, kind and length are
//! checked before anything is allocated, and the payload buffer grows only as bytes arrive.

use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt};

pub const MAGIC: [u8; 2] = *b"GB";
pub const VERSION: u8 = 2;
pub const HEADER_LEN: usize = 2 + 1 + 1 + 2 + 2 + 4 + 8 + 4;
/// Largest payload any peer may announce (1 GiB), whatever the configured limits say.
pub const MAX_PAYLOAD: usize = 1 << 30;
/// First allocation for a payload: the buffer then grows with the bytes that really arrive, so a
/// header announcing a large payload costs at most twice what the peer actually sent.
const FIRST_CHUNK: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Data = 1,
    Ack = 2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    pub from_port: u16,
    pub to_port: u16,
    pub from_host: u32,
    pub seq: u64,
    pub len: u32,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("bad magic {0:02x?}: not a gridbed peer")]
    BadMagic([u8; 2]),
    #[error("unsupported frame version {0} (this build speaks {VERSION})")]
    BadVersion(u8),
    #[error("unknown frame kind {0}")]
    BadKind(u8),
    #[error("frame announces {size} bytes, more than the {limit}-byte limit of port {port}")]
    TooLarge {
        size: usize,
        limit: usize,
        port: u16,
    },
    #[error("acknowledgement frame with a {0}-byte payload")]
    AckWithPayload(u32),
}

/// Why reading a frame off a connection stopped.
#[derive(Debug, Error)]
pub enum ReadError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
}

impl Header {
    pub fn data(from_port: u16, to_port: u16, from_host: u32, seq: u64, len: u32) -> Header {
        Header {
            kind: Kind::Data,
            from_port,
            to_port,
            from_host,
            seq,
            len,
        }
    }

    pub fn ack(from_host: u32, seq: u64) -> Header {
        Header {
            kind: Kind::Ack,
            from_port: 0,
            to_port: 0,
            from_host,
            seq,
            len: 0,
        }
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..2].copy_from_slice(&MAGIC);
        b[2] = VERSION;
        b[3] = self.kind as u8;
        b[4..6].copy_from_slice(&self.from_port.to_be_bytes());
        b[6..8].copy_from_slice(&self.to_port.to_be_bytes());
        b[8..12].copy_from_slice(&self.from_host.to_be_bytes());
        b[12..20].copy_from_slice(&self.seq.to_be_bytes());
        b[20..24].copy_from_slice(&self.len.to_be_bytes());
        b
    }

    /// Decodes a header; `limit(port)` is the largest payload accepted for that destination port.
    pub fn decode(
        b: &[u8; HEADER_LEN],
        limit: impl Fn(u16) -> usize,
    ) -> Result<Header, FrameError> {
        if b[0..2] != MAGIC {
            return Err(FrameError::BadMagic([b[0], b[1]]));
        }
        if b[2] != VERSION {
            return Err(FrameError::BadVersion(b[2]));
        }
        let kind = match b[3] {
            1 => Kind::Data,
            2 => Kind::Ack,
            k => return Err(FrameError::BadKind(k)),
        };
        let be16 = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
        let be32 = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let h = Header {
            kind,
            from_port: be16(4),
            to_port: be16(6),
            from_host: be32(8),
            seq: u64::from_be_bytes(b[12..20].try_into().expect("8 bytes")),
            len: be32(20),
        };
        if kind == Kind::Ack && h.len != 0 {
            return Err(FrameError::AckWithPayload(h.len));
        }
        let limit = limit(h.to_port).min(MAX_PAYLOAD);
        if h.len as usize > limit {
            return Err(FrameError::TooLarge {
                size: h.len as usize,
                limit,
                port: h.to_port,
            });
        }
        Ok(h)
    }
}

/// Reads one frame: the header, checked against `limit` before any payload byte is buffered, then
/// the payload. End of stream before a whole frame is an `Io` error (`UnexpectedEof`).
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    limit: impl Fn(u16) -> usize,
) -> Result<(Header, Vec<u8>), ReadError> {
    let mut hdr = [0u8; HEADER_LEN];
    r.read_exact(&mut hdr).await?;
    let h = Header::decode(&hdr, limit)?;
    let len = h.len as usize;
    let mut payload = Vec::with_capacity(len.min(FIRST_CHUNK));
    let n = r.take(len as u64).read_to_end(&mut payload).await?;
    if n != len {
        return Err(ReadError::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    Ok((h, payload))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ANY: fn(u16) -> usize = |_| MAX_PAYLOAD;

    proptest! {
        #[test]
        fn decode_never_panics_and_roundtrips(bytes in proptest::array::uniform24(any::<u8>())) {
            if let Ok(h) = Header::decode(&bytes, ANY) {
                prop_assert_eq!(h.encode(), bytes);
            }
        }

        #[test]
        fn encode_decode_roundtrip(from_port: u16, to_port: u16, from_host: u32, seq: u64, len in 0u32..(MAX_PAYLOAD as u32)) {
            let h = Header::data(from_port, to_port, from_host, seq, len);
            prop_assert_eq!(Header::decode(&h.encode(), ANY), Ok(h));
        }
    }

    #[test]
    fn rejects_bad_version_kind_and_oversize() {
        let mut b = Header::data(1, 2, 3, 4, 5).encode();
        b[2] = 9;
        assert_eq!(Header::decode(&b, ANY), Err(FrameError::BadVersion(9)));
        let mut b = Header::data(1, 2, 3, 4, 5).encode();
        b[3] = 7;
        assert_eq!(Header::decode(&b, ANY), Err(FrameError::BadKind(7)));
        let mut b = Header::data(1, 2, 3, 4, 5).encode();
        b[20..24].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            Header::decode(&b, ANY),
            Err(FrameError::TooLarge { .. })
        ));
        let mut b = Header::ack(1, 2).encode();
        b[23] = 1;
        assert_eq!(Header::decode(&b, ANY), Err(FrameError::AckWithPayload(1)));
    }

    #[test]
    fn per_port_limit_is_checked_before_the_payload_is_read() {
        let b = Header::data(1, 7, 3, 4, 100).encode();
        let limit = |p: u16| if p == 7 { 99 } else { 1000 };
        assert_eq!(
            Header::decode(&b, limit),
            Err(FrameError::TooLarge {
                size: 100,
                limit: 99,
                port: 7
            })
        );
    }

    #[tokio::test]
    async fn a_huge_announced_length_allocates_only_what_arrives() {
        let mut wire = Header::data(1, 2, 3, 4, (MAX_PAYLOAD - 1) as u32)
            .encode()
            .to_vec();
        wire.extend_from_slice(&[0u8; 10]);
        let err = read_frame(&mut &wire[..], ANY).await.unwrap_err();
        assert!(matches!(err, ReadError::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof));
    }
}
