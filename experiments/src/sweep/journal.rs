//! The sweep's journal: a header line naming the sweep, then one JSON line per finished seed,
//! appended and synced as each seed ends. Running the same sweep again resumes it: seeds already
//! in the journal are not run again. A last line cut short by an interruption is dropped (that
//! seed runs again); any other unreadable line is an error naming its line number.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::record::SeedRecord;

pub const FORMAT: &str = "gridbed-sweep-journal";
pub const VERSION: u32 = 1;

/// Longest journal line read back (a record holds a few hundred metrics at most).
const MAX_LINE: usize = 1 << 20;

/// What makes two sweeps the same sweep: a journal is resumed only under an equal header.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub format: String,
    pub version: u32,
    pub experiment: String,
    pub quick: bool,
    /// The parameter values (None: the experiment's defaults).
    pub values: Option<serde_json::Value>,
}

impl Header {
    pub fn new(experiment: &str, quick: bool, values: Option<serde_json::Value>) -> Header {
        Header {
            format: FORMAT.into(),
            version: VERSION,
            experiment: experiment.into(),
            quick,
            values,
        }
    }
}

pub struct Journal {
    path: PathBuf,
    file: File,
}

impl Journal {
    /// Opens (or creates) the journal at `path` for the sweep `header`; returns it with the
    /// records it already holds, by seed.
    pub fn open(
        path: &Path,
        header: &Header,
    ) -> anyhow::Result<(Journal, BTreeMap<u64, SeedRecord>)> {
        let mut done = BTreeMap::new();
        let mut valid_len = 0u64;
        let exists = path.exists();
        if exists {
            let f = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
            let mut r = BufReader::new(f);
            let mut line = Vec::new();
            let mut n = 0usize;
            loop {
                line.clear();
                let got = std::io::Read::take(&mut r, MAX_LINE as u64 + 1)
                    .read_until(b'\n', &mut line)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                if got == 0 {
                    break;
                }
                n += 1;
                let complete = line.last() == Some(&b'\n');
                let at = format!("{} line {n}", path.display());
                anyhow::ensure!(line.len() <= MAX_LINE, "{at}: longer than {MAX_LINE} bytes");
                if !complete {
                    // Cut short by an interruption: that seed runs again.
                    break;
                }
                if n == 1 {
                    let h: Header = serde_json::from_slice(&line)
                        .with_context(|| format!("{at}: not a sweep journal header"))?;
                    anyhow::ensure!(
                        h.format == FORMAT && h.version == VERSION,
                        "{at}: journal format {} version {}, this program writes {FORMAT} version {VERSION}",
                        h.format,
                        h.version
                    );
                    anyhow::ensure!(
                        &h == header,
                        "{}: the journal is of another sweep (experiment, --quick or parameters differ); use another --out",
                        path.display()
                    );
                } else {
                    let rec: SeedRecord = serde_json::from_slice(&line)
                        .with_context(|| format!("{at}: not a seed record"))?;
                    done.insert(rec.seed, rec);
                }
                valid_len += got as u64;
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        // Drop a cut-short last line so the next record starts on a line of its own.
        file.set_len(valid_len)
            .with_context(|| format!("cannot write {}", path.display()))?;
        let mut j = Journal {
            path: path.to_path_buf(),
            file,
        };
        if valid_len == 0 {
            j.append_line(&serde_json::to_vec(header)?)?;
        }
        Ok((j, done))
    }

    pub fn append(&mut self, rec: &SeedRecord) -> anyhow::Result<()> {
        self.append_line(&serde_json::to_vec(rec)?)
    }

    fn append_line(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        let mut line = bytes.to_vec();
        line.push(b'\n');
        self.file
            .write_all(&line)
            .and_then(|_| self.file.sync_data())
            .with_context(|| format!("cannot write {}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seed: u64) -> SeedRecord {
        let mut r = SeedRecord::failed(seed, "x".into(), 0.5);
        r.error = None;
        r.metrics.insert("m".into(), seed as f64);
        r
    }

    #[test]
    fn resumes_drops_a_cut_line_and_refuses_another_sweep() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("journal.jsonl");
        let h = Header::new("exp", false, None);
        {
            let (mut j, done) = Journal::open(&p, &h).unwrap();
            assert!(done.is_empty());
            j.append(&rec(1)).unwrap();
            j.append(&rec(2)).unwrap();
        }
        // An interruption in the middle of the third record.
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(br#"{"seed":3,"err"#).unwrap();
        drop(f);
        {
            let (mut j, done) = Journal::open(&p, &h).unwrap();
            assert_eq!(done.keys().copied().collect::<Vec<_>>(), vec![1, 2]);
            assert_eq!(done[&2], rec(2));
            j.append(&rec(3)).unwrap();
        }
        let (_, done) = Journal::open(&p, &h).unwrap();
        assert_eq!(done.len(), 3);

        let other = Header::new("exp", true, None);
        let e = Journal::open(&p, &other).err().unwrap().to_string();
        assert!(e.contains("another sweep"), "{e}");

        // A broken line that is not the last: an error naming the line.
        let text = std::fs::read_to_string(&p).unwrap();
        let mut lines: Vec<&str> = text.lines().collect();
        lines[2] = "garbage";
        std::fs::write(&p, lines.join("\n") + "\n").unwrap();
        let e = format!("{:#}", Journal::open(&p, &h).err().unwrap());
        assert!(e.contains("line 3: not a seed record"), "{e}");
    }
}
