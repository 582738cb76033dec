//! The wire format between real hosts: a fixed 15-byte header, then the payload.
//!
//! `magic "GB" | version u8 | from_port u16 | to_port u16 | from_host u32 | len u32` (big endian).
//! Input from the network is untrusted: the version and length are checked before anything is
//! allocated.

use thiserror::Error;

pub const MAGIC: [u8; 2] = *b"GB";
pub const VERSION: u8 = 1;
pub const HEADER_LEN: usize = 2 + 1 + 2 + 2 + 4 + 4;
/// Largest payload a peer may announce (1 GiB): bounds the allocation a bad header can cause.
pub const MAX_PAYLOAD: usize = 1 << 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub from_port: u16,
    pub to_port: u16,
    pub from_host: u32,
    pub len: u32,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("bad magic {0:02x?}: not a gridbed peer")]
    BadMagic([u8; 2]),
    #[error("unsupported frame version {0} (this build speaks {VERSION})")]
    BadVersion(u8),
    #[error("frame announces {0} bytes, more than the {MAX_PAYLOAD}-byte limit")]
    TooLarge(usize),
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..2].copy_from_slice(&MAGIC);
        b[2] = VERSION;
        b[3..5].copy_from_slice(&self.from_port.to_be_bytes());
        b[5..7].copy_from_slice(&self.to_port.to_be_bytes());
        b[7..11].copy_from_slice(&self.from_host.to_be_bytes());
        b[11..15].copy_from_slice(&self.len.to_be_bytes());
        b
    }

    pub fn decode(b: &[u8; HEADER_LEN]) -> Result<Header, FrameError> {
        if b[0..2] != MAGIC {
            return Err(FrameError::BadMagic([b[0], b[1]]));
        }
        if b[2] != VERSION {
            return Err(FrameError::BadVersion(b[2]));
        }
        let len = u32::from_be_bytes([b[11], b[12], b[13], b[14]]);
        if len as usize > MAX_PAYLOAD {
            return Err(FrameError::TooLarge(len as usize));
        }
        Ok(Header {
            from_port: u16::from_be_bytes([b[3], b[4]]),
            to_port: u16::from_be_bytes([b[5], b[6]]),
            from_host: u32::from_be_bytes([b[7], b[8], b[9], b[10]]),
            len,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn decode_never_panics_and_roundtrips(bytes in proptest::array::uniform15(any::<u8>())) {
            if let Ok(h) = Header::decode(&bytes) {
                prop_assert_eq!(h.encode(), bytes);
            }
        }

        #[test]
        fn encode_decode_roundtrip(from_port: u16, to_port: u16, from_host: u32, len in 0u32..(MAX_PAYLOAD as u32)) {
            let h = Header { from_port, to_port, from_host, len };
            prop_assert_eq!(Header::decode(&h.encode()), Ok(h));
        }
    }

    #[test]
    fn rejects_bad_version_and_oversize() {
        let mut b = Header {
            from_port: 1,
            to_port: 2,
            from_host: 3,
            len: 4,
        }
        .encode();
        b[2] = 9;
        assert_eq!(Header::decode(&b), Err(FrameError::BadVersion(9)));
        let mut b = Header {
            from_port: 1,
            to_port: 2,
            from_host: 3,
            len: 4,
        }
        .encode();
        b[11..15].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(Header::decode(&b), Err(FrameError::TooLarge(_))));
    }
}
