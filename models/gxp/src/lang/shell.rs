//! The command language of the `gxp` prompt and of one-shot use (`gxp -c ...`):
//!
//! ```text
//! use METHOD FROM_RE TO_RE     login rule (methods: ssh, rsh, local, netns, or one defined by `method`)
//! method NAME ARGV...          define a login method; `{host}` is the target, the bootstrap is appended
//! explore HOST...              reach hosts (ranges: node[000-127])
//! cd DIR                       working directory of the following commands on every host
//! timeout SECONDS|off          deadline of the following `e`/`eg` commands
//! e CMD                        run on the selected hosts (live, host-prefixed output)
//! eg CMD                       same, output grouped (identical outputs once, with their hosts)
//! cmd1 {{ cmd2 }} cmd3         network pipe
//! farm TASKFILE [JOURNAL]      task farm; JOURNAL makes it resumable
//! sel all|ok|failed|re RE|save NAME|use NAME|list
//! stat                         the tree
//! help [CMD]                   the commands, or one with an example
//! ```

use std::io::Write;

use crate::front::controller::{Controller, ExecOptions};
use crate::front::farm::{parse_tasks, FarmJournal, FarmOptions};
use crate::front::output::{grouped, LinePrefixer};
use crate::front::pipe::{self, LocalRunner};
use crate::tree::proto::LoginMethod;

/// Largest task file or farm journal read (millions of tasks fit; a wrong file does not exhaust
/// memory).
pub const MAX_FARM_FILE_BYTES: u64 = 256 << 20;

/// Reads a text file of at most `max` bytes; anything else is a one-line error naming it.
fn read_bounded(path: &str, max: u64, what: &str) -> anyhow::Result<String> {
    use std::io::Read;
    let f =
        std::fs::File::open(path).map_err(|e| anyhow::anyhow!("cannot read {what} {path}: {e}"))?;
    let mut text = String::new();
    // Reads one byte past the limit to tell "exactly max" from "more".
    f.take(max + 1)
        .read_to_string(&mut text)
        .map_err(|e| anyhow::anyhow!("cannot read {what} {path}: {e}"))?;
    if text.len() as u64 > max {
        anyhow::bail!("{what} {path}: larger than {max} bytes");
    }
    Ok(text)
}

pub struct Shell {
    pub ctl: Controller,
    pub local: Box<dyn LocalRunner>,
    /// Whether the last command failed somewhere (exit status of one-shot use).
    pub last_failed: bool,
    /// Deadline of `e`/`eg` (`timeout`); None: wait as long as the hosts are alive.
    pub timeout: Option<std::time::Duration>,
}

/// What a command line did: text to show, and whether the shell should stop.
pub struct Reply {
    pub quit: bool,
}

impl Shell {
    pub fn new(ctl: Controller, local: Box<dyn LocalRunner>) -> Self {
        Shell {
            ctl,
            local,
            last_failed: false,
            timeout: None,
        }
    }

    /// `[succeeded/selected/total] gxp> `
    pub fn prompt(&self) -> String {
        let (ok, sel, total) = self.ctl.prompt_counts();
        format!("[{ok}/{sel}/{total}] gxp> ")
    }

    /// Runs one line, writing its output to `out`. Errors are bad input or a lost root.
    pub async fn line(
        &mut self,
        line: &str,
        out: &mut (dyn Write + Send),
    ) -> anyhow::Result<Reply> {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return Ok(Reply { quit: false });
        }
        if pipe::is_pipeline(line) || line.contains("{{") {
            let p = pipe::parse(line)?;
            // cmd3's output (or the hosts' merged stdout) is written as it comes.
            let r = {
                let o: &mut (dyn Write + Send) = &mut *out;
                let mut sink = |d: &[u8]| {
                    let _ = o.write_all(d);
                    let _ = o.flush();
                };
                self.ctl
                    .pipe(&p, self.local.as_ref(), Some(&mut sink))
                    .await?
            };
            let mut pre = LinePrefixer::default();
            for h in &r.remote.results {
                for l in pre.push(
                    h.index,
                    &h.name,
                    crate::tree::proto::Stream::Stderr,
                    &h.stderr,
                ) {
                    writeln!(out, "{l}")?;
                }
            }
            for l in pre.flush() {
                writeln!(out, "{l}")?;
            }
            writeln!(out, "{}", r.remote.summary())?;
            self.last_failed = !r.success();
            return Ok(Reply { quit: false });
        }
        let (cmd, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let rest = rest.trim();
        match cmd {
            "quit" | "exit" => {
                self.ctl.quit();
                return Ok(Reply { quit: true });
            }
            "help" | "?" => match rest {
                "" => write!(out, "{}", crate::lang::help::overview())?,
                name => match crate::lang::help::command(name) {
                    Some(text) => write!(out, "{text}")?,
                    None => anyhow::bail!("help: no command {name:?} (type `help` for the list)"),
                },
            },
            "use" => self.ctl.rules.add_line(line)?,
            "method" => {
                let w: Vec<&str> = rest.split_whitespace().collect();
                if w.len() < 2 {
                    anyhow::bail!("usage: method NAME ARGV... ({{host}} is the target)");
                }
                self.ctl.rules.set_method(LoginMethod { name: w[0].into(), argv: w[1..].iter().map(|s| s.to_string()).collect(), env: vec![] });
            }
            "cd" => {
                if rest.is_empty() || rest.split_whitespace().count() != 1 {
                    anyhow::bail!("usage: cd DIRECTORY (one directory, used on every host)");
                }
                self.ctl.cwd = Some(rest.to_string());
            }
            "timeout" => {
                self.timeout = match rest {
                    "off" => None,
                    s => match s.parse::<f64>() {
                        Ok(t) if t > 0.0 && t <= 1e9 => Some(std::time::Duration::from_secs_f64(t)),
                        _ => anyhow::bail!("usage: timeout SECONDS|off (a positive number of seconds)"),
                    },
                };
            }
            "explore" => {
                let targets = crate::lang::hostrange::expand_all(rest)?;
                if targets.is_empty() {
                    anyhow::bail!("usage: explore HOST... (ranges like node[000-127] allowed)");
                }
                let r = self.ctl.explore(&targets).await?;
                for (t, why) in &r.failed {
                    writeln!(out, "explore: {t}: {why}")?;
                }
                writeln!(out, "explore: reached {} of {} targets in {} rounds; {} hosts alive", r.reached.len(), targets.len(), r.rounds, self.ctl.table.alive_count())?;
                self.last_failed = !r.failed.is_empty();
            }
            "e" | "eg" => {
                if rest.is_empty() {
                    anyhow::bail!("usage: {cmd} COMMAND");
                }
                let live = cmd == "e";
                let mut pre = LinePrefixer::default();
                let rep = {
                    // Live: each complete line is written as it arrives, prefixed by its host.
                    let o: &mut (dyn Write + Send) = &mut *out;
                    let mut sink = |i: u32, h: &str, s: crate::tree::proto::Stream, d: &[u8]| {
                        if live {
                            for l in pre.push(i, h, s, d) {
                                let _ = writeln!(o, "{l}");
                            }
                            let _ = o.flush();
                        }
                    };
                    let deadline = self.timeout.map(|d| self.local.timer(d));
                    self.ctl.exec(rest, ExecOptions { sink: Some(&mut sink), deadline, ..Default::default() }).await?
                };
                for l in pre.flush() {
                    writeln!(out, "{l}")?;
                }
                if !live {
                    write!(out, "{}", grouped(&rep))?;
                }
                writeln!(out, "{}", rep.summary())?;
                self.last_failed = rep.succeeded() != rep.results.len();
            }
            "farm" => {
                let w: Vec<&str> = rest.split_whitespace().collect();
                let (Some(file), journal_path) = (w.first(), w.get(1)) else {
                    anyhow::bail!("usage: farm TASKFILE [JOURNAL]");
                };
                let text = read_bounded(file, MAX_FARM_FILE_BYTES, "task file")?;
                let tasks = parse_tasks(&text);
                let mut journal = match journal_path {
                    Some(j) if std::path::Path::new(j).exists() => {
                        let text = read_bounded(j, MAX_FARM_FILE_BYTES, "journal")?;
                        let journal = FarmJournal::from_lines(&text)?;
                        // Drop a record cut by an interruption so the appends start on a new line.
                        if !text.is_empty() && !text.ends_with('\n') {
                            let keep = text.rfind('\n').map_or(0, |p| p + 1) as u64;
                            std::fs::OpenOptions::new().write(true).open(j).and_then(|f| f.set_len(keep)).map_err(|e| anyhow::anyhow!("cannot repair journal {j}: {e}"))?;
                        }
                        journal
                    }
                    _ => FarmJournal::default(),
                };
                let mut jfile = match journal_path {
                    Some(j) => Some(std::fs::OpenOptions::new().create(true).append(true).open(j).map_err(|e| anyhow::anyhow!("cannot open journal {j}: {e}"))?),
                    None => None,
                };
                let mut append = |r: &crate::front::farm::TaskRecord| -> Result<(), String> {
                    let Some(f) = jfile.as_mut() else { return Ok(()) };
                    // One write per record: an interruption leaves at most a cut last line, which
                    // the resume skips. Synced, so a record the run reported survives a crash.
                    f.write_all(format!("{}\n", FarmJournal::line(r)).as_bytes())
                        .and_then(|()| f.sync_data())
                        .map_err(|e| e.to_string())
                };
                let rep = self.ctl.farm(&tasks, &mut journal, FarmOptions { on_done: Some(&mut append), ..Default::default() }).await?;
                for r in journal.done.values() {
                    write!(out, "task {} [{}] on {}: {}\n{}", r.idx, r.cmd, r.host, r.status, r.stdout)?;
                }
                writeln!(
                    out,
                    "farm: {} tasks, {} run now, {} from journal, {} retried after host loss, {} abandoned",
                    tasks.len(),
                    rep.finished,
                    rep.skipped,
                    rep.retried,
                    rep.abandoned
                )?;
                self.last_failed = journal.done.values().any(|r| r.code != Some(0));
                if let (Some(e), Some(j)) = (&rep.journal_error, journal_path) {
                    writeln!(out, "farm: journal {j}: {} records not written ({e}); a resume would run those tasks again", rep.journal_failures)?;
                    self.last_failed = true;
                }
            }
            "sel" => {
                let args: Vec<&str> = rest.split_whitespace().collect();
                let msg = self.ctl.selection.command(&self.ctl.table, &args)?;
                writeln!(out, "{msg}")?;
            }
            "stat" => {
                for (i, name, depth) in self.ctl.alive_hosts() {
                    writeln!(out, "{:indent$}{name} (#{i})", "", indent = depth * 2)?;
                }
                writeln!(out, "{} hosts, depth {}, max {} children per parent", self.ctl.table.alive_count(), self.ctl.table.depth(), self.ctl.table.max_children())?;
            }
            other => anyhow::bail!("unknown command {other:?} (type `help` for the list: use, method, explore, cd, timeout, e, eg, farm, sel, stat, quit, or a {{{{ }}}} pipe)"),
        }
        Ok(Reply { quit: false })
    }
}

#[cfg(test)]
mod tests {
    use super::read_bounded;

    #[test]
    fn farm_files_are_read_only_up_to_the_limit() {
        let p = std::env::temp_dir().join(format!("gxp-read-bounded-{}", std::process::id()));
        std::fs::write(&p, "0123456789").unwrap();
        let path = p.to_str().unwrap();
        assert_eq!(read_bounded(path, 10, "task file").unwrap(), "0123456789");
        let e = read_bounded(path, 9, "task file").unwrap_err().to_string();
        assert!(
            e.contains("larger than 9 bytes") && e.contains("task file"),
            "{e}"
        );
        let e = read_bounded("/nonexistent/x", 9, "journal")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("cannot read journal"), "{e}");
        std::fs::remove_file(&p).unwrap();
    }
}
