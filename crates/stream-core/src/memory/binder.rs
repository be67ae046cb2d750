//! The in-memory binder: [`Binder`] over an [`InMemoryBroker`], written against the public
//! binder API only.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use stream_config::{Environment, ExtensionSchema};

use super::properties::{
    MemoryBinderProperties, MemoryConsumerProperties, MemoryProducerProperties,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::broker::{InMemoryBroker, queue_name};
use super::queue::Queue;
use crate::binder::{
    Binder, BinderContext, BinderFactory, Binding, BindingState, Capabilities, Capability,
    ConsumerDestination, ConsumerRequest, Delivery, Disposition, InboundHandler, PollableSource,
    Producer, ProducerDestination, ProducerRequest, Provisioner,
};
use crate::error::BinderError;
use crate::message::{AckMode, Acknowledger, Acknowledgment, Message};

/// Type name of the in-memory binder.
pub const MEMORY_BINDER_TYPE: &str = "memory";

/// Header carrying the destination a dead-lettered message was consumed from.
pub const ORIGINAL_DESTINATION_HEADER: &str = "x-original-destination";
/// Header carrying the failure's root-cause message on a dead-lettered message.
pub const EXCEPTION_MESSAGE_HEADER: &str = "x-exception-message";
/// Header carrying the failure's cause chain on a dead-lettered message.
pub const EXCEPTION_STACKTRACE_HEADER: &str = "x-exception-stacktrace";

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

#[async_trait]
impl BinderFactory for InMemoryBinderFactory {
    fn binder_type(&self) -> &'static str {
        MEMORY_BINDER_TYPE
    }

    fn extension_schema(&self) -> Option<ExtensionSchema> {
        Some(ExtensionSchema::new::<
            MemoryBinderProperties,
            MemoryConsumerProperties,
            MemoryProducerProperties,
        >(MEMORY_BINDER_TYPE))
    }

    async fn create(&self, context: BinderContext) -> Result<Arc<dyn Binder>, BinderError> {
        Ok(Arc::new(InMemoryBinder {
            broker: self.broker.clone(),
            environment: context.environment,
        }))
    }
}

/// A binder whose destinations live in process memory.
#[derive(Clone, Debug)]
pub struct InMemoryBinder {
    broker: InMemoryBroker,
    environment: Environment,
}

impl InMemoryBinder {
    /// A binder over `broker`, reading its extended properties from `environment`.
    pub fn new(broker: InMemoryBroker, environment: Environment) -> Self {
        Self {
            broker,
            environment,
        }
    }

    fn consumer_properties(
        &self,
        request: &ConsumerRequest,
    ) -> Result<MemoryConsumerProperties, BinderError> {
        self.environment
            .extended_consumer::<MemoryConsumerProperties>(
                MEMORY_BINDER_TYPE,
                &request.binding_name,
            )
            .map_err(|e| BinderError::InvalidProperty {
                key: format!(
                    "spring.cloud.stream.memory.bindings.{}.consumer",
                    request.binding_name
                ),
                reason: e.to_string(),
            })
    }
}

/// What provisioning a consumer produced: its queues and dead-letter destination.
#[derive(Debug)]
struct Provisioned {
    queues: Vec<Arc<Queue>>,
    dead_letter: Option<String>,
}

/// `<destination>.<group>.dlq`: where failed messages of a group go.
pub fn dead_letter_destination(destination: &str, group: &str) -> String {
    format!("{destination}.{group}.dlq")
}

#[async_trait]
impl Provisioner for InMemoryBinder {
    async fn provision_producer(
        &self,
        request: &ProducerRequest,
    ) -> Result<ProducerDestination, BinderError> {
        let count = request.properties.partition_count;
        for group in &request.properties.required_groups {
            if request.properties.is_partitioned() {
                for p in 0..count {
                    let name = queue_name(&request.destination, group, Some(p));
                    self.broker
                        .declare(&request.destination, name, Some(p), false);
                }
            } else {
                let name = queue_name(&request.destination, group, None);
                self.broker.declare(&request.destination, name, None, false);
            }
        }
        Ok(ProducerDestination::new(request.destination.clone()))
    }

    async fn provision_consumer(
        &self,
        request: &ConsumerRequest,
    ) -> Result<ConsumerDestination, BinderError> {
        let dest = &request.destination;
        let (group, anonymous) = match &request.group {
            Some(g) => (g.clone(), false),
            None => (format!("anonymous.{}", anonymous_suffix()), true),
        };
        let partitions: Vec<Option<u32>> = if request.properties.partitioned {
            let list = &request.properties.instance_index_list;
            if list.is_empty() {
                vec![Some(request.instance_index)]
            } else {
                list.iter().map(|&i| Some(i)).collect()
            }
        } else {
            vec![None]
        };
        let queues: Vec<Arc<Queue>> = partitions
            .into_iter()
            .map(|p| {
                self.broker
                    .declare(dest, queue_name(dest, &group, p), p, anonymous)
            })
            .collect();
        let dead_letter = (!anonymous).then(|| dead_letter_destination(dest, &group));
        if let Some(dlq) = &dead_letter {
            self.broker.capture(dlq);
        }
        let name = queues
            .iter()
            .map(|q| q.name.clone())
            .collect::<Vec<_>>()
            .join(",");
        Ok(ConsumerDestination {
            name,
            extra: Some(Arc::new(Provisioned {
                queues,
                dead_letter,
            })),
        })
    }
}

fn anonymous_suffix() -> String {
    use base64::Engine;
    let bytes: [u8; 16] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn provisioned(destination: &ConsumerDestination) -> Result<&Provisioned, BinderError> {
    destination
        .extra::<Provisioned>()
        .ok_or_else(|| BinderError::Provisioning {
            destination: destination.name.clone(),
            reason: "not provisioned by the in-memory binder".to_owned(),
            source: None,
        })
}

#[async_trait]
impl Binder for InMemoryBinder {
    fn binder_type(&self) -> &str {
        MEMORY_BINDER_TYPE
    }

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
        ]
        .into_iter()
        .collect()
    }

    fn provisioner(&self) -> &dyn Provisioner {
        self
    }

    async fn bind_consumer(
        &self,
        request: ConsumerRequest,
        destination: ConsumerDestination,
        handler: Arc<dyn InboundHandler>,
    ) -> Result<Box<dyn Binding>, BinderError> {
        let p = provisioned(&destination)?;
        let ext = self.consumer_properties(&request)?;
        let ack_mode = ext.acknowledge_mode;
        let batch_size = request
            .properties
            .batch_mode
            .then_some(ext.batch_size.max(1) as usize);
        let consumer = Arc::new(Settler {
            broker: self.broker.clone(),
            destination: request.destination.clone(),
            dead_letter: p.dead_letter.clone(),
            ack_mode,
        });
        let (run, _) = watch::channel(false);
        let binding = MemoryConsumerBinding {
            name: request.binding_name.clone(),
            queues: p.queues.clone(),
            concurrency: request.properties.concurrency.max(1),
            batch_size,
            handler,
            settler: consumer,
            broker: self.broker.clone(),
            destination: request.destination.clone(),
            run,
            state: Mutex::new(BindingState::Stopped),
            workers: tokio::sync::Mutex::new(Vec::new()),
        };
        if request.properties.auto_startup {
            binding.start().await?;
        }
        Ok(Box::new(binding))
    }

    async fn bind_producer(
        &self,
        request: ProducerRequest,
        destination: ProducerDestination,
    ) -> Result<Arc<dyn Producer>, BinderError> {
        let _ = request;
        Ok(Arc::new(MemoryProducer {
            broker: self.broker.clone(),
            destination: destination.name,
        }))
    }

    async fn bind_pollable(
        &self,
        request: ConsumerRequest,
        destination: ConsumerDestination,
    ) -> Result<Box<dyn PollableSource>, BinderError> {
        let p = provisioned(&destination)?;
        Ok(Box::new(MemoryPollable {
            queues: p.queues.clone(),
            settler: Arc::new(Settler {
                broker: self.broker.clone(),
                destination: request.destination.clone(),
                dead_letter: p.dead_letter.clone(),
                ack_mode: self.consumer_properties(&request)?.acknowledge_mode,
            }),
        }))
    }

    async fn close(&self) -> Result<(), BinderError> {
        Ok(())
    }
}

/// Settles deliveries of one consumer binding.
#[derive(Debug)]
struct Settler {
    broker: InMemoryBroker,
    destination: String,
    dead_letter: Option<String>,
    ack_mode: AckMode,
}

struct QueueAck {
    queue: Arc<Queue>,
    message: Message<Bytes>,
}

#[async_trait]
impl Acknowledger for QueueAck {
    async fn ack(&self) -> Result<(), BinderError> {
        Ok(())
    }

    async fn reject(&self, requeue: bool) -> Result<(), BinderError> {
        if requeue {
            self.queue.push_front(self.message.clone());
        }
        Ok(())
    }
}

impl Settler {
    /// The delivery for a message, plus what settling it needs: the original and the manual
    /// acknowledgment handle.
    fn prepare(
        &self,
        queue: &Arc<Queue>,
        mut message: Message<Bytes>,
    ) -> (Delivery, Message<Bytes>, Option<Acknowledgment>) {
        let original = message.clone();
        let ack = (self.ack_mode == AckMode::Manual).then(|| {
            Acknowledgment::new(Arc::new(QueueAck {
                queue: Arc::clone(queue),
                message: original.clone(),
            }))
        });
        message.set_acknowledgment(ack.clone());
        (Delivery::new(message), original, ack)
    }

    async fn deliver(
        &self,
        queue: &Arc<Queue>,
        handler: &dyn InboundHandler,
        message: Message<Bytes>,
    ) {
        let (delivery, original, ack) = self.prepare(queue, message);
        let disposition = handler.handle(delivery).await;
        self.settle(queue, original, ack.as_ref(), disposition);
    }

    async fn deliver_batch(
        &self,
        queue: &Arc<Queue>,
        handler: &dyn InboundHandler,
        messages: Vec<Message<Bytes>>,
    ) {
        let mut deliveries = Vec::with_capacity(messages.len());
        let mut settle = Vec::with_capacity(messages.len());
        for m in messages {
            let (d, original, ack) = self.prepare(queue, m);
            deliveries.push(d);
            settle.push((original, ack));
        }
        let dispositions = handler.handle_batch(deliveries).await;
        for ((original, ack), disposition) in settle.into_iter().zip(dispositions) {
            self.settle(queue, original, ack.as_ref(), disposition);
        }
    }

    fn settle(
        &self,
        queue: &Arc<Queue>,
        original: Message<Bytes>,
        ack: Option<&Acknowledgment>,
        disposition: Disposition,
    ) {
        if self.ack_mode == AckMode::None {
            // Settled on delivery: nothing can be requeued or dead-lettered.
            return;
        }
        if ack.is_some_and(Acknowledgment::is_settled) {
            return;
        }
        match disposition {
            Disposition::Ack => {}
            Disposition::Reject { requeue: true } => queue.push_front(original),
            Disposition::Reject { requeue: false } => self.dead_letter(original, None),
            Disposition::Recover(failed) => self.dead_letter(failed.message, Some(&failed.error)),
        }
    }

    fn dead_letter(&self, mut message: Message<Bytes>, error: Option<&crate::FunctionError>) {
        let Some(dlq) = &self.dead_letter else {
            tracing::warn!(destination = %self.destination, "failed message of an anonymous subscription dropped (no dead-letter destination)");
            return;
        };
        if let Some(error) = error {
            let h = message.headers_mut();
            h.insert(EXCEPTION_MESSAGE_HEADER, error.root_cause_message());
            h.insert(EXCEPTION_STACKTRACE_HEADER, error.render_chain());
            h.insert(ORIGINAL_DESTINATION_HEADER, self.destination.as_str());
        }
        tracing::info!(destination = %self.destination, dead_letter = %dlq, "message dead-lettered");
        self.broker.send(dlq, message);
    }
}

struct MemoryConsumerBinding {
    name: String,
    queues: Vec<Arc<Queue>>,
    concurrency: u32,
    /// `Some(n)` in batch mode: hand up to `n` waiting messages at once.
    batch_size: Option<usize>,
    handler: Arc<dyn InboundHandler>,
    settler: Arc<Settler>,
    broker: InMemoryBroker,
    destination: String,
    run: watch::Sender<bool>,
    state: Mutex<BindingState>,
    workers: tokio::sync::Mutex<Vec<JoinHandle<()>>>,
}

impl MemoryConsumerBinding {
    fn set_state(&self, state: BindingState) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = state;
    }

    async fn halt(&self, state: BindingState) -> Result<(), BinderError> {
        self.run.send_replace(false);
        let workers: Vec<JoinHandle<()>> = std::mem::take(&mut *self.workers.lock().await);
        for w in workers {
            if let Err(e) = w.await {
                tracing::error!(binding = %self.name, error = %e, "consumer worker panicked");
            }
        }
        self.set_state(state);
        Ok(())
    }
}

#[async_trait]
impl Binding for MemoryConsumerBinding {
    fn name(&self) -> &str {
        &self.name
    }

    fn state(&self) -> BindingState {
        *self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn start(&self) -> Result<(), BinderError> {
        let mut workers = self.workers.lock().await;
        if !workers.is_empty() {
            return Ok(());
        }
        self.run.send_replace(true);
        for queue in &self.queues {
            for _ in 0..self.concurrency {
                let queue = Arc::clone(queue);
                let handler = Arc::clone(&self.handler);
                let settler = Arc::clone(&self.settler);
                let mut run = self.run.subscribe();
                let batch_size = self.batch_size;
                workers.push(tokio::spawn(async move {
                    loop {
                        let message = tokio::select! {
                            biased;
                            _ = run.wait_for(|r| !*r) => break,
                            m = queue.pop() => m,
                        };
                        match batch_size {
                            None => settler.deliver(&queue, &*handler, message).await,
                            Some(n) => {
                                let mut batch = vec![message];
                                while batch.len() < n {
                                    match queue.try_pop() {
                                        Some(m) => batch.push(m),
                                        None => break,
                                    }
                                }
                                settler.deliver_batch(&queue, &*handler, batch).await;
                            }
                        }
                    }
                }));
            }
        }
        self.set_state(BindingState::Running);
        Ok(())
    }

    async fn stop(&self) -> Result<(), BinderError> {
        self.halt(BindingState::Stopped).await?;
        for q in &self.queues {
            if q.auto_delete {
                self.broker.delete(&self.destination, &q.name);
            }
        }
        Ok(())
    }

    async fn pause(&self) -> Result<(), BinderError> {
        self.halt(BindingState::Paused).await
    }

    async fn resume(&self) -> Result<(), BinderError> {
        self.start().await
    }
}

struct MemoryProducer {
    broker: InMemoryBroker,
    destination: String,
}

#[async_trait]
impl Producer for MemoryProducer {
    async fn send(&self, message: Message<Bytes>) -> Result<(), BinderError> {
        self.broker.send(&self.destination, message);
        Ok(())
    }

    async fn flush(&self) -> Result<(), BinderError> {
        Ok(())
    }

    async fn close(&self) -> Result<(), BinderError> {
        Ok(())
    }
}

struct MemoryPollable {
    queues: Vec<Arc<Queue>>,
    settler: Arc<Settler>,
}

#[async_trait]
impl PollableSource for MemoryPollable {
    async fn poll(&self, handler: &dyn InboundHandler) -> Result<bool, BinderError> {
        for queue in &self.queues {
            if let Some(m) = queue.try_pop() {
                self.settler.deliver(queue, handler, m).await;
                return Ok(true);
            }
        }
        Ok(false)
    }

    async fn close(&self) -> Result<(), BinderError> {
        Ok(())
    }
}
