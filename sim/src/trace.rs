//! The event trace of a simulated run. Events are formatted text with the virtual time in
//! nanoseconds first, so a divergence report can show both sides verbatim.

use std::time::Duration;

use gridbed_runtime::outcome::TraceRecord;

#[derive(Default)]
pub struct Trace {
    events: Vec<String>,
}

impl Trace {
    pub fn record(&mut self, at: Duration, what: std::fmt::Arguments<'_>) {
        self.events.push(format!("{} {}", at.as_nanos(), what));
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    pub fn into_record(self) -> TraceRecord {
        TraceRecord::from_events(self.events)
    }
}
