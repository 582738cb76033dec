//! Help for the `gxp` prompt: `help` lists the commands, `help CMD` explains one with an example;
//! `gxp --help` shows the same list.

/// (command, usage, what it does, one example)
pub const COMMANDS: &[(&str, &str, &str, &str)] = &[
    (
        "use",
        "use METHOD FROM_RE TO_RE",
        "login rule: from hosts matching FROM_RE, reach hosts matching TO_RE with METHOD (ssh, rsh, local, netns, or one defined by `method`)",
        "use ssh login0 node[0-9]+",
    ),
    (
        "method",
        "method NAME ARGV...",
        "define a login method; `{host}` is replaced by the target, the bootstrap command is appended",
        "method myssh ssh -p 2222 {host}",
    ),
    (
        "explore",
        "explore HOST...",
        "reach hosts through the login rules, installing gxp on each (ranges allowed)",
        "explore node[000-127]",
    ),
    (
        "cd",
        "cd DIR",
        "working directory of the following commands on every host",
        "cd /tmp",
    ),
    (
        "timeout",
        "timeout SECONDS|off",
        "deadline of the following e/eg commands: hosts not done by then are stopped and reported failed",
        "timeout 600",
    ),
    (
        "e",
        "e CMD",
        "run CMD on the selected hosts; output live, each line prefixed by its host",
        "e hostname",
    ),
    (
        "eg",
        "eg CMD",
        "like e, but output grouped: identical outputs once, with the hosts that gave them",
        "eg uname -r",
    ),
    (
        "{{",
        "cmd1 {{ cmd2 }} cmd3",
        "network pipe: cmd1's stdout goes to cmd2 on every selected host, their merged stdout to cmd3 (cmd1 and cmd3 local, both optional)",
        "cat input.txt {{ wc -l }} sort -n",
    ),
    (
        "farm",
        "farm TASKFILE [JOURNAL]",
        "task farm: one task per line, dispatched to free hosts, re-dispatched when a host is lost; JOURNAL makes it resumable",
        "farm tasks.txt tasks.journal",
    ),
    (
        "sel",
        "sel all|ok|failed|re RE|save NAME|use NAME|list",
        "choose the hosts later commands run on",
        "sel re node0[0-3]",
    ),
    (
        "stat",
        "stat",
        "show the tree of hosts",
        "stat",
    ),
    (
        "help",
        "help [CMD]",
        "list the commands, or explain one",
        "help farm",
    ),
    ("quit", "quit", "stop every daemon and leave (also: exit)", "quit"),
];

/// `help`: one line per command.
pub fn overview() -> String {
    let mut s = String::from("commands (help CMD for details and an example):\n");
    for (_, usage, what, _) in COMMANDS {
        s.push_str(&format!("  {usage:<44} {}\n", first_clause(what)));
    }
    s
}

/// `help CMD`: usage, description and an example; None for an unknown command.
pub fn command(name: &str) -> Option<String> {
    let name = match name {
        "exit" => "quit",
        "pipe" | "}}" => "{{",
        n => n,
    };
    COMMANDS
        .iter()
        .find(|c| c.0 == name)
        .map(|(_, usage, what, example)| format!("{usage}\n  {what}\n  example: {example}\n"))
}

/// For `gxp --help`: every command with one example.
pub fn examples() -> String {
    let mut s = String::from("Prompt commands (type `help` or `help CMD` at the prompt):\n");
    for (_, usage, _, example) in COMMANDS {
        s.push_str(&format!("  {usage:<44} e.g. {example}\n"));
    }
    s.push_str("\nExample:\n  gxp -c 'use ssh login0 node[0-9]+' -c 'explore node[00-15]' -c 'e hostname'\n");
    s
}

fn first_clause(s: &str) -> &str {
    s.split(';').next().unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_has_help_and_an_example() {
        for (name, usage, _, example) in COMMANDS {
            let text = command(name).unwrap();
            assert!(text.starts_with(usage) && text.contains(example), "{text}");
        }
        assert!(command("exit").unwrap().starts_with("quit"));
        assert!(command("nonsense").is_none());
        assert!(overview().lines().count() > COMMANDS.len());
        assert!(examples().contains("e.g. e hostname"));
    }
}
