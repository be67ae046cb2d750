//! The consumer, producer and pollable source: they move records between the log broker and
//! the runtime and settle as the runtime says.

use std::pin::pin;
use std::sync::Mutex;

use stream_core::binder::{
    Consumer, DeadLetter, DeadLetterRoute, Delivery, Outbound, Pollable, Producer, Recovery,
    Settle, Settlement, Sink, SourceStatus,
};
use stream_core::message::names;
use stream_core::{BinderError, HeaderValue, Message};
use tokio::task::JoinHandle;

use crate::Fault;
use crate::broker::{LogBroker, Offset, Record};

/// What provisioning a consumer produced.
#[derive(Clone, Debug)]
pub struct ChannelDestination {
    pub(crate) destination: String,
    /// The group's cursor (group, plus the partitions for partitioned consumers).
    pub(crate) key: String,
    pub(crate) partitions: Vec<u32>,
    pub(crate) anonymous: bool,
    pub(crate) dead_letter: Option<String>,
}

/// The raw message of a delivery: where the record sits.
#[derive(Debug)]
pub struct ChannelRaw {
    /// Its offset in the log.
    pub offset: Offset,
    /// The record as stored.
    pub record: Record,
}

/// Settling, shared by the consumer and the pollable source.
#[derive(Debug)]
struct Settler {
    broker: LogBroker,
    dest: ChannelDestination,
    fault: Option<Fault>,
}

impl Settler {
    fn recovery(&self) -> Recovery {
        match self.dest.dead_letter {
            Some(_) => Recovery::new(DeadLetterRoute::Publish, DeadLetterRoute::Publish),
            None => Recovery::new(DeadLetterRoute::Drop, DeadLetterRoute::Drop),
        }
    }

    fn settle(&self, raw: &ChannelRaw, settlement: Settlement) {
        let (d, k) = (&self.dest.destination, &self.dest.key);
        match settlement {
            Settlement::Ack if self.fault == Some(Fault::RedeliverAfterAck) => {}
            Settlement::Ack | Settlement::Reject => self.broker.ack(d, k, raw.offset),
            Settlement::Requeue => self.broker.requeue(d, k, raw.offset),
        }
    }

    fn dead_letter(&self, letter: &DeadLetter) -> Result<(), BinderError> {
        let Some(dlq) = &self.dest.dead_letter else {
            return Err(BinderError::settle(
                &self.dest.destination,
                "an anonymous subscription has no dead-letter destination",
            ));
        };
        if self.fault == Some(Fault::NoDeadLetter) {
            return Ok(());
        }
        let m = letter.to_message();
        let (payload, headers) = m.into_parts();
        self.broker.append(
            dlq,
            Record {
                payload,
                headers,
                partition: None,
            },
        );
        Ok(())
    }

    fn delivery(&self, offset: Offset, record: Record) -> Delivery<ChannelRaw> {
        let message = Message::from_parts(record.payload.clone(), record.headers.clone());
        Delivery::new(ChannelRaw { offset, record }, message)
    }
}

/// The consumer of a binding: `concurrency` tasks reading the group's cursor.
#[derive(Debug)]
pub struct ChannelConsumer {
    settler: std::sync::Arc<Settler>,
    concurrency: u32,
    batch: Option<usize>,
    auto_ack: bool,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl ChannelConsumer {
    pub(crate) fn new(
        broker: LogBroker,
        dest: ChannelDestination,
        concurrency: u32,
        batch: Option<usize>,
        auto_ack: bool,
        fault: Option<Fault>,
    ) -> Self {
        Self {
            settler: std::sync::Arc::new(Settler {
                broker,
                dest,
                fault,
            }),
            concurrency,
            batch,
            auto_ack,
            tasks: Mutex::new(Vec::new()),
        }
    }

    fn tasks(&self) -> std::sync::MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Settle for ChannelConsumer {
    type Raw = ChannelRaw;

    fn recovery(&self) -> Recovery {
        self.settler.recovery()
    }

    async fn settle(&self, raw: &ChannelRaw, settlement: Settlement) -> Result<(), BinderError> {
        self.settler.settle(raw, settlement);
        Ok(())
    }

    async fn dead_letter(&self, _raw: &ChannelRaw, letter: &DeadLetter) -> Result<(), BinderError> {
        self.settler.dead_letter(letter)
    }
}

async fn fetch(
    settler: std::sync::Arc<Settler>,
    sink: Sink<ChannelConsumer>,
    batch: Option<usize>,
    auto_ack: bool,
) {
    let broker = &settler.broker;
    let (d, k) = (&settler.dest.destination, &settler.dest.key);
    let mut stopped = pin!(sink.stopped());
    let mut outages = broker.outages();
    loop {
        if *outages.borrow_and_update() {
            sink.report(SourceStatus::Lost {
                reason: "the channel broker is cut off".to_owned(),
            });
            tokio::select! {
                _ = &mut stopped => return,
                r = outages.wait_for(|down| !*down) => if r.is_err() { return },
            }
            sink.report(SourceStatus::Consuming);
            continue;
        }
        let mut wait = pin!(broker.notified());
        wait.as_mut().enable();
        let mut got = Vec::new();
        while got.len() < batch.unwrap_or(1) {
            match broker.next(d, k, auto_ack) {
                Some((offset, record)) => got.push(settler.delivery(offset, record)),
                None => break,
            }
        }
        if got.is_empty() {
            tokio::select! {
                _ = &mut stopped => return,
                _ = outages.changed() => {}
                _ = wait => {}
            }
            continue;
        }
        match batch {
            Some(_) => sink.dispatch_batch(got).await,
            None => {
                for delivery in got {
                    sink.dispatch(delivery).await;
                }
            }
        }
    }
}

impl Consumer for ChannelConsumer {
    async fn start(&self, sink: Sink<Self>) -> Result<(), BinderError> {
        let dest = &self.settler.dest;
        self.settler
            .broker
            .subscribe(&dest.destination, &dest.key, &dest.partitions);
        let mut tasks = self.tasks();
        for _ in 0..self.concurrency {
            tasks.push(sink.spawn(
                "channel-consumer",
                fetch(
                    std::sync::Arc::clone(&self.settler),
                    sink.clone(),
                    self.batch,
                    self.auto_ack,
                ),
            ));
        }
        sink.report(SourceStatus::Consuming);
        Ok(())
    }

    async fn stop(&self) -> Result<(), BinderError> {
        let tasks: Vec<JoinHandle<()>> = std::mem::take(&mut *self.tasks());
        for t in tasks {
            if self.settler.fault == Some(Fault::AbortInFlightOnStop) {
                t.abort();
            } else if let Err(e) = t.await {
                tracing::error!(error = %e, "channel consumer task failed");
            }
        }
        let dest = &self.settler.dest;
        // What was handed out and not settled is delivered again, as a closed channel would.
        self.settler.broker.release(&dest.destination, &dest.key);
        if dest.anonymous {
            self.settler
                .broker
                .unsubscribe(&dest.destination, &dest.key);
        }
        Ok(())
    }
}

/// The producer of an output binding.
#[derive(Debug)]
pub struct ChannelProducer {
    broker: LogBroker,
    destination: String,
    fault: Option<Fault>,
}

impl ChannelProducer {
    pub(crate) fn new(broker: LogBroker, destination: String, fault: Option<Fault>) -> Self {
        Self {
            broker,
            destination,
            fault,
        }
    }
}

impl Producer for ChannelProducer {
    async fn send(&self, outbound: Outbound) -> Result<(), BinderError> {
        if !self.broker.is_up() {
            return Err(BinderError::connection(
                "the channel broker",
                "it is cut off",
            ));
        }
        let partition = outbound.partition;
        let (payload, mut headers) = outbound.message.into_parts();
        if self.fault == Some(Fault::LeakInternalHeaders)
            && let Some(p) = partition
        {
            headers.insert(
                names::PARTITION,
                HeaderValue::I32(i32::try_from(p).unwrap_or(i32::MAX)),
            );
        }
        self.broker.append(
            &self.destination,
            Record {
                payload,
                headers,
                partition,
            },
        );
        Ok(())
    }

    async fn close(&self) -> Result<(), BinderError> {
        Ok(())
    }
}

/// The pollable source of a binding.
#[derive(Debug)]
pub struct ChannelPollable {
    settler: Settler,
    auto_ack: bool,
}

impl ChannelPollable {
    pub(crate) fn new(
        broker: LogBroker,
        dest: ChannelDestination,
        auto_ack: bool,
        fault: Option<Fault>,
    ) -> Self {
        broker.subscribe(&dest.destination, &dest.key, &dest.partitions);
        Self {
            settler: Settler {
                broker,
                dest,
                fault,
            },
            auto_ack,
        }
    }
}

impl Settle for ChannelPollable {
    type Raw = ChannelRaw;

    fn recovery(&self) -> Recovery {
        self.settler.recovery()
    }

    async fn settle(&self, raw: &ChannelRaw, settlement: Settlement) -> Result<(), BinderError> {
        self.settler.settle(raw, settlement);
        Ok(())
    }

    async fn dead_letter(&self, _raw: &ChannelRaw, letter: &DeadLetter) -> Result<(), BinderError> {
        self.settler.dead_letter(letter)
    }
}

impl Pollable for ChannelPollable {
    async fn fetch(&self) -> Result<Option<Delivery<ChannelRaw>>, BinderError> {
        let s = &self.settler;
        if !s.broker.is_up() {
            return Err(BinderError::connection(
                "the channel broker",
                "it is cut off",
            ));
        }
        Ok(s.broker
            .next(&s.dest.destination, &s.dest.key, self.auto_ack)
            .map(|(o, r)| s.delivery(o, r)))
    }

    async fn close(&self) -> Result<(), BinderError> {
        let d = &self.settler.dest;
        self.settler.broker.release(&d.destination, &d.key);
        Ok(())
    }
}
