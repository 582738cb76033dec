//! The controller's view of the tree: every host it tried to reach, where it sits, and its state.

use std::collections::BTreeMap;

/// State of one host of the tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostState {
    /// A login to it is in progress.
    Pending,
    Alive,
    /// The login failed (message).
    Failed(String),
    /// Was reached, then its daemon or a daemon above it was lost.
    Lost,
}

#[derive(Clone, Debug)]
pub struct HostEntry {
    /// Name used in the host list / login rules.
    pub target: String,
    /// Name the daemon reported (`hostname` or its override).
    pub name: String,
    /// Child numbers from the root down to this host.
    pub path: Vec<u32>,
    pub parent: Option<u32>,
    /// Children logged in or being logged in (fan-out accounting).
    pub children: u32,
    /// Next child number to hand out.
    pub next_child: u32,
    pub state: HostState,
}

impl HostEntry {
    pub fn depth(&self) -> usize {
        self.path.len()
    }
}

/// Every host, by index (index 0 is the root).
#[derive(Clone, Debug, Default)]
pub struct HostTable {
    entries: Vec<HostEntry>,
    by_path: BTreeMap<Vec<u32>, u32>,
    by_target: BTreeMap<String, u32>,
}

impl HostTable {
    pub fn with_root(target: &str, name: &str) -> Self {
        let mut t = HostTable::default();
        t.entries.push(HostEntry {
            target: target.to_string(),
            name: name.to_string(),
            path: vec![],
            parent: None,
            children: 0,
            next_child: 0,
            state: HostState::Alive,
        });
        t.by_path.insert(vec![], 0);
        t.by_target.insert(target.to_string(), 0);
        t
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, i: u32) -> Option<&HostEntry> {
        self.entries.get(i as usize)
    }

    /// The host's name, or "" for an index not in the table.
    pub fn name_of(&self, i: u32) -> String {
        self.get(i).map(|e| e.name.clone()).unwrap_or_default()
    }

    pub fn entries(&self) -> &[HostEntry] {
        &self.entries
    }

    pub fn by_path(&self, path: &[u32]) -> Option<u32> {
        self.by_path.get(path).copied()
    }

    /// Index of a reached (alive or pending) host with this target name.
    pub fn by_target(&self, target: &str) -> Option<u32> {
        self.by_target.get(target).copied()
    }

    pub fn alive(&self) -> impl Iterator<Item = u32> + '_ {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.state == HostState::Alive)
            .map(|(i, _)| i as u32)
    }

    pub fn alive_count(&self) -> usize {
        self.alive().count()
    }

    /// Records a login about to be started from `parent`; returns (child number, new index).
    pub fn begin_login(&mut self, parent: u32, target: &str) -> (u32, u32) {
        let p = &mut self.entries[parent as usize];
        let child = p.next_child;
        p.next_child += 1;
        p.children += 1;
        let mut path = p.path.clone();
        path.push(child);
        let index = self.entries.len() as u32;
        self.entries.push(HostEntry {
            target: target.to_string(),
            name: target.to_string(),
            path,
            parent: Some(parent),
            children: 0,
            next_child: 0,
            state: HostState::Pending,
        });
        self.by_target.insert(target.to_string(), index);
        (child, index)
    }

    /// The login of `index` succeeded; `name` is what its daemon reported (sanitised here: it
    /// comes from another machine and ends up in prefixes and on the terminal).
    pub fn login_ok(&mut self, index: u32, name: String) {
        if let Some(e) = self.entries.get_mut(index as usize) {
            e.name = crate::front::output::sanitize_name(&name, &e.target);
            e.state = HostState::Alive;
            self.by_path.insert(e.path.clone(), index);
        }
    }

    pub fn login_failed(&mut self, index: u32, err: String) {
        let Some(e) = self.entries.get_mut(index as usize) else {
            return;
        };
        e.state = HostState::Failed(err);
        let parent = e.parent;
        let target = e.target.clone();
        if self.by_target.get(&target) == Some(&index) {
            self.by_target.remove(&target);
        }
        if let Some(p) = parent {
            self.entries[p as usize].children = self.entries[p as usize].children.saturating_sub(1);
        }
    }

    /// Marks the host at `path` and its whole subtree lost; returns the indices newly lost.
    pub fn lose_subtree(&mut self, path: &[u32]) -> Vec<u32> {
        let mut lost = Vec::new();
        for (i, e) in self.entries.iter_mut().enumerate() {
            if e.path.starts_with(path) && matches!(e.state, HostState::Alive | HostState::Pending)
            {
                e.state = HostState::Lost;
                lost.push(i as u32);
            }
        }
        for &i in &lost {
            let p = self.entries[i as usize].path.clone();
            self.by_path.remove(&p);
            let t = self.entries[i as usize].target.clone();
            if self.by_target.get(&t) == Some(&i) {
                self.by_target.remove(&t);
            }
        }
        lost
    }

    /// Maximum depth over alive hosts.
    pub fn depth(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| e.state == HostState::Alive)
            .map(|e| e.depth())
            .max()
            .unwrap_or(0)
    }

    /// Largest number of alive children of any host.
    pub fn max_children(&self) -> usize {
        let mut n: BTreeMap<u32, usize> = BTreeMap::new();
        for e in self.entries.iter().filter(|e| e.state == HostState::Alive) {
            if let Some(p) = e.parent {
                *n.entry(p).or_default() += 1;
            }
        }
        n.values().copied().max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reported_name_is_sanitised_before_it_is_shown() {
        let mut t = HostTable::with_root("root", "root");
        let (_, a) = t.begin_login(0, "a");
        t.login_ok(a, "evil\n\x1b[31mroot: forged".into());
        let (_, b) = t.begin_login(0, "b");
        t.login_ok(b, String::new());
        assert_eq!(t.name_of(a), "evil??[31mroot:?forged");
        assert_eq!(t.name_of(b), "b", "an empty name falls back to the target");
    }
}
