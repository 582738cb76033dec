//! Planning `explore` rounds: which reached daemon logs into which target.
//!
//! Each round assigns every remaining target to a reached daemon allowed by a login rule, filling
//! parents in the order they joined (breadth first) up to the soft fan-out limit; daemons reached in
//! a round are parents in the next. Only when a round could assign nothing under the soft limit are
//! parents filled up to the hard limit (a gateway that alone reaches a private LAN). GXP's defaults:
//! 10 soft, 40 hard children per parent.

use std::collections::BTreeSet;

use crate::lang::hosts::{HostState, HostTable};
use crate::lang::rules::RuleSet;

/// Children per parent. Source: GXP's explore defaults ("10 soft / 40 hard", as the GXP task
/// statement quotes them).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Fanout {
    pub soft: u32,
    pub hard: u32,
}

impl Default for Fanout {
    fn default() -> Self {
        Fanout { soft: 10, hard: 40 }
    }
}

/// An error text starting with this marks a login that failed because the parent could not reach
/// the target; another parent may still succeed.
pub const UNREACHABLE_PREFIX: &str = "unreachable:";

#[derive(Clone, Debug)]
struct Target {
    name: String,
    rules: Vec<usize>,
    tried: BTreeSet<u32>,
    in_flight: bool,
    done: bool,
    last_error: Option<String>,
}

/// One login to start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    pub target: usize,
    pub parent: u32,
    pub rule: usize,
}

/// Explore state across rounds.
#[derive(Clone, Debug)]
pub struct Explorer {
    targets: Vec<Target>,
    /// Per rule: alive hosts whose name matches its source pattern, in join order.
    members: Vec<Vec<u32>>,
    seen_hosts: usize,
}

impl Explorer {
    /// Targets already in the table (alive or pending) are skipped.
    pub fn new(rules: &RuleSet, table: &HostTable, names: &[String]) -> Self {
        let mut uniq = BTreeSet::new();
        let targets = names
            .iter()
            .filter(|n| uniq.insert(n.as_str()))
            .map(|n| {
                let bad = crate::lang::rules::check_target(n).err();
                Target {
                    name: n.clone(),
                    rules: rules.rules_to(n),
                    tried: BTreeSet::new(),
                    in_flight: false,
                    done: bad.is_some() || table.by_target(n).is_some(),
                    last_error: bad,
                }
            })
            .collect();
        Explorer {
            targets,
            members: vec![Vec::new(); rules.rules.len()],
            seen_hosts: 0,
        }
    }

    pub fn target_name(&self, t: usize) -> &str {
        &self.targets[t].name
    }

    fn refresh_members(&mut self, rules: &RuleSet, table: &HostTable) {
        for i in self.seen_hosts..table.len() {
            let e = &table.entries()[i];
            if e.state == HostState::Pending {
                break; // joins once its login succeeds; re-examined next time
            }
            if e.state == HostState::Alive {
                for r in rules.rules_from(&e.target) {
                    self.members[r].push(i as u32);
                }
            }
            self.seen_hosts = i + 1;
        }
    }

    /// The logins of the next round (empty: explore is over).
    pub fn plan(&mut self, rules: &RuleSet, table: &HostTable, fanout: Fanout) -> Vec<Assignment> {
        self.refresh_members(rules, table);
        let load: Vec<u32> = table.entries().iter().map(|e| e.children).collect();
        let mut out = self.assign(table, load.clone(), fanout.soft);
        if out.is_empty() {
            out = self.assign(table, load, fanout.hard);
        }
        for a in &out {
            self.targets[a.target].in_flight = true;
            self.targets[a.target].tried.insert(a.parent);
        }
        out
    }

    fn assign(&self, table: &HostTable, mut load: Vec<u32>, limit: u32) -> Vec<Assignment> {
        let mut cursor = vec![0usize; self.members.len()];
        let mut out = Vec::new();
        for (ti, t) in self.targets.iter().enumerate() {
            if t.done || t.in_flight {
                continue;
            }
            'rules: for &r in &t.rules {
                let m = &self.members[r];
                // Skip parents already full for every target (load only grows within a round).
                while cursor[r] < m.len()
                    && (load[m[cursor[r]] as usize] >= limit || !alive(table, m[cursor[r]]))
                {
                    cursor[r] += 1;
                }
                for &h in &m[cursor[r]..] {
                    if load[h as usize] < limit
                        && alive(table, h)
                        && !t.tried.contains(&h)
                        && table.get(h).map(|e| e.target.as_str()) != Some(t.name.as_str())
                    {
                        load[h as usize] += 1;
                        out.push(Assignment {
                            target: ti,
                            parent: h,
                            rule: r,
                        });
                        break 'rules;
                    }
                }
            }
        }
        out
    }

    /// Records the end of a login. A failed login for lack of a route may be retried from another
    /// parent; any other failure is final.
    pub fn finished(&mut self, target: usize, outcome: Result<(), String>) {
        let t = &mut self.targets[target];
        t.in_flight = false;
        match outcome {
            Ok(()) => t.done = true,
            Err(e) => {
                if !e.starts_with(UNREACHABLE_PREFIX) {
                    t.done = true;
                }
                t.last_error = Some(e);
            }
        }
    }

    /// Targets never reached, with the reason.
    pub fn unreached(&self, table: &HostTable) -> Vec<(String, String)> {
        self.targets
            .iter()
            .filter(|t| {
                !matches!(
                    table
                        .by_target(&t.name)
                        .and_then(|i| table.get(i))
                        .map(|e| &e.state),
                    Some(HostState::Alive)
                )
            })
            .map(|t| {
                let why = t.last_error.clone().unwrap_or_else(|| {
                    if t.rules.is_empty() {
                        "no login rule leads to this host".to_string()
                    } else {
                        "no reached host may log into it (login rules)".to_string()
                    }
                });
                (t.name.clone(), why)
            })
            .collect()
    }
}

fn alive(table: &HostTable, h: u32) -> bool {
    table.get(h).is_some_and(|e| e.state == HostState::Alive)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the planner with every login succeeding; returns the table and the round count.
    fn simulate(rules: &RuleSet, targets: &[String], fanout: Fanout) -> (HostTable, usize) {
        let mut table = HostTable::with_root("root", "root");
        let mut ex = Explorer::new(rules, &table, targets);
        let mut rounds = 0;
        loop {
            let plan = ex.plan(rules, &table, fanout);
            if plan.is_empty() {
                break;
            }
            rounds += 1;
            let started: Vec<(usize, u32)> = plan
                .iter()
                .map(|a| {
                    let (_, idx) = table.begin_login(a.parent, ex.target_name(a.target));
                    (a.target, idx)
                })
                .collect();
            for (t, idx) in started {
                table.login_ok(idx, ex.target_name(t).to_string());
                ex.finished(t, Ok(()));
            }
        }
        (table, rounds)
    }

    #[test]
    fn flat_lan_grows_elevenfold_per_round() {
        let mut rules = RuleSet::default();
        rules.add_line("use ssh .* n.*").unwrap();
        let targets: Vec<String> = (0..1000).map(|i| format!("n{i:04}")).collect();
        let (table, rounds) = simulate(&rules, &targets, Fanout::default());
        assert_eq!(table.alive_count(), 1001);
        assert_eq!(rounds, 3, "1 -> 11 -> 121 -> 1331 daemons");
        assert!(table.max_children() <= 10);
        assert_eq!(table.depth(), 3);
    }

    #[test]
    fn private_lan_goes_through_its_gateway_and_uses_hard_limit_only_when_stuck() {
        let mut rules = RuleSet::default();
        rules.add_line("use ssh root gw").unwrap();
        rules.add_line("use ssh gw p.*").unwrap(); // only the gateway reaches the private hosts
        let mut targets = vec!["gw".to_string()];
        targets.extend((0..30).map(|i| format!("p{i}")));
        let (table, _) = simulate(&rules, &targets, Fanout::default());
        assert_eq!(table.alive_count(), 32);
        let gw = table.by_target("gw").unwrap();
        assert_eq!(
            table.get(gw).unwrap().children,
            30,
            "soft limit exceeded up to hard for lack of choice"
        );
        assert_eq!(table.depth(), 2);
    }

    #[test]
    fn unreachable_targets_are_listed_with_a_reason() {
        let mut rules = RuleSet::default();
        rules.add_line("use ssh root a").unwrap();
        let targets = vec!["a".to_string(), "b".to_string()];
        let (table, _) = simulate(&rules, &targets, Fanout::default());
        let ex = Explorer::new(&rules, &table, &targets);
        let un = ex.unreached(&table);
        assert_eq!(un.len(), 1);
        assert_eq!(un[0].0, "b");
    }

    #[test]
    fn a_target_read_as_an_option_is_never_planned() {
        let mut rules = RuleSet::default();
        rules.add_line("use ssh .* .*").unwrap();
        let targets = vec!["-oProxyCommand=touch /tmp/p".to_string(), "a".to_string()];
        let table = HostTable::with_root("root", "root");
        let mut ex = Explorer::new(&rules, &table, &targets);
        let plan = ex.plan(&rules, &table, Fanout::default());
        assert_eq!(plan.len(), 1);
        assert_eq!(ex.target_name(plan[0].target), "a");
        let un = ex.unreached(&table);
        assert!(un
            .iter()
            .any(|(t, why)| t.starts_with("-o") && why.contains("begins with")));
    }
}
