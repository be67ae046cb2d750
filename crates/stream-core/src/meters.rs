//! Metrics of the runtime, through the [`metrics`] facade (the Rust ecosystem's Micrometer):
//! whatever recorder the application installs receives them, and with none installed they cost
//! a branch per update.
//!
//! Names and attributes follow the OpenTelemetry messaging semantic conventions
//! ([`names::SENT_MESSAGES`], [`names::CONSUMED_MESSAGES`], [`names::PROCESS_DURATION`],
//! [`names::OPERATION_DURATION`]); the framework adds its own under `stream.*`. Every handle is
//! resolved when a binding is bound, so a message updates pre-registered counters and
//! histograms and builds no key. Install a recorder before building the application (or give
//! one to `StreamAppBuilder::metrics_recorder`); the admin endpoint's Prometheus exporter is one.
//!
//! ```
//! use stream_core::meters::{attributes, names};
//! assert_eq!(names::SENT_MESSAGES, "messaging.client.sent.messages");
//! assert_eq!(attributes::DESTINATION, "messaging.destination.name");
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Label, Metadata, Recorder, Unit};

use crate::error::{BinderError, BinderErrorKind, ConversionError, FunctionError};

/// Metric names.
pub mod names {
    /// Counter: messages a producer sent (with `error.type` when the send failed).
    pub const SENT_MESSAGES: &str = "messaging.client.sent.messages";
    /// Counter: messages delivered to the application's functions.
    pub const CONSUMED_MESSAGES: &str = "messaging.client.consumed.messages";
    /// Histogram (seconds): processing of one delivery (or batch), every attempt included.
    pub const PROCESS_DURATION: &str = "messaging.process.duration";
    /// Histogram (seconds): a send (`messaging.operation.name=send`) or a settlement
    /// (`ack`, `nack`, `reject`) by the binder.
    pub const OPERATION_DURATION: &str = "messaging.client.operation.duration";
    /// Counter: attempts after the first (retries) of failed deliveries.
    pub const RETRIES: &str = "stream.consumer.retries";
    /// Counter: messages published to a dead-letter destination.
    pub const DEAD_LETTERED: &str = "stream.consumer.dead.lettered";
    /// Counter: payloads that could not be converted, by the binding whose function (or
    /// `StreamBridge` send) failed.
    pub const CONVERSION_FAILURES: &str = "stream.conversion.failures";
    /// Gauge: deliveries being processed or settled now.
    pub const IN_FLIGHT: &str = "stream.consumer.in.flight";
}

/// Attribute (label) names.
pub mod attributes {
    /// The broker (`rabbitmq`, `rocketmq`).
    pub const SYSTEM: &str = "messaging.system";
    /// Destination (exchange, topic).
    pub const DESTINATION: &str = "messaging.destination.name";
    /// Consumer group (absent for anonymous consumers).
    pub const GROUP: &str = "messaging.consumer.group.name";
    /// `send`, `process`, `ack`, `nack`, `reject`.
    pub const OPERATION_NAME: &str = "messaging.operation.name";
    /// `send`, `process`, `settle`.
    pub const OPERATION_TYPE: &str = "messaging.operation.type";
    /// Why an operation failed: the function error's kind, or the binder error's kind.
    pub const ERROR_TYPE: &str = "error.type";
    /// The binding (`uppercase-in-0`).
    pub const BINDING: &str = "stream.binding.name";
}

static METADATA: Metadata<'static> =
    Metadata::new("stream_core", metrics::Level::INFO, Some("stream_core"));

/// Where the runtime's metrics go: the recorder given to the application, else the global one.
#[derive(Clone, Default)]
pub(crate) struct Meters {
    recorder: Option<Arc<dyn Recorder + Send + Sync>>,
}

impl std::fmt::Debug for Meters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meters")
            .field("own_recorder", &self.recorder.is_some())
            .finish()
    }
}

impl Meters {
    /// Metrics to `recorder`, or to the global recorder when `None`.
    pub(crate) fn new(recorder: Option<Arc<dyn Recorder + Send + Sync>>) -> Self {
        Self { recorder }
    }

    fn with<T>(&self, f: impl FnOnce(&dyn Recorder) -> T) -> T {
        match &self.recorder {
            Some(r) => f(r.as_ref()),
            None => metrics::with_recorder(f),
        }
    }

    fn counter(&self, name: &'static str, labels: Vec<Label>) -> Counter {
        let key = Key::from_parts(name, labels);
        self.with(|r| r.register_counter(&key, &METADATA))
    }

    fn histogram(&self, name: &'static str, labels: Vec<Label>) -> Histogram {
        let key = Key::from_parts(name, labels);
        self.with(|r| r.register_histogram(&key, &METADATA))
    }

    fn gauge(&self, name: &'static str, labels: Vec<Label>) -> Gauge {
        let key = Key::from_parts(name, labels);
        self.with(|r| r.register_gauge(&key, &METADATA))
    }

    /// Describes every metric (unit and help text) to the recorder, once per application.
    pub(crate) fn describe(&self) {
        self.with(|r| {
            let counter = |name: &'static str, help: &'static str| {
                r.describe_counter(
                    KeyName::from_const_str(name),
                    Some(Unit::Count),
                    help.into(),
                );
            };
            counter(names::SENT_MESSAGES, "Messages a producer sent");
            counter(
                names::CONSUMED_MESSAGES,
                "Messages delivered to the application",
            );
            counter(names::RETRIES, "Retries of failed deliveries");
            counter(
                names::DEAD_LETTERED,
                "Messages published to a dead-letter destination",
            );
            counter(
                names::CONVERSION_FAILURES,
                "Payloads that could not be converted",
            );
            r.describe_histogram(
                KeyName::from_const_str(names::PROCESS_DURATION),
                Some(Unit::Seconds),
                "Processing of a delivery, every attempt included".into(),
            );
            r.describe_histogram(
                KeyName::from_const_str(names::OPERATION_DURATION),
                Some(Unit::Seconds),
                "A send or settlement by the binder".into(),
            );
            r.describe_gauge(
                KeyName::from_const_str(names::IN_FLIGHT),
                Some(Unit::Count),
                "Deliveries being processed or settled".into(),
            );
        });
    }

    /// The handles of one consumer binding on one destination.
    pub(crate) fn consumer(
        &self,
        system: &'static str,
        binding: &str,
        destination: &str,
        group: Option<&str>,
    ) -> ConsumerMeters {
        let mut base = vec![
            Label::from_static_parts(attributes::SYSTEM, system),
            Label::new(attributes::DESTINATION, destination.to_owned()),
        ];
        if let Some(g) = group {
            base.push(Label::new(attributes::GROUP, g.to_owned()));
        }
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut l = base.clone();
            l.extend(extra.iter().map(|(k, v)| Label::from_static_parts(k, v)));
            l
        };
        let process = [
            (attributes::OPERATION_NAME, "process"),
            (attributes::OPERATION_TYPE, "process"),
        ];
        let settle = |name: &'static str| {
            self.histogram(
                names::OPERATION_DURATION,
                with(&[
                    (attributes::OPERATION_NAME, name),
                    (attributes::OPERATION_TYPE, "settle"),
                ]),
            )
        };
        let mut own = base.clone();
        own.push(Label::new(attributes::BINDING, binding.to_owned()));
        ConsumerMeters {
            consumed: self.counter(names::CONSUMED_MESSAGES, with(&process)),
            processed: self.histogram(names::PROCESS_DURATION, with(&process)),
            ack: settle("ack"),
            nack: settle("nack"),
            reject: settle("reject"),
            retries: self.counter(names::RETRIES, own.clone()),
            dead_lettered: self.counter(names::DEAD_LETTERED, own.clone()),
            conversion_failures: self.counter(names::CONVERSION_FAILURES, own.clone()),
            in_flight: self.gauge(names::IN_FLIGHT, own),
            failed_labels: with(&process),
            failed: Mutex::new(HashMap::new()),
            meters: self.clone(),
        }
    }

    /// The handles of one output binding.
    pub(crate) fn producer(
        &self,
        system: &'static str,
        binding: &str,
        destination: &str,
    ) -> ProducerMeters {
        let labels = vec![
            Label::from_static_parts(attributes::SYSTEM, system),
            Label::new(attributes::DESTINATION, destination.to_owned()),
            Label::from_static_parts(attributes::OPERATION_NAME, "send"),
            Label::from_static_parts(attributes::OPERATION_TYPE, "send"),
        ];
        ProducerMeters {
            sent: self.counter(names::SENT_MESSAGES, labels.clone()),
            duration: self.histogram(names::OPERATION_DURATION, labels.clone()),
            conversion_failures: self.counter(
                names::CONVERSION_FAILURES,
                vec![
                    Label::from_static_parts(attributes::SYSTEM, system),
                    Label::new(attributes::DESTINATION, destination.to_owned()),
                    Label::new(attributes::BINDING, binding.to_owned()),
                ],
            ),
            labels,
            failed: Mutex::new(HashMap::new()),
            meters: self.clone(),
        }
    }
}

/// The metric handles of one consumer binding and destination, resolved at bind time.
pub(crate) struct ConsumerMeters {
    consumed: Counter,
    processed: Histogram,
    ack: Histogram,
    nack: Histogram,
    reject: Histogram,
    retries: Counter,
    dead_lettered: Counter,
    conversion_failures: Counter,
    in_flight: Gauge,
    /// The process labels, for the histograms of failures (by `error.type`).
    failed_labels: Vec<Label>,
    /// Failure histograms by error kind, registered on the first failure of each kind.
    failed: Mutex<HashMap<String, Histogram>>,
    meters: Meters,
}

impl std::fmt::Debug for ConsumerMeters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerMeters").finish_non_exhaustive()
    }
}

/// How a delivery was settled (`messaging.operation.name`).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Settled {
    /// Acknowledged.
    Ack,
    /// Returned to the broker for redelivery.
    Nack,
    /// Rejected without requeue.
    Reject,
}

/// Counts a delivery in flight until dropped.
pub(crate) struct InFlightGuard<'a>(&'a Gauge, f64);

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.0.decrement(self.1);
    }
}

impl ConsumerMeters {
    /// Handles registered nowhere, for pipelines built outside an application.
    #[cfg(test)]
    pub(crate) fn detached() -> Self {
        Meters::default().consumer("test", "in-0", "orders", None)
    }

    /// `n` deliveries enter processing; they count as in flight while the guard lives.
    pub(crate) fn in_flight(&self, n: usize) -> InFlightGuard<'_> {
        let n = n as f64;
        self.in_flight.increment(n);
        InFlightGuard(&self.in_flight, n)
    }

    /// `n` messages go to the function now.
    pub(crate) fn received(&self, n: usize) -> Instant {
        self.consumed.increment(n as u64);
        Instant::now()
    }

    /// Processing that started at `start` ended after `attempts`, with `error` if it failed.
    pub(crate) fn processed(&self, start: Instant, attempts: u32, error: Option<&FunctionError>) {
        let seconds = start.elapsed().as_secs_f64();
        if attempts > 1 {
            self.retries.increment(u64::from(attempts - 1));
        }
        let Some(error) = error else {
            self.processed.record(seconds);
            return;
        };
        if is_conversion(error) {
            self.conversion_failures.increment(1);
        }
        let kind = error.kind();
        let mut failed = self.failed.lock().unwrap_or_else(PoisonError::into_inner);
        let histogram = failed.entry(kind.to_owned()).or_insert_with(|| {
            let mut labels = self.failed_labels.clone();
            labels.push(Label::new(attributes::ERROR_TYPE, kind.to_owned()));
            self.meters.histogram(names::PROCESS_DURATION, labels)
        });
        histogram.record(seconds);
    }

    /// A settlement that started at `start` is done.
    pub(crate) fn settled(&self, settled: Settled, start: Instant) {
        let h = match settled {
            Settled::Ack => &self.ack,
            Settled::Nack => &self.nack,
            Settled::Reject => &self.reject,
        };
        h.record(start.elapsed().as_secs_f64());
    }

    /// A message reached the dead-letter destination.
    pub(crate) fn dead_lettered(&self) {
        self.dead_lettered.increment(1);
    }
}

fn is_conversion(error: &FunctionError) -> bool {
    let conversion = std::any::type_name::<ConversionError>();
    error.kind() == conversion || error.cause_kinds().any(|k| k == conversion)
}

/// The metric handles of one output binding, resolved at bind time.
pub(crate) struct ProducerMeters {
    sent: Counter,
    duration: Histogram,
    conversion_failures: Counter,
    labels: Vec<Label>,
    /// Counter and histogram of failed sends by error kind, registered on first use.
    failed: Mutex<HashMap<BinderErrorKind, (Counter, Histogram)>>,
    meters: Meters,
}

impl std::fmt::Debug for ProducerMeters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProducerMeters").finish_non_exhaustive()
    }
}

impl ProducerMeters {
    /// A send that started at `start` ended with `result`.
    pub(crate) fn sent(&self, start: Instant, result: &Result<(), BinderError>) {
        let seconds = start.elapsed().as_secs_f64();
        match result {
            Ok(()) => {
                self.sent.increment(1);
                self.duration.record(seconds);
            }
            Err(e) => {
                let mut failed = self.failed.lock().unwrap_or_else(PoisonError::into_inner);
                let (c, h) = failed.entry(e.kind()).or_insert_with(|| {
                    let mut labels = self.labels.clone();
                    labels.push(Label::from_static_parts(
                        attributes::ERROR_TYPE,
                        e.kind().as_str(),
                    ));
                    (
                        self.meters.counter(names::SENT_MESSAGES, labels.clone()),
                        self.meters.histogram(names::OPERATION_DURATION, labels),
                    )
                });
                c.increment(1);
                h.record(seconds);
            }
        }
    }

    /// A payload could not be converted for sending.
    pub(crate) fn conversion_failed(&self) {
        self.conversion_failures.increment(1);
    }
}
