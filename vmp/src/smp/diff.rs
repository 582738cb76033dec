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
        if self.page % PAGE != 0 || self.page < RAM_BASE || self.page >= RAM_TOP {
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

/// The runs where `cur` differs from `twin` (both one page). Equal 8-byte words are skipped
/// whole, so a page with few changes costs little more than a comparison.
pub fn make(page: u32, twin: &[u8], cur: &[u8]) -> PageDiff {
    debug_assert!(twin.len() == PAGE_BYTES && cur.len() == PAGE_BYTES);
    let mut runs: Vec<Run> = Vec::new();
    let mut open: Option<usize> = None;
    let mut i = 0;
    while i < PAGE_BYTES {
        if i % 8 == 0 {
            let x = word(twin, i) ^ word(cur, i);
            // Outside a run, skip equal words; inside one, skip words with no equal byte.
            if (open.is_none() && x == 0) || (open.is_some() && !has_zero_byte(x)) {
                i += 8;
                continue;
            }
        }
        let differs = twin[i] != cur[i];
        match (open, differs) {
            (None, true) => open = Some(i),
            (Some(s), false) => {
                runs.push(Run {
                    off: s as u16,
                    bytes: cur[s..i].to_vec(),
                });
                open = None;
            }
            _ => {}
        }
        i += 1;
    }
    if let Some(s) = open {
        runs.push(Run {
            off: s as u16,
            bytes: cur[s..].to_vec(),
        });
    }
    PageDiff { page, runs }
}

fn word(b: &[u8], i: usize) -> u64 {
    u64::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3], b[i + 4], b[i + 5], b[i + 6], b[i + 7]])
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
