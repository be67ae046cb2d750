//! The binder conformance kit: the definition of "a correct binder" (feature `conformance`).
//!
//! Every scenario is a named trial with a one-line contract, run through the real runtime
//! (`StreamApp`) against a binder factory, with fresh destination names so a shared broker can
//! serve it. Trials are gated by the binder's declared [`Capability`]s and by what the test
//! setup provides (a dead-letter reader, a [`BrokerControl`], a [`WireProbe`]): a trial that
//! cannot run is *absent*, listed with its reason, never a hidden pass.
//!
//! A binder crate runs it from its own `tests/conformance.rs` (with `harness = false` in its
//! `Cargo.toml`), one test per trial:
//!
//! ```no_run
//! use stream_core::conformance::Kit;
//! use stream_core::memory::InMemoryBinderFactory;
//!
//! fn main() -> std::process::ExitCode {
//!     Kit::new(InMemoryBinderFactory::default())
//!         .with_dead_letters(|destination, group| {
//!             vec![(
//!                 "spring.cloud.stream.bindings.dlq-in-0.destination".into(),
//!                 format!("{destination}.{group}.dlq"),
//!             )]
//!         })
//!         .run()
//! }
//! ```
//!
//! Broker-backed kits mark every trial ignored ([`Kit::ignored_unless_asked`]) so a plain
//! `cargo test` lists them without a broker and `cargo xtask itest` runs them with `--ignored`.

mod control;
mod harness;
pub mod http;
mod scenarios;
mod support;

use std::collections::BTreeMap;
use std::fmt;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use stream_config::Environment;

pub use control::{BrokerControl, TcpProxy, WireProbe, WireTap};
pub use harness::{Harness, PolledSource};

use crate::binder::{AnyBinderFactory, BinderFactory, Capabilities, Capability};

/// Properties a dead-letter reader application needs to consume the dead letters of
/// `(destination, group)` through binding `dlq-in-0`.
pub type DeadLetterReader = Arc<dyn Fn(&str, &str) -> Vec<(String, String)> + Send + Sync>;

/// A trial's failure: what was expected and what happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrialFailure(pub String);

impl fmt::Display for TrialFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TrialFailure {}

impl From<String> for TrialFailure {
    fn from(s: String) -> Self {
        TrialFailure(s)
    }
}

impl From<&str> for TrialFailure {
    fn from(s: &str) -> Self {
        TrialFailure(s.to_owned())
    }
}

/// What a trial returns.
pub type TrialResult = Result<(), TrialFailure>;

/// What a trial needs besides the factory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Needs {
    Capability(Capability),
    DeadLetterReader,
    BrokerControl,
}

/// One scenario of the kit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Scenario {
    /// A message with a JSON payload and typed user headers arrives intact.
    RoundTripWithTypedHeaders,
    /// The runtime's internal headers (`scst_partition`, `deliveryAttempt`, `sendto`) never
    /// reach the broker or the function.
    InternalHeadersStayInside,
    /// Two anonymous subscribers each get every message.
    AnonymousSubscribersEachGetACopy,
    /// Each group gets every message; the members of one group share them, each once.
    GroupMembersShare,
    /// A partitioned producer's messages reach the instance whose index is the partition.
    PartitionedInstances,
    /// An instance with `instance-index-list` consumes every partition listed.
    PartitionedInstanceIndexList,
    /// `required-groups` queues exist before any consumer, holding what was sent.
    RequiredGroupsExistBeforeConsumers,
    /// Attempts count up in `deliveryAttempt`; after exhaustion nothing is redelivered.
    RetryAttemptsThenRecovery,
    /// Retries wait the back-off, then the message is dead-lettered with the
    /// `x-exception-*` headers (read back from the dead-letter destination).
    RetryBackOffThenDeadLetter,
    /// A message the function rejects without requeue ends in the dead-letter destination.
    RejectWithoutRequeueDeadLetters,
    /// A message the function asks to requeue is delivered again.
    RequeueReturnsTheMessage,
    /// `acknowledge-mode: MANUAL`: what the function acks is gone, what it rejects with
    /// requeue comes back.
    ManualAcknowledgment,
    /// `acknowledge-mode: NONE`: a failed message is not delivered again.
    AcknowledgeModeNone,
    /// `batch-mode`: one failing message fails its batch, whose messages are dead-lettered
    /// each on its own; nothing is lost.
    BatchWithOneFailingMessage,
    /// A pollable consumer: accept consumes, requeue returns it, reject removes it.
    PollableAcceptRejectRequeue,
    /// `stop` returns only after the delivery being processed finished and was settled.
    StopSettlesInFlight,
    /// A paused binding delivers nothing until resumed.
    PauseHoldsUntilResume,
    /// `auto-startup: false` delivers nothing until the binding is started.
    AutoStartupFalse,
    /// An acknowledged message is not delivered again to the next member of its group.
    NoRedeliveryAfterAck,
    /// An application started while the broker is down binds once it is up.
    LateBinding,
    /// A consumer cut off from its broker is not reported `running`, and recovers.
    DeadConsumerIsReported,
    /// A binding that needs an undeclared capability is refused at bind time, naming it.
    CapabilitiesMatchBehaviour,
}

impl Scenario {
    /// Every scenario.
    pub const ALL: [Scenario; 22] = [
        Scenario::RoundTripWithTypedHeaders,
        Scenario::InternalHeadersStayInside,
        Scenario::AnonymousSubscribersEachGetACopy,
        Scenario::GroupMembersShare,
        Scenario::PartitionedInstances,
        Scenario::PartitionedInstanceIndexList,
        Scenario::RequiredGroupsExistBeforeConsumers,
        Scenario::RetryAttemptsThenRecovery,
        Scenario::RetryBackOffThenDeadLetter,
        Scenario::RejectWithoutRequeueDeadLetters,
        Scenario::RequeueReturnsTheMessage,
        Scenario::ManualAcknowledgment,
        Scenario::AcknowledgeModeNone,
        Scenario::BatchWithOneFailingMessage,
        Scenario::PollableAcceptRejectRequeue,
        Scenario::StopSettlesInFlight,
        Scenario::PauseHoldsUntilResume,
        Scenario::AutoStartupFalse,
        Scenario::NoRedeliveryAfterAck,
        Scenario::LateBinding,
        Scenario::DeadConsumerIsReported,
        Scenario::CapabilitiesMatchBehaviour,
    ];

    /// The trial's name (snake case).
    pub fn name(self) -> &'static str {
        match self {
            Scenario::RoundTripWithTypedHeaders => "round_trip_with_typed_headers",
            Scenario::InternalHeadersStayInside => "internal_headers_stay_inside",
            Scenario::AnonymousSubscribersEachGetACopy => "anonymous_subscribers_each_get_a_copy",
            Scenario::GroupMembersShare => "group_members_share",
            Scenario::PartitionedInstances => "partitioned_instances",
            Scenario::PartitionedInstanceIndexList => "partitioned_instance_index_list",
            Scenario::RequiredGroupsExistBeforeConsumers => {
                "required_groups_exist_before_consumers"
            }
            Scenario::RetryAttemptsThenRecovery => "retry_attempts_then_recovery",
            Scenario::RetryBackOffThenDeadLetter => "retry_back_off_then_dead_letter",
            Scenario::RejectWithoutRequeueDeadLetters => "reject_without_requeue_dead_letters",
            Scenario::RequeueReturnsTheMessage => "requeue_returns_the_message",
            Scenario::ManualAcknowledgment => "manual_acknowledgment",
            Scenario::AcknowledgeModeNone => "acknowledge_mode_none",
            Scenario::BatchWithOneFailingMessage => "batch_with_one_failing_message",
            Scenario::PollableAcceptRejectRequeue => "pollable_accept_reject_requeue",
            Scenario::StopSettlesInFlight => "stop_settles_in_flight",
            Scenario::PauseHoldsUntilResume => "pause_holds_until_resume",
            Scenario::AutoStartupFalse => "auto_startup_false",
            Scenario::NoRedeliveryAfterAck => "no_redelivery_after_ack",
            Scenario::LateBinding => "late_binding",
            Scenario::DeadConsumerIsReported => "dead_consumer_is_reported",
            Scenario::CapabilitiesMatchBehaviour => "capabilities_match_behaviour",
        }
    }

    fn needs(self) -> &'static [Needs] {
        use crate::binder::Capability as C;
        use Needs::*;
        match self {
            Scenario::GroupMembersShare
            | Scenario::StopSettlesInFlight
            | Scenario::AutoStartupFalse
            | Scenario::NoRedeliveryAfterAck
            | Scenario::RequeueReturnsTheMessage
            | Scenario::RetryAttemptsThenRecovery => &[Capability(C::ConsumerGroups)],
            Scenario::PartitionedInstances | Scenario::PartitionedInstanceIndexList => {
                &[Capability(C::Partitioning), Capability(C::ConsumerGroups)]
            }
            Scenario::RequiredGroupsExistBeforeConsumers => {
                &[Capability(C::RequiredGroups), Capability(C::ConsumerGroups)]
            }
            Scenario::RetryBackOffThenDeadLetter | Scenario::RejectWithoutRequeueDeadLetters => &[
                Capability(C::DeadLetter),
                Capability(C::ConsumerGroups),
                DeadLetterReader,
            ],
            Scenario::ManualAcknowledgment => {
                &[Capability(C::ManualAck), Capability(C::ConsumerGroups)]
            }
            Scenario::AcknowledgeModeNone => &[Capability(C::NoAck), Capability(C::ConsumerGroups)],
            Scenario::BatchWithOneFailingMessage => &[
                Capability(C::BatchConsumer),
                Capability(C::DeadLetter),
                Capability(C::ConsumerGroups),
                DeadLetterReader,
            ],
            Scenario::PollableAcceptRejectRequeue => &[
                Capability(C::PollableConsumer),
                Capability(C::ConsumerGroups),
            ],
            Scenario::LateBinding => &[BrokerControl],
            Scenario::DeadConsumerIsReported => &[BrokerControl, Capability(C::ConsumerGroups)],
            Scenario::RoundTripWithTypedHeaders
            | Scenario::InternalHeadersStayInside
            | Scenario::AnonymousSubscribersEachGetACopy
            | Scenario::PauseHoldsUntilResume
            | Scenario::CapabilitiesMatchBehaviour => &[],
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The conformance kit for one binder: its factory and what its test setup provides.
#[derive(Clone)]
pub struct Kit {
    pub(crate) factory: AnyBinderFactory,
    pub(crate) properties: Vec<(String, String)>,
    pub(crate) timeout: Duration,
    pub(crate) quiet: Duration,
    pub(crate) dead_letters: Option<DeadLetterReader>,
    pub(crate) broker: Option<Arc<dyn BrokerControl>>,
    pub(crate) probe: Option<Arc<dyn WireProbe>>,
    /// Trials that cut the broker off run one at a time (they share the control).
    control_lock: Arc<tokio::sync::Mutex<()>>,
    ignored: Option<String>,
    only: Option<Vec<Scenario>>,
}

impl fmt::Debug for Kit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kit")
            .field("binder", &self.factory.binder_type())
            .field("timeout", &self.timeout)
            .field("dead_letters", &self.dead_letters.is_some())
            .field("broker_control", &self.broker.is_some())
            .field("wire_probe", &self.probe.is_some())
            .finish_non_exhaustive()
    }
}

impl Kit {
    /// A kit over a binder factory.
    pub fn new(factory: impl BinderFactory) -> Self {
        Self::with_factory(AnyBinderFactory::new(factory))
    }

    /// A kit over an erased (shared) factory.
    pub fn with_factory(factory: AnyBinderFactory) -> Self {
        Self {
            factory,
            properties: Vec::new(),
            timeout: Duration::from_secs(10),
            quiet: Duration::from_millis(600),
            dead_letters: None,
            broker: None,
            probe: None,
            control_lock: Arc::new(tokio::sync::Mutex::new(())),
            ignored: None,
            only: None,
        }
    }

    /// Adds a property every application of every trial gets (connection settings, binder
    /// defaults such as `auto-bind-dlq`).
    pub fn with_property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.push((key.into(), value.into()));
        self
    }

    /// How long to wait for an expected message (default 10 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long "nothing more arrives" is watched (default 600 ms).
    pub fn with_quiet_period(mut self, quiet: Duration) -> Self {
        self.quiet = quiet;
        self
    }

    /// How to read dead letters: given `(destination, group)` of a failing consumer, the
    /// properties of a consumer binding `dlq-in-0` that receives its dead letters. It is
    /// started after the failing consumer, before anything is sent.
    pub fn with_dead_letters(
        mut self,
        reader: impl Fn(&str, &str) -> Vec<(String, String)> + Send + Sync + 'static,
    ) -> Self {
        self.dead_letters = Some(Arc::new(reader));
        self
    }

    /// A way to cut the broker off (late binding, dead consumer trials).
    pub fn with_broker_control(mut self, control: impl BrokerControl) -> Self {
        self.broker = Some(Arc::new(control));
        self
    }

    /// A way to look at what reached the broker (internal headers trial).
    pub fn with_wire_probe(mut self, probe: impl WireProbe) -> Self {
        self.probe = Some(Arc::new(probe));
        self
    }

    /// Marks every trial ignored with `reason`: run them with `--ignored` (broker tests).
    pub fn ignored_unless_asked(mut self, reason: impl Into<String>) -> Self {
        self.ignored = Some(reason.into());
        self
    }

    /// Runs only these scenarios.
    pub fn only(mut self, scenarios: impl IntoIterator<Item = Scenario>) -> Self {
        self.only = Some(scenarios.into_iter().collect());
        self
    }

    /// The environment of a trial's application: the kit's properties, the broker control's,
    /// then `pairs`.
    pub(crate) fn env(&self, pairs: &[(String, String)]) -> Result<Environment, TrialFailure> {
        Environment::builder()
            .map(
                "conformance kit",
                self.properties.iter().cloned().chain(pairs.iter().cloned()),
            )
            .build()
            .map_err(|e| TrialFailure(format!("trial configuration: {e}")))
    }

    /// The kit as the trials that cut the broker off see it: the control's factory (if it has
    /// one) and its properties; the guard keeps other such trials out until it is dropped.
    pub(crate) async fn under_control(
        &self,
    ) -> Result<
        (
            Kit,
            Arc<dyn BrokerControl>,
            tokio::sync::OwnedMutexGuard<()>,
        ),
        TrialFailure,
    > {
        let control = self
            .broker
            .clone()
            .ok_or("no broker control given (Kit::with_broker_control)")?;
        let guard = Arc::clone(&self.control_lock).lock_owned().await;
        let mut kit = self.clone();
        if let Some(f) = control.factory() {
            kit.factory = f;
        }
        kit.properties.extend(control.properties());
        Ok((kit, control, guard))
    }

    /// The binder's capabilities (creates one binder to ask).
    pub async fn capabilities(&self) -> Result<Capabilities, TrialFailure> {
        self.factory
            .capabilities(self.env(&[])?)
            .await
            .map_err(|e| TrialFailure(format!("creating a binder to read its capabilities: {e}")))
    }

    /// Why a scenario cannot run here, if it cannot.
    fn absent(&self, scenario: Scenario, caps: Capabilities) -> Option<String> {
        if let Some(only) = &self.only
            && !only.contains(&scenario)
        {
            return Some("not selected".to_owned());
        }
        for need in scenario.needs() {
            match need {
                Needs::Capability(c) if !caps.supports(*c) => {
                    return Some(format!("the binder does not declare {c} ({c:?})"));
                }
                Needs::DeadLetterReader if self.dead_letters.is_none() => {
                    return Some("no dead-letter reader given (Kit::with_dead_letters)".to_owned());
                }
                Needs::BrokerControl if self.broker.is_none() => {
                    return Some("no broker control given (Kit::with_broker_control)".to_owned());
                }
                _ => {}
            }
        }
        None
    }

    /// Runs one scenario now (whatever the capabilities say); for binder tests that check the
    /// kit catches a fault.
    pub async fn run_scenario(&self, scenario: Scenario) -> TrialResult {
        let limit = self.timeout * 12 + Duration::from_secs(30);
        match tokio::time::timeout(limit, scenarios::run(self, scenario)).await {
            Ok(r) => r,
            Err(_) => Err(TrialFailure(format!(
                "{scenario}: did not finish within {limit:?}"
            ))),
        }
    }

    /// The trials the binder can run, and the absent ones with their reasons.
    pub fn plan(&self) -> (Vec<Scenario>, BTreeMap<Scenario, String>) {
        let caps = match runtime()
            .and_then(|rt| rt.block_on(self.capabilities()).map_err(|e| e.to_string()))
        {
            Ok(c) => c,
            Err(e) => {
                eprintln!("conformance kit: {e}");
                Capabilities::none()
            }
        };
        let mut present = Vec::new();
        let mut absent = BTreeMap::new();
        for s in Scenario::ALL {
            match self.absent(s, caps) {
                Some(reason) => {
                    absent.insert(s, reason);
                }
                None => present.push(s),
            }
        }
        (present, absent)
    }

    /// Runs the kit as a test binary (`harness = false`): one trial per scenario, libtest's
    /// arguments (filters, `--ignored`, `--list`), absent trials listed with their reasons.
    pub fn run(self) -> ExitCode {
        let args = libtest_mimic::Arguments::from_args();
        let binder = self.factory.binder_type();
        let (present, absent) = self.plan();
        if !args.list {
            eprintln!(
                "conformance kit for binder `{binder}`: {} trials, {} absent",
                present.len(),
                absent.iter().filter(|(_, r)| *r != "not selected").count()
            );
            for (s, reason) in &absent {
                if reason != "not selected" {
                    eprintln!("  absent: {s} — {reason}");
                }
            }
        }
        let ignored = self.ignored.is_some();
        let kit = Arc::new(self);
        let trials = present
            .into_iter()
            .map(|s| {
                let kit = Arc::clone(&kit);
                libtest_mimic::Trial::test(s.name(), move || {
                    let rt = runtime().map_err(libtest_mimic::Failed::from)?;
                    rt.block_on(kit.run_scenario(s))
                        .map_err(|e| libtest_mimic::Failed::from(e.0))
                })
                .with_ignored_flag(ignored)
            })
            .collect();
        libtest_mimic::run(&args, trials).exit_code()
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a tokio runtime: {e}"))
}
