//! Showing outputs: live with a host prefix per line, or grouped (identical outputs once with their
//! host list, as `dshbak -c` / `clush -b`).

use std::collections::BTreeMap;

use crate::front::controller::ExecReport;
use crate::tree::proto::Stream;

/// Longest partial line kept per host and stream: a host printing without newlines gets its output
/// shown in pieces of this size instead of growing the controller's buffer without bound.
pub const MAX_PARTIAL_LINE: usize = 64 << 10;

/// Turns chunks into `host: line` lines; a partial line waits for its end (or [`LinePrefixer::flush`]).
/// Lines are joined per host index, never per name: two hosts reporting the same name keep their
/// lines apart.
#[derive(Default)]
pub struct LinePrefixer {
    partial: BTreeMap<(u32, Stream), (String, Vec<u8>)>,
}

impl LinePrefixer {
    /// Complete lines of this chunk from host `index` (shown as `host`), prefixed.
    pub fn push(&mut self, index: u32, host: &str, stream: Stream, data: &[u8]) -> Vec<String> {
        let (_, buf) = self
            .partial
            .entry((index, stream))
            .or_insert_with(|| (host.to_string(), Vec::new()));
        let mut out = Vec::new();
        let mut rest = data;
        while !rest.is_empty() {
            // Take at most what fills the partial line to its limit, so `buf` never exceeds it.
            let room = MAX_PARTIAL_LINE - buf.len();
            let (now, later) = rest.split_at(rest.len().min(room));
            rest = later;
            let mut start = 0;
            for (i, &b) in now.iter().enumerate() {
                if b == b'\n' {
                    buf.extend_from_slice(&now[start..i]);
                    out.push(format_line(host, stream, buf));
                    buf.clear();
                    start = i + 1;
                }
            }
            buf.extend_from_slice(&now[start..]);
            if buf.len() >= MAX_PARTIAL_LINE {
                out.push(format_line(host, stream, buf));
                buf.clear();
            }
        }
        out
    }

    /// Remaining partial lines.
    pub fn flush(&mut self) -> Vec<String> {
        std::mem::take(&mut self.partial)
            .into_iter()
            .filter(|(_, (_, b))| !b.is_empty())
            .map(|((_, s), (h, b))| format_line(&h, s, &b))
            .collect()
    }
}

/// A host name as reported by a daemon, made safe to show and to use as a prefix: control
/// characters and whitespace become `?` (no terminal escapes, no fake line breaks) and the length is
/// capped; an empty name falls back to `fallback` (the login target).
pub fn sanitize_name(name: &str, fallback: &str) -> String {
    const MAX: usize = 64;
    let s: String = name
        .chars()
        .take(MAX)
        .map(|c| {
            if c.is_control() || c.is_whitespace() {
                '?'
            } else {
                c
            }
        })
        .collect();
    if s.is_empty() {
        fallback.to_string()
    } else {
        s
    }
}

fn format_line(host: &str, stream: Stream, line: &[u8]) -> String {
    let tag = if stream == Stream::Stderr {
        " (stderr)"
    } else {
        ""
    };
    format!("{host}{tag}: {}", String::from_utf8_lossy(line))
}

/// Groups hosts by identical stdout; groups in order of their first host's index.
pub fn grouped(report: &ExecReport) -> String {
    let mut groups: Vec<(&[u8], Vec<&str>)> = Vec::new();
    let mut by_output: BTreeMap<&[u8], usize> = BTreeMap::new();
    for r in &report.results {
        let key: &[u8] = &r.stdout;
        match by_output.get(key) {
            Some(&g) => groups[g].1.push(&r.name),
            None => {
                by_output.insert(key, groups.len());
                groups.push((key, vec![&r.name]));
            }
        }
    }
    let mut s = String::new();
    for (out, hosts) in groups {
        s.push_str(&format!(
            "---------------- {} ({})\n",
            compact_hosts(&hosts),
            hosts.len()
        ));
        s.push_str(&String::from_utf8_lossy(out));
        if !out.is_empty() && !out.ends_with(b"\n") {
            s.push('\n');
        }
    }
    s
}

/// `n001 n002 n003 n007 x` → `n[001-003,007],x`: names sharing a prefix and a digit suffix of the
/// same width fold into one range.
pub fn compact_hosts(names: &[&str]) -> String {
    let mut folded: BTreeMap<(String, usize), Vec<u64>> = BTreeMap::new();
    let mut plain: Vec<String> = Vec::new();
    for n in names {
        let digits = n.bytes().rev().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 || digits > 18 {
            plain.push(n.to_string());
            continue;
        }
        let (pre, num) = n.split_at(n.len() - digits);
        folded
            .entry((pre.to_string(), digits))
            .or_default()
            .push(num.parse().unwrap_or(0));
    }
    let mut parts = Vec::new();
    for ((pre, width), mut nums) in folded {
        nums.sort_unstable();
        nums.dedup();
        if nums.len() == 1 {
            parts.push(format!("{pre}{:0width$}", nums[0]));
            continue;
        }
        let mut ranges = Vec::new();
        let mut start = nums[0];
        let mut prev = nums[0];
        for &v in &nums[1..] {
            if v != prev + 1 {
                ranges.push(range_text(start, prev, width));
                start = v;
            }
            prev = v;
        }
        ranges.push(range_text(start, prev, width));
        parts.push(format!("{pre}[{}]", ranges.join(",")));
    }
    parts.extend(plain);
    parts.join(",")
}

fn range_text(a: u64, b: u64, width: usize) -> String {
    if a == b {
        format!("{a:0width$}")
    } else {
        format!("{a:0width$}-{b:0width$}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::front::controller::HostResult;
    use crate::tree::proto::Status;

    #[test]
    fn prefixes_whole_lines_only() {
        let mut p = LinePrefixer::default();
        assert!(p.push(0, "a", Stream::Stdout, b"par").is_empty());
        assert_eq!(
            p.push(0, "a", Stream::Stdout, b"t\nnext\n"),
            vec!["a: part", "a: next"]
        );
        assert_eq!(
            p.push(1, "b", Stream::Stderr, b"oops"),
            Vec::<String>::new()
        );
        assert_eq!(p.flush(), vec!["b (stderr): oops"]);
    }

    #[test]
    fn hosts_with_the_same_name_never_splice_lines() {
        let mut p = LinePrefixer::default();
        assert!(p.push(1, "n", Stream::Stdout, b"AAA").is_empty());
        assert!(p.push(2, "n", Stream::Stdout, b"BBB").is_empty());
        assert_eq!(p.push(1, "n", Stream::Stdout, b"a\n"), vec!["n: AAAa"]);
        assert_eq!(p.push(2, "n", Stream::Stdout, b"b\n"), vec!["n: BBBb"]);
    }

    #[test]
    fn a_line_without_end_is_shown_in_bounded_pieces() {
        let mut p = LinePrefixer::default();
        let big = vec![b'x'; 5 * MAX_PARTIAL_LINE / 2];
        let mut lines = Vec::new();
        for c in big.chunks(1000) {
            lines.extend(p.push(0, "a", Stream::Stdout, c));
            assert!(p.partial.values().all(|(_, b)| b.len() < MAX_PARTIAL_LINE));
        }
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].len(), "a: ".len() + MAX_PARTIAL_LINE);
        let rest = p.flush();
        assert_eq!(rest[0].len(), "a: ".len() + MAX_PARTIAL_LINE / 2);
    }

    #[test]
    fn reported_names_are_sanitised() {
        assert_eq!(sanitize_name("n1\x1b[2J\nroot: x", "t"), "n1?[2J?root:?x");
        assert_eq!(sanitize_name("", "t"), "t");
        assert_eq!(sanitize_name(&"a".repeat(1000), "t").len(), 64);
        assert_eq!(sanitize_name("n001.example", "t"), "n001.example");
    }

    #[test]
    fn groups_identical_outputs_with_compact_host_lists() {
        let mk = |i: u32, n: &str, o: &str| HostResult {
            index: i,
            name: n.into(),
            status: Status::Code(0),
            stdout: o.as_bytes().to_vec(),
            stderr: vec![],
        };
        let rep = ExecReport {
            exec: 1,
            results: vec![
                mk(0, "n001", "x\n"),
                mk(1, "n002", "x\n"),
                mk(2, "n003", "y\n"),
                mk(3, "n004", "x\n"),
            ],
            merged_stdout: vec![],
            cut: false,
            dropped: 0,
        };
        assert_eq!(
            grouped(&rep),
            "---------------- n[001-002,004] (3)\nx\n---------------- n003 (1)\ny\n"
        );
        assert_eq!(compact_hosts(&["gw", "n7", "n8", "m01"]), "m01,n[7-8],gw");
    }
}
