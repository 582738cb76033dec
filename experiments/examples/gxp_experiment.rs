//! Runs one experiment and prints its metrics and notes (until the runner wires it):
//! `cargo run -p gridbed-experiments --example gxp_experiment -- scale|farm [SEED] [SIZES...]`.

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let which = args.first().map(String::as_str).unwrap_or("scale");
    let seed: u64 = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(1);
    let sizes: Vec<usize> = args
        .iter()
        .skip(2)
        .map(|s| s.parse())
        .collect::<Result<_, _>>()?;
    let t = std::time::Instant::now();
    let out = match (which, sizes.is_empty()) {
        ("scale", true) => gridbed_experiments::gxp::scale(seed)?,
        ("scale", false) => gridbed_experiments::gxp::scale_with(seed, &sizes)?,
        ("farm", true) => gridbed_experiments::gxp::farm(seed)?,
        ("farm", false) => {
            gridbed_experiments::gxp::farm_with(seed, sizes[0], *sizes.get(1).unwrap_or(&1000))?
        }
        (other, _) => anyhow::bail!("unknown experiment {other:?} (scale, farm)"),
    };
    for (k, v) in &out.metrics {
        println!("{k} = {v:.4}");
    }
    for n in &out.notes {
        println!("note: {n}");
    }
    if let Some(t) = &out.trace {
        println!("trace: {} events, digest {}", t.count, t.digest);
    }
    println!("wall time {:.1} s", t.elapsed().as_secs_f64());
    Ok(())
}
