//! Runs a Phoenix experiment and prints its metrics (the `experiment` runner is the main entry
//! point; this is for quick measurements of one crate).
//!
//! `cargo run -p gridbed-experiments --example phoenix -- raytrace [seed] [sim|real]`
//! `cargo run -p gridbed-experiments --example phoenix -- scale [seed] [machines] [ids] [initial] [lans] [nat 0|1]`

use anyhow::{bail, Context};
use gridbed_experiments::phoenix::{raytrace, scale_with, Mode, ScaleParams};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize, default: u64| -> anyhow::Result<u64> {
        args.get(i).map_or(Ok(default), |s| {
            s.parse()
                .with_context(|| format!("argument {i}: '{s}' is not a number"))
        })
    };
    let seed = num(1, 1)?;
    let out = match args.first().map(String::as_str) {
        Some("raytrace") => {
            let mode = match args.get(2).map(String::as_str) {
                None | Some("sim") => Mode::Sim,
                Some("real") => Mode::Real,
                Some(m) => bail!("unknown mode '{m}' (sim or real)"),
            };
            raytrace(mode, seed)?
        }
        Some("scale") => {
            let d = ScaleParams::default();
            let p = ScaleParams {
                machines: num(2, u64::from(d.machines))? as u32,
                space: num(3, d.space)?,
                initial: num(4, u64::from(d.initial))? as u32,
                lans: num(5, d.lans as u64)? as usize,
                nat: num(6, 0)? == 1,
                ..d
            };
            scale_with(seed, &p)?
        }
        _ => bail!("usage: phoenix raytrace [seed] [sim|real] | phoenix scale [seed] [machines] [ids] [initial] [lans] [nat 0|1]"),
    };
    for (k, v) in &out.metrics {
        println!("{k} = {v}");
    }
    for f in &out.figures {
        for s in &f.series {
            let pts: Vec<String> = s
                .points
                .iter()
                .map(|(x, y)| format!("({x:.4}, {y:.0})"))
                .collect();
            println!("figure {} / {}: {}", f.id, s.name, pts.join(" "));
        }
    }
    for n in &out.notes {
        println!("note: {n}");
    }
    for (name, bytes) in &out.artifacts {
        let path = std::env::temp_dir().join(name);
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        println!("artifact: {}", path.display());
    }
    Ok(())
}
