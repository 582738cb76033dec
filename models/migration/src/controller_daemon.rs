//! The controller as a daemon: it receives the monitors' samples and the managed processes'
//! progress reports on one port, decides every period, and sends migration orders. Messages are
//! small fixed-format records, each starting with a tag byte; anything malformed is dropped.

use std::sync::Arc;
use std::time::Duration;

use gridbed_runtime::{secs, Addr, HostId, HostRef};

use crate::controller::{Controller, Decision, Managed, Policy};
use crate::cost::MigrationCost;
use crate::load::{LoadSample, SAMPLE_TAG};

/// Port the controller listens on.
pub const CONTROLLER_PORT: u16 = 42;

const PROGRESS_TAG: u8 = b'P';
const FINISHED_TAG: u8 = b'F';
const ORDER_TAG: u8 = b'M';
const PROGRESS_LEN: usize = 1 + 4 + 4 + 2 + 8 + 8 + 8;

/// A managed process's report: where it runs and what it has left.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Progress {
    pub process: u32,
    pub host: HostId,
    pub control_port: u16,
    pub image_bytes: u64,
    /// Remaining CPU seconds at full speed, if the process knows (else the controller uses age).
    pub remaining_s: Option<f64>,
    pub started: Duration,
}

impl Progress {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(PROGRESS_LEN);
        b.push(PROGRESS_TAG);
        b.extend_from_slice(&self.process.to_le_bytes());
        b.extend_from_slice(&self.host.0.to_le_bytes());
        b.extend_from_slice(&self.control_port.to_le_bytes());
        b.extend_from_slice(&self.image_bytes.to_le_bytes());
        b.extend_from_slice(&self.remaining_s.unwrap_or(-1.0).to_le_bytes());
        b.extend_from_slice(&(self.started.as_nanos() as u64).to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Option<Progress> {
        if b.len() != PROGRESS_LEN || b[0] != PROGRESS_TAG {
            return None;
        }
        let u32_at = |i: usize| b[i..i + 4].try_into().ok().map(u32::from_le_bytes);
        let u64_at = |i: usize| b[i..i + 8].try_into().ok().map(u64::from_le_bytes);
        let remaining = f64::from_bits(u64_at(19)?);
        if remaining.is_nan() {
            return None;
        }
        Some(Progress {
            process: u32_at(1)?,
            host: HostId(u32_at(5)?),
            control_port: u16::from_le_bytes(b[9..11].try_into().ok()?),
            image_bytes: u64_at(11)?,
            remaining_s: (remaining >= 0.0).then_some(remaining),
            started: Duration::from_nanos(u64_at(27)?),
        })
    }
}

/// "Process `id` has finished": the controller forgets it.
pub fn encode_finished(id: u32) -> Vec<u8> {
    let mut b = vec![FINISHED_TAG];
    b.extend_from_slice(&id.to_le_bytes());
    b
}

/// A migration order: move process `process` to `to`.
pub fn encode_order(process: u32, to: HostId) -> Vec<u8> {
    let mut b = vec![ORDER_TAG];
    b.extend_from_slice(&process.to_le_bytes());
    b.extend_from_slice(&to.0.to_le_bytes());
    b
}

/// Parses an order into (process, destination).
pub fn decode_order(b: &[u8]) -> Option<(u32, HostId)> {
    if b.len() != 9 || b[0] != ORDER_TAG {
        return None;
    }
    let p = u32::from_le_bytes(b[1..5].try_into().ok()?);
    let h = u32::from_le_bytes(b[5..9].try_into().ok()?);
    Some((p, HostId(h)))
}

/// Handles one message to the controller; false if it was malformed.
pub fn handle(ctl: &mut Controller, now: Duration, from: Addr, payload: &[u8]) -> bool {
    match payload.first() {
        Some(&SAMPLE_TAG) => match LoadSample::decode(payload) {
            // A monitor speaks only for its own host.
            Some(s) if s.host == from.host => {
                ctl.observe(&s);
                true
            }
            _ => false,
        },
        Some(&PROGRESS_TAG) => match Progress::decode(payload) {
            Some(p) if p.host == from.host => {
                ctl.report(
                    now,
                    Managed {
                        id: p.process,
                        host: p.host,
                        control: Addr::new(p.host, p.control_port),
                        image_bytes: p.image_bytes,
                        remaining_s: p.remaining_s,
                        started: p.started,
                        resident_since: now,
                        moving_to: None,
                    },
                );
                true
            }
            _ => false,
        },
        Some(&FINISHED_TAG) if payload.len() == 5 => {
            ctl.finished(u32::from_le_bytes(payload[1..5].try_into().expect("len 5")));
            true
        }
        _ => false,
    }
}

/// Spawns the controller on `host`. It runs until `until` (or the host dies), then records its
/// decisions in `log`.
pub fn spawn_controller(
    host: HostRef,
    policy: Policy,
    cost: Arc<dyn MigrationCost>,
    until: Duration,
    log: Arc<std::sync::Mutex<Vec<Decision>>>,
) {
    let h = host.clone();
    host.spawn(
        "migration-controller",
        Box::pin(async move {
            let Ok(mut inbox) = h.bind(CONTROLLER_PORT) else {
                h.event("controller: port in use, not started");
                return;
            };
            let mut ctl = Controller::new(policy);
            while h.now() < until {
                h.sleep(secs(policy.period_s)).await;
                while let Some(m) = inbox.try_recv() {
                    if !handle(&mut ctl, h.now(), m.from, &m.payload) {
                        h.event(&format!("controller: malformed message from {}", m.from));
                    }
                }
                for d in ctl.decide(h.now(), cost.as_ref()) {
                    h.event(&format!(
                        "controller: move p{} {}->{} gain {:.3}s cost {:.3}s",
                        d.process, d.from, d.to, d.gain_s, d.cost_s
                    ));
                    let to = ctl.process(d.process).expect("just decided").control;
                    if h.send(CONTROLLER_PORT, to, encode_order(d.process, d.to))
                        .await
                        .is_err()
                    {
                        h.event("controller: order not delivered");
                    }
                    log.lock().expect("decision log").push(d);
                }
            }
        }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_garbage_is_refused() {
        let p = Progress {
            process: 3,
            host: HostId(2),
            control_port: 900,
            image_bytes: 40_000_000,
            remaining_s: Some(12.5),
            started: Duration::from_millis(10),
        };
        assert_eq!(Progress::decode(&p.encode()), Some(p));
        let q = Progress {
            remaining_s: None,
            ..p
        };
        assert_eq!(Progress::decode(&q.encode()), Some(q));
        assert_eq!(Progress::decode(&p.encode()[..20]), None);
        assert_eq!(
            decode_order(&encode_order(4, HostId(9))),
            Some((4, HostId(9)))
        );
        assert_eq!(decode_order(&[ORDER_TAG, 1, 2]), None);
        let mut ctl = Controller::new(Policy {
            period_s: 1.0,
            smoothing: 1.0,
            threshold_jobs: 1.0,
            hysteresis_jobs: 1.0,
            min_residence_s: 0.0,
        });
        let from = Addr::new(HostId(1), 41);
        assert!(!handle(&mut ctl, Duration::ZERO, from, b"X"));
        assert!(!handle(&mut ctl, Duration::ZERO, from, &[]));
        // A progress report claiming another host is refused.
        assert!(!handle(&mut ctl, Duration::ZERO, from, &p.encode()));
    }
}
