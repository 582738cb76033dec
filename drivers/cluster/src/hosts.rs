//! The hosts file of `experiment run … --mode real --hosts FILE`.
//!
//! ```text
//! # gridbed hosts file: one host per line; `#` starts a comment.
//! ssh_config = /home/me/.ssh/cluster_config   # file-wide options are `key = value`
//! node1.example.org   cores=4 addr=10.0.0.1   # an ssh target and its attributes
//! alice@node2         cores=2
//! inner3              via=node1.example.org   # reached by logging in from node1 (NAT, gateway)
//! ```
//!
//! A host line is an ssh target (`[user@]host`, as `ssh` takes it, resolved through the ssh
//! config) followed by `key=value` attributes: `cores=N` (processor cores the host gives its
//! worker; recorded in the report), `addr=IP` (the address its workers listen on; default: the
//! address its ssh server was reached at), `via=TARGET` (log in from that host of the file
//! instead of from this machine: GXP's `use ssh VIA TARGET`). Options: `ssh_config = PATH`
//! (`ssh -F PATH`; default: the user's own ssh configuration), `connect_timeout = SECONDS`
//! (ssh's ConnectTimeout, default 10). Any other line is refused with its line number.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Largest hosts file read (a 10 000-host file with attributes is under 1 MiB).
pub const MAX_FILE_BYTES: u64 = 1 << 20;
/// Most hosts in one file.
pub const MAX_HOSTS: usize = 10_000;
/// Most cores a host line may claim.
pub const MAX_CORES: u32 = 4096;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostLine {
    /// The ssh target, as written.
    pub target: String,
    pub cores: Option<u32>,
    pub addr: Option<IpAddr>,
    pub via: Option<String>,
    /// Line number in the file (1-based), for messages about this host.
    pub line: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostsFile {
    pub hosts: Vec<HostLine>,
    pub ssh_config: Option<PathBuf>,
    pub connect_timeout_s: u32,
}

impl Default for HostsFile {
    fn default() -> Self {
        HostsFile {
            hosts: Vec::new(),
            ssh_config: None,
            connect_timeout_s: 10,
        }
    }
}

/// Whether `t` is an ssh target this file accepts: `[user@]host` of letters, digits, `.`, `_`,
/// `-`, not beginning with `-` (ssh would read it as an option).
fn valid_target(t: &str) -> Result<(), String> {
    if t.starts_with('-') {
        return Err(format!("host {t:?} begins with '-'"));
    }
    let (user, host) = match t.split_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, t),
    };
    let ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 253
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    };
    if user.is_some_and(|u| !ok(u)) || !ok(host) {
        return Err(format!(
            "bad host {t:?} (an ssh target: [user@]host of letters, digits, '.', '_', '-')"
        ));
    }
    Ok(())
}

impl HostsFile {
    /// Reads and parses `path` (size-checked before reading).
    pub fn load(path: &Path) -> Result<HostsFile, String> {
        let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
        if meta.len() > MAX_FILE_BYTES {
            return Err(format!(
                "{}: larger than {MAX_FILE_BYTES} bytes",
                path.display()
            ));
        }
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let text =
            String::from_utf8(bytes).map_err(|_| format!("{}: not UTF-8 text", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        HostsFile::parse(&text, base).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses the text of a hosts file; relative option paths are taken from `base`. The error is
    /// one line: `line N: …`.
    pub fn parse(text: &str, base: &Path) -> Result<HostsFile, String> {
        let mut f = HostsFile::default();
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            let err = |m: String| format!("line {n}: {m}");
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            if line.chars().any(|c| c.is_control() && c != '\t') {
                return Err(err("control character".into()));
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            if words.get(1) == Some(&"=") {
                // key = value
                let key = words[0];
                let value = words[2..].join(" ");
                if value.is_empty() {
                    return Err(err(format!("option {key} has no value")));
                }
                match key {
                    "ssh_config" => {
                        let p = PathBuf::from(&value);
                        f.ssh_config = Some(if p.is_absolute() { p } else { base.join(p) });
                    }
                    "connect_timeout" => {
                        f.connect_timeout_s = value
                            .parse::<u32>()
                            .ok()
                            .filter(|v| (1..=600).contains(v))
                            .ok_or_else(|| {
                                err(format!(
                                    "connect_timeout {value:?} is not a number of seconds in 1..=600"
                                ))
                            })?;
                    }
                    other => {
                        return Err(err(format!(
                            "unknown option {other:?} (known: ssh_config, connect_timeout)"
                        )))
                    }
                }
                continue;
            }
            if words[0].contains('=') {
                return Err(err(format!(
                    "{:?} is not a host: a line starts with an ssh target (options read `key = value`)",
                    words[0]
                )));
            }
            let target = words[0];
            valid_target(target).map_err(err)?;
            if let Some(first) = seen.get(target) {
                return Err(err(format!("host {target} is already on line {first}")));
            }
            let mut h = HostLine {
                target: target.to_string(),
                cores: None,
                addr: None,
                via: None,
                line: n,
            };
            for w in &words[1..] {
                let Some((k, v)) = w.split_once('=') else {
                    return Err(err(format!(
                        "{w:?} is not an attribute (key=value: cores, addr, via)"
                    )));
                };
                let dup = |set: bool| {
                    if set {
                        Err(err(format!("attribute {k} given twice")))
                    } else {
                        Ok(())
                    }
                };
                match k {
                    "cores" => {
                        dup(h.cores.is_some())?;
                        h.cores = Some(
                            v.parse::<u32>()
                                .ok()
                                .filter(|c| (1..=MAX_CORES).contains(c))
                                .ok_or_else(|| {
                                    err(format!("cores={v:?} is not a number in 1..={MAX_CORES}"))
                                })?,
                        );
                    }
                    "addr" => {
                        dup(h.addr.is_some())?;
                        let a: IpAddr = v
                            .parse()
                            .map_err(|_| err(format!("addr={v:?} is not an IP address")))?;
                        if a.is_unspecified() || a.is_multicast() {
                            return Err(err(format!(
                                "addr={v} cannot be listened on by a worker (unspecified or multicast)"
                            )));
                        }
                        h.addr = Some(a);
                    }
                    "via" => {
                        dup(h.via.is_some())?;
                        valid_target(v).map_err(|e| err(format!("via: {e}")))?;
                        if v == target {
                            return Err(err(format!("host {target} cannot be reached via itself")));
                        }
                        h.via = Some(v.to_string());
                    }
                    other => {
                        return Err(err(format!(
                            "unknown attribute {other:?} (known: cores, addr, via)"
                        )))
                    }
                }
            }
            seen.insert(target.to_string(), n);
            f.hosts.push(h);
            if f.hosts.len() > MAX_HOSTS {
                return Err(err(format!("more than {MAX_HOSTS} hosts")));
            }
        }
        // Every gateway must be a host of the file, and following `via` must end at this machine.
        for h in &f.hosts {
            let mut cur = h;
            let mut steps = 0;
            while let Some(v) = &cur.via {
                let Some(g) = f.hosts.iter().find(|g| &g.target == v) else {
                    return Err(format!("line {}: via={v}: not a host of this file", h.line));
                };
                steps += 1;
                if steps > f.hosts.len() {
                    return Err(format!(
                        "line {}: the via= chain from {} loops",
                        h.line, h.target
                    ));
                }
                cur = g;
            }
        }
        if f.hosts.is_empty() {
            return Err("no hosts (one ssh target per line)".into());
        }
        Ok(f)
    }

    pub fn find(&self, target: &str) -> Option<&HostLine> {
        self.hosts.iter().find(|h| h.target == target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> Result<HostsFile, String> {
        HostsFile::parse(t, Path::new("/base"))
    }

    #[test]
    fn parses_hosts_attributes_options_and_comments() {
        let f = parse(
            "# cluster\nssh_config = cfg/ssh_config\nconnect_timeout = 5\n\n\
             a cores=2 addr=127.0.0.2   # first\nroot@b.example-1 via=a\nc\n",
        )
        .unwrap();
        assert_eq!(f.ssh_config, Some(PathBuf::from("/base/cfg/ssh_config")));
        assert_eq!(f.connect_timeout_s, 5);
        assert_eq!(f.hosts.len(), 3);
        assert_eq!(f.hosts[0].cores, Some(2));
        assert_eq!(f.hosts[0].addr, Some("127.0.0.2".parse().unwrap()));
        assert_eq!(f.hosts[1].via.as_deref(), Some("a"));
        assert_eq!(f.hosts[1].line, 6);
        assert_eq!(f.hosts[2].cores, None);
    }

    #[test]
    fn every_error_names_its_line() {
        for (text, want) in [
            ("a\nb cores=0\n", "line 2: cores=\"0\""),
            ("a\n  b  cores=x", "line 2: cores"),
            ("a\na\n", "line 2: host a is already on line 1"),
            ("a colour=red\n", "line 1: unknown attribute \"colour\""),
            ("a cores\n", "line 1: \"cores\" is not an attribute"),
            ("-oProxyCommand=x\n", "line 1: "),
            ("a\nb addr=300.1.1.1\n", "line 2: addr="),
            ("a addr=0.0.0.0\n", "line 1: addr=0.0.0.0 cannot"),
            ("a via=a\n", "line 1: host a cannot be reached via itself"),
            ("a via=z\n", "line 1: via=z: not a host"),
            ("a via=b\nb via=a\n", "loops"),
            ("frobnicate = 1\n", "line 1: unknown option"),
            ("ssh_config =\n", "line 1: option ssh_config has no value"),
            ("cores=2 a\n", "line 1: \"cores=2\" is not a host"),
            ("a cores=1 cores=2\n", "line 1: attribute cores given twice"),
            ("h\u{7}x\n", "line 1: control character"),
            ("# nothing\n", "no hosts"),
            ("a/b\n", "line 1: bad host"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
            assert!(!e.contains('\n'), "one line: {e}");
        }
    }
}
