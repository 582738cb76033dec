//! The deterministic commands of the simulated hosts: hostname, echo, cat, wc, sort, sha256sum,
//! sleep, compute N, true, false, exit N; `$VAR` expansion, single/double quotes and a final
//! `> FILE` redirection (so `cat X {{ cat > Y }}` copies X to every host's disk).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::channel::mpsc::UnboundedReceiver;
use futures::StreamExt;
use gridbed_runtime::HostRef;
use sha2::{Digest, Sha256};

use super::world::World;
use crate::tree::proto::Status;

/// Splits a command line into words, expanding `$VAR`/`${VAR}` outside single quotes.
pub fn words(line: &str, env: &BTreeMap<String, String>) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some('\''), '\'') | (Some('"'), '"') => quote = None,
            (Some('\''), _) => cur.push(c),
            (None, '\'') | (None, '"') => {
                quote = Some(c);
                in_word = true;
            }
            (_, '$') => {
                let mut name = String::new();
                let braced = chars.peek() == Some(&'{');
                if braced {
                    chars.next();
                }
                while let Some(&n) = chars.peek() {
                    if n.is_ascii_alphanumeric() || n == '_' {
                        name.push(n);
                        chars.next();
                    } else {
                        break;
                    }
                }
                if braced && chars.next() != Some('}') {
                    return Err("bad ${...} substitution".into());
                }
                if name.is_empty() {
                    cur.push('$');
                } else {
                    cur.push_str(env.get(&name).map(|s| s.as_str()).unwrap_or(""));
                }
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (_, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err("unterminated quote".into());
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

/// Where a command's output goes as it runs.
pub trait Out: Send {
    fn stdout(&mut self, data: Vec<u8>);
    fn stderr(&mut self, data: Vec<u8>);
}

/// Runs one command line on `host`. `stdin` yields chunks until it ends (None or closed channel).
pub async fn run(
    host: &HostRef,
    world: &Arc<World>,
    line: &str,
    env: &BTreeMap<String, String>,
    mut stdin: UnboundedReceiver<Option<Vec<u8>>>,
    out: &mut (dyn Out + Send),
) -> Status {
    let mut w = match words(line, env) {
        Ok(w) => w,
        Err(e) => return Status::Failed(e),
    };
    let mut redirect = None;
    if let Some(pos) = w.iter().position(|x| x == ">") {
        if pos + 2 != w.len() {
            return Status::Failed("syntax: '> FILE' must end the command".into());
        }
        redirect = w.pop();
        w.pop();
    }
    let Some(cmd) = w.first().cloned() else {
        return Status::Code(0);
    };
    let args = &w[1..];
    let id = host.id();
    let mut buf: Vec<u8> = Vec::new();
    let code = match cmd.as_str() {
        "hostname" => {
            buf.extend_from_slice(format!("{}\n", world.name(id)).as_bytes());
            0
        }
        "echo" => {
            buf.extend_from_slice(format!("{}\n", args.join(" ")).as_bytes());
            0
        }
        "true" => 0,
        "false" => 1,
        "exit" => args.first().and_then(|a| a.parse().ok()).unwrap_or(0),
        "sleep" => match args
            .first()
            .and_then(|a| a.parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
        {
            Some(s) => {
                host.sleep(Duration::from_secs_f64(s)).await;
                0
            }
            None => return Status::Failed("usage: sleep SECONDS".into()),
        },
        "compute" => match args
            .first()
            .and_then(|a| a.parse::<f64>().ok())
            .filter(|c| c.is_finite() && *c >= 0.0)
        {
            Some(c) => {
                host.compute(c as u64).await;
                0
            }
            None => return Status::Failed("usage: compute CYCLES".into()),
        },
        "cat" | "wc" | "sort" | "sha256sum" => {
            let data = match args.iter().find(|a| !a.starts_with('-')) {
                Some(f) => match world.read(id, f) {
                    Some(b) => b.to_vec(),
                    None => {
                        out.stderr(format!("{cmd}: {f}: No such file or directory\n").into_bytes());
                        return Status::Code(1);
                    }
                },
                None => read_stdin(&mut stdin).await,
            };
            match cmd.as_str() {
                "cat" => buf = data,
                "wc" => {
                    let lines = data.iter().filter(|&&b| b == b'\n').count();
                    if args.iter().any(|a| a == "-l") {
                        buf.extend_from_slice(format!("{lines}\n").as_bytes());
                    } else {
                        let words = String::from_utf8_lossy(&data).split_whitespace().count();
                        buf.extend_from_slice(
                            format!("{lines} {words} {}\n", data.len()).as_bytes(),
                        );
                    }
                }
                "sort" => {
                    let text = String::from_utf8_lossy(&data).into_owned();
                    let mut lines: Vec<&str> = text.lines().collect();
                    lines.sort_unstable();
                    for l in lines {
                        buf.extend_from_slice(l.as_bytes());
                        buf.push(b'\n');
                    }
                }
                _ => buf.extend_from_slice(
                    format!("{}  -\n", hex::encode(Sha256::digest(&data))).as_bytes(),
                ),
            }
            0
        }
        other => {
            out.stderr(format!("{other}: command not found\n").into_bytes());
            127
        }
    };
    match redirect {
        Some(f) => world.write(id, &f, Arc::new(buf)),
        None => {
            if !buf.is_empty() {
                out.stdout(buf);
            }
        }
    }
    Status::Code(code)
}

async fn read_stdin(stdin: &mut UnboundedReceiver<Option<Vec<u8>>>) -> Vec<u8> {
    let mut all = Vec::new();
    while let Some(Some(chunk)) = stdin.next().await {
        all.extend(chunk);
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_quote_and_expand() {
        let env: BTreeMap<String, String> = [("GXP_EXEC_IDX".to_string(), "3".to_string())]
            .into_iter()
            .collect();
        assert_eq!(
            words("echo 'a $X' \"b $GXP_EXEC_IDX\" ${GXP_EXEC_IDX}x", &env).unwrap(),
            vec!["echo", "a $X", "b 3", "3x"]
        );
        assert_eq!(words("cat > Y", &env).unwrap(), vec!["cat", ">", "Y"]);
        assert!(words("echo 'x", &env).is_err());
    }
}
