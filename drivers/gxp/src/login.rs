//! Logging into a real host: run the login command (OpenSSH, a local launcher, …) with a small
//! POSIX-sh bootstrap as its remote command. The bootstrap starts the installed GXP or, when the host
//! lacks this build, receives the program over the same stdin, installs it atomically in a per-user
//! directory (temporary name, sha256 check, rename) and starts it. Only the login command's
//! stdin/stdout carry anything: no port is opened.

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use gridbed_gxp::tree::proto::{Body, FrameReader, LoginMethod};

/// How long a login may take, binary transfer included.
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(60);

/// The program this daemon runs and forwards (its own executable).
pub struct Program {
    pub bytes: Arc<Vec<u8>>,
    pub sha: String,
}

impl Program {
    pub fn load(path: &Path) -> anyhow::Result<Program> {
        let bytes = std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("cannot read GXP program {}: {e}", path.display()))?;
        let sha = hex::encode(Sha256::digest(&bytes));
        Ok(Program {
            bytes: Arc::new(bytes),
            sha,
        })
    }
}

/// The remote command of a login. An installed copy is used only if its content hashes to `sha`
/// (re-hashed at every login, not trusted by its name); a new copy is checked, synced to disk and
/// renamed into place; the daemon is told `sha` and checks its own executable against it.
pub fn bootstrap_script(sha: &str, size: usize, index: u32) -> String {
    format!(
        r#"d="${{GXP_HOME:-$HOME/.gxp-rs}}/bin"; f="$d/gxp-{short}"
if [ -x "$f" ] && [ "$(sha256sum < "$f" | cut -c1-64)" = "{sha}" ]; then
  echo GXP-HAVE
else
  echo GXP-NEED
  mkdir -p "$d" || exit 3
  t="$f.tmp.$$"
  head -c {size} > "$t"
  s=$(sha256sum < "$t" | cut -c1-64)
  if [ "$s" != "{sha}" ]; then rm -f "$t"; echo GXP-BADSUM; exit 3; fi
  chmod 700 "$t" || exit 3
  sync "$t" 2>/dev/null || sync
  mv -f "$t" "$f" || exit 3
  echo GXP-INSTALLED
fi
exec "$f" daemon --index {index} --sha {sha}"#,
        short = &sha[..16]
    )
}

/// An established link to a child daemon.
pub struct ChildProcess {
    pub child: Child,
    pub stdin: ChildStdin,
    pub stdout: ChildStdout,
    /// Bytes already read past the Hello frame.
    pub reader: FrameReader,
    pub name: String,
    /// Whether the program was installed by this login.
    pub installed: bool,
}

/// Logs into `target` with `method` and brings up a daemon with host index `index`.
pub async fn login(
    method: &LoginMethod,
    target: &str,
    index: u32,
    program: &Program,
) -> Result<ChildProcess, String> {
    match tokio::time::timeout(LOGIN_TIMEOUT, login_inner(method, target, index, program)).await {
        Ok(r) => r,
        Err(_) => Err(format!("{target}: login timed out after {LOGIN_TIMEOUT:?}")),
    }
}

async fn login_inner(
    method: &LoginMethod,
    target: &str,
    index: u32,
    program: &Program,
) -> Result<ChildProcess, String> {
    let Some((prog, args)) = method.argv.split_first() else {
        return Err(format!(
            "{target}: login method {} has an empty command",
            method.name
        ));
    };
    let mut cmd = Command::new(prog);
    cmd.args(args)
        .arg(bootstrap_script(&program.sha, program.bytes.len(), index));
    for (k, v) in &method.env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("{target}: cannot run {prog}: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let mut stdout = child.stdout.take().ok_or("no stdout")?;
    // Keep the last stderr lines for the error message, and pass later ones through.
    let errlines = Arc::new(Mutex::new(Vec::<String>::new()));
    if let Some(se) = child.stderr.take() {
        let el = errlines.clone();
        let t = target.to_string();
        tokio::spawn(async move {
            let mut lines = BufReader::new(se).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                let mut v = el.lock().unwrap_or_else(|e| e.into_inner());
                if v.len() >= 5 {
                    v.remove(0);
                    eprintln!("[{t}] {l}");
                }
                v.push(l);
            }
        });
    }
    let fail = |child: &mut Child, what: String| {
        let _ = child.start_kill();
        let e = errlines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join(" / ");
        if e.is_empty() {
            format!("{target}: {what}")
        } else {
            format!("{target}: {what}: {e}")
        }
    };
    let mut buf: Vec<u8> = Vec::new();
    let mut installed = false;
    let mut chunk = vec![0u8; 64 * 1024];
    // Text phase: marker lines (anything else a login shell prints is skipped).
    loop {
        while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            let line = String::from_utf8_lossy(&line).trim().to_string();
            match line.as_str() {
                "GXP-HAVE" | "GXP-INSTALLED" => {
                    installed |= line == "GXP-INSTALLED";
                    return hello_phase(child, stdin, stdout, buf, installed, target, &errlines)
                        .await;
                }
                "GXP-NEED" => {
                    if let Err(e) = stdin.write_all(&program.bytes).await {
                        return Err(fail(&mut child, format!("sending the program failed: {e}")));
                    }
                    let _ = stdin.flush().await;
                }
                "GXP-BADSUM" => {
                    return Err(fail(
                        &mut child,
                        "program checksum mismatch after transfer".into(),
                    ))
                }
                _ => {}
            }
        }
        let n = stdout.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            let status = child.wait().await.ok().and_then(|s| s.code());
            // give the stderr reader a moment to collect the reason
            tokio::time::sleep(Duration::from_millis(50)).await;
            return Err(fail(
                &mut child,
                format!(
                    "login command ended (exit {})",
                    status.map_or("?".into(), |c| c.to_string())
                ),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > 1 << 20 {
            return Err(fail(
                &mut child,
                "too much output before the daemon started".into(),
            ));
        }
    }
}

async fn hello_phase(
    mut child: Child,
    stdin: ChildStdin,
    mut stdout: ChildStdout,
    rest: Vec<u8>,
    installed: bool,
    target: &str,
    errlines: &Arc<Mutex<Vec<String>>>,
) -> Result<ChildProcess, String> {
    let mut reader = FrameReader::default();
    reader.push(&rest);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match reader.next_body() {
            Ok(Some(Body::Hello { name, version })) => {
                if version != gridbed_gxp::VERSION {
                    let _ = child.start_kill();
                    return Err(format!(
                        "{target}: daemon version {version:?} != {:?}",
                        gridbed_gxp::VERSION
                    ));
                }
                return Ok(ChildProcess {
                    child,
                    stdin,
                    stdout,
                    reader,
                    name,
                    installed,
                });
            }
            Ok(Some(_)) => {
                let _ = child.start_kill();
                return Err(format!("{target}: daemon did not start with a hello"));
            }
            Ok(None) => {}
            Err(e) => {
                let _ = child.start_kill();
                return Err(format!("{target}: {e}"));
            }
        }
        let n = stdout.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            let _ = child.wait().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            let e = errlines
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .join(" / ");
            return Err(format!("{target}: daemon exited before its hello: {e}"));
        }
        reader.push(&chunk[..n]);
    }
}
