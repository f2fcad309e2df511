//! Outcomes on their way to the leader: remembered until the leader stops asking, batched into
//! `Report`s.
//!
//! What: [`Remembered`] wraps an outcome with the stream generation it was last sent on, so
//! each outcome goes out once per stream and again on the next stream if the leader still lists
//! its assignment (its report may have died with the old leader). [`ReportBuffer`] collects
//! outcomes until the flush deadline or a size bound.
//!
//! Caveat: the size bound counts task outputs and messages only; one outcome is never split,
//! so a report can exceed [`FLUSH_AT_BYTES`] by one task's output.

use flame_proto::agent::{BindOutcome, Report, TaskOutcome, UnbindOutcome};
use std::time::{Duration, Instant};

/// A report is flushed at once when its outputs and messages reach this many bytes.
pub const FLUSH_AT_BYTES: usize = 1 << 20;

/// An outcome and the stream generation it was last sent on (0: never sent).
#[derive(Debug, Clone, PartialEq)]
pub struct Remembered<T> {
    /// The outcome.
    pub item: T,
    /// The generation of the stream that last carried it.
    sent_gen: u64,
}

impl<T: Clone> Remembered<T> {
    /// An outcome not sent yet.
    pub fn new(item: T) -> Self {
        Remembered { item, sent_gen: 0 }
    }

    /// The outcome to send on stream `generation`, unless it already went out on it.
    pub fn take_due(&mut self, generation: u64) -> Option<T> {
        if self.sent_gen == generation {
            return None;
        }
        self.sent_gen = generation;
        Some(self.item.clone())
    }
}

/// Outcomes waiting to be flushed as one `Report`.
#[derive(Debug, Default)]
pub struct ReportBuffer {
    /// The batch.
    report: Report,
    /// Bytes of outputs and messages in the batch.
    bytes: usize,
    /// When the first outcome of the batch was queued.
    since: Option<Instant>,
}

impl ReportBuffer {
    /// Marks the batch as started.
    fn touch(&mut self, bytes: usize) {
        self.bytes = self.bytes.saturating_add(bytes);
        self.since.get_or_insert_with(Instant::now);
    }

    /// Queues a task outcome.
    pub fn task(&mut self, outcome: TaskOutcome) {
        let bytes = outcome.output.as_ref().map_or(0, Vec::len)
            + outcome.message.as_ref().map_or(0, String::len);
        self.report.tasks.push(outcome);
        self.touch(bytes);
    }

    /// Queues a bind outcome.
    pub fn bind(&mut self, outcome: BindOutcome) {
        let bytes = outcome.message.as_ref().map_or(0, String::len);
        self.report.binds.push(outcome);
        self.touch(bytes);
    }

    /// Queues an unbind outcome.
    pub fn unbind(&mut self, outcome: UnbindOutcome) {
        self.report.unbinds.push(outcome);
        self.touch(0);
    }

    /// Queues a released executor.
    pub fn released(&mut self, executor_id: String) {
        self.report.released.push(executor_id);
        self.touch(0);
    }

    /// Whether nothing is queued.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.since.is_none()
    }

    /// When the batch must go out: `interval` after its first outcome, or now when it is big.
    pub fn deadline(&self, interval: Duration) -> Option<Instant> {
        let since = self.since?;
        if self.bytes >= FLUSH_AT_BYTES {
            return Some(since);
        }
        Some(since + interval)
    }

    /// Takes the batch, leaving the buffer empty.
    pub fn take(&mut self) -> Option<Report> {
        self.since.take()?;
        self.bytes = 0;
        Some(std::mem::take(&mut self.report))
    }

    /// Drops everything queued (the stream it was meant for is gone).
    pub fn clear(&mut self) {
        *self = ReportBuffer::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outcome_goes_out_once_per_stream_generation() {
        let mut r = Remembered::new(7u64);
        assert_eq!(r.take_due(1), Some(7));
        assert_eq!(r.take_due(1), None);
        assert_eq!(r.take_due(2), Some(7));
    }

    #[test]
    fn big_batches_are_due_at_once() {
        let mut b = ReportBuffer::default();
        assert!(b.deadline(Duration::from_millis(5)).is_none());
        b.released("e1".into());
        let small = b.deadline(Duration::from_millis(5));
        b.task(TaskOutcome {
            output: Some(vec![0; FLUSH_AT_BYTES]),
            ..TaskOutcome::default()
        });
        let big = b.deadline(Duration::from_millis(5));
        assert!(big < small);
        let report = b.take();
        assert_eq!(
            report.map(|r| (r.tasks.len(), r.released.len())),
            Some((1, 1))
        );
        assert!(b.is_empty() && b.take().is_none());
    }
}
