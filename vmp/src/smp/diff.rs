//! Twin/diff: what changed on a page since its twin, as byte-precise runs, and applying a remote
//! diff without overwriting this processor's own unpublished writes.
//!
//! Byte precision (not word): a run never carries a byte this processor did not change, so two
//! processors writing different bytes of one word in the same epoch both keep their writes.

use serde::{Deserialize, Serialize};

use crate::layout::{PAGE, RAM_BASE, RAM_TOP};

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
/// - `twin`: the page's twin if this processor has written the page since its last publish.
///   A byte this processor changed (cur != twin) keeps its local value — the local write is
///   ordered after the remote one, since it is published later — and the twin takes the remote
///   value, so the local diff still carries the local write. Other bytes take the remote value
///   in both.
/// - `masked`: this processor's published diff whose place in the global order is still to come
///   (so it is ordered after `diff`): bytes it covers keep their local value.
pub fn apply(
    cur: &mut [u8],
    mut twin: Option<&mut [u8]>,
    diff: &PageDiff,
    masked: Option<&PageDiff>,
) {
    for r in &diff.runs {
        if twin.is_none() && masked.is_none() {
            // Nothing local to keep: a plain copy.
            let o = r.off as usize;
            cur[o..o + r.bytes.len()].copy_from_slice(&r.bytes);
            continue;
        }
        for (k, v) in r.bytes.iter().enumerate() {
            let o = r.off as usize + k;
            let local = match twin.as_deref_mut() {
                Some(t) => {
                    let mine = cur[o] != t[o];
                    t[o] = *v;
                    mine
                }
                None => false,
            };
            if !local && !masked.is_some_and(|m| m.covers(o)) {
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
        apply(&mut other, None, &d, None);
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
        apply(&mut other, None, &d, None);
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
        cur[1] = 2; // a local write to a byte the remote also wrote
        apply(&mut cur, Some(&mut twin), &d, None);
        assert_eq!(&cur[0..4], &[1, 2, 1, 1]);
        assert_eq!(&twin[0..4], &[1, 1, 1, 1]);
        // The local diff still carries the local write (and only it).
        let mine = make(RAM_BASE, &twin, &cur);
        assert_eq!(
            mine.runs,
            vec![Run {
                off: 1,
                bytes: vec![2]
            }]
        );
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
