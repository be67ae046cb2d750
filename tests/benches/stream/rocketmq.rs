//! RocketMQ scenarios: raw rocketmq-client-rust against the binder, same broker, same settings.
//!
//! Both modes build their clients the way `binder-rocketmq` does: every client group runs on its
//! own client domain (a `RuntimeOwner` with 2 tokio workers plus a `ClientRuntime`; a push
//! consumer's `metadata-io` lane sized from its consume threads), with the same client
//! configuration (message trace off in both modes, since it doubles the traffic). Topics are
//! created up front with 4 queues (the binder's `default-topic-queue-nums`) and named per run
//! (`STREAM_BENCH_RUN_ID`), so runs never see each other's messages.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use binder_rocketmq::stream_config::Environment;
use binder_rocketmq::{FunctionError, RocketMqBinderFactory, StreamApp};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use rocketmq_client_rust::{
    ClientConfig, ClientError, ClientRuntime, ClientRuntimeConfig, ConsumeConcurrentlyContext,
    ConsumeConcurrentlyStatus, DefaultMQProducer, DefaultMQPushConsumer, MQPushConsumer,
    SendResult, SendStatus, TelemetryHandle,
};
use rocketmq_model::common::consumer::consume_from_where::ConsumeFromWhere;
use rocketmq_model::common::message::MessageTrait;
use rocketmq_model::common::message::message_ext::MessageExt;
use rocketmq_model::common::message::message_single::Message as MqMessage;
use rocketmq_runtime::{BlockingPoolPolicy, RuntimeConfig, RuntimeOwner, ScopeId};

use crate::meter::{Meter, Report, run_limit, snapshot, uppercase_app};
use crate::{Mode, Params, payload};

/// Synchronous sends awaiting their result at once (`rocketmq-sync`), in both modes.
pub(crate) const SYNC_WINDOW: usize = 64;
/// Asynchronous sends in flight (`rocketmq-async`): the client's async back-pressure limit, in
/// both modes (the binder enables it with this value for `send-type: Async`).
pub(crate) const ASYNC_WINDOW: u32 = 64;
/// Consume threads of every push consumer (the binding's `concurrency`).
pub(crate) const THREADS: u32 = 20;
/// Messages per pull request (`pull-batch-size`).
pub(crate) const PULL_BATCH: u32 = 32;
/// Queues of every topic (the binder's `default-topic-queue-nums`).
const QUEUES: i32 = 4;

const OCTET: &str = "application/octet-stream";
const TEXT: &str = "text/plain";
const CONTENT_TYPE: &str = "contentType";
const RUN_ID: &str = "STREAM_BENCH_RUN_ID";

fn name_server() -> String {
    [
        "ROCKETMQ_NAMESRV_ADDR",
        "SPRING_CLOUD_STREAM_ROCKETMQ_BINDER_NAME_SERVER",
    ]
    .iter()
    .filter_map(|k| std::env::var(k).ok())
    .map(|v| v.trim().to_owned())
    .find(|v| !v.is_empty())
    .unwrap_or_else(|| "127.0.0.1:9876".to_owned())
}

/// The run's id: `STREAM_BENCH_RUN_ID` (the xtask sets one per fill + run), else a fresh one.
fn run_id() -> String {
    std::env::var(RUN_ID)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| {
            let millis = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or_default();
            format!("{millis}-{}", std::process::id())
        })
}

/// Topic and group names of one run.
struct Names {
    topic: String,
    out: String,
    group: String,
    producer_group: String,
}

fn names(scenario: &str, id: &str) -> Names {
    let short = scenario.trim_start_matches("rocketmq-");
    Names {
        topic: format!("bench-{short}-{id}"),
        out: format!("bench-{short}-out-{id}"),
        group: format!("bench-{short}-{id}"),
        producer_group: format!("bench-{short}-producer-{id}"),
    }
}

/// A client domain as the binder builds one (`binder-rocketmq/src/runtime.rs`).
struct Domain {
    client: Arc<ClientRuntime>,
    owner: Option<RuntimeOwner>,
}

impl Domain {
    fn new(
        name: &str,
        lane_concurrency: usize,
        lane_queue: usize,
        task_timeout: Duration,
    ) -> Result<Self> {
        let mut config = RuntimeConfig::for_parallelism(name, 2);
        config.blocking_lane_policies.metadata_io = BlockingPoolPolicy {
            name: format!("{name}.metadata-io"),
            max_concurrency: lane_concurrency.max(1),
            max_queue_depth: lane_queue.max(1),
            queue_timeout: Duration::from_secs(300),
            task_timeout,
            warn_after: task_timeout.min(Duration::from_secs(60)),
        };
        let config = config
            .with_max_blocking_threads((lane_concurrency + 16).clamp(8, 512))
            .map_err(|e| anyhow::anyhow!("runtime config: {e:?}"))?;
        let owner = RuntimeOwner::plan(config)
            .map_err(|e| anyhow::anyhow!("runtime plan: {e:?}"))?
            .build()
            .context("runtime owner")?;
        let scope =
            ScopeId::try_new(name.to_owned()).map_err(|e| anyhow::anyhow!("scope: {e:?}"))?;
        let client = ClientRuntime::try_new(
            owner.root_context().component(scope),
            ClientRuntimeConfig::default(),
            TelemetryHandle::noop(),
        )
        .context("client runtime")?;
        Ok(Self {
            client,
            owner: Some(owner),
        })
    }

    /// The binder's producer domain.
    fn producers(name: &str) -> Result<Self> {
        Self::new(name, 4, 64, Duration::from_secs(60))
    }

    /// The binder's push-consumer domain for `THREADS` threads (consume timeout 15 min).
    fn consumer(name: &str) -> Result<Self> {
        let threads = THREADS as usize;
        Self::new(
            name,
            threads + 4,
            threads * 4 + 64,
            Duration::from_secs(15 * 60 + 60),
        )
    }

    async fn shutdown(mut self) {
        let _ = self.client.shutdown().await;
        if let Some(owner) = self.owner.take() {
            let _ = owner.shutdown_background();
        }
    }
}

/// The client configuration the binder builds from its defaults (trace off).
fn client_config(instance: &str) -> Result<ClientConfig> {
    ClientConfig::builder()
        .namesrv_addr(name_server())
        .instance_name(format!("bench-{instance}-{}", std::process::id()))
        .poll_name_server_interval(30_000)
        .heartbeat_broker_interval(30_000)
        .persist_consumer_offset_interval(5_000)
        .enable_vip_channel(false)
        .enable_tls(false)
        .enable_trace(false)
        .trace_topic("RMQ_SYS_TRACE_TOPIC")
        .build()
        .map_err(|e| anyhow::anyhow!("client config: {e}"))
}

/// A started producer built like the binder's (its defaults; async back-pressure for `async`).
async fn producer(
    domain: &Domain,
    group: &str,
    instance: &str,
    async_mode: bool,
) -> Result<DefaultMQProducer> {
    let mut p = DefaultMQProducer::builder(Arc::clone(&domain.client))
        .client_config(client_config(instance)?)
        .producer_group(group.to_owned())
        .name_server_addr(name_server())
        .use_tls(false)
        .send_msg_timeout(3_000)
        .compress_msg_body_over_howmuch(4 * 1024)
        .retry_times_when_send_failed(2)
        .retry_times_when_send_async_failed(2)
        .retry_another_broker_when_not_store_ok(false)
        .max_message_size(4 * 1024 * 1024)
        .default_topic_queue_nums(QUEUES as u32)
        .enable_backpressure_for_async_mode(async_mode)
        .back_pressure_for_async_send_num(ASYNC_WINDOW)
        .build();
    p.start()
        .await
        .with_context(|| format!("RocketMQ producer (name server {})", name_server()))?;
    Ok(p)
}

/// Creates `topic` with `QUEUES` queues (as the binder's provisioner does) and waits for its
/// route.
async fn create_topic(admin: &mut DefaultMQProducer, topic: &str) -> Result<()> {
    if let Ok(found) = admin.fetch_publish_message_queues(topic).await
        && !found.is_empty()
    {
        return Ok(());
    }
    admin
        .create_topic("TBW102", topic, QUEUES, Default::default())
        .await
        .with_context(|| format!("creating topic {topic}"))?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(found) = admin.fetch_publish_message_queues(topic).await
            && !found.is_empty()
        {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("topic {topic} created but no route appeared within 20 s");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A message as the binder sends one: the body plus the `contentType` user property.
fn message(topic: &str, body: Bytes, content_type: &'static str) -> Result<MqMessage> {
    let mut m = MqMessage::builder()
        .topic(topic)
        .body(body)
        .build_unchecked();
    m.put_user_property(CONTENT_TYPE.into(), content_type.into())
        .map_err(|e| anyhow::anyhow!("user property: {e}"))?;
    Ok(m)
}

fn sent_ok(r: Option<SendResult>) -> Result<()> {
    match r {
        Some(r) if r.send_status == SendStatus::SendOk => Ok(()),
        Some(r) => bail!("send answered {:?}", r.send_status),
        None => bail!("send returned no result"),
    }
}

/// Pre-fills a scenario's input topic with `messages` messages (not measured) and creates its
/// output topic. Prints the run id to export when run by hand.
pub(crate) async fn fill(scenario: &str, messages: u64, size: usize) -> Result<()> {
    let id = run_id();
    let n = names(scenario, &id);
    let content_type = if scenario == "rocketmq-e2e" {
        TEXT
    } else {
        OCTET
    };
    let domain = Domain::producers("bench-fill")?;
    let mut p = producer(&domain, &n.producer_group, "fill", true).await?;
    create_topic(&mut p, &n.topic).await?;
    if scenario == "rocketmq-e2e" {
        create_topic(&mut p, &n.out).await?;
    }
    let body = payload(size);
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    for _ in 0..messages {
        let (d, f) = (Arc::clone(&done), Arc::clone(&failed));
        p.send_with_callback(
            message(&n.topic, body.clone(), content_type)?,
            move |r: Option<&SendResult>, _e: Option<&ClientError>| {
                if !matches!(r, Some(r) if r.send_status == SendStatus::SendOk) {
                    f.fetch_add(1, Ordering::AcqRel);
                }
                d.fetch_add(1, Ordering::AcqRel);
            },
        )
        .await?;
    }
    let deadline = tokio::time::Instant::now() + run_limit(messages);
    while done.load(Ordering::Acquire) < messages {
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "fill: {} of {messages} sends completed",
                done.load(Ordering::Acquire)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    p.shutdown().await;
    domain.shutdown().await;
    let failed = failed.load(Ordering::Acquire);
    if failed > 0 {
        bail!("fill: {failed} of {messages} sends failed");
    }
    println!("{RUN_ID}={id}");
    Ok(())
}

/// The binder's configuration: the name server, trace off, the scenario's properties, then
/// `STREAM_BENCH_PROPERTIES` (`key=value` pairs separated by `;`; later keys win).
fn environment(text: String) -> Result<Environment> {
    let extra = std::env::var("STREAM_BENCH_PROPERTIES")
        .unwrap_or_default()
        .replace(';', "\n");
    let text = format!(
        "spring.cloud.stream.rocketmq.binder.name-server={}\n\
         spring.cloud.stream.rocketmq.binder.enable-msg-trace=false\n{text}\n{extra}\n",
        name_server()
    );
    Ok(Environment::builder()
        .properties_str("bench.properties", text)
        .build()?)
}

/// The consumer keys both modes share: `THREADS` consume threads, `PULL_BATCH`, from the
/// first offset (the group is new, the topic pre-filled).
fn consumer_props(binding: &str, topic: &str, group: &str, content_type: &str) -> String {
    format!(
        "spring.cloud.stream.bindings.{binding}.destination={topic}\n\
         spring.cloud.stream.bindings.{binding}.group={group}\n\
         spring.cloud.stream.bindings.{binding}.content-type={content_type}\n\
         spring.cloud.stream.bindings.{binding}.consumer.concurrency={THREADS}\n\
         spring.cloud.stream.rocketmq.bindings.{binding}.consumer.pull-batch-size={PULL_BATCH}\n\
         spring.cloud.stream.rocketmq.bindings.{binding}.consumer.consume-from-where=CONSUME_FROM_FIRST_OFFSET\n"
    )
}

pub(crate) async fn run(p: &Params) -> Result<Report> {
    let id = run_id();
    let n = names(&p.scenario, &id);
    match (p.scenario.as_str(), p.mode) {
        ("rocketmq-sync", Mode::Raw) => raw_sync(p, &n).await,
        ("rocketmq-async", Mode::Raw) => raw_async(p, &n).await,
        ("rocketmq-sync" | "rocketmq-async", Mode::Binder) => binder_publish(p, &n).await,
        ("rocketmq-consume" | "rocketmq-e2e", _) => {
            if std::env::var(RUN_ID).is_err() {
                bail!(
                    "{} consumes the topic `stream fill` pre-filled: set {RUN_ID} to the id \
                     fill printed",
                    p.scenario
                );
            }
            if p.scenario == "rocketmq-consume" {
                consume(p, &n).await
            } else {
                e2e(p, &n).await
            }
        }
        (other, _) => bail!("unknown RocketMQ scenario `{other}`"),
    }
}

/// Raw: `send` awaiting each result, `SYNC_WINDOW` sends in flight.
async fn raw_sync(p: &Params, n: &Names) -> Result<Report> {
    let domain = Domain::producers("bench-producer")?;
    let mut producer = producer(&domain, &n.producer_group, "producer", false).await?;
    create_topic(&mut producer, &n.topic).await?;
    let body = payload(p.size);
    let mut inflight = FuturesUnordered::new();
    let start = snapshot();
    for _ in 0..p.messages {
        if inflight.len() >= SYNC_WINDOW
            && let Some(r) = inflight.next().await
        {
            sent_ok(r?)?;
        }
        let m = message(&n.topic, body.clone(), OCTET)?;
        inflight.push(producer.send(m));
    }
    while let Some(r) = inflight.next().await {
        sent_ok(r?)?;
    }
    let end = snapshot();
    drop(inflight);
    producer.shutdown().await;
    domain.shutdown().await;
    Ok(Report::of(p, p.messages, start, end))
}

/// Counts completed asynchronous sends and their failures.
struct Completions {
    meter: Meter,
    failed: AtomicU64,
}

impl Completions {
    fn new(messages: u64) -> Arc<Self> {
        Arc::new(Self {
            meter: Meter::new(messages),
            failed: AtomicU64::new(0),
        })
    }

    fn done(&self, ok: bool) {
        if !ok {
            self.failed.fetch_add(1, Ordering::AcqRel);
        }
        self.meter.tick();
    }

    async fn wait(&self, messages: u64) -> Result<crate::meter::Snapshot> {
        let (_, end) = self.meter.wait(run_limit(messages)).await?;
        let failed = self.failed.load(Ordering::Acquire);
        if failed > 0 {
            bail!("{failed} of {messages} sends failed");
        }
        Ok(end)
    }
}

/// Raw: `send_with_callback` with the client's async back-pressure (`ASYNC_WINDOW` in flight);
/// measured from the first send to the last callback.
async fn raw_async(p: &Params, n: &Names) -> Result<Report> {
    let domain = Domain::producers("bench-producer")?;
    let mut producer = producer(&domain, &n.producer_group, "producer", true).await?;
    create_topic(&mut producer, &n.topic).await?;
    let body = payload(p.size);
    let completions = Completions::new(p.messages);
    let start = snapshot();
    for _ in 0..p.messages {
        let c = Arc::clone(&completions);
        producer
            .send_with_callback(
                message(&n.topic, body.clone(), OCTET)?,
                move |r: Option<&SendResult>, _e: Option<&ClientError>| {
                    c.done(matches!(r, Some(r) if r.send_status == SendStatus::SendOk));
                },
            )
            .await?;
    }
    let end = completions.wait(p.messages).await?;
    producer.shutdown().await;
    domain.shutdown().await;
    Ok(Report::of(p, p.messages, start, end))
}

/// The framework: `StreamBridge::send("out", Bytes)` with `send-type` Sync (`SYNC_WINDOW` sends
/// awaited at once) or Async (sent one after the other; the binder's producer applies the
/// client's back-pressure, the registered `send-call-back` counts the completions).
async fn binder_publish(p: &Params, n: &Names) -> Result<Report> {
    let async_mode = p.scenario == "rocketmq-async";
    let mut props = format!(
        "spring.cloud.stream.output-bindings=out\n\
         spring.cloud.stream.bindings.out.destination={}\n\
         spring.cloud.stream.bindings.out.content-type={OCTET}\n\
         spring.cloud.stream.rocketmq.bindings.out.producer.group={}\n",
        n.topic, n.producer_group
    );
    let completions = Completions::new(p.messages);
    let mut factory = RocketMqBinderFactory::builder();
    if async_mode {
        props.push_str(
            "spring.cloud.stream.rocketmq.bindings.out.producer.send-type=Async\n\
             spring.cloud.stream.rocketmq.bindings.out.producer.send-call-back=bench\n",
        );
        let c = Arc::clone(&completions);
        factory = factory.send_callback("bench", move |outcome| c.done(outcome.is_ok()));
    }
    let app = StreamApp::builder()
        .environment(environment(props)?)
        .binder(factory.build())
        .build()
        .await?;
    let bridge = app.bridge();
    let body = payload(p.size);
    let start = snapshot();
    let end = if async_mode {
        for _ in 0..p.messages {
            bridge.send("out", body.clone()).await?;
        }
        completions.wait(p.messages).await?
    } else {
        let mut inflight = FuturesUnordered::new();
        for _ in 0..p.messages {
            if inflight.len() >= SYNC_WINDOW
                && let Some(r) = inflight.next().await
            {
                r?;
            }
            inflight.push(bridge.send("out", body.clone()));
        }
        while let Some(r) = inflight.next().await {
            r?;
        }
        snapshot()
    };
    drop(bridge);
    app.shutdown().await?;
    Ok(Report::of(p, p.messages, start, end))
}

/// A started push consumer built like the binder's (concurrent, clustering, `THREADS`
/// threads, `PULL_BATCH`, one message per listener call, from the first offset).
async fn push_consumer(
    domain: &Domain,
    topic: &str,
    group: &str,
    listener: impl Fn(
        &[&MessageExt],
        &ConsumeConcurrentlyContext,
    ) -> rocketmq_client_rust::ClientResult<ConsumeConcurrentlyStatus>
    + Send
    + Sync
    + 'static,
) -> Result<DefaultMQPushConsumer> {
    let mut c = DefaultMQPushConsumer::builder(Arc::clone(&domain.client))
        .client_config(client_config("consumer")?)
        .consumer_group(group.to_owned())
        .name_server_addr(name_server())
        .consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset)
        .consume_thread_min(THREADS)
        .consume_thread_max(THREADS)
        .consume_message_batch_max_size(1)
        .pull_batch_size(PULL_BATCH)
        .max_reconsume_times(-1)
        .suspend_current_queue_time_millis(1_000)
        .consume_timeout(15)
        .await_termination_millis_when_shutdown(30_000)
        .rpc_hook(None)
        .build();
    c.subscribe(topic.to_owned(), "*").await?;
    c.register_message_listener_concurrently(listener);
    c.start().await.context("push consumer start")?;
    Ok(c)
}

/// Consumes the pre-filled topic: a raw push consumer whose listener returns
/// `CONSUME_SUCCESS`, or a `StreamApp` consumer function returning `Ok`. Measured from the
/// first delivery to the last.
async fn consume(p: &Params, n: &Names) -> Result<Report> {
    let meter = Arc::new(Meter::new(p.messages));
    let (start, end) = match p.mode {
        Mode::Peer => bail!("{} has no peer run", p.scenario),
        Mode::Raw => {
            let domain = Domain::consumer("bench-consumer")?;
            let m = Arc::clone(&meter);
            let mut consumer = push_consumer(&domain, &n.topic, &n.group, move |msgs, _ctx| {
                for _ in msgs {
                    m.tick();
                }
                Ok(ConsumeConcurrentlyStatus::ConsumeSuccess)
            })
            .await?;
            let r = meter.wait(run_limit(p.messages)).await;
            consumer.shutdown().await;
            domain.shutdown().await;
            r?
        }
        Mode::Binder => {
            let props = format!(
                "spring.cloud.function.definition=sink\n{}",
                consumer_props("sink-in-0", &n.topic, &n.group, OCTET)
            );
            let m = Arc::clone(&meter);
            let app = StreamApp::builder()
                .environment(environment(props)?)
                .binder(RocketMqBinderFactory::new())
                .consumer("sink", move |_body: Bytes| {
                    m.tick();
                    std::future::ready(Ok::<(), FunctionError>(()))
                })
                .build()
                .await?;
            let r = meter.wait(run_limit(p.messages)).await;
            app.shutdown().await?;
            r?
        }
    };
    Ok(Report::of(p, p.messages - 1, start, end))
}

/// `uppercase` in -> out over the pre-filled topic: a raw push consumer whose listener
/// upper-cases the body and sends it (Sync, awaited on the listener's thread) to the output
/// topic, or a `StreamApp` function `String -> String` (output `send-type` Sync, the
/// binder's default). Measured from the first function call to the last.
async fn e2e(p: &Params, n: &Names) -> Result<Report> {
    let meter = Arc::new(Meter::new(p.messages));
    let (start, end) = match p.mode {
        Mode::Peer => bail!("{} has no peer run", p.scenario),
        Mode::Raw => {
            let producers = Domain::producers("bench-producer")?;
            let out = Arc::new(producer(&producers, &n.producer_group, "producer", false).await?);
            let domain = Domain::consumer("bench-consumer")?;
            let m = Arc::clone(&meter);
            let failed = Arc::new(AtomicU64::new(0));
            let f = Arc::clone(&failed);
            let sender = Arc::clone(&out);
            let app = tokio::runtime::Handle::current();
            let topic = n.out.clone();
            let mut consumer = push_consumer(&domain, &n.topic, &n.group, move |msgs, _ctx| {
                for msg in msgs {
                    let body = msg.get_body().cloned().unwrap_or_default();
                    let upper = match std::str::from_utf8(&body) {
                        Ok(s) => s.to_uppercase(),
                        Err(_) => {
                            f.fetch_add(1, Ordering::AcqRel);
                            continue;
                        }
                    };
                    m.tick();
                    let sent = message(&topic, Bytes::from(upper), TEXT)
                        .map(|out| app.block_on(sender.send(out)))
                        .map(|r| matches!(r, Ok(Some(r)) if r.send_status == SendStatus::SendOk));
                    if !matches!(sent, Ok(true)) {
                        f.fetch_add(1, Ordering::AcqRel);
                    }
                }
                Ok(ConsumeConcurrentlyStatus::ConsumeSuccess)
            })
            .await?;
            let r = meter.wait(run_limit(p.messages)).await;
            consumer.shutdown().await;
            domain.shutdown().await;
            if let Ok(mut out) = Arc::try_unwrap(out) {
                out.shutdown().await;
            }
            producers.shutdown().await;
            let failed = failed.load(Ordering::Acquire);
            if failed > 0 {
                bail!("{failed} messages could not be converted or sent");
            }
            r?
        }
        Mode::Binder => {
            let props = format!(
                "spring.cloud.function.definition=uppercase\n{}\
                 spring.cloud.stream.bindings.uppercase-out-0.destination={}\n\
                 spring.cloud.stream.bindings.uppercase-out-0.content-type={TEXT}\n\
                 spring.cloud.stream.rocketmq.bindings.uppercase-out-0.producer.group={}\n",
                consumer_props("uppercase-in-0", &n.topic, &n.group, TEXT),
                n.out,
                n.producer_group
            );
            let app =
                uppercase_app(environment(props)?, RocketMqBinderFactory::new(), &meter).await?;
            let r = meter.wait(run_limit(p.messages)).await;
            app.shutdown().await?;
            r?
        }
    };
    Ok(Report::of(p, p.messages - 1, start, end))
}
