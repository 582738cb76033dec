//! The whole-image crc without a second pass over the bytes.
//!
//! Every record already gets a crc of its own; the image crc of format v1 is the crc32 of every
//! byte before END. Computing both by feeding the bytes to two hashers reads each page twice. The
//! crc32 of a concatenation follows from the parts' crcs instead (zlib's `crc32_combine`):
//! `crc(A ‖ B) = shift_|B|(crc(A)) ⊕ crc(B)`, where `shift_n` multiplies by x^(8n) mod P. That
//! shift is linear over GF(2), so for the one length that dominates an image (a raw page record)
//! it is four table look-ups; other lengths use crc32fast's general combine (a few hundred
//! cycles, for the handful of non-page records and lz4 pages, whose compression costs far more).

use std::sync::OnceLock;

/// Bytes of a raw PAGE record: kind u8, len u32, addr u32, enc u8, 4096 data, crc u32.
pub const RAW_PAGE_RECORD: u64 = 5 + 5 + 4096 + 4;

type ShiftTable = [[u32; 256]; 4];

fn shift_general(state: u32, len: u64) -> u32 {
    let mut a = crc32fast::Hasher::new_with_initial_len(state, 0);
    a.combine(&crc32fast::Hasher::new_with_initial_len(0, len));
    a.finalize()
}

fn raw_page_table() -> &'static ShiftTable {
    static T: OnceLock<Box<ShiftTable>> = OnceLock::new();
    T.get_or_init(|| {
        let mut t = Box::new([[0u32; 256]; 4]);
        for (k, row) in t.iter_mut().enumerate() {
            for (v, e) in row.iter_mut().enumerate() {
                *e = shift_general((v as u32) << (8 * k), RAW_PAGE_RECORD);
            }
        }
        t
    })
}

/// The crc32 of `A ‖ B` from `crc(A)`, `crc(B)` and `|B|`.
pub fn combine(crc_a: u32, crc_b: u32, len_b: u64) -> u32 {
    let shifted = if len_b == RAW_PAGE_RECORD {
        let t = raw_page_table();
        t[0][(crc_a & 0xff) as usize]
            ^ t[1][((crc_a >> 8) & 0xff) as usize]
            ^ t[2][((crc_a >> 16) & 0xff) as usize]
            ^ t[3][(crc_a >> 24) as usize]
    } else {
        shift_general(crc_a, len_b)
    };
    shifted ^ crc_b
}

/// A record's own crc (of `kind`, `len` and payload, as the format stores it) and the crc of the
/// whole record including that stored crc (what the image crc combines), from one pass.
pub fn record_crcs(parts: &[&[u8]]) -> (u32, u32) {
    let mut h = crc32fast::Hasher::new();
    for p in parts {
        h.update(p);
    }
    let own = h.clone().finalize();
    h.update(&own.to_le_bytes());
    (own, h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crc(b: &[u8]) -> u32 {
        crc32fast::hash(b)
    }

    #[test]
    fn combine_equals_the_crc_of_the_concatenation() {
        let a: Vec<u8> = (0..777u32).map(|i| (i * 31 + 7) as u8).collect();
        for len in [0usize, 1, 13, 4096, RAW_PAGE_RECORD as usize, 9000] {
            let b: Vec<u8> = (0..len as u32).map(|i| (i * 17 + 3) as u8).collect();
            let whole = [&a[..], &b[..]].concat();
            assert_eq!(
                combine(crc(&a), crc(&b), len as u64),
                crc(&whole),
                "len {len}"
            );
        }
    }

    #[test]
    fn record_crcs_cover_the_stored_crc() {
        let parts: [&[u8]; 2] = [b"\x02abcd", b"payload"];
        let (own, full) = record_crcs(&parts);
        assert_eq!(own, crc(b"\x02abcdpayload"));
        let mut rec = b"\x02abcdpayload".to_vec();
        rec.extend_from_slice(&own.to_le_bytes());
        assert_eq!(full, crc(&rec));
    }
}
