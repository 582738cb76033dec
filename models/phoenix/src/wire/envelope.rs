//! The envelope both Phoenix wire formats share (protocol frames in [`crate::wire`], routing-table
//! updates in [`crate::overlay`]): a magic byte, a version byte and a postcard body, under a size
//! limit. Frames come from the network and are untrusted: [`Envelope::open`] checks the limit, the
//! header and that the body is consumed exactly, and returns an error (never panics) otherwise.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// One wire format's header bytes and size limit.
#[derive(Copy, Clone, Debug)]
pub struct Envelope {
    pub magic: u8,
    pub version: u8,
    pub max_frame: usize,
}

/// Why a frame was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("frame of {size} bytes exceeds the {limit}-byte limit")]
    TooLarge { size: usize, limit: usize },
    #[error("frame too short for its header")]
    Short,
    #[error("bad magic byte {0:#04x}")]
    BadMagic(u8),
    #[error("unsupported wire version {got} (this build speaks {want})")]
    BadVersion { got: u8, want: u8 },
    #[error("malformed body: {0}")]
    Malformed(String),
    #[error("{0} trailing bytes after the body")]
    Trailing(usize),
}

impl Envelope {
    /// Serialises `body` behind the header; `hint` is the expected body size (one allocation).
    pub fn seal<T: Serialize>(&self, body: &T, hint: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 + hint);
        out.extend_from_slice(&[self.magic, self.version]);
        // Serialising plain owned data into a Vec cannot fail.
        postcard::to_extend(body, out).expect("postcard serialisation of owned data")
    }

    /// Parses an untrusted frame. Vector lengths are bounded by the frame size (postcard reads
    /// each element from the input, so a forged length cannot make it allocate beyond it).
    pub fn open<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, WireError> {
        if bytes.len() > self.max_frame {
            return Err(WireError::TooLarge {
                size: bytes.len(),
                limit: self.max_frame,
            });
        }
        let [magic, version, body @ ..] = bytes else {
            return Err(WireError::Short);
        };
        if *magic != self.magic {
            return Err(WireError::BadMagic(*magic));
        }
        if *version != self.version {
            return Err(WireError::BadVersion {
                got: *version,
                want: self.version,
            });
        }
        let (v, rest) = postcard::take_from_bytes::<T>(body)
            .map_err(|e| WireError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(WireError::Trailing(rest.len()));
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const E: Envelope = Envelope {
        magic: 0xAB,
        version: 3,
        max_frame: 64,
    };

    #[test]
    fn header_size_and_trailing_checks() {
        let body = (7u32, vec![1u8, 2, 3]);
        let bytes = E.seal(&body, 8);
        assert_eq!(E.open::<(u32, Vec<u8>)>(&bytes), Ok(body));
        let open = |b: &[u8]| E.open::<(u32, Vec<u8>)>(b);
        assert_eq!(open(&[]), Err(WireError::Short));
        assert_eq!(open(&[0xAB]), Err(WireError::Short));
        assert_eq!(open(&[0, 3, 0]), Err(WireError::BadMagic(0)));
        assert_eq!(
            open(&[0xAB, 9, 0]),
            Err(WireError::BadVersion { got: 9, want: 3 })
        );
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(open(&long), Err(WireError::Trailing(1)));
        assert!(matches!(
            open(&bytes[..bytes.len() - 1]),
            Err(WireError::Malformed(_))
        ));
        assert_eq!(
            open(&[0xAB; 65]),
            Err(WireError::TooLarge {
                size: 65,
                limit: 64
            })
        );
    }
}
