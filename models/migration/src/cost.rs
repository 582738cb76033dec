//! What one migration costs: the seam between the load-driven controller and the migration
//! mechanism. The controller only asks [`MigrationCost::predict_s`]; the mechanism that really
//! captures, moves and restores a process supplies its own implementation at merge time.

use gridbed_runtime::HostId;

/// Predicted time from the moment a process stops on `from` until it runs again on `to`.
pub trait MigrationCost: Send + Sync {
    fn predict_s(&self, image_bytes: u64, from: HostId, to: HostId) -> f64;
}

/// The document's cost model: moving the image dominates (document 1, section 3), so a migration
/// costs the transfer of `image_bytes` over the transport (`fixed_s + s_per_byte * bytes`, the
/// same linear model the Figure 3 sweep measures with `move_block`) plus a fixed restart time at
/// the destination.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TransferCost {
    /// Per-transfer start-up time, seconds (the transport's alpha).
    pub fixed_s: f64,
    /// Seconds per image byte (the inverse of the transport's large-block bandwidth).
    pub s_per_byte: f64,
    /// Time to rebuild and resume the process at the destination after the last byte arrives.
    pub restart_s: f64,
}

impl TransferCost {
    /// Cost from a measured bandwidth in bytes per second.
    pub fn from_bandwidth(bytes_per_s: f64, fixed_s: f64, restart_s: f64) -> Self {
        TransferCost {
            fixed_s,
            s_per_byte: 1.0 / bytes_per_s,
            restart_s,
        }
    }

    /// Image bytes whose migration costs exactly `gain_s`: larger images do not pay for
    /// themselves. Zero when even an empty image costs more than the gain.
    pub fn break_even_bytes(&self, gain_s: f64) -> f64 {
        ((gain_s - self.fixed_s - self.restart_s) / self.s_per_byte).max(0.0)
    }
}

impl MigrationCost for TransferCost {
    fn predict_s(&self, image_bytes: u64, _from: HostId, _to: HostId) -> f64 {
        self.fixed_s + self.s_per_byte * image_bytes as f64 + self.restart_s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn break_even_inverts_the_prediction() {
        let c = TransferCost::from_bandwidth(55.4e6, 0.0002, 0.01);
        let bytes = c.break_even_bytes(3.0);
        let back = c.predict_s(bytes.round() as u64, HostId(0), HostId(1));
        assert!((back - 3.0).abs() < 1e-6, "{back}");
        assert_eq!(c.break_even_bytes(0.005), 0.0);
    }
}
