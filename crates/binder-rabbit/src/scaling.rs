//! Dynamic consumer scaling between `concurrency` and `max-concurrency`, as Spring AMQP's
//! `SimpleMessageListenerContainer` does it.
//!
//! A consumer that received a message in `consecutive_active_trigger` consecutive receives
//! asks for one more consumer; one that waited `receive-timeout` in vain
//! `consecutive_idle_trigger` times in a row asks to stop. A consumer is added at most once per
//! `start_consumer_min_interval` and stopped at most once per `stop_consumer_min_interval`, and
//! the count stays within `concurrency..=max-concurrency`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Timing of dynamic consumer scaling (used when a binding's `max-concurrency` exceeds its
/// `concurrency`). The defaults are Spring AMQP's; Spring Cloud Stream has no property keys for
/// them, so they are set on the binder factory.
///
/// ```
/// use std::time::Duration;
/// use binder_rabbit::{ConsumerScaling, RabbitBinderFactory};
///
/// let scaling = ConsumerScaling::default()
///     .start_consumer_min_interval(Duration::from_secs(2))
///     .consecutive_active_trigger(5);
/// assert_eq!(scaling.get_stop_consumer_min_interval(), Duration::from_secs(60));
/// let factory = RabbitBinderFactory::new().with_consumer_scaling(scaling);
/// # drop(factory);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerScaling {
    start_consumer_min_interval: Duration,
    stop_consumer_min_interval: Duration,
    consecutive_active_trigger: u32,
    consecutive_idle_trigger: u32,
}

impl Default for ConsumerScaling {
    fn default() -> Self {
        ConsumerScaling {
            start_consumer_min_interval: Duration::from_secs(10),
            stop_consumer_min_interval: Duration::from_secs(60),
            consecutive_active_trigger: 10,
            consecutive_idle_trigger: 10,
        }
    }
}

impl ConsumerScaling {
    /// Least time between two consumer starts (default 10 s).
    pub fn start_consumer_min_interval(mut self, d: Duration) -> Self {
        self.start_consumer_min_interval = d;
        self
    }

    /// Least time between two consumer stops (default 60 s).
    pub fn stop_consumer_min_interval(mut self, d: Duration) -> Self {
        self.stop_consumer_min_interval = d;
        self
    }

    /// Consecutive receives with a message before a consumer asks for another (default 10).
    pub fn consecutive_active_trigger(mut self, n: u32) -> Self {
        self.consecutive_active_trigger = n.max(1);
        self
    }

    /// Consecutive empty `receive-timeout` waits before a consumer asks to stop (default 10).
    pub fn consecutive_idle_trigger(mut self, n: u32) -> Self {
        self.consecutive_idle_trigger = n.max(1);
        self
    }

    /// The least time between two consumer starts.
    pub fn get_start_consumer_min_interval(&self) -> Duration {
        self.start_consumer_min_interval
    }

    /// The least time between two consumer stops.
    pub fn get_stop_consumer_min_interval(&self) -> Duration {
        self.stop_consumer_min_interval
    }
}

/// The scaling state of one consumer binding, shared by its consumer tasks.
#[derive(Debug)]
pub(crate) struct Scaler {
    settings: ConsumerScaling,
    min: u32,
    max: u32,
    running: AtomicU32,
    last_started: Mutex<Option<Instant>>,
    last_stopped: Mutex<Option<Instant>>,
}

/// What a consumer task should do after a receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScaleStep {
    Stay,
    /// Start one more consumer (the count is already raised).
    Add,
    /// Stop this consumer (the count is already lowered).
    Retire,
}

/// Per-task counters of consecutive active and idle receives.
#[derive(Debug, Default)]
pub(crate) struct Activity {
    active: u32,
    idle: u32,
}

impl Scaler {
    /// `None` when there is nothing to scale (`max <= min`).
    pub(crate) fn new(settings: ConsumerScaling, min: u32, max: u32) -> Option<Self> {
        (max > min).then(|| Scaler {
            settings,
            min,
            max,
            running: AtomicU32::new(0),
            last_started: Mutex::new(None),
            last_stopped: Mutex::new(None),
        })
    }

    /// The binding (re)started its `min` consumers.
    pub(crate) fn reset(&self) {
        self.running.store(self.min, Ordering::SeqCst);
    }

    /// Consumers running now.
    pub(crate) fn running(&self) -> u32 {
        self.running.load(Ordering::SeqCst)
    }

    /// A receive brought a message.
    pub(crate) fn on_message(&self, activity: &mut Activity) -> ScaleStep {
        activity.idle = 0;
        activity.active += 1;
        if activity.active < self.settings.consecutive_active_trigger {
            return ScaleStep::Stay;
        }
        activity.active = 0;
        if self.try_change(
            &self.last_started,
            self.settings.start_consumer_min_interval,
            true,
        ) {
            ScaleStep::Add
        } else {
            ScaleStep::Stay
        }
    }

    /// A receive waited `receive-timeout` for nothing.
    pub(crate) fn on_idle(&self, activity: &mut Activity) -> ScaleStep {
        activity.active = 0;
        activity.idle += 1;
        if activity.idle < self.settings.consecutive_idle_trigger {
            return ScaleStep::Stay;
        }
        activity.idle = 0;
        if self.try_change(
            &self.last_stopped,
            self.settings.stop_consumer_min_interval,
            false,
        ) {
            ScaleStep::Retire
        } else {
            ScaleStep::Stay
        }
    }

    fn try_change(&self, last: &Mutex<Option<Instant>>, interval: Duration, up: bool) -> bool {
        let mut last = match last.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if last.is_some_and(|t| t.elapsed() < interval) {
            return false;
        }
        let changed = self
            .running
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                if up {
                    (n < self.max).then_some(n + 1)
                } else {
                    (n > self.min).then(|| n - 1)
                }
            })
            .is_ok();
        if changed {
            *last = Some(Instant::now());
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scaler(start: u64, stop: u64) -> Scaler {
        let s = ConsumerScaling::default()
            .start_consumer_min_interval(Duration::from_millis(start))
            .stop_consumer_min_interval(Duration::from_millis(stop))
            .consecutive_active_trigger(3)
            .consecutive_idle_trigger(2);
        let s = Scaler::new(s, 1, 3).expect("scales");
        s.reset();
        s
    }

    #[test]
    fn no_scaler_without_headroom() {
        assert!(Scaler::new(ConsumerScaling::default(), 2, 2).is_none());
        assert!(Scaler::new(ConsumerScaling::default(), 2, 1).is_none());
    }

    #[test]
    fn adds_after_consecutive_messages_up_to_max() {
        let s = scaler(0, 0);
        let mut a = Activity::default();
        let steps: Vec<_> = (0..9).map(|_| s.on_message(&mut a)).collect();
        use ScaleStep::*;
        assert_eq!(steps, [Stay, Stay, Add, Stay, Stay, Add, Stay, Stay, Stay]);
        assert_eq!(s.running(), 3, "never above max-concurrency");
    }

    #[test]
    fn an_idle_receive_resets_the_active_count() {
        let s = scaler(0, 0);
        let mut a = Activity::default();
        s.on_message(&mut a);
        s.on_message(&mut a);
        s.on_idle(&mut a);
        assert_eq!(s.on_message(&mut a), ScaleStep::Stay);
        assert_eq!(s.running(), 1);
    }

    #[test]
    fn starts_are_spaced_by_the_min_interval() {
        let s = scaler(60_000, 0);
        let mut a = Activity::default();
        let adds = (0..30)
            .filter(|_| s.on_message(&mut a) == ScaleStep::Add)
            .count();
        assert_eq!(adds, 1, "one start, then the interval holds the rest back");
    }

    #[test]
    fn retires_after_consecutive_idle_receives_down_to_min() {
        let s = scaler(0, 0);
        let mut a = Activity::default();
        for _ in 0..6 {
            s.on_message(&mut a);
        }
        assert_eq!(s.running(), 3);
        let retired = (0..10)
            .filter(|_| s.on_idle(&mut a) == ScaleStep::Retire)
            .count();
        assert_eq!(retired, 2);
        assert_eq!(s.running(), 1, "never below concurrency");
    }
}
