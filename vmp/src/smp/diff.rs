//! Diffs: what this processor wrote on a page since its last publish, as byte runs, and applying
//! a remote diff without overwriting this processor's own unpublished writes.
//!
//! The protocol sends the bytes *written* (`make_written`, from the monitor's written-byte record),
//! not only the bytes that differ from the twin (`make`, the slides' twin/diff): a store of the
//! value a byte already holds is still a store, ordered after earlier stores of other
//! processors, and every byte of a word store travels with it, so no store is lost or torn. Byte
//! precision still keeps two processors' stores to different bytes of one word apart.

use serde::{Deserialize, Serialize};

use crate::layout::{PAGE, RAM_BASE, RAM_TOP};
use crate::machine::wtrack::WrittenBytes;

pub const PAGE_BYTES: usize = PAGE as usize;

/// One changed stretch of a page.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    pub off: u16,
    pub bytes: Vec<u8>,
}

/// The changes of one page.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageDiff {
    pub page: u32,
    pub runs: Vec<Run>,
}

impl PageDiff {
    /// Bytes of payload (changed bytes plus a 4-byte header per run).
    pub fn wire_bytes(&self) -> usize {
        8 + self.runs.iter().map(|r| 4 + r.bytes.len()).sum::<usize>()
    }

    /// Whether the diff is well formed: a RAM page, runs inside it, ascending, not overlapping.
    pub fn is_valid(&self) -> bool {
        if !self.page.is_multiple_of(PAGE) || self.page < RAM_BASE || self.page >= RAM_TOP {
            return false;
        }
        let mut end = 0usize;
        for r in &self.runs {
            let (s, e) = (r.off as usize, r.off as usize + r.bytes.len());
            if r.bytes.is_empty() || s < end || e > PAGE_BYTES {
                return false;
            }
            end = e;
        }
        true
    }

    /// Whether any run covers byte `off` of the page.
    pub fn covers(&self, off: usize) -> bool {
        self.runs
            .iter()
            .any(|r| (r.off as usize..r.off as usize + r.bytes.len()).contains(&off))
    }
}

/// The runs where `cur` differs from `twin` (both one page), a 64-bit word at a time: equal
/// words and words differing in every byte are handled whole, others byte by byte.
pub fn make(page: u32, twin: &[u8], cur: &[u8]) -> PageDiff {
    debug_assert!(twin.len() == PAGE_BYTES && cur.len() == PAGE_BYTES);
    let mut runs: Vec<Run> = Vec::new();
    let mut open: Option<usize> = None;
    let close = |open: &mut Option<usize>, end: usize, runs: &mut Vec<Run>| {
        if let Some(s) = open.take() {
            runs.push(Run {
                off: s as u16,
                bytes: cur[s..end].to_vec(),
            });
        }
    };
    for (b, (tb, cb)) in twin.chunks_exact(64).zip(cur.chunks_exact(64)).enumerate() {
        // Most of a page is unchanged: compare 64 bytes at once first.
        if tb == cb {
            close(&mut open, b * 64, &mut runs);
            continue;
        }
        for (w, (t, c)) in tb.chunks_exact(8).zip(cb.chunks_exact(8)).enumerate() {
            let at = b * 64 + w * 8;
            let x = word(t) ^ word(c);
            if x == 0 {
                close(&mut open, at, &mut runs);
            } else if !has_zero_byte(x) {
                open.get_or_insert(at);
            } else {
                for k in 0..8 {
                    if t[k] != c[k] {
                        open.get_or_insert(at + k);
                    } else {
                        close(&mut open, at + k, &mut runs);
                    }
                }
            }
        }
    }
    close(&mut open, PAGE_BYTES, &mut runs);
    PageDiff { page, runs }
}

/// The runs of `cur` (one page) at the bytes in `written`: what this processor stored there.
pub fn make_written(page: u32, cur: &[u8], written: &WrittenBytes) -> PageDiff {
    debug_assert!(cur.len() == PAGE_BYTES);
    let runs = written
        .runs()
        .into_iter()
        .map(|(off, len)| Run {
            off: off as u16,
            bytes: cur[off..off + len].to_vec(),
        })
        .collect();
    PageDiff { page, runs }
}

/// Bytes written (in `written`) that still hold their twin's value: stores twin/diff alone would
/// not send. And bytes that differ from the twin without a recorded write (a store the monitor
/// did not see: must be 0).
pub fn audit(twin: &[u8], cur: &[u8], written: &WrittenBytes) -> (u64, u64) {
    let (mut silent, mut unseen) = (0, 0);
    for (o, (t, c)) in twin.iter().zip(cur).enumerate() {
        match (written.contains(o), t == c) {
            (true, true) => silent += 1,
            (false, false) => unseen += 1,
            _ => {}
        }
    }
    (silent, unseen)
}

fn word(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    u64::from_ne_bytes(a)
}

/// Whether any byte of `x` is zero (the classic bit trick).
fn has_zero_byte(x: u64) -> bool {
    x.wrapping_sub(0x0101_0101_0101_0101) & !x & 0x8080_8080_8080_8080 != 0
}

/// Applies a remote `diff` to this processor's copy `cur` of the page.
///
/// - `local`: the bytes this processor wrote since its last publish. They keep their local value
///   (the local store is ordered after the remote one: it is published later).
/// - `masked`: this processor's published diff whose place in the global order is still to come
///   (so it is ordered after `diff`): bytes it covers keep their local value.
/// - `twin`: the page's twin, if any; it follows what other processors' stores and this
///   processor's published ones make of the page, so it takes the remote value except where
///   `masked` will overwrite it.
pub fn apply(
    cur: &mut [u8],
    mut twin: Option<&mut [u8]>,
    local: Option<&WrittenBytes>,
    diff: &PageDiff,
    masked: Option<&PageDiff>,
) {
    for r in &diff.runs {
        if twin.is_none() && local.is_none() && masked.is_none() {
            // Nothing local to keep: a plain copy.
            let o = r.off as usize;
            cur[o..o + r.bytes.len()].copy_from_slice(&r.bytes);
            continue;
        }
        for (k, v) in r.bytes.iter().enumerate() {
            let o = r.off as usize + k;
            if masked.is_some_and(|m| m.covers(o)) {
                continue;
            }
            if let Some(t) = twin.as_deref_mut() {
                t[o] = *v;
            }
            if !local.is_some_and(|l| l.contains(o)) {
                cur[o] = *v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_then_apply_reproduces_the_page() {
        let twin = vec![7u8; PAGE_BYTES];
        let mut cur = twin.clone();
        cur[0] = 1;
        cur[9..12].copy_from_slice(&[4, 5, 6]);
        cur[PAGE_BYTES - 1] = 9;
        let d = make(RAM_BASE, &twin, &cur);
        assert_eq!(d.runs.len(), 3);
        assert!(d.is_valid());
        let mut other = twin.clone();
        apply(&mut other, None, None, &d, None);
        assert_eq!(other, cur);
    }

    /// Byte-by-byte reference for `make`.
    fn reference(twin: &[u8], cur: &[u8]) -> Vec<(u16, usize)> {
        let mut out = Vec::new();
        let mut open = None;
        for i in 0..=PAGE_BYTES {
            let d = i < PAGE_BYTES && twin[i] != cur[i];
            match (open, d) {
                (None, true) => open = Some(i),
                (Some(s), false) => {
                    out.push((s as u16, i - s));
                    open = None;
                }
                _ => {}
            }
        }
        out
    }

    #[test]
    fn make_matches_the_bytewise_reference() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..300 {
            let twin: Vec<u8> = (0..PAGE_BYTES).map(|_| (next() % 4) as u8).collect();
            let mut cur = twin.clone();
            for _ in 0..(next() % 40) {
                let at = (next() % PAGE_BYTES as u64) as usize;
                let len = (next() % 90) as usize;
                for b in cur.iter_mut().skip(at).take(len) {
                    *b = (next() % 4) as u8;
                }
            }
            let d = make(RAM_BASE, &twin, &cur);
            let got: Vec<_> = d.runs.iter().map(|r| (r.off, r.bytes.len())).collect();
            assert_eq!(got, reference(&twin, &cur));
            assert!(d.is_valid());
        }
    }

    #[test]
    fn runs_across_words_are_exact() {
        let twin = vec![0u8; PAGE_BYTES];
        let mut cur = twin.clone();
        cur[5..1000].fill(3);
        cur[500] = 0; // an unchanged byte inside: splits the run
        let d = make(RAM_BASE, &twin, &cur);
        let spans: Vec<_> = d.runs.iter().map(|r| (r.off, r.bytes.len())).collect();
        assert_eq!(spans, vec![(5, 495), (501, 499)]);
        let mut other = twin.clone();
        apply(&mut other, None, None, &d, None);
        assert_eq!(other, cur);
    }

    #[test]
    fn local_unpublished_bytes_survive_a_remote_diff() {
        let base = vec![0u8; PAGE_BYTES];
        let mut remote = base.clone();
        remote[0..4].copy_from_slice(&[1, 1, 1, 1]);
        let d = make(RAM_BASE, &base, &remote);
        let mut twin = base.clone();
        let mut cur = base.clone();
        let mut written = WrittenBytes::default();
        cur[1] = 2; // a local write to a byte the remote also wrote
        written.mark(1, 1);
        apply(&mut cur, Some(&mut twin), Some(&written), &d, None);
        assert_eq!(&cur[0..4], &[1, 2, 1, 1]);
        assert_eq!(&twin[0..4], &[1, 1, 1, 1]);
        // The local diff still carries the local write (and only it).
        let mine = make_written(RAM_BASE, &cur, &written);
        assert_eq!(
            mine.runs,
            vec![Run {
                off: 1,
                bytes: vec![2]
            }]
        );
    }

    /// A store of the value the byte already holds is invisible to twin/diff but still a store:
    /// the written-byte diff carries it, and a remote store to it does not overwrite it.
    #[test]
    fn silent_and_partial_stores_travel_whole() {
        let base = vec![0u8; PAGE_BYTES];
        let mut cur = base.clone();
        let mut written = WrittenBytes::default();
        // A 4-byte store of 0x100 over 0: only byte 1 changes.
        cur[8..12].copy_from_slice(&0x100u32.to_le_bytes());
        written.mark(8, 4);
        // A 4-byte store of 0 over 0: nothing changes.
        written.mark(16, 4);
        assert_eq!(make(RAM_BASE, &base, &cur).runs.len(), 1);
        let d = make_written(RAM_BASE, &cur, &written);
        let spans: Vec<_> = d.runs.iter().map(|r| (r.off, r.bytes.len())).collect();
        assert_eq!(spans, vec![(8, 4), (16, 4)]);
        assert_eq!(audit(&base, &cur, &written), (7, 0));
        // Another processor's earlier store x=32 (byte 8 only differs) must not tear ours.
        let mut other = base.clone();
        other[8..12].copy_from_slice(&32u32.to_le_bytes());
        let remote = make_written(RAM_BASE, &other, &{
            let mut w = WrittenBytes::default();
            w.mark(8, 4);
            w
        });
        let mut mine = cur.clone();
        apply(&mut mine, None, Some(&written), &remote, None);
        assert_eq!(&mine[8..12], &0x100u32.to_le_bytes());
        // Applied elsewhere after the remote store, ours wins whole.
        apply(&mut other, None, None, &d, None);
        assert_eq!(&other[8..12], &0x100u32.to_le_bytes());
    }

    #[test]
    fn written_runs_match_marks() {
        let mut w = WrittenBytes::default();
        w.mark(0, 1);
        w.mark(63, 66);
        w.mark(4090, 100);
        assert_eq!(w.runs(), vec![(0, 1), (63, 66), (4090, 6)]);
        assert_eq!(w.count(), 73);
        assert!(WrittenBytes::default().runs().is_empty());
    }

    #[test]
    fn malformed_diffs_are_invalid() {
        let run = |off, n| Run {
            off,
            bytes: vec![1; n],
        };
        let bad = [
            PageDiff {
                page: RAM_BASE + 1,
                runs: vec![],
            },
            PageDiff {
                page: 0,
                runs: vec![],
            },
            PageDiff {
                page: RAM_BASE,
                runs: vec![run(4090, 10)],
            },
            PageDiff {
                page: RAM_BASE,
                runs: vec![run(10, 4), run(12, 1)],
            },
            PageDiff {
                page: RAM_BASE,
                runs: vec![run(0, 0)],
            },
        ];
        for d in bad {
            assert!(!d.is_valid(), "{d:?}");
        }
    }
}
