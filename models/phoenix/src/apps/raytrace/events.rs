//! What a `phoenix-raytracer` process and its driver say to each other: commands on the process's
//! stdin (one per line), events on its stdout (one JSON object per line), and the tile dump file.
//! Both sides use these types, so the format cannot drift apart.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::protocol::ids::{Id, IdRange};
use crate::protocol::node::Stats;

/// A command to a machine process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cmd {
    /// Hand every tile to others, report `Left`, exit.
    Leave,
    /// Answer with a `Report` event.
    Report,
    /// Stop rendering, let hand-offs in flight land, write the owned tiles to the file, answer
    /// `Dumped`; keep serving the protocol until `quit`.
    Dump(PathBuf),
    /// Exit at once.
    Quit,
}

impl Cmd {
    pub fn parse(line: &str) -> Result<Cmd, String> {
        let line = line.trim();
        match line.split_once(' ') {
            None if line == "leave" => Ok(Cmd::Leave),
            None if line == "report" => Ok(Cmd::Report),
            None if line == "quit" => Ok(Cmd::Quit),
            Some(("dump", file)) if !file.trim().is_empty() => Ok(Cmd::Dump(file.trim().into())),
            _ => Err(format!("unknown command '{line}'")),
        }
    }
    /// The line the driver writes (without the newline).
    pub fn line(&self) -> String {
        match self {
            Cmd::Leave => "leave".into(),
            Cmd::Report => "report".into(),
            Cmd::Quit => "quit".into(),
            Cmd::Dump(f) => format!("dump {}", f.display()),
        }
    }
}

/// Protocol counters a process reports (the part of `Stats` the experiment checks).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub delivered: u64,
    pub forwarded: u64,
    pub duplicates: u64,
    pub bound_violations: u64,
    pub rejected: u64,
    pub after_departure: u64,
    /// Frames this machine sent, of every kind (what the protocol cost on the wire).
    pub frames_sent: u64,
    /// Of those, application messages (the ray tracer's steal requests and refusals).
    pub app_sent: u64,
    /// CPU time of the machine's thread from its start, µs (OS processes only; 0 elsewhere).
    pub thread_cpu_us: u64,
    /// Steal requests an idle machine sent.
    pub steals: u64,
    /// Of those, the ones answered (tiles or a refusal) within the steal wait.
    pub steals_answered: u64,
    /// Summed wait, µs, from an answered request to its answer.
    pub steal_wait_us: u64,
}

impl From<&Stats> for Counters {
    fn from(s: &Stats) -> Self {
        Counters {
            delivered: s.delivered,
            forwarded: s.forwarded,
            duplicates: s.duplicates,
            bound_violations: s.bound_violations,
            rejected: s.rejected,
            after_departure: s.after_departure,
            frames_sent: s.sent.values().sum(),
            app_sent: s.sent.get("app").copied().unwrap_or(0),
            thread_cpu_us: 0,
            steals: 0,
            steals_answered: 0,
            steal_wait_us: 0,
        }
    }
}

impl Counters {
    pub fn add(&mut self, o: &Counters) {
        self.delivered += o.delivered;
        self.forwarded += o.forwarded;
        self.duplicates += o.duplicates;
        self.bound_violations += o.bound_violations;
        self.rejected += o.rejected;
        self.after_departure += o.after_departure;
        self.frames_sent += o.frames_sent;
        self.app_sent += o.app_sent;
        self.thread_cpu_us += o.thread_cpu_us;
        self.steals += o.steals;
        self.steals_answered += o.steals_answered;
        self.steal_wait_us += o.steal_wait_us;
    }

    /// Counts a steal request that waited `waited`, answered or not.
    pub fn stole(&mut self, waited: Duration, answered: bool) {
        self.steals += 1;
        if answered {
            self.steals_answered += 1;
            self.steal_wait_us += waited.as_micros() as u64;
        }
    }
}

/// An event on a machine process's stdout. `t` is wall-clock seconds since the UNIX epoch: the
/// processes of a run share no other clock.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// An initial machine is serving.
    Ready { host: u32, t: f64 },
    /// A joiner owns its first IDs, `secs` after its process started its runtime.
    Joined { host: u32, t: f64, secs: f64 },
    /// Tiles rendered here, in order (written in batches: one line per tile cost the driver a
    /// wake-up and a parse per tile).
    Tiles { host: u32, tiles: Vec<TileDone> },
    /// The machine handed everything off (`secs` from the request) and exits.
    Left {
        host: u32,
        t: f64,
        secs: f64,
        counters: Counters,
    },
    Report {
        host: u32,
        phase: String,
        owned: Vec<IdRange>,
        todo: u64,
        done: u64,
        counters: Counters,
    },
    /// The owned tiles are in the dump file.
    Dumped {
        host: u32,
        tiles: u64,
        counters: Counters,
    },
}

impl Event {
    pub fn line(&self) -> String {
        serde_json::to_string(self).expect("plain data serialises")
    }
    pub fn parse(line: &str) -> Result<Event, String> {
        serde_json::from_str(line).map_err(|e| format!("bad event line '{line}': {e}"))
    }
    pub fn host(&self) -> u32 {
        match self {
            Event::Ready { host, .. }
            | Event::Joined { host, .. }
            | Event::Tiles { host, .. }
            | Event::Left { host, .. }
            | Event::Report { host, .. }
            | Event::Dumped { host, .. } => *host,
        }
    }
}

/// Tile `id` was rendered at `t`: `tests` ray–object intersection tests, `pixels` pixels.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TileDone {
    pub id: Id,
    pub t: f64,
    pub tests: u64,
    pub pixels: u64,
    /// CPU seconds the rendering took (the process's thread CPU clock; protocol work excluded),
    /// on the tiles that were timed (`machine::CPU_SAMPLE_EVERY`).
    pub cpu_s: Option<f64>,
}

/// The tiles one machine owned when told to dump: what the driver assembles the image from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dump {
    pub host: u32,
    pub owned: Vec<IdRange>,
    /// Rendered tiles, by ID.
    pub tiles: Vec<(Id, Vec<u8>)>,
    /// Owned tiles not rendered (must be none at the end of a run).
    pub todo: Vec<Id>,
}

impl Dump {
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("plain data serialises")
    }
    pub fn decode(bytes: &[u8]) -> Result<Dump, String> {
        postcard::from_bytes(bytes).map_err(|e| format!("bad tile dump: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_events_round_trip() {
        for c in [
            Cmd::Leave,
            Cmd::Report,
            Cmd::Quit,
            Cmd::Dump("/tmp/a b.bin".into()),
        ] {
            assert_eq!(Cmd::parse(&c.line()), Ok(c));
        }
        assert!(Cmd::parse("dump").is_err());
        assert!(Cmd::parse("leave now").is_err());
        let e = Event::Tiles {
            host: 3,
            tiles: vec![TileDone {
                id: 17,
                t: 1.5,
                tests: 99,
                pixels: 256,
                cpu_s: Some(0.001),
            }],
        };
        assert_eq!(Event::parse(&e.line()), Ok(e));
        assert!(Event::parse("ready").is_err());
        let d = Dump {
            host: 1,
            owned: vec![IdRange::new(0, 4)],
            tiles: vec![(0, vec![1, 2, 3])],
            todo: vec![2],
        };
        assert_eq!(Dump::decode(&d.encode()), Ok(d));
        assert!(Dump::decode(&[0xff; 3]).is_err());
    }
}
