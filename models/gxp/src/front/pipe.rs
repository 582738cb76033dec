//! Network pipes, the slides' syntax: `cmd1 {{ cmd2 }} cmd3`. cmd1 and cmd3 run locally, cmd2 on
//! every selected host; cmd1's stdout goes to every cmd2's stdin, the merged stdouts of all cmd2 to
//! cmd3's stdin. Either local side may be empty (`cat X {{ cat > Y }}` copies X to every host).

use futures::channel::{mpsc, oneshot};
use futures::StreamExt;

use crate::front::controller::{ControlError, Controller, ExecReport};
use crate::front::exec_loop::{Consumer, ExecIo, OUTPUT_WINDOW};
use crate::tree::proto::{Status, Stream};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pipeline {
    /// Local producer (None: empty stdin).
    pub left: Option<String>,
    /// The command run on every selected host.
    pub remote: String,
    /// Local consumer (None: the merged output is the result).
    pub right: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PipeError {
    #[error("network pipe: '{{{{' at byte {0} is never closed by '}}}}'")]
    Unclosed(usize),
    #[error("network pipe: '}}}}' at byte {0} has no matching '{{{{'")]
    Unopened(usize),
    #[error("network pipe: nested '{{{{' at byte {0} (one remote stage per pipeline)")]
    Nested(usize),
    #[error("network pipe: the remote command between '{{{{' and '}}}}' is empty")]
    EmptyRemote,
    #[error("network pipe: only one '{{{{ ... }}}}' stage per command line")]
    Several,
    #[error("unterminated quote in command line")]
    Quote,
}

/// Positions of `{{` and `}}` outside single/double quotes.
fn markers(line: &str) -> Result<Vec<(usize, bool)>, PipeError> {
    let b = line.as_bytes();
    let mut out = Vec::new();
    let mut quote: Option<u8> = None;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match quote {
            Some(q) => {
                if c == q {
                    quote = None;
                } else if c == b'\\' && q == b'"' {
                    i += 1;
                }
            }
            None => {
                if c == b'\'' || c == b'"' {
                    quote = Some(c);
                } else if c == b'\\' {
                    i += 1;
                } else if (c == b'{' || c == b'}') && b.get(i + 1) == Some(&c) {
                    out.push((i, c == b'{'));
                    i += 1;
                }
            }
        }
        i += 1;
    }
    if quote.is_some() {
        return Err(PipeError::Quote);
    }
    Ok(out)
}

/// Whether the line is a network pipe (contains `{{` or `}}` outside quotes).
pub fn is_pipeline(line: &str) -> bool {
    markers(line).map(|m| !m.is_empty()).unwrap_or(false)
}

pub fn parse(line: &str) -> Result<Pipeline, PipeError> {
    let m = markers(line)?;
    let mut open: Option<usize> = None;
    let mut stage: Option<(usize, usize)> = None;
    for (pos, is_open) in m {
        match (is_open, open) {
            (true, Some(_)) => return Err(PipeError::Nested(pos)),
            (true, None) => {
                if stage.is_some() {
                    return Err(PipeError::Several);
                }
                open = Some(pos);
            }
            (false, Some(o)) => {
                stage = Some((o, pos));
                open = None;
            }
            (false, None) => return Err(PipeError::Unopened(pos)),
        }
    }
    if let Some(o) = open {
        return Err(PipeError::Unclosed(o));
    }
    let (o, c) = stage.ok_or(PipeError::EmptyRemote)?;
    let remote = line[o + 2..c].trim();
    if remote.is_empty() {
        return Err(PipeError::EmptyRemote);
    }
    let side = |s: &str| {
        let s = s.trim();
        (!s.is_empty()).then(|| s.to_string())
    };
    Ok(Pipeline {
        left: side(&line[..o]),
        remote: remote.to_string(),
        right: side(&line[c + 2..]),
    })
}

/// How many chunks may queue between a local command and the controller (each at most
/// [`crate::tree::proto::OUTPUT_CHUNK`]): the bound on what a pipe's local ends buffer.
pub const LOCAL_QUEUE: usize = 16;

/// Receives a pipe's output as it comes.
pub type ByteSink<'a> = &'a mut (dyn FnMut(&[u8]) + Send);

/// A local command started by a [`LocalRunner`], with streaming stdin and stdout.
pub struct LocalProc {
    /// Its stdin (bounded): dropping it is EOF; a send error means it closed its stdin.
    pub stdin: mpsc::Sender<Vec<u8>>,
    /// Its stdout chunks (bounded); ends at EOF.
    pub stdout: mpsc::Receiver<Vec<u8>>,
    /// Resolves with its exit status.
    pub done: oneshot::Receiver<Status>,
    /// Sending stops it (a dropped sender does not).
    pub kill: oneshot::Sender<()>,
}

/// Starts the local ends of a pipeline (sim: built-ins on the login host; real: `sh -c`).
pub trait LocalRunner: Send + Sync {
    fn start(&self, cmd: &str) -> LocalProc;
    /// A future that completes after `d` of this side's time (the shell's command deadline).
    fn timer(&self, d: std::time::Duration) -> futures::future::BoxFuture<'static, ()>;
}

/// Result of a network pipe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PipeReport {
    pub left_status: Option<Status>,
    /// cmd1 was stopped because every remote command had ended (as SIGPIPE stops `yes | head`).
    pub left_cut: bool,
    /// Per-host status and stderr (stdout went to cmd3 or to the output).
    pub remote: ExecReport,
    pub right_status: Option<Status>,
    /// cmd3's stdout, or the merged remote stdout when there is no cmd3 — unless a sink took it.
    pub output: Vec<u8>,
}

impl PipeReport {
    /// Whether every stage succeeded (a cut cmd1 counts as success, as in a shell pipeline).
    pub fn success(&self) -> bool {
        // Hosts stopped because cmd3 stopped reading ended as `yes | head`'s `yes` does.
        let remote_ok =
            |s: &Status| s.success() || (self.remote.cut && matches!(s, Status::Signal(_)));
        self.remote.results.iter().all(|r| remote_ok(&r.status))
            && (self.left_cut || self.left_status.as_ref().is_none_or(Status::success))
            && self.right_status.as_ref().is_none_or(Status::success)
    }
}

impl Controller {
    /// Runs a network pipe on the selected hosts. cmd1, the hosts and cmd3 all run at once: cmd1's
    /// stdout is broadcast under the stdin window ([`crate::front::exec_loop::STDIN_WINDOW`]), the hosts'
    /// stdout is fed to cmd3 as it arrives, and cmd3's output goes to `sink` as it comes (collected
    /// in [`PipeReport::output`] when `sink` is None).
    pub async fn pipe(
        &mut self,
        p: &Pipeline,
        local: &dyn LocalRunner,
        mut sink: Option<ByteSink<'_>>,
    ) -> Result<PipeReport, ControlError> {
        let hosts = self.selected();
        if hosts.is_empty() {
            return Err(ControlError::NothingSelected);
        }
        let mut collected = Vec::new();
        let mut collect = |d: &[u8]| collected.extend_from_slice(d);
        let out: &mut (dyn FnMut(&[u8]) + Send) = match sink.as_mut() {
            Some(s) => *s,
            None => &mut collect,
        };
        // cmd1 reads nothing: its stdin is closed at once.
        let (left, input) = match &p.left {
            Some(c) => {
                let LocalProc {
                    stdin,
                    stdout,
                    done,
                    kill,
                } = local.start(c);
                drop(stdin);
                (Some((done, kill)), Some(stdout.boxed()))
            }
            None => (None, None),
        };
        // The hosts' stdout goes to cmd3, or straight to the output when there is no cmd3.
        let (right, consumer, mut direct) = match &p.right {
            Some(c) => {
                let LocalProc {
                    stdin,
                    stdout,
                    done,
                    kill,
                } = local.start(c);
                let consumer = Consumer {
                    stdin,
                    stdout,
                    sink: out,
                };
                (Some((done, kill)), Some(consumer), None)
            }
            None => (None, None, Some(out)),
        };
        let mut live = |_: u32, _: &str, s: Stream, d: &[u8]| {
            if let (Stream::Stdout, Some(o)) = (s, direct.as_mut()) {
                o(d);
            }
        };
        let io = ExecIo {
            cwd: self.cwd.clone(),
            env: Vec::new(),
            stdin: input,
            live: Some(&mut live),
            keep_stdout: false,
            consumer,
            output_window: Some(OUTPUT_WINDOW),
            deadline: None,
        };
        let remote = self.run_exec(&p.remote, &hosts, io).await;
        let mut left_cut = false;
        let left_status = match left {
            Some((mut done, kill)) => match done.try_recv() {
                Ok(Some(st)) => Some(st),
                _ => {
                    // Still running once every host has ended: nobody reads it any more.
                    let sent = kill.send(()).is_ok();
                    let st = done.await.unwrap_or(Status::Lost);
                    // It may have ended just before the kill: then it was not cut.
                    left_cut = sent && !st.success();
                    Some(st)
                }
            },
            None => None,
        };
        let right_status = match right {
            Some((done, _kill)) => Some(done.await.unwrap_or(Status::Lost)),
            None => None,
        };
        let remote = remote?;
        Ok(PipeReport {
            left_status,
            left_cut,
            remote,
            right_status,
            output: collected,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_slides_examples() {
        assert_eq!(
            parse("cmd1 {{ cmd2 }} cmd3").unwrap(),
            Pipeline {
                left: Some("cmd1".into()),
                remote: "cmd2".into(),
                right: Some("cmd3".into())
            }
        );
        assert_eq!(
            parse("cat X {{ cat > Y }}").unwrap(),
            Pipeline {
                left: Some("cat X".into()),
                remote: "cat > Y".into(),
                right: None
            }
        );
        assert_eq!(parse("{{ hostname }} sort").unwrap().left, None);
        assert_eq!(
            parse("echo '{{' {{ cat }}").unwrap().left.as_deref(),
            Some("echo '{{'")
        );
    }

    #[test]
    fn syntax_errors_are_named() {
        assert_eq!(parse("a {{ b"), Err(PipeError::Unclosed(2)));
        assert_eq!(parse("a }} b"), Err(PipeError::Unopened(2)));
        assert_eq!(parse("a {{ b {{ c }} }}"), Err(PipeError::Nested(7)));
        assert_eq!(parse("a {{ }} b"), Err(PipeError::EmptyRemote));
        assert_eq!(parse("a {{ b }} {{ c }}"), Err(PipeError::Several));
        assert_eq!(parse("a {{ 'b }}"), Err(PipeError::Quote));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        /// Any line either parses into parts that rebuild it, or is rejected with an error — never a panic.
        #[test]
        fn parse_never_panics_and_roundtrips(l in "[a-z ]{0,6}", r in "[a-z]{1,6}", rr in "[a-z ]{0,6}", junk in "[{} a'\"]{0,12}") {
            let line = format!("{l} {{{{ {r} }}}} {rr}");
            let p = parse(&line).unwrap();
            prop_assert_eq!(p.remote, r);
            prop_assert_eq!(p.left.unwrap_or_default(), l.trim().to_string());
            prop_assert_eq!(p.right.unwrap_or_default(), rr.trim().to_string());
            let _ = parse(&junk);
        }
    }
}
