//! Network pipes, the slides' syntax: `cmd1 {{ cmd2 }} cmd3`. cmd1 and cmd3 run locally, cmd2 on
//! every selected host; cmd1's stdout goes to every cmd2's stdin, the merged stdouts of all cmd2 to
//! cmd3's stdin. Either local side may be empty (`cat X {{ cat > Y }}` copies X to every host).

use crate::controller::{ControlError, Controller, ExecOptions, ExecReport};
use crate::proto::Status;
use gridbed_runtime::BoxFuture;

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

/// Runs the local ends of a pipeline (sim: built-in commands on the login host; real: `sh -c`).
pub trait LocalRunner: Send + Sync {
    /// Runs `cmd` to completion with `stdin`; returns its stdout and status.
    fn run<'a>(&'a self, cmd: &'a str, stdin: Vec<u8>) -> BoxFuture<'a, (Vec<u8>, Status)>;
}

/// Result of a network pipe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PipeReport {
    pub left_status: Option<Status>,
    pub remote: ExecReport,
    pub right_status: Option<Status>,
    /// cmd3's stdout, or the merged remote stdout when there is no cmd3.
    pub output: Vec<u8>,
}

impl Controller {
    /// Runs a network pipe on the selected hosts. The local ends run to completion (cmd1 before the
    /// remote stage, cmd3 after it); data crosses the network in chunks.
    pub async fn pipe(
        &mut self,
        p: &Pipeline,
        local: &dyn LocalRunner,
    ) -> Result<PipeReport, ControlError> {
        let (input, left_status) = match &p.left {
            Some(c) => {
                let (out, st) = local.run(c, Vec::new()).await;
                (out, Some(st))
            }
            None => (Vec::new(), None),
        };
        let remote = self
            .exec(
                &p.remote,
                ExecOptions {
                    stdin: Some(input),
                    ..Default::default()
                },
            )
            .await?;
        let (output, right_status) = match &p.right {
            Some(c) => {
                let (out, st) = local.run(c, remote.merged_stdout.clone()).await;
                (out, Some(st))
            }
            None => (remote.merged_stdout.clone(), None),
        };
        Ok(PipeReport {
            left_status,
            remote,
            right_status,
            output,
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
