//! Event-time watermarks.
//!
//! Each worker that sees records tracks the largest event time it has seen;
//! its watermark is that minus the bounded out-of-orderness
//! ([`BoundedOutOfOrderness`]). An operator's watermark is the minimum over
//! its inputs ([`InputWatermarks`]); an input that has ended counts as
//! +infinity, and an input marked idle is left out of the minimum until it
//! sends again. Watermarks advance with the data only (batch by batch), never
//! with a clock, so results do not depend on the machine's speed; idleness is
//! the one wall-clock decision, and it is made by the caller.

/// The watermark before any record: nothing is known.
pub const MIN_WATERMARK: i64 = i64::MIN;
/// The watermark after the end of input: everything is complete.
pub const MAX_WATERMARK: i64 = i64::MAX;

/// A worker's watermark: the largest event time seen minus a fixed bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoundedOutOfOrderness {
    bound_ms: i64,
    max_seen: Option<i64>,
}

impl BoundedOutOfOrderness {
    /// A tracker allowing records up to `bound_ms` behind the latest one.
    pub fn new(bound_ms: i64) -> Self {
        BoundedOutOfOrderness {
            bound_ms: bound_ms.max(0),
            max_seen: None,
        }
    }

    /// Notes a record's event time.
    #[inline]
    pub fn observe(&mut self, t: i64) {
        if self.max_seen.is_none_or(|m| t > m) {
            self.max_seen = Some(t);
        }
    }

    /// The largest event time seen (what a checkpoint records).
    pub fn max_seen(&self) -> Option<i64> {
        self.max_seen
    }

    /// The current watermark.
    pub fn watermark(&self) -> i64 {
        match self.max_seen {
            Some(m) => m.saturating_sub(self.bound_ms),
            None => MIN_WATERMARK,
        }
    }
}

/// A worker's watermark over several *lanes*: the partitions of a source
/// whose order is independent of each other (Kafka partitions; a file source
/// is one lane). Each lane has its own [`BoundedOutOfOrderness`], so records
/// are judged against their own partition's progress and a fast partition
/// never makes a slow one's records late.
///
/// The worker's watermark is the minimum over lanes, leaving out lanes
/// silent for longer than the idle timeout and finished lanes. A lane the
/// source announced ([`register`](Self::register)) but that has sent nothing
/// yet holds the watermark back, as an assigned Kafka partition does in
/// Flink, until it turns idle: so a partition whose first records come late
/// does not find its windows closed, and an empty one stalls nothing for
/// longer than the idle timeout.
#[derive(Debug, Clone)]
pub struct LaneWatermarks {
    bound_ms: i64,
    idle_ms: u64,
    lanes: Vec<Option<Lane>>,
}

#[derive(Debug, Clone, Copy)]
struct Lane {
    tracker: BoundedOutOfOrderness,
    /// Wall-clock time of its last record (or of its registration).
    active_ms: u64,
    finished: bool,
}

impl LaneWatermarks {
    /// Lanes allowing records `bound_ms` behind their latest one, idle after
    /// `idle_ms` of silence.
    pub fn new(bound_ms: i64, idle_ms: u64) -> Self {
        LaneWatermarks {
            bound_ms,
            idle_ms,
            lanes: Vec::new(),
        }
    }

    fn lane(&mut self, lane: u32, now_ms: u64) -> &mut Lane {
        let i = lane as usize;
        if self.lanes.len() <= i {
            self.lanes.resize(i + 1, None);
        }
        let bound = self.bound_ms;
        self.lanes[i].get_or_insert(Lane {
            tracker: BoundedOutOfOrderness::new(bound),
            active_ms: now_ms,
            finished: false,
        })
    }

    /// Announces lane `lane` (a partition the source reads) at wall-clock
    /// `now_ms`; `finished` when it has no more records.
    pub fn register(&mut self, lane: u32, finished: bool, now_ms: u64) {
        let l = self.lane(lane, now_ms);
        l.finished |= finished;
    }

    /// Lane `lane`'s watermark just before this record; then notes the
    /// record's event time `t`, seen at wall-clock `now_ms`.
    #[inline]
    pub fn observe(&mut self, lane: u32, t: i64, now_ms: u64) -> i64 {
        let l = self.lane(lane, now_ms);
        let before = l.tracker.watermark();
        l.tracker.observe(t);
        l.active_ms = now_ms;
        before
    }

    /// Every lane's largest event time seen and whether it is finished
    /// (what a checkpoint records), by lane number.
    pub fn snapshot(&self) -> Vec<(u32, Option<i64>, bool)> {
        self.lanes
            .iter()
            .enumerate()
            .filter_map(|(i, l)| l.map(|l| (i as u32, l.tracker.max_seen(), l.finished)))
            .collect()
    }

    /// Restores a lane from a checkpoint, as if it had seen records up to
    /// `max_seen`, at wall-clock `now_ms`.
    pub fn restore(&mut self, lane: u32, max_seen: Option<i64>, finished: bool, now_ms: u64) {
        let l = self.lane(lane, now_ms);
        if let Some(t) = max_seen {
            l.tracker.observe(t);
        }
        l.finished |= finished;
    }

    /// The worker's watermark at wall-clock `now_ms`: the minimum over
    /// lanes neither finished nor silent for longer than the idle timeout;
    /// with none such, the largest lane watermark (every lane is done for
    /// now).
    pub fn watermark(&self, now_ms: u64) -> i64 {
        let lanes = self.lanes.iter().flatten();
        let active = lanes
            .clone()
            .filter(|l| !l.finished && now_ms.saturating_sub(l.active_ms) <= self.idle_ms)
            .map(|l| l.tracker.watermark())
            .min();
        match active {
            Some(wm) => wm,
            None => lanes
                .map(|l| l.tracker.watermark())
                .max()
                .unwrap_or(MIN_WATERMARK),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Input {
    watermark: i64,
    idle: bool,
    ended: bool,
}

/// An operator's view of its inputs' watermarks.
#[derive(Debug, Clone)]
pub struct InputWatermarks {
    inputs: Vec<Input>,
    current: i64,
}

impl InputWatermarks {
    /// `n` inputs, none heard from yet.
    pub fn new(n: usize) -> Self {
        InputWatermarks {
            inputs: vec![
                Input {
                    watermark: MIN_WATERMARK,
                    idle: false,
                    ended: false,
                };
                n
            ],
            current: MIN_WATERMARK,
        }
    }

    /// The operator's watermark. It never goes back.
    pub fn current(&self) -> i64 {
        self.current
    }

    /// Input `i` reports watermark `wm` (it is active again if it was idle).
    /// Returns the operator's new watermark if it advanced.
    pub fn update(&mut self, i: usize, wm: i64) -> Option<i64> {
        let input = self.inputs.get_mut(i)?;
        if !input.ended {
            input.watermark = input.watermark.max(wm);
        }
        input.idle = false;
        self.recompute()
    }

    /// Input `i` has no more records.
    pub fn end(&mut self, i: usize) -> Option<i64> {
        let input = self.inputs.get_mut(i)?;
        input.ended = true;
        input.watermark = MAX_WATERMARK;
        self.recompute()
    }

    /// Input `i` has been silent for longer than the idle timeout: leave it
    /// out of the minimum until it sends again.
    pub fn set_idle(&mut self, i: usize) -> Option<i64> {
        let input = self.inputs.get_mut(i)?;
        if input.ended || input.idle {
            return None;
        }
        input.idle = true;
        self.recompute()
    }

    /// Whether input `i` is idle.
    pub fn is_idle(&self, i: usize) -> bool {
        self.inputs.get(i).is_some_and(|x| x.idle)
    }

    /// Each input's watermark (what a checkpoint records).
    pub fn snapshot(&self) -> Vec<i64> {
        self.inputs.iter().map(|x| x.watermark).collect()
    }

    /// Restores the inputs' watermarks and the operator's from a checkpoint.
    pub fn restore(&mut self, inputs: &[i64], current: i64) {
        for (x, &wm) in self.inputs.iter_mut().zip(inputs) {
            x.watermark = wm;
        }
        self.current = self.current.max(current);
    }

    /// Whether every input has ended.
    pub fn all_ended(&self) -> bool {
        self.inputs.iter().all(|x| x.ended)
    }

    fn recompute(&mut self) -> Option<i64> {
        let active = self.inputs.iter().filter(|x| !x.idle).map(|x| x.watermark).min();
        // With every input idle the watermark holds where it is.
        let wm = active.unwrap_or(self.current);
        if wm > self.current {
            self.current = wm;
            Some(wm)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_watermark_is_max_seen_minus_bound() {
        let mut w = BoundedOutOfOrderness::new(5_000);
        assert_eq!(w.watermark(), MIN_WATERMARK);
        w.observe(100_000);
        w.observe(90_000); // out of order: no effect
        assert_eq!(w.watermark(), 95_000);
        w.observe(101_000);
        assert_eq!(w.watermark(), 96_000);
    }

    #[test]
    fn lanes_judge_records_by_their_own_partition() {
        let mut w = LaneWatermarks::new(5_000, 1_000);
        assert_eq!(w.watermark(0), MIN_WATERMARK);
        assert_eq!(w.observe(0, 100_000, 0), MIN_WATERMARK);
        // Lane 1 is far behind lane 0: its record is judged by lane 1 alone.
        assert_eq!(w.observe(1, 10_000, 0), MIN_WATERMARK);
        assert_eq!(w.observe(1, 11_000, 0), 5_000);
        assert_eq!(w.watermark(0), 6_000, "the minimum over lanes");
        // Lane 1 falls silent: after the idle timeout lane 0 alone counts.
        w.observe(0, 101_000, 900);
        assert_eq!(w.watermark(1_500), 96_000);
        // Every lane idle: the largest.
        assert_eq!(w.watermark(10_000), 96_000);
        // A lane never heard of holds nothing back; an announced one that
        // has sent nothing holds the watermark until it turns idle, a
        // finished one not at all.
        let mut v = LaneWatermarks::new(0, 1_000);
        v.observe(3, 7, 0);
        assert_eq!(v.watermark(0), 7);
        v.register(1, false, 0);
        assert_eq!(v.watermark(500), MIN_WATERMARK);
        assert_eq!(v.watermark(1_500), 7);
        v.register(2, false, 2_000);
        v.observe(3, 9, 2_000);
        assert_eq!(v.watermark(2_100), MIN_WATERMARK);
        v.register(2, true, 2_200);
        assert_eq!(v.watermark(2_300), 9);
    }

    #[test]
    fn operator_watermark_is_the_minimum_and_never_goes_back() {
        let mut op = InputWatermarks::new(2);
        assert_eq!(op.update(0, 100), None, "input 1 has not spoken");
        assert_eq!(op.update(1, 50), Some(50));
        assert_eq!(op.update(1, 200), Some(100));
        assert_eq!(op.update(0, 90), None, "an input never moves back");
        assert_eq!(op.current(), 100);
    }

    #[test]
    fn ended_inputs_count_as_infinity_and_idle_ones_are_skipped() {
        let mut op = InputWatermarks::new(3);
        op.update(0, 10);
        op.update(1, 20);
        assert_eq!(op.current(), MIN_WATERMARK);
        assert_eq!(op.set_idle(2), Some(10));
        assert_eq!(op.end(0), Some(20));
        // The idle input comes back behind: the watermark holds.
        assert_eq!(op.update(2, 5), None);
        assert_eq!(op.current(), 20);
        op.end(1);
        op.end(2);
        assert!(op.all_ended());
        assert_eq!(op.current(), MAX_WATERMARK);
    }
}
