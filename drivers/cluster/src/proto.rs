//! The worker protocol: text lines over a GXP command's stdin (broadcast by the launcher to every
//! worker of a job) and stdout (each worker's own, tagged by GXP with its host).
//!
//! ```text
//! launcher -> workers   GBW1 SECRET <hex>          the cluster secret (stdin only, never argv)
//!                       GBW1 JOB <json Job>         every worker's role, by GXP_EXEC_IDX
//!                       GBW1 PEERS <json [addr]>    every worker's listening address, by index
//!                       (EOF)                       the launcher is gone: stop now
//! worker -> launcher    GBW1 READY <idx> <addr>     listening there
//!                       GBW1 RESULT <idx> <json>    the role's result; the worker then exits 0
//!                       GBW1 FAIL <idx> <text>      one line; the worker then exits 1
//! ```
//! Every line is bounded ([`MAX_LINE`]) before it is buffered; other stdout lines are passed to
//! the launcher's stderr as the worker's log.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// Protocol tag and version of every line.
pub const TAG: &str = "GBW1";
/// Longest line either side accepts (a result with its figures' data fits easily).
pub const MAX_LINE: usize = 8 << 20;

/// What every worker of one run is told.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Job {
    /// Role of the worker with GXP_EXEC_IDX = i.
    pub roles: Vec<serde_json::Value>,
    /// Where worker i listens (None: the address its ssh server was reached at).
    pub listen: Vec<Option<std::net::IpAddr>>,
    /// Cores the hosts file gives worker i's host.
    pub cores: Vec<Option<u32>>,
    /// Seconds a worker waits for its peers' addresses.
    pub rendezvous_s: u64,
    /// Seconds after which a worker stops itself, whatever happens to the launcher.
    pub deadline_s: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub enum FromWorker {
    Ready { idx: u32, addr: SocketAddr },
    Result { idx: u32, value: serde_json::Value },
    Fail { idx: u32, why: String },
}

/// Parses one stdout line of a worker; None for a line that is not protocol (a log line).
/// Err for a protocol line that is malformed.
pub fn parse_from_worker(line: &str) -> Option<Result<FromWorker, String>> {
    let rest = line.strip_prefix(TAG)?.strip_prefix(' ')?;
    let (kind, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    let (idx, arg) = rest.split_once(' ').unwrap_or((rest, ""));
    let Ok(idx) = idx.parse::<u32>() else {
        return Some(Err(format!("bad worker index in {kind} line")));
    };
    Some(match kind {
        "READY" => arg
            .parse::<SocketAddr>()
            .map(|addr| FromWorker::Ready { idx, addr })
            .map_err(|_| format!("bad address in READY line: {arg:?}")),
        "RESULT" => serde_json::from_str(arg)
            .map(|value| FromWorker::Result { idx, value })
            .map_err(|e| format!("bad RESULT json: {e}")),
        "FAIL" => Ok(FromWorker::Fail {
            idx,
            why: arg.chars().filter(|c| !c.is_control()).take(2000).collect(),
        }),
        other => Err(format!("unknown worker message {other:?}")),
    })
}

pub fn ready_line(idx: u32, addr: SocketAddr) -> String {
    format!("{TAG} READY {idx} {addr}\n")
}

pub fn result_line(idx: u32, v: &serde_json::Value) -> String {
    format!("{TAG} RESULT {idx} {v}\n")
}

pub fn fail_line(idx: u32, why: &str) -> String {
    let one: String = why
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    format!("{TAG} FAIL {idx} {one}\n")
}

pub fn secret_line(hex: &str) -> String {
    format!("{TAG} SECRET {hex}\n")
}

pub fn job_line(job: &Job) -> String {
    format!(
        "{TAG} JOB {}\n",
        serde_json::to_string(job).expect("a job serialises")
    )
}

pub fn peers_line(peers: &[SocketAddr]) -> String {
    format!(
        "{TAG} PEERS {}\n",
        serde_json::to_string(peers).expect("addresses serialise")
    )
}

/// Splits `line` as `GBW1 <KIND> <payload>` for the worker's stdin side.
pub fn parse_to_worker<'a>(line: &'a str, kind: &str) -> Result<&'a str, String> {
    line.strip_prefix(TAG)
        .and_then(|r| r.strip_prefix(' '))
        .and_then(|r| r.strip_prefix(kind))
        .and_then(|r| r.strip_prefix(' '))
        .ok_or_else(|| {
            format!(
                "expected a {kind} line from the launcher, got {:?}",
                line.chars().take(40).collect::<String>()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_garbage_is_refused() {
        let a: SocketAddr = "127.0.0.3:4000".parse().unwrap();
        assert_eq!(
            parse_from_worker(ready_line(2, a).trim_end()),
            Some(Ok(FromWorker::Ready { idx: 2, addr: a }))
        );
        let v = serde_json::json!({"x": [1, 2]});
        assert_eq!(
            parse_from_worker(result_line(0, &v).trim_end()),
            Some(Ok(FromWorker::Result { idx: 0, value: v }))
        );
        assert_eq!(
            parse_from_worker(fail_line(1, "a\nb").trim_end()),
            Some(Ok(FromWorker::Fail {
                idx: 1,
                why: "a b".into()
            }))
        );
        assert_eq!(parse_from_worker("hello"), None);
        assert!(matches!(
            parse_from_worker("GBW1 READY x 1.2.3.4:5"),
            Some(Err(_))
        ));
        assert!(matches!(
            parse_from_worker("GBW1 READY 1 nowhere"),
            Some(Err(_))
        ));
        assert!(matches!(parse_from_worker("GBW1 RESULT 1 {"), Some(Err(_))));
        assert!(matches!(parse_from_worker("GBW1 BOOM 1 x"), Some(Err(_))));
        assert_eq!(parse_to_worker("GBW1 SECRET ab", "SECRET"), Ok("ab"));
        assert!(parse_to_worker("GBW1 JOB {}", "SECRET").is_err());
    }
}
