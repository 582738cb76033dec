//! Showing outputs: live with a host prefix per line, or grouped (identical outputs once with their
//! host list, as `dshbak -c` / `clush -b`).

use std::collections::BTreeMap;

use crate::controller::ExecReport;
use crate::proto::Stream;

/// Turns chunks into `host: line` lines; a partial line waits for its end (or [`LinePrefixer::flush`]).
#[derive(Default)]
pub struct LinePrefixer {
    partial: BTreeMap<(String, Stream), Vec<u8>>,
}

impl LinePrefixer {
    /// Complete lines of this chunk, prefixed.
    pub fn push(&mut self, host: &str, stream: Stream, data: &[u8]) -> Vec<String> {
        let buf = self.partial.entry((host.to_string(), stream)).or_default();
        buf.extend_from_slice(data);
        let mut out = Vec::new();
        while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            out.push(format_line(host, stream, &line[..line.len() - 1]));
        }
        out
    }

    /// Remaining partial lines.
    pub fn flush(&mut self) -> Vec<String> {
        std::mem::take(&mut self.partial)
            .into_iter()
            .filter(|(_, b)| !b.is_empty())
            .map(|((h, s), b)| format_line(&h, s, &b))
            .collect()
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
    use crate::controller::HostResult;
    use crate::proto::Status;

    #[test]
    fn prefixes_whole_lines_only() {
        let mut p = LinePrefixer::default();
        assert!(p.push("a", Stream::Stdout, b"par").is_empty());
        assert_eq!(
            p.push("a", Stream::Stdout, b"t\nnext\n"),
            vec!["a: part", "a: next"]
        );
        assert_eq!(p.push("b", Stream::Stderr, b"oops"), Vec::<String>::new());
        assert_eq!(p.flush(), vec!["b (stderr): oops"]);
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
        };
        assert_eq!(
            grouped(&rep),
            "---------------- n[001-002,004] (3)\nx\n---------------- n003 (1)\ny\n"
        );
        assert_eq!(compact_hosts(&["gw", "n7", "n8", "m01"]), "m01,n[7-8],gw");
    }
}
