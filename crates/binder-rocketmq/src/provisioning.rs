//! Provisioning: topic lookup and creation through an admin client, the RocketMQ group of a
//! consumer binding, and what provisioning hands to binding ([`ConsumerTopic`],
//! [`ProducerTopic`]). The admin clients also publish dead letters.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rocketmq_client_rust::{ClientRuntime, DefaultMQProducer, SendStatus};
use rocketmq_model::common::message::message_single::Message as MqMessage;
use rocketmq_model::common::topic::TopicValidator;
use stream_core::BinderError;
use stream_core::binder::{BinderHealth, ConsumerSpec, Group};
use tokio::sync::Mutex;

use crate::client::{client_config, instance_name, rpc_hook};
use crate::config::{ResolvedCommon, RocketMqConsumerProperties};
use crate::failure::{classify, is_transient, unreachable};

/// What provisioning a consumer binding produced: its topic and RocketMQ group.
#[derive(Clone, Debug)]
pub struct ConsumerTopic {
    pub(crate) topic: String,
    pub(crate) queues: usize,
    pub(crate) group: String,
    pub(crate) anonymous: bool,
    pub(crate) common: ResolvedCommon,
}

impl ConsumerTopic {
    /// The topic consumed.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The RocketMQ consumer group.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The topic's queue count (0 when unknown).
    pub fn queues(&self) -> usize {
        self.queues
    }

    /// Whether the group is a generated anonymous one.
    pub fn is_anonymous(&self) -> bool {
        self.anonymous
    }
}

/// What provisioning a producer binding produced: its topic.
#[derive(Clone, Debug)]
pub struct ProducerTopic {
    pub(crate) topic: String,
    pub(crate) queues: usize,
}

impl ProducerTopic {
    /// The topic sent to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The topic's write queue count (0 when unknown).
    pub fn queues(&self) -> usize {
        self.queues
    }
}

/// `%DLQ%<group>`: where the failed messages of a group go.
pub(crate) fn dlq_topic(group: &str) -> String {
    format!("%DLQ%{group}")
}

/// The RocketMQ group of a consumer binding: the binding's `group`, else the RocketMQ `group`
/// property (binding, then binder), else `anonymous_<destination>_<suffix>` from the name the
/// runtime generated for the binding (characters RocketMQ refuses in a group become `_`).
/// The flag says whether it is anonymous.
pub(crate) fn consumer_group(
    spec: &ConsumerSpec<RocketMqConsumerProperties>,
    common: &ResolvedCommon,
) -> (String, bool) {
    match &spec.group {
        Group::Named(g) => (g.to_string(), false),
        Group::Anonymous(name) => match &common.group {
            Some(g) => (g.clone(), false),
            None => (
                format!(
                    "anonymous_{}_{}",
                    legal_name(&spec.destination),
                    name.suffix()
                ),
                true,
            ),
        },
    }
}

/// `name` with every character RocketMQ refuses in a group (`[a-zA-Z0-9_%|-]` are allowed)
/// replaced by `_`.
fn legal_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '%' | '|') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The admin clients of one binder (one per connection), for topic lookups and creation and
/// for publishing prepared messages (dead letters).
pub(crate) struct Admin {
    binder: String,
    auto_create_topics: bool,
    client: Arc<ClientRuntime>,
    clients: Mutex<HashMap<String, DefaultMQProducer>>,
    /// A topic provisioned here, which health checks ask the broker about.
    probe_topic: std::sync::Mutex<Option<String>>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("binder", &self.binder)
            .finish_non_exhaustive()
    }
}

impl Admin {
    pub(crate) fn new(binder: &str, auto_create_topics: bool, client: Arc<ClientRuntime>) -> Self {
        Self {
            binder: binder.to_owned(),
            auto_create_topics,
            client,
            clients: Mutex::new(HashMap::new()),
            probe_topic: std::sync::Mutex::new(None),
        }
    }

    /// The admin client for a connection, started on first use.
    async fn client<'a>(
        &self,
        clients: &'a mut HashMap<String, DefaultMQProducer>,
        common: &ResolvedCommon,
    ) -> Result<&'a mut DefaultMQProducer, BinderError> {
        let key = format!(
            "{}|{}|{}",
            common.name_server,
            common
                .credentials
                .as_ref()
                .map(|c| c.0.as_str())
                .unwrap_or(""),
            common.namespace.as_deref().unwrap_or("")
        );
        if !clients.contains_key(&key) {
            let instance = instance_name("admin", &self.binder);
            let mut builder = DefaultMQProducer::builder(Arc::clone(&self.client))
                .client_config(client_config(common, &instance)?)
                .producer_group(format!("stream-rs-admin-{}", std::process::id()))
                .name_server_addr(common.name_server.clone())
                .send_msg_timeout(5_000);
            if let Some(hook) = rpc_hook(common) {
                builder = builder.rpc_hook(hook);
            }
            let mut admin = builder.build();
            admin
                .start()
                .await
                .map_err(|e| unreachable(common, "the admin client cannot start").with_source(e))?;
            clients.insert(key.clone(), admin);
        }
        clients
            .get_mut(&key)
            .ok_or_else(|| unreachable(common, "the admin client is missing"))
    }

    /// Keeps the first topic found for health checks.
    fn remember(&self, topic: &str) {
        if let Ok(mut t) = self.probe_topic.lock()
            && t.is_none()
        {
            *t = Some(topic.to_owned());
        }
    }

    /// Sends a prepared message as is (a dead letter), waiting for the broker.
    pub(crate) async fn publish(
        &self,
        common: &ResolvedCommon,
        message: MqMessage,
    ) -> Result<(), BinderError> {
        let topic = message.topic().as_str().to_owned();
        let mut clients = self.clients.lock().await;
        let admin = self.client(&mut clients, common).await?;
        match admin.send(message).await {
            Ok(Some(r)) if r.send_status == SendStatus::SendOk => Ok(()),
            Ok(r) => Err(BinderError::send(
                &topic,
                format!("the broker answered {:?}", r.map(|r| r.send_status)),
            )),
            Err(e) => Err(classify(
                e,
                common,
                format!("cannot send to `{topic}`"),
                |m| BinderError::send(&topic, m),
            )),
        }
    }

    /// Looks the topic up and, when it has no route (and `auto-create-topics`), creates it with
    /// `queues` queues and waits for its route. Returns the queue count (0 when unknown).
    pub(crate) async fn ensure_topic(
        &self,
        common: &ResolvedCommon,
        topic: &str,
        queues: u32,
    ) -> Result<usize, BinderError> {
        let mut clients = self.clients.lock().await;
        let admin = self.client(&mut clients, common).await?;
        match admin.fetch_publish_message_queues(topic).await {
            Ok(found) if !found.is_empty() => {
                self.remember(topic);
                return Ok(found.len());
            }
            Ok(_) => {}
            Err(e) if is_transient(&e) => {
                return Err(
                    unreachable(common, format!("cannot look topic `{topic}` up")).with_source(e),
                );
            }
            Err(e) => tracing::debug!(topic, error = %e, "no route for the topic"),
        }
        if !self.auto_create_topics {
            tracing::warn!(
                topic,
                "topic not found and auto-create-topics is off; relying on the broker"
            );
            return Ok(0);
        }
        admin
            .create_topic(
                TopicValidator::AUTO_CREATE_TOPIC_KEY_TOPIC,
                topic,
                i32::try_from(queues.max(1)).unwrap_or(i32::MAX),
                HashMap::new(),
            )
            .await
            .map_err(|e| {
                classify(
                    e,
                    common,
                    format!("cannot create topic `{topic}` with {queues} queues"),
                    |m| {
                        BinderError::provisioning(
                            topic,
                            format!(
                                "{m}; create it with `mqadmin updateTopic -t {topic} -r {queues} \
                                 -w {queues}` or allow the client to (broker autoCreateTopicEnable)"
                            ),
                        )
                    },
                )
            })?;
        tracing::info!(topic, queues, "created RocketMQ topic");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            match admin.fetch_publish_message_queues(topic).await {
                Ok(found) if !found.is_empty() => return Ok(found.len()),
                Ok(_) => {}
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    return Err(BinderError::provisioning(
                        topic,
                        "created the topic but no route appeared within 20 s",
                    )
                    .with_source(e)
                    .temporary());
                }
                Err(_) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(queues as usize);
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Whether the name server and a broker answer: the route of a topic this binder
    /// provisioned (else the broker's auto-create topic) from the name server, then that
    /// topic's offset from the broker that holds its first queue.
    pub(crate) async fn health(&self, common: &ResolvedCommon, timeout: Duration) -> BinderHealth {
        let down = |reason: String| {
            BinderHealth::down(reason).with_detail("nameServer", common.name_server.clone())
        };
        let topic = self
            .probe_topic
            .lock()
            .ok()
            .and_then(|t| t.clone())
            .unwrap_or_else(|| TopicValidator::AUTO_CREATE_TOPIC_KEY_TOPIC.to_owned());
        let probe = async {
            let mut clients = self.clients.lock().await;
            let admin = self
                .client(&mut clients, common)
                .await
                .map_err(|e| e.to_string())?;
            let queues = admin
                .fetch_publish_message_queues(&topic)
                .await
                .map_err(|e| format!("the name server does not answer for topic `{topic}`: {e}"))?;
            let Some(queue) = queues.first() else {
                return Ok(None);
            };
            admin
                .max_offset(queue)
                .await
                .map_err(|e| format!("broker `{}` does not answer: {e}", queue.broker_name()))?;
            Ok::<_, String>(Some(queue.broker_name().to_string()))
        };
        match tokio::time::timeout(timeout, probe).await {
            Err(_) => down(format!("no answer within {timeout:?}")),
            Ok(Err(reason)) => down(reason),
            Ok(Ok(broker)) => {
                let h = BinderHealth::up().with_detail("nameServer", common.name_server.clone());
                match broker {
                    Some(b) => h.with_detail("broker", b).with_detail("probedTopic", topic),
                    None => h.with_detail(
                        "note",
                        format!("the name server answers; topic `{topic}` has no route, so no broker was asked"),
                    ),
                }
            }
        }
    }

    /// Shuts the admin clients down.
    pub(crate) async fn shutdown(&self) {
        let clients: Vec<DefaultMQProducer> =
            self.clients.lock().await.drain().map(|(_, v)| v).collect();
        for mut c in clients {
            c.shutdown().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RocketMqBinderProperties;
    use stream_core::binder::AnonymousName;

    fn common(props: &RocketMqConsumerProperties) -> ResolvedCommon {
        props.resolve(&RocketMqBinderProperties::default())
    }

    #[test]
    fn groups_come_from_the_binding_then_the_rocketmq_property_then_the_anonymous_name() {
        let props = RocketMqConsumerProperties::default();
        let named = ConsumerSpec::new("in", "orders", Some("billing"), props.clone());
        assert_eq!(
            consumer_group(&named, &common(&props)),
            ("billing".to_owned(), false)
        );
        let mut with_group = props.clone();
        with_group.group = Some("from-property".into());
        let anonymous = ConsumerSpec::new("in", "orders", None, with_group.clone());
        assert_eq!(
            consumer_group(&anonymous, &common(&with_group)),
            ("from-property".to_owned(), false)
        );
        let mut spec = ConsumerSpec::new("in", "kit.orders v2", None, props.clone());
        let name = AnonymousName::generate();
        spec.group = Group::Anonymous(name.clone());
        let (group, anon) = consumer_group(&spec, &common(&props));
        assert!(anon);
        assert_eq!(group, format!("anonymous_kit_orders_v2_{}", name.suffix()));
        assert!(
            !TopicValidator::is_topic_or_group_illegal(&group),
            "{group}"
        );
    }
}
