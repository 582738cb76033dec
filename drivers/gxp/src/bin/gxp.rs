//! `gxp`: the parallel shell on real machines.
//!
//! - `gxp`                      interactive prompt (`[succeeded/selected/total] gxp> `)
//! - `gxp -c LINE [-c LINE]...` one-shot: runs the lines in order, exits 1 if any failed
//! - `gxp daemon --index N --sha SHA` a child daemon (started by the bootstrap of a login; not for users)

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use gridbed_gxp::lang::shell::Shell;
use gridbed_gxp_driver::{self as real, Program, ShellLocal};
use tokio::io::AsyncBufReadExt;

#[derive(Parser)]
#[command(
    name = "gxp",
    about = "GXP: a parallel shell over a self-installing tree of hosts",
    after_help = gridbed_gxp::lang::help::examples()
)]
struct Cli {
    /// Run these command lines in order and exit (one-shot use from scripts).
    #[arg(short = 'c', long = "command")]
    commands: Vec<String>,
    /// The program to install on hosts that lack it (default: this executable).
    #[arg(long)]
    program: Option<PathBuf>,
    #[command(subcommand)]
    sub: Option<Sub>,
}

#[derive(Subcommand)]
enum Sub {
    /// Run as a child daemon on stdin/stdout (started by a login's bootstrap).
    #[command(hide = true)]
    Daemon {
        #[arg(long)]
        index: u32,
        /// Sha256 of the program the tree runs; this executable must hash to it.
        #[arg(long)]
        sha: String,
    },
}

fn main() {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gxp: cannot start the runtime: {e}");
            std::process::exit(2);
        }
    };
    let code = rt.block_on(async move {
        match run(cli).await {
            Ok(code) => code,
            Err(e) => {
                eprintln!("gxp: {e:#}");
                2
            }
        }
    });
    std::process::exit(code);
}

async fn run(cli: Cli) -> anyhow::Result<i32> {
    if let Some(Sub::Daemon { index, sha }) = cli.sub {
        real::daemon_main(index, &sha).await?;
        return Ok(0);
    }
    let exe = match cli.program {
        Some(p) => p,
        None => std::env::current_exe()?,
    };
    let ctl = real::start_root(Program::load(&exe)?);
    let mut shell = Shell::new(ctl, Box::new(ShellLocal));
    let mut stdout = std::io::stdout();
    if !cli.commands.is_empty() {
        let mut failed = false;
        for line in &cli.commands {
            let r = shell.line(line, &mut stdout).await;
            stdout.flush()?;
            match r {
                Ok(r) if r.quit => break,
                Ok(_) => failed |= shell.last_failed,
                Err(e) => {
                    eprintln!("gxp: {e:#}");
                    shell.ctl.quit();
                    return Ok(2);
                }
            }
        }
        shell.ctl.quit();
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        return Ok(if failed { 1 } else { 0 });
    }
    if std::io::stdin().is_terminal() {
        interactive(&mut shell).await?;
        shell.ctl.quit();
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        return Ok(0);
    }
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    loop {
        print!("{}", shell.prompt());
        stdout.flush()?;
        let Some(line) = lines.next_line().await? else {
            break;
        };
        let r = shell.line(&line, &mut stdout).await;
        match r {
            Ok(r) if r.quit => break,
            Ok(_) => {}
            Err(e) => eprintln!("gxp: {e:#}"),
        }
    }
    shell.ctl.quit();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    Ok(0)
}

/// The prompt on a terminal: line editing and history (rustyline). The editor blocks while the
/// user types, so it runs on the blocking pool and the daemons' tasks keep running meanwhile.
async fn interactive(shell: &mut Shell) -> anyhow::Result<()> {
    use rustyline::error::ReadlineError;
    let mut editor = rustyline::DefaultEditor::new()?;
    let mut stdout = std::io::stdout();
    loop {
        let prompt = shell.prompt();
        let (ed, line) = tokio::task::spawn_blocking(move || {
            let line = editor.readline(&prompt);
            (editor, line)
        })
        .await?;
        editor = ed;
        let line = match line {
            Ok(line) => line,
            // Ctrl-C abandons the line being typed; Ctrl-D leaves.
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        };
        if !line.trim().is_empty() {
            let _ = editor.add_history_entry(line.as_str());
        }
        match shell.line(&line, &mut stdout).await {
            Ok(r) if r.quit => break,
            Ok(_) => {}
            Err(e) => eprintln!("gxp: {}", format!("{e:#}").replace('\n', " ")),
        }
        stdout.flush()?;
    }
    Ok(())
}
