//! Host selection: by regular expression on host names, the hosts where the last command succeeded
//! or failed, and saved named selections (GXP's `smask`/`savemask`).

use std::collections::{BTreeMap, BTreeSet};

use regex::Regex;

use crate::front::controller::ExecReport;
use crate::lang::hosts::{HostState, HostTable};

#[derive(Clone, Debug, Default)]
pub struct SelectionState {
    /// Selected host indices; None = every alive host.
    current: Option<BTreeSet<u32>>,
    pub last_ok: BTreeSet<u32>,
    pub last_failed: BTreeSet<u32>,
    named: BTreeMap<String, BTreeSet<u32>>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SelectError {
    #[error("bad host regular expression {0:?}: {1}")]
    Regex(String, String),
    #[error("no saved selection named {0:?}")]
    UnknownName(String),
    #[error("selection names are letters, digits, '_' and '-', got {0:?}")]
    BadName(String),
    #[error("usage: sel all | ok | failed | re REGEX | save NAME | use NAME | list")]
    Usage,
}

impl SelectionState {
    /// Alive selected hosts, in index order.
    pub fn resolve(&self, table: &HostTable) -> Vec<u32> {
        table
            .alive()
            .filter(|i| self.current.as_ref().is_none_or(|s| s.contains(i)))
            .collect()
    }

    /// Selects exactly these host indices.
    pub fn set(&mut self, hosts: BTreeSet<u32>) {
        self.current = Some(hosts);
    }

    pub fn all(&mut self) {
        self.current = None;
    }

    /// Hosts whose reported or target name matches `re` (whole name).
    pub fn by_regex(&mut self, table: &HostTable, re: &str) -> Result<usize, SelectError> {
        let r = Regex::new(&format!("^(?:{re})$"))
            .map_err(|e| SelectError::Regex(re.to_string(), e.to_string()))?;
        let s: BTreeSet<u32> = table
            .entries()
            .iter()
            .enumerate()
            .filter(|(_, e)| {
                e.state == HostState::Alive && (r.is_match(&e.name) || r.is_match(&e.target))
            })
            .map(|(i, _)| i as u32)
            .collect();
        let n = s.len();
        self.current = Some(s);
        Ok(n)
    }

    pub fn succeeded(&mut self) {
        self.current = Some(self.last_ok.clone());
    }

    pub fn failed(&mut self) {
        self.current = Some(self.last_failed.clone());
    }

    pub fn save(&mut self, table: &HostTable, name: &str) -> Result<(), SelectError> {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(SelectError::BadName(name.to_string()));
        }
        self.named
            .insert(name.to_string(), self.resolve(table).into_iter().collect());
        Ok(())
    }

    pub fn restore(&mut self, name: &str) -> Result<(), SelectError> {
        let s = self
            .named
            .get(name)
            .ok_or_else(|| SelectError::UnknownName(name.to_string()))?;
        self.current = Some(s.clone());
        Ok(())
    }

    pub fn names(&self) -> Vec<String> {
        self.named.keys().cloned().collect()
    }

    /// Remembers where a command succeeded and failed.
    pub fn record(&mut self, report: &ExecReport) {
        self.last_ok = report
            .results
            .iter()
            .filter(|r| r.status.success())
            .map(|r| r.index)
            .collect();
        self.last_failed = report
            .results
            .iter()
            .filter(|r| !r.status.success())
            .map(|r| r.index)
            .collect();
    }

    /// Applies a prompt command `sel ARGS...`; returns a message for the user.
    pub fn command(&mut self, table: &HostTable, args: &[&str]) -> Result<String, SelectError> {
        match args {
            ["all"] => self.all(),
            ["ok"] => self.succeeded(),
            ["failed"] => self.failed(),
            ["re", re] => {
                self.by_regex(table, re)?;
            }
            ["save", name] => {
                self.save(table, name)?;
                return Ok(format!("saved selection {name}"));
            }
            ["use", name] => self.restore(name)?,
            ["list"] => return Ok(self.names().join(" ")),
            _ => return Err(SelectError::Usage),
        }
        Ok(format!("{} hosts selected", self.resolve(table).len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::front::controller::HostResult;
    use crate::tree::proto::Status;

    fn table() -> HostTable {
        let mut t = HostTable::with_root("root", "root");
        for n in ["a1", "a2", "b1"] {
            let (_, i) = t.begin_login(0, n);
            t.login_ok(i, n.to_string());
        }
        t
    }

    #[test]
    fn regex_saved_and_last_status_selections() {
        let t = table();
        let mut s = SelectionState::default();
        assert_eq!(s.resolve(&t), vec![0, 1, 2, 3]);
        assert_eq!(s.by_regex(&t, "a.").unwrap(), 2);
        s.save(&t, "as").unwrap();
        s.all();
        let mk = |i: u32, st: Status| HostResult {
            index: i,
            name: String::new(),
            status: st,
            stdout: vec![],
            stderr: vec![],
        };
        s.record(&ExecReport {
            exec: 1,
            results: vec![mk(1, Status::Code(0)), mk(3, Status::Code(2))],
            merged_stdout: vec![],
            cut: false,
            dropped: 0,
        });
        s.failed();
        assert_eq!(s.resolve(&t), vec![3]);
        s.command(&t, &["use", "as"]).unwrap();
        assert_eq!(s.resolve(&t), vec![1, 2]);
        assert_eq!(
            s.command(&t, &["use", "zz"]),
            Err(SelectError::UnknownName("zz".into()))
        );
        assert!(matches!(
            s.command(&t, &["re", "("]),
            Err(SelectError::Regex(..))
        ));
    }
}
