//! Frames of the routing overlay: a 2-byte header (magic, version) and a postcard body.
//!
//! Frames come from the network and are untrusted: [`decode`] checks the size limit, the header,
//! that the body is consumed exactly and that counts are bounded; it returns an error, never panics.

use gridbed_runtime::HostId;
use serde::{Deserialize, Serialize};

use crate::wire::envelope::Envelope;
pub use crate::wire::envelope::WireError;

/// First byte of every overlay frame (distinct from the Phoenix core's 0xF5).
pub const MAGIC: u8 = 0xF6;
/// Bumped on any incompatible change of [`Frame`].
pub const VERSION: u8 = 1;
/// Largest accepted frame: a full table of 100 000 destinations at ≤ 15 bytes per advert fits.
pub const MAX_FRAME: usize = 2 << 20;

const ENVELOPE: Envelope = Envelope {
    magic: MAGIC,
    version: VERSION,
    max_frame: MAX_FRAME,
};

/// One frame between two machines that can connect directly (overlay frames are never relayed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    pub src: HostId,
    /// The sender's incarnation: frames of an incarnation that said goodbye are void.
    pub inc: u32,
    pub body: Body,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// Link up: the receiver adds the sender as a neighbour and answers with its whole table.
    Hello,
    /// Distance-vector changes and departures to flood.
    Update {
        adverts: Vec<Advert>,
        gone: Vec<Tomb>,
    },
    /// The sender leaves; the receiver drops the link and answers [`Body::ByeAck`].
    Bye,
    /// The last frame the receiver of a `Bye` sends on that link.
    ByeAck,
}

/// `Advert::hops` of a poisoned reverse: "my path to `dest` goes through you" (unreachable for you).
pub const POISON: u32 = u32::MAX;

/// "I reach `dest` (incarnation `inc`) in `hops` links"; `hops >= inf` (the receiver's machine
/// bound) means unreachable, [`POISON`] that the sender's path goes through the receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Advert {
    pub dest: HostId,
    pub inc: u32,
    pub hops: u32,
}

/// Incarnation `inc` of `host` has left: forget every route to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Tomb {
    pub host: HostId,
    pub inc: u32,
}

/// Serialises a frame.
pub fn encode(frame: &Frame) -> Vec<u8> {
    ENVELOPE.seal(frame, 16 + body_hint(&frame.body))
}

fn body_hint(b: &Body) -> usize {
    match b {
        Body::Update { adverts, gone } => 6 * adverts.len() + 6 * gone.len(),
        _ => 0,
    }
}

/// Parses an untrusted frame. Vector lengths are bounded by the frame size (postcard reads each
/// element from the input, so a forged length cannot make it allocate beyond what is present).
pub fn decode(bytes: &[u8]) -> Result<Frame, WireError> {
    ENVELOPE.open(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Frame {
        Frame {
            src: HostId(3),
            inc: 1,
            body: Body::Update {
                adverts: vec![
                    Advert {
                        dest: HostId(7),
                        inc: 0,
                        hops: 2,
                    },
                    Advert {
                        dest: HostId(9),
                        inc: 4,
                        hops: u32::MAX,
                    },
                ],
                gone: vec![Tomb {
                    host: HostId(5),
                    inc: 2,
                }],
            },
        }
    }

    #[test]
    fn round_trip_and_this_formats_header() {
        for f in [
            sample(),
            Frame {
                src: HostId(1),
                inc: 0,
                body: Body::Hello,
            },
            Frame {
                src: HostId(1),
                inc: 0,
                body: Body::Bye,
            },
            Frame {
                src: HostId(1),
                inc: 9,
                body: Body::ByeAck,
            },
        ] {
            assert_eq!(decode(&encode(&f)).unwrap(), f);
        }
        // Header checks are the envelope's (tested in `envelope.rs`); here: this format's magic.
        let bytes = encode(&sample());
        let mut other = bytes.clone();
        other[0] = crate::wire::MAGIC;
        assert!(
            decode(&other).is_err(),
            "a protocol frame is not an overlay frame"
        );
        assert!(matches!(
            decode(&bytes[..bytes.len() - 1]),
            Err(WireError::Malformed(_))
        ));
        // A forged element count far beyond the bytes present is an error, not an allocation.
        let forged = [MAGIC, VERSION, 1, 0, 1, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F];
        assert!(matches!(decode(&forged), Err(WireError::Malformed(_))));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        /// Arbitrary bytes never panic the decoder.
        #[test]
        fn decoder_survives_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes);
        }

        /// Garbage behind a valid header reaches the body parser and never panics it.
        #[test]
        fn decoder_survives_garbage_bodies(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut framed = vec![MAGIC, VERSION];
            framed.extend(bytes);
            if let Ok(f) = decode(&framed) {
                // Whatever decodes re-encodes to a frame that decodes to the same value.
                prop_assert_eq!(decode(&encode(&f)).unwrap(), f);
            }
        }

        /// Valid frames with a flipped byte or a truncation never panic either.
        #[test]
        fn decoder_survives_corrupted_frames(pos in 0usize..64, val in any::<u8>(), cut in 0usize..64) {
            let mut bytes = encode(&sample());
            let n = bytes.len();
            bytes[pos % n] = val;
            bytes.truncate(n - cut % n);
            let _ = decode(&bytes);
        }
    }
}
