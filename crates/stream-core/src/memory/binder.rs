//! The in-memory binder: [`Binder`] over an [`InMemoryBroker`], written against the public
//! binder API only.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use stream_config::AckMode;
use tokio::task::JoinHandle;

use super::broker::{InMemoryBroker, queue_name};
use super::properties::{
    MemoryBinderProperties, MemoryConsumerProperties, MemoryProducerProperties,
};
use super::queue::Queue;
use crate::binder::{
    Binder, BinderContext, BinderFactory, BinderHealth, Capabilities, Capability, Consumer,
    ConsumerSpec, DeadLetter, DeadLetterRoute, Delivery, Group, Outbound, Pollable, Producer,
    ProducerSpec, Recovery, Settle, Settlement, Sink, SourceStatus,
};
use crate::error::BinderError;
use crate::message::{Message, names};

/// Type name of the in-memory binder.
pub const MEMORY_BINDER_TYPE: &str = "memory";

/// Header carrying the destination a dead-lettered message was consumed from.
pub const ORIGINAL_DESTINATION_HEADER: &str = "x-original-destination";
/// Header carrying the failure's root-cause message on a dead-lettered message.
pub const EXCEPTION_MESSAGE_HEADER: &str = names::EXCEPTION_MESSAGE;
/// Header carrying the failure's cause chain on a dead-lettered message.
pub const EXCEPTION_STACKTRACE_HEADER: &str = names::EXCEPTION_STACKTRACE;

/// Creates [`InMemoryBinder`]s over one shared [`InMemoryBroker`].
///
/// ```
/// use stream_core::memory::{InMemoryBinderFactory, InMemoryBroker};
/// let broker = InMemoryBroker::new();
/// let factory = InMemoryBinderFactory::with_broker(broker.clone());
/// assert_eq!(stream_core::binder::BinderFactory::binder_type(&factory), "memory");
/// ```
#[derive(Clone, Debug, Default)]
pub struct InMemoryBinderFactory {
    broker: InMemoryBroker,
}

impl InMemoryBinderFactory {
    /// A factory whose binders use `broker` (share it between applications to simulate
    /// several instances).
    pub fn with_broker(broker: InMemoryBroker) -> Self {
        Self { broker }
    }

    /// The broker behind this factory's binders.
    pub fn broker(&self) -> &InMemoryBroker {
        &self.broker
    }
}

impl BinderFactory for InMemoryBinderFactory {
    type Binder = InMemoryBinder;
    type Properties = MemoryBinderProperties;

    fn binder_type(&self) -> &'static str {
        MEMORY_BINDER_TYPE
    }

    async fn create(
        &self,
        _context: BinderContext<MemoryBinderProperties>,
    ) -> Result<InMemoryBinder, BinderError> {
        Ok(InMemoryBinder::new(self.broker.clone()))
    }
}

/// A binder whose destinations live in process memory.
#[derive(Clone, Debug)]
pub struct InMemoryBinder {
    broker: InMemoryBroker,
}

impl InMemoryBinder {
    /// A binder over `broker`.
    pub fn new(broker: InMemoryBroker) -> Self {
        Self { broker }
    }

    /// A temporary connection error while the broker is cut off.
    fn reachable(&self) -> Result<(), BinderError> {
        reachable(&self.broker)
    }
}

fn reachable(broker: &InMemoryBroker) -> Result<(), BinderError> {
    if broker.is_available() {
        Ok(())
    } else {
        Err(BinderError::connection(
            "the in-memory broker",
            "it is cut off (InMemoryBroker::cut)",
        ))
    }
}

/// What provisioning a consumer produced: its queues and dead-letter destination.
#[derive(Debug)]
pub struct MemoryDestination {
    destination: String,
    /// Queue names and partitions, declared again on every start (anonymous queues are
    /// removed when their consumer stops).
    queues: Vec<(String, Option<u32>)>,
    anonymous: bool,
    dead_letter: Option<String>,
}

/// `<destination>.<group>.dlq`: where failed messages of a group go.
pub fn dead_letter_destination(destination: &str, group: &str) -> String {
    format!("{destination}.{group}.dlq")
}

impl Binder for InMemoryBinder {
    type ConsumerProperties = MemoryConsumerProperties;
    type ProducerProperties = MemoryProducerProperties;
    type ConsumerDestination = MemoryDestination;
    type ProducerDestination = String;
    type Consumer = MemoryConsumer;
    type Producer = MemoryProducer;
    type Pollable = MemoryPollable;

    fn capabilities(&self) -> Capabilities {
        [
            Capability::PollableConsumer,
            Capability::ManualAck,
            Capability::NoAck,
            Capability::Partitioning,
            Capability::ConsumerGroups,
            Capability::DeadLetter,
            Capability::RequiredGroups,
            Capability::BatchConsumer,
            Capability::TypedHeaders,
        ]
        .into_iter()
        .collect()
    }

    fn acknowledge_mode(&self, extension: &MemoryConsumerProperties) -> Option<AckMode> {
        Some(extension.acknowledge_mode)
    }

    async fn provision_consumer(
        &self,
        spec: &ConsumerSpec<MemoryConsumerProperties>,
    ) -> Result<MemoryDestination, BinderError> {
        self.reachable()?;
        let dest = &*spec.destination;
        let (group, anonymous) = match &spec.group {
            Group::Named(g) => (g.to_string(), false),
            Group::Anonymous(a) => (a.with_prefix("anonymous."), true),
        };
        let partitions: Vec<Option<u32>> = if spec.partitions.is_empty() {
            vec![None]
        } else {
            spec.partitions.iter().map(|&p| Some(p)).collect()
        };
        let queues: Vec<(String, Option<u32>)> = partitions
            .into_iter()
            .map(|p| (queue_name(dest, &group, p), p))
            .collect();
        for (name, p) in &queues {
            self.broker.declare(dest, name.clone(), *p);
        }
        let dead_letter = (!anonymous).then(|| dead_letter_destination(dest, &group));
        if let Some(dlq) = &dead_letter {
            self.broker.capture(dlq);
        }
        Ok(MemoryDestination {
            destination: dest.to_owned(),
            queues,
            anonymous,
            dead_letter,
        })
    }

    async fn provision_producer(
        &self,
        spec: &ProducerSpec<MemoryProducerProperties>,
    ) -> Result<String, BinderError> {
        self.reachable()?;
        let dest = &*spec.destination;
        for group in &spec.common.required_groups {
            match spec.partition_count {
                Some(count) => {
                    for p in 0..count {
                        self.broker
                            .declare(dest, queue_name(dest, group, Some(p)), Some(p));
                    }
                }
                None => {
                    self.broker
                        .declare(dest, queue_name(dest, group, None), None);
                }
            }
        }
        Ok(dest.to_owned())
    }

    async fn bind_consumer(
        &self,
        spec: &ConsumerSpec<MemoryConsumerProperties>,
        destination: &MemoryDestination,
    ) -> Result<MemoryConsumer, BinderError> {
        self.reachable()?;
        Ok(MemoryConsumer {
            settler: self.settler(destination),
            queues: destination.queues.clone(),
            anonymous: destination.anonymous,
            concurrency: spec.common.concurrency.max(1),
            batch_size: spec
                .common
                .batch_mode
                .then_some(spec.extension.batch_size.max(1) as usize),
            tasks: Mutex::new(Vec::new()),
        })
    }

    async fn bind_producer(
        &self,
        _spec: &ProducerSpec<MemoryProducerProperties>,
        destination: &String,
    ) -> Result<MemoryProducer, BinderError> {
        Ok(MemoryProducer {
            broker: self.broker.clone(),
            destination: destination.clone(),
        })
    }

    async fn bind_pollable(
        &self,
        _spec: &ConsumerSpec<MemoryConsumerProperties>,
        destination: &MemoryDestination,
    ) -> Result<MemoryPollable, BinderError> {
        let settler = self.settler(destination);
        let queues = destination
            .queues
            .iter()
            .map(|(name, p)| {
                self.broker
                    .declare(&destination.destination, name.clone(), *p)
            })
            .collect();
        Ok(MemoryPollable { settler, queues })
    }

    async fn health(&self) -> BinderHealth {
        if self.broker.is_available() {
            BinderHealth::up().with_detail("broker", "in-memory")
        } else {
            BinderHealth::down("the in-memory broker is cut off (InMemoryBroker::cut)")
        }
    }

    async fn close(&self) -> Result<(), BinderError> {
        Ok(())
    }
}

impl InMemoryBinder {
    fn settler(&self, destination: &MemoryDestination) -> Settler {
        Settler {
            broker: self.broker.clone(),
            destination: destination.destination.clone(),
            dead_letter: destination.dead_letter.clone(),
        }
    }
}

/// The in-memory broker's message: its queue, and the message as it was there.
#[derive(Debug)]
pub struct MemoryRaw {
    queue: Arc<Queue>,
    message: Message<Bytes>,
}

impl MemoryRaw {
    /// The message as it was in the queue.
    pub fn message(&self) -> &Message<Bytes> {
        &self.message
    }

    /// The queue it was consumed from.
    pub fn queue(&self) -> &str {
        &self.queue.name
    }
}

/// Settles deliveries of one consumer binding.
#[derive(Clone, Debug)]
struct Settler {
    broker: InMemoryBroker,
    destination: String,
    dead_letter: Option<String>,
}

impl Settler {
    fn recovery(&self) -> Recovery {
        if self.dead_letter.is_some() {
            Recovery::new(DeadLetterRoute::Publish, DeadLetterRoute::Publish)
        } else {
            Recovery::new(DeadLetterRoute::Drop, DeadLetterRoute::Drop)
        }
    }

    fn settle(&self, raw: &MemoryRaw, settlement: Settlement) {
        match settlement {
            Settlement::Ack => {}
            Settlement::Requeue => raw.queue.push_front(raw.message.clone()),
            // The in-memory broker has no dead-letter exchange: a rejected message is gone.
            Settlement::Reject => {
                tracing::debug!(destination = %self.destination, "message rejected and dropped");
            }
        }
    }

    fn dead_letter(&self, letter: &DeadLetter) -> Result<(), BinderError> {
        let Some(dlq) = &self.dead_letter else {
            return Err(BinderError::settle(
                &self.destination,
                "an anonymous subscription has no dead-letter destination",
            ));
        };
        let mut message = letter.to_message();
        message
            .headers_mut()
            .insert(ORIGINAL_DESTINATION_HEADER, self.destination.as_str());
        tracing::info!(destination = %self.destination, dead_letter = %dlq, "message dead-lettered");
        self.broker.send(dlq, message);
        Ok(())
    }

    fn delivery(queue: &Arc<Queue>, message: Message<Bytes>) -> Delivery<MemoryRaw> {
        Delivery::new(
            MemoryRaw {
                queue: Arc::clone(queue),
                message: message.clone(),
            },
            message,
        )
    }
}

/// The consumer of an in-memory binding: `concurrency` tasks per queue.
#[derive(Debug)]
pub struct MemoryConsumer {
    settler: Settler,
    queues: Vec<(String, Option<u32>)>,
    anonymous: bool,
    concurrency: u32,
    /// `Some(n)` in batch mode: hand up to `n` waiting messages at once.
    batch_size: Option<usize>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Settle for MemoryConsumer {
    type Raw = MemoryRaw;

    fn recovery(&self) -> Recovery {
        self.settler.recovery()
    }

    async fn settle(&self, raw: &MemoryRaw, settlement: Settlement) -> Result<(), BinderError> {
        self.settler.settle(raw, settlement);
        Ok(())
    }

    async fn dead_letter(&self, _raw: &MemoryRaw, letter: &DeadLetter) -> Result<(), BinderError> {
        self.settler.dead_letter(letter)
    }
}

async fn consume(
    queue: Arc<Queue>,
    sink: Sink<MemoryConsumer>,
    broker: InMemoryBroker,
    batch_size: Option<usize>,
) {
    let stopped = sink.stopped();
    tokio::pin!(stopped);
    let mut down = broker.availability();
    loop {
        if *down.borrow_and_update() {
            sink.report(SourceStatus::Lost {
                reason: "the in-memory broker is cut off; waiting for it".to_owned(),
            });
            tokio::select! {
                biased;
                _ = &mut stopped => return,
                r = down.wait_for(|d| !*d) => if r.is_err() { return },
            }
            sink.report(SourceStatus::Consuming);
            continue;
        }
        let message = tokio::select! {
            biased;
            _ = &mut stopped => return,
            _ = down.changed() => continue,
            m = queue.pop() => m,
        };
        match batch_size {
            None => sink.dispatch(Settler::delivery(&queue, message)).await,
            Some(n) => {
                let mut batch = vec![Settler::delivery(&queue, message)];
                while batch.len() < n {
                    match queue.try_pop() {
                        Some(m) => batch.push(Settler::delivery(&queue, m)),
                        None => break,
                    }
                }
                sink.dispatch_batch(batch).await;
            }
        }
    }
}

impl Consumer for MemoryConsumer {
    async fn start(&self, sink: Sink<Self>) -> Result<(), BinderError> {
        reachable(&self.settler.broker)?;
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        for (name, partition) in &self.queues {
            let queue =
                self.settler
                    .broker
                    .declare(&self.settler.destination, name.clone(), *partition);
            for _ in 0..self.concurrency {
                tasks.push(sink.spawn(
                    "memory-consumer",
                    consume(
                        Arc::clone(&queue),
                        sink.clone(),
                        self.settler.broker.clone(),
                        self.batch_size,
                    ),
                ));
            }
        }
        Ok(())
    }

    async fn stop(&self) -> Result<(), BinderError> {
        let tasks: Vec<JoinHandle<()>> =
            std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for t in tasks {
            if let Err(e) = t.await {
                tracing::error!(destination = %self.settler.destination, error = %e, "consumer task failed");
            }
        }
        if self.anonymous {
            for (name, _) in &self.queues {
                self.settler.broker.delete(&self.settler.destination, name);
            }
        }
        Ok(())
    }
}

/// The producer of an in-memory output binding.
#[derive(Debug)]
pub struct MemoryProducer {
    broker: InMemoryBroker,
    destination: String,
}

impl Producer for MemoryProducer {
    async fn send(&self, outbound: Outbound) -> Result<(), BinderError> {
        reachable(&self.broker)?;
        self.broker
            .publish(&self.destination, outbound.message, outbound.partition);
        Ok(())
    }

    async fn close(&self) -> Result<(), BinderError> {
        Ok(())
    }
}

/// The pollable source of an in-memory binding.
#[derive(Debug)]
pub struct MemoryPollable {
    settler: Settler,
    queues: Vec<Arc<Queue>>,
}

impl Settle for MemoryPollable {
    type Raw = MemoryRaw;

    fn recovery(&self) -> Recovery {
        self.settler.recovery()
    }

    async fn settle(&self, raw: &MemoryRaw, settlement: Settlement) -> Result<(), BinderError> {
        self.settler.settle(raw, settlement);
        Ok(())
    }

    async fn dead_letter(&self, _raw: &MemoryRaw, letter: &DeadLetter) -> Result<(), BinderError> {
        self.settler.dead_letter(letter)
    }
}

impl Pollable for MemoryPollable {
    async fn fetch(&self) -> Result<Option<Delivery<MemoryRaw>>, BinderError> {
        reachable(&self.settler.broker)?;
        Ok(self
            .queues
            .iter()
            .find_map(|q| q.try_pop().map(|m| Settler::delivery(q, m))))
    }

    async fn close(&self) -> Result<(), BinderError> {
        Ok(())
    }
}
