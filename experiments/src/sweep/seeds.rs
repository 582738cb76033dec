//! The `--seeds` argument: `A..B` (both ends included) or a single seed `N`.

use std::ops::RangeInclusive;

/// Most seeds one sweep accepts: a journal line each, and a summary that lists every digest.
pub const MAX_SEEDS: u64 = 1_000_000;

/// Parses `A..B` or `N`; the error is one line naming what is wrong.
pub fn parse(text: &str) -> anyhow::Result<RangeInclusive<u64>> {
    let num = |s: &str| -> anyhow::Result<u64> {
        s.trim().parse::<u64>().map_err(|_| {
            anyhow::anyhow!(
                "--seeds '{text}': '{}' is not a seed (0 to 2^64-1)",
                s.trim()
            )
        })
    };
    let (a, b) = match text.split_once("..") {
        Some((a, b)) => (num(a)?, num(b.strip_prefix('=').unwrap_or(b))?),
        None => {
            let n = num(text)?;
            (n, n)
        }
    };
    anyhow::ensure!(a <= b, "--seeds '{text}': the first seed is above the last");
    anyhow::ensure!(
        b - a < MAX_SEEDS,
        "--seeds '{text}': {} seeds, more than the {MAX_SEEDS} one sweep takes",
        (b - a).saturating_add(1)
    );
    Ok(a..=b)
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn ranges_single_seeds_and_errors() {
        assert_eq!(parse("1..4").unwrap(), 1..=4);
        assert_eq!(parse("1..=4").unwrap(), 1..=4);
        assert_eq!(parse(" 7 ").unwrap(), 7..=7);
        assert_eq!(parse("0..0").unwrap(), 0..=0);
        let max = u64::MAX.to_string();
        assert_eq!(
            parse(&format!("{max}..{max}")).unwrap(),
            u64::MAX..=u64::MAX
        );
        for bad in [
            "",
            "x",
            "1..",
            "..3",
            "4..2",
            "1..2..3",
            "-1..3",
            "0..1000000",
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.starts_with("--seeds"), "{bad}: {e}");
            assert!(!e.contains('\n'), "{bad}: {e}");
        }
        assert_eq!(parse("0..999999").unwrap().count(), 1_000_000);
    }
}
