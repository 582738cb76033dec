//! Small helpers shared by the experiments: piecewise-constant capacity and binned rates.

/// A step function of time built from (time, delta) changes.
#[derive(Clone, Debug, Default)]
pub struct Steps {
    changes: Vec<(f64, f64)>,
}

impl Steps {
    pub fn change(&mut self, t: f64, delta: f64) {
        self.changes.push((t, delta));
    }
    fn sorted(&self) -> Vec<(f64, f64)> {
        let mut c = self.changes.clone();
        c.sort_by(|a, b| a.0.total_cmp(&b.0));
        c
    }
    /// Value just after time `t`.
    pub fn at(&self, t: f64) -> f64 {
        self.sorted()
            .iter()
            .filter(|(ct, _)| *ct <= t)
            .map(|(_, d)| d)
            .sum()
    }
    /// The step function `f(level)`: same change times, levels passed through `f`.
    pub fn map_level(&self, f: impl Fn(f64) -> f64) -> Steps {
        let mut out = Steps::default();
        let mut level = 0.0;
        let mut mapped = f(0.0);
        if mapped != 0.0 {
            out.change(0.0, mapped);
        }
        for (t, d) in self.sorted() {
            level += d;
            let m = f(level);
            out.change(t, m - mapped);
            mapped = m;
        }
        out
    }
    /// Integral over [0, end].
    pub fn integral(&self, end: f64) -> f64 {
        let mut total = 0.0;
        let mut level = 0.0;
        let mut last = 0.0;
        for (t, d) in self.sorted() {
            let t = t.clamp(0.0, end);
            total += level * (t - last);
            level += d;
            last = t;
        }
        total + level * (end - last)
    }
}

/// Sums `(time, amount)` samples into `bins` equal bins over [0, end], as a rate per second
/// (x = bin centre).
pub fn binned_rate(samples: &[(f64, f64)], end: f64, bins: usize) -> Vec<(f64, f64)> {
    let w = end / bins as f64;
    let mut sums = vec![0.0; bins];
    for &(t, a) in samples {
        let i = ((t / w) as usize).min(bins - 1);
        sums[i] += a;
    }
    sums.iter()
        .enumerate()
        .map(|(i, s)| ((i as f64 + 0.5) * w, s / w))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_integrate_and_rates_bin() {
        let mut s = Steps::default();
        s.change(0.0, 2.0);
        s.change(1.0, -1.0);
        s.change(3.0, 2.0);
        assert!((s.integral(4.0) - (2.0 + 2.0 + 3.0)).abs() < 1e-12);
        assert_eq!(s.at(2.0), 1.0);
        // Capped at 1.5: levels 2, 1, 3 become 1.5, 1, 1.5.
        let c = s.map_level(|l| l.min(1.5));
        assert!((c.integral(4.0) - (1.5 + 2.0 + 1.5)).abs() < 1e-12);
        assert_eq!(c.at(3.5), 1.5);
        let r = binned_rate(&[(0.1, 1.0), (0.2, 1.0), (1.5, 4.0)], 2.0, 2);
        assert_eq!(r, vec![(0.5, 2.0), (1.5, 4.0)]);
    }
}
