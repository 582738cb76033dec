//! Login rules: "from hosts matching A, one can log into hosts matching B with method M" — GXP's
//! `use M A B`. Patterns are regular expressions matched against the whole host name.

use std::collections::BTreeMap;

use regex::Regex;

use crate::tree::proto::LoginMethod;

#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("login rule must read `use METHOD FROM_REGEX TO_REGEX`, got {0:?}")]
    Syntax(String),
    #[error("unknown login method {0:?} (known: {1})")]
    UnknownMethod(String, String),
    #[error("bad regular expression {0:?}: {1}")]
    Regex(String, String),
}

#[derive(Clone, Debug)]
pub struct Rule {
    pub method: String,
    pub from: Regex,
    pub to: Regex,
}

/// The rules plus the login methods they may name.
#[derive(Clone, Debug)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
    pub methods: BTreeMap<String, LoginMethod>,
}

impl Default for RuleSet {
    fn default() -> Self {
        let mut methods = BTreeMap::new();
        // BatchMode: never prompt (a prompt would hang an unattended explore); -T: no tty, so the
        // channel is a clean byte pipe for frames.
        methods.insert(
            "ssh".to_string(),
            LoginMethod {
                name: "ssh".into(),
                argv: [
                    "ssh",
                    "-o",
                    "BatchMode=yes",
                    "-o",
                    "ServerAliveInterval=30",
                    "-o",
                    "ServerAliveCountMax=3",
                    "-T",
                    // Ends ssh's options: whatever follows is the destination, never an option.
                    "--",
                    "{host}",
                ]
                .map(String::from)
                .to_vec(),
                env: vec![],
            },
        );
        // rsh-style alternative (pluggable: any command that runs its last argument on {host}).
        methods.insert(
            "rsh".to_string(),
            LoginMethod {
                name: "rsh".into(),
                argv: ["rsh", "{host}"].map(String::from).to_vec(),
                env: vec![],
            },
        );
        // Local launcher for test hosts: a plain process on this machine named {host}, with its own
        // install directory so each fake host goes through self-installation.
        let local_home = std::env::var("GXP_LOCAL_ROOT")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|_| std::env::temp_dir().join("gxp-local"));
        methods.insert(
            "local".to_string(),
            LoginMethod {
                name: "local".into(),
                argv: ["sh", "-c"].map(String::from).to_vec(),
                env: vec![
                    ("GXP_NAME".into(), "{host}".into()),
                    (
                        "GXP_HOME".into(),
                        local_home.join("{host}").to_string_lossy().into_owned(),
                    ),
                ],
            },
        );
        // The local launcher inside a fresh user + network namespace (`unshare -rn`): a test host
        // with no network at all but its loopback, which a GXP daemon does not need since it
        // talks only over the login command's stdin/stdout. Needs unprivileged user namespaces.
        let mut netns = methods["local"].clone();
        netns.name = "netns".into();
        netns.argv = ["unshare", "-rn", "sh", "-c"].map(String::from).to_vec();
        methods.insert("netns".to_string(), netns);
        RuleSet {
            rules: Vec::new(),
            methods,
        }
    }
}

/// Whether `target` may be logged into. A name beginning with `-` would be read as an option by
/// the login command (`-oProxyCommand=...` runs a command on the parent), and a name with
/// whitespace or control characters is no host name: both are refused before any login starts.
pub fn check_target(target: &str) -> Result<(), String> {
    if target.is_empty() {
        return Err("empty host name".into());
    }
    if target.starts_with('-') {
        return Err(format!("host name {target:?} begins with '-'"));
    }
    if target.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "host name {target:?} contains whitespace or control characters"
        ));
    }
    Ok(())
}

fn anchored(p: &str) -> Result<Regex, RuleError> {
    Regex::new(&format!("^(?:{p})$")).map_err(|e| RuleError::Regex(p.to_string(), e.to_string()))
}

impl RuleSet {
    /// Adds (or replaces) a login method.
    pub fn set_method(&mut self, m: LoginMethod) {
        self.methods.insert(m.name.clone(), m);
    }

    /// Adds a rule from GXP syntax `use METHOD FROM TO`.
    pub fn add_line(&mut self, line: &str) -> Result<(), RuleError> {
        let w: Vec<&str> = line.split_whitespace().collect();
        if w.len() != 4 || w[0] != "use" {
            return Err(RuleError::Syntax(line.to_string()));
        }
        self.add(w[1], w[2], w[3])
    }

    pub fn add(&mut self, method: &str, from: &str, to: &str) -> Result<(), RuleError> {
        if !self.methods.contains_key(method) {
            let known: Vec<&str> = self.methods.keys().map(|s| s.as_str()).collect();
            return Err(RuleError::UnknownMethod(
                method.to_string(),
                known.join(", "),
            ));
        }
        self.rules.push(Rule {
            method: method.to_string(),
            from: anchored(from)?,
            to: anchored(to)?,
        });
        Ok(())
    }

    /// Indices of rules whose destination pattern matches `target`.
    pub fn rules_to(&self, target: &str) -> Vec<usize> {
        self.rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.to.is_match(target))
            .map(|(i, _)| i)
            .collect()
    }

    /// Indices of rules whose source pattern matches `source`.
    pub fn rules_from(&self, source: &str) -> Vec<usize> {
        self.rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.from.is_match(source))
            .map(|(i, _)| i)
            .collect()
    }

    /// The concrete login method of rule `rule` for `target` (`{host}` substituted).
    pub fn method_for(&self, rule: usize, target: &str) -> LoginMethod {
        let name = &self.rules[rule].method;
        let m = &self.methods[name];
        LoginMethod {
            name: m.name.clone(),
            argv: m.argv.iter().map(|a| a.replace("{host}", target)).collect(),
            env: m
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.replace("{host}", target)))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_matches_whole_names() {
        let mut r = RuleSet::default();
        r.add_line("use ssh login gw[0-9]+").unwrap();
        r.add_line("use local gw1 n1-.*").unwrap();
        assert_eq!(r.rules_to("gw12"), vec![0]);
        assert_eq!(r.rules_to("xgw12"), Vec::<usize>::new());
        assert_eq!(r.rules_from("gw1"), vec![1]);
        let m = r.method_for(1, "n1-007");
        assert_eq!(m.env[0], ("GXP_NAME".to_string(), "n1-007".to_string()));
        assert!(m.env[1].1.ends_with("n1-007"));
        assert_eq!(r.method_for(0, "gw3").argv.last().unwrap(), "gw3");
    }

    #[test]
    fn ssh_target_follows_end_of_options_and_dash_names_are_refused() {
        let mut r = RuleSet::default();
        r.add_line("use ssh .* .*").unwrap();
        let argv = r.method_for(0, "gw3").argv;
        assert_eq!(&argv[argv.len() - 2..], ["--", "gw3"]);
        assert!(check_target("-oProxyCommand=touch /tmp/x").is_err());
        assert!(check_target("a b").is_err());
        assert!(check_target("a\nb").is_err());
        assert!(check_target("").is_err());
        assert!(check_target("n1-007.example").is_ok());
    }

    #[test]
    fn rejects_bad_rules() {
        let mut r = RuleSet::default();
        assert!(matches!(r.add_line("use ssh a"), Err(RuleError::Syntax(_))));
        assert!(matches!(
            r.add_line("use telnet a b"),
            Err(RuleError::UnknownMethod(..))
        ));
        assert!(matches!(
            r.add_line("use ssh a( b"),
            Err(RuleError::Regex(..))
        ));
    }
}
