//! Topology: what to declare for a consumer or producer binding (pure functions computing a
//! [`DeclarationPlan`], following Spring's `RabbitExchangeQueueProvisioner`), and running a plan
//! against a broker connection.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Connection, ExchangeKind};

use crate::config::{ExchangeType, QueueArgs, QueueSettings};
use crate::error::{RabbitError, amqp_error};

/// An exchange to declare.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ExchangeDecl {
    /// Exchange name.
    pub name: String,
    /// Exchange type as sent to the broker (`topic`, `x-delayed-message`, ...).
    pub kind: String,
    /// Durable.
    pub durable: bool,
    /// Auto-delete.
    pub auto_delete: bool,
    /// Arguments (`x-delayed-type`, ...).
    pub arguments: BTreeMap<String, AMQPValue>,
}

/// A queue to declare.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct QueueDecl {
    /// Queue name.
    pub name: String,
    /// Durable.
    pub durable: bool,
    /// Exclusive to the declaring connection.
    pub exclusive: bool,
    /// Auto-delete.
    pub auto_delete: bool,
    /// `x-*` arguments.
    pub arguments: BTreeMap<String, AMQPValue>,
}

/// A queue binding to declare.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct BindingDecl {
    /// Queue.
    pub queue: String,
    /// Exchange.
    pub exchange: String,
    /// Routing key (binding key).
    pub routing_key: String,
    /// Binding arguments (headers exchanges).
    pub arguments: BTreeMap<String, AMQPValue>,
}

/// Everything a binding declares, in order: exchanges, queues, bindings.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct DeclarationPlan {
    /// Exchanges.
    pub exchanges: Vec<ExchangeDecl>,
    /// Queues.
    pub queues: Vec<QueueDecl>,
    /// Bindings.
    pub bindings: Vec<BindingDecl>,
}

impl DeclarationPlan {
    fn exchange(&mut self, decl: ExchangeDecl) {
        if !self.exchanges.iter().any(|e| e.name == decl.name) {
            self.exchanges.push(decl);
        }
    }
    fn queue(&mut self, decl: QueueDecl) {
        if !self.queues.iter().any(|q| q.name == decl.name) {
            self.queues.push(decl);
        }
    }
    fn binding(&mut self, decl: BindingDecl) {
        if !self.bindings.contains(&decl) {
            self.bindings.push(decl);
        }
    }

    /// Whether nothing is declared.
    pub fn is_empty(&self) -> bool {
        self.exchanges.is_empty() && self.queues.is_empty() && self.bindings.is_empty()
    }
}

/// What the provisioner created for a consumer; the `extra` of its `ConsumerDestination`.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ConsumerTopology {
    /// The destination exchange (`<prefix><destination>`).
    pub exchange: String,
    /// The queue consumed from.
    pub queue: String,
    /// The queue name without partition suffix (`<prefix><destination>.<group>`).
    pub base_queue: String,
    /// Whether the queue is anonymous (exclusive, auto-delete).
    pub anonymous: bool,
    /// The dead-letter exchange republishing goes to (`dead-letter-exchange`, else `<prefix>DLX`).
    pub dead_letter_exchange: String,
    /// The DLQ, when `auto-bind-dlq` declared one.
    pub dead_letter_queue: Option<String>,
    /// The routing key republished messages use (`dead-letter-routing-key`, else the queue).
    pub republish_routing_key: String,
    /// The declarations.
    pub plan: DeclarationPlan,
}

/// What the provisioner created for a producer; the `extra` of its `ProducerDestination`.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ProducerTopology {
    /// The exchange published to.
    pub exchange: String,
    /// The destination without prefix (the default routing key).
    pub destination: String,
    /// The declarations.
    pub plan: DeclarationPlan,
}

/// `<prefix><name>`.
pub fn apply_prefix(prefix: &str, name: &str) -> String {
    format!("{prefix}{name}")
}

/// A random anonymous-queue suffix: base64url of 16 random bytes without padding.
pub fn random_base64url() -> String {
    let bytes: [u8; 16] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// An integer argument as RabbitMQ expects: signed 32-bit when it fits, else signed 64-bit.
pub fn int_arg(v: u64) -> AMQPValue {
    match i32::try_from(v) {
        Ok(i) => AMQPValue::LongInt(i),
        Err(_) => AMQPValue::LongLongInt(i64::try_from(v).unwrap_or(i64::MAX)),
    }
}

fn str_arg(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

fn exchange_decl(name: &str, s: &QueueSettings) -> ExchangeDecl {
    let mut arguments: BTreeMap<String, AMQPValue> = s
        .exchange_arguments
        .iter()
        .map(|(k, v)| (k.clone(), str_arg(v)))
        .collect();
    let kind = if s.delayed_exchange {
        arguments.insert(
            "x-delayed-type".to_owned(),
            str_arg(s.exchange_type.as_str()),
        );
        DELAYED_EXCHANGE_TYPE.to_owned()
    } else {
        s.exchange_type.as_str().to_owned()
    };
    ExchangeDecl {
        name: name.to_owned(),
        kind,
        durable: s.exchange_durable,
        auto_delete: s.exchange_auto_delete,
        arguments,
    }
}

fn additional_args(args: &mut BTreeMap<String, AMQPValue>, q: &QueueArgs) {
    if let Some(v) = q.expires {
        args.insert("x-expires".into(), int_arg(v.into()));
    }
    if let Some(v) = q.max_length {
        args.insert("x-max-length".into(), int_arg(v.into()));
    }
    if let Some(v) = q.max_length_bytes {
        args.insert("x-max-length-bytes".into(), int_arg(v));
    }
    if let Some(v) = q.max_priority {
        args.insert("x-max-priority".into(), int_arg(v.into()));
    }
    if let Some(v) = q.ttl {
        args.insert("x-message-ttl".into(), int_arg(v.into()));
    }
    if q.lazy {
        args.insert("x-queue-mode".into(), str_arg("lazy"));
    }
    if let Some(o) = q.overflow.as_deref().filter(|o| !o.trim().is_empty()) {
        args.insert("x-overflow".into(), str_arg(o.trim()));
    }
    if q.quorum.enabled {
        args.insert("x-queue-type".into(), str_arg("quorum"));
        if let Some(v) = q.quorum.delivery_limit {
            args.insert("x-delivery-limit".into(), int_arg(v.into()));
        }
        if let Some(v) = q.quorum.initial_group_size {
            args.insert("x-quorum-initial-group-size".into(), int_arg(v.into()));
        }
    }
    if q.single_active_consumer {
        args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
    }
}

/// The dead-letter exchange name: `dead-letter-exchange`, else `<prefix>DLX`.
pub(crate) fn dead_letter_exchange_name(s: &QueueSettings) -> String {
    s.dead_letter_exchange
        .clone()
        .unwrap_or_else(|| apply_prefix(&s.prefix, "DLX"))
}

/// Arguments of a main queue (`is_dlq = false`) or of a DLQ.
pub(crate) fn queue_arguments(
    queue_name: &str,
    s: &QueueSettings,
    is_dlq: bool,
) -> BTreeMap<String, AMQPValue> {
    let mut args = BTreeMap::new();
    if !is_dlq {
        if s.auto_bind_dlq {
            args.insert(
                "x-dead-letter-exchange".to_owned(),
                str_arg(&dead_letter_exchange_name(s)),
            );
            args.insert(
                "x-dead-letter-routing-key".to_owned(),
                str_arg(s.dead_letter_routing_key.as_deref().unwrap_or(queue_name)),
            );
        }
        additional_args(&mut args, &s.main);
    } else {
        if let Some(dlx) = &s.dlq_dead_letter_exchange {
            args.insert("x-dead-letter-exchange".to_owned(), str_arg(dlx));
        }
        if let Some(rk) = &s.dlq_dead_letter_routing_key {
            args.insert("x-dead-letter-routing-key".to_owned(), str_arg(rk));
        }
        additional_args(&mut args, &s.dlq);
    }
    args
}

fn binding_routing_keys(s: &QueueSettings) -> Vec<Option<String>> {
    match (&s.binding_routing_key, &s.binding_routing_key_delimiter) {
        (None, _) => vec![None],
        (Some(rk), Some(delim)) if !delim.is_empty() => rk
            .split(delim.as_str())
            .map(|k| Some(k.trim().to_owned()))
            .collect(),
        (Some(rk), _) => vec![Some(rk.clone())],
    }
}

fn headers_arguments(s: &QueueSettings) -> BTreeMap<String, AMQPValue> {
    let mut args: BTreeMap<String, AMQPValue> = s
        .queue_binding_arguments
        .iter()
        .map(|(k, v)| (k.clone(), str_arg(v)))
        .collect();
    args.entry("x-match".to_owned())
        .or_insert_with(|| str_arg("all"));
    args
}

fn not_partitioned_binding(
    plan: &mut DeclarationPlan,
    exchange: &str,
    queue: &str,
    rk: Option<&str>,
    s: &QueueSettings,
) {
    let (routing_key, arguments) = match s.exchange_type {
        ExchangeType::Fanout => (String::new(), BTreeMap::new()),
        ExchangeType::Headers => (String::new(), headers_arguments(s)),
        ExchangeType::Topic | ExchangeType::Direct => {
            (rk.unwrap_or("#").to_owned(), BTreeMap::new())
        }
    };
    plan.binding(BindingDecl {
        queue: queue.to_owned(),
        exchange: exchange.to_owned(),
        routing_key,
        arguments,
    });
}

fn partitioned_binding(
    plan: &mut DeclarationPlan,
    destination: &str,
    exchange: &str,
    queue: &str,
    rk: Option<&str>,
    s: &QueueSettings,
    index: u32,
) -> Result<(), String> {
    let key = format!("{}-{index}", rk.unwrap_or(destination));
    let (routing_key, arguments) = match s.exchange_type {
        ExchangeType::Fanout => {
            return Err(
                "a fanout exchange is not appropriate for partitioned destinations; use exchange-type topic or direct"
                    .to_owned(),
            );
        }
        ExchangeType::Headers => (String::new(), headers_arguments(s)),
        ExchangeType::Topic | ExchangeType::Direct => (key, BTreeMap::new()),
    };
    plan.binding(BindingDecl {
        queue: queue.to_owned(),
        exchange: exchange.to_owned(),
        routing_key,
        arguments,
    });
    Ok(())
}

/// Declares the DLQ (and DLX) of `base_queue` and binds it with `routing_key`.
fn auto_bind_dlq(
    plan: &mut DeclarationPlan,
    base_queue: &str,
    routing_key: &str,
    s: &QueueSettings,
    also_bind_base: bool,
) -> Option<String> {
    if !s.auto_bind_dlq {
        return None;
    }
    let dlq = s
        .dead_letter_queue_name
        .clone()
        .unwrap_or_else(|| format!("{base_queue}.dlq"));
    let dlx = dead_letter_exchange_name(s);
    if s.declare_dlx {
        plan.exchange(ExchangeDecl {
            name: dlx.clone(),
            kind: s.dead_letter_exchange_type.as_str().to_owned(),
            durable: true,
            auto_delete: false,
            arguments: BTreeMap::new(),
        });
    }
    plan.queue(QueueDecl {
        name: dlq.clone(),
        durable: true,
        exclusive: false,
        auto_delete: false,
        arguments: queue_arguments(&dlq, s, true),
    });
    let arguments: BTreeMap<String, AMQPValue> = s
        .dlq_binding_arguments
        .iter()
        .map(|(k, v)| (k.clone(), str_arg(v)))
        .collect();
    let key = s
        .dead_letter_routing_key
        .clone()
        .unwrap_or_else(|| routing_key.to_owned());
    plan.binding(BindingDecl {
        queue: dlq.clone(),
        exchange: dlx.clone(),
        routing_key: key,
        arguments: arguments.clone(),
    });
    if also_bind_base && s.dead_letter_routing_key.is_none() && routing_key != base_queue {
        // Republishing does not know about partitions: also route the base queue name.
        plan.binding(BindingDecl {
            queue: dlq.clone(),
            exchange: dlx,
            routing_key: base_queue.to_owned(),
            arguments,
        });
    }
    Some(dlq)
}

/// Inputs of [`consumer_topology`] besides the queue settings.
#[derive(Clone, Debug)]
pub(crate) struct ConsumerInputs<'a> {
    pub(crate) destination: &'a str,
    pub(crate) group: Option<&'a str>,
    pub(crate) partitioned: bool,
    pub(crate) instance_index: u32,
    pub(crate) anonymous_group_prefix: &'a str,
    pub(crate) durable_subscription: bool,
    pub(crate) republish_to_dlq: bool,
    /// Random part of an anonymous queue name.
    pub(crate) anonymous_suffix: &'a str,
}

/// The consumer topology (spec §4).
pub(crate) fn consumer_topology(
    i: &ConsumerInputs<'_>,
    s: &QueueSettings,
) -> Result<ConsumerTopology, String> {
    let group = i.group.filter(|g| !g.trim().is_empty());
    let anonymous = group.is_none();
    let group_part = match group {
        Some(g) => g.to_owned(),
        None => format!("{}{}", i.anonymous_group_prefix, i.anonymous_suffix),
    };
    let base = if s.queue_name_group_only {
        group_part
    } else {
        format!("{}.{}", i.destination, group_part)
    };
    let exchange = apply_prefix(&s.prefix, i.destination);
    let mut plan = DeclarationPlan::default();
    if s.declare_exchange {
        plan.exchange(exchange_decl(&exchange, s));
    }
    let base_queue = apply_prefix(&s.prefix, &base);
    let partitioned = !anonymous && i.partitioned;
    let durable = !anonymous && i.durable_subscription;
    let mut queue = base_queue.clone();
    if partitioned {
        queue = format!("{queue}-{}", i.instance_index);
    }
    let decl = if anonymous {
        QueueDecl {
            name: queue.clone(),
            durable: false,
            exclusive: true,
            auto_delete: true,
            arguments: queue_arguments(&queue, s, false),
        }
    } else {
        QueueDecl {
            name: queue.clone(),
            durable,
            exclusive: false,
            auto_delete: !durable,
            arguments: queue_arguments(&queue, s, false),
        }
    };
    if s.bind_queue {
        plan.queue(decl);
        for rk in binding_routing_keys(s) {
            if partitioned {
                partitioned_binding(
                    &mut plan,
                    i.destination,
                    &exchange,
                    &queue,
                    rk.as_deref(),
                    s,
                    i.instance_index,
                )?;
            } else {
                not_partitioned_binding(&mut plan, &exchange, &queue, rk.as_deref(), s);
            }
        }
    }
    let dlq = if durable {
        auto_bind_dlq(&mut plan, &base_queue, &queue, s, i.republish_to_dlq)
    } else {
        None
    };
    let republish_routing_key = s
        .dead_letter_routing_key
        .clone()
        .unwrap_or_else(|| queue.clone());
    Ok(ConsumerTopology {
        exchange,
        queue,
        base_queue,
        anonymous,
        dead_letter_exchange: dead_letter_exchange_name(s),
        dead_letter_queue: dlq,
        republish_routing_key,
        plan,
    })
}

/// The producer topology: the exchange and the required groups' queues (spec §4).
pub(crate) fn producer_topology(
    destination: &str,
    required_groups: &[String],
    partition_count: Option<u32>,
    s: &QueueSettings,
) -> Result<ProducerTopology, String> {
    let exchange = apply_prefix(&s.prefix, destination);
    let mut plan = DeclarationPlan::default();
    if s.declare_exchange {
        plan.exchange(exchange_decl(&exchange, s));
    }
    for group in required_groups.iter().filter(|g| !g.trim().is_empty()) {
        let base = if s.queue_name_group_only {
            apply_prefix(&s.prefix, group)
        } else {
            format!("{exchange}.{group}")
        };
        match partition_count {
            None => {
                if s.bind_queue {
                    plan.queue(QueueDecl {
                        name: base.clone(),
                        durable: true,
                        exclusive: false,
                        auto_delete: false,
                        arguments: queue_arguments(&base, s, false),
                    });
                    for rk in binding_routing_keys(s) {
                        not_partitioned_binding(&mut plan, &exchange, &base, rk.as_deref(), s);
                    }
                }
                auto_bind_dlq(&mut plan, &base, &base, s, false);
            }
            Some(count) => {
                for i in 0..count {
                    let name = format!("{base}-{i}");
                    if s.bind_queue {
                        plan.queue(QueueDecl {
                            name: name.clone(),
                            durable: true,
                            exclusive: false,
                            auto_delete: false,
                            arguments: queue_arguments(&name, s, false),
                        });
                        for rk in binding_routing_keys(s) {
                            partitioned_binding(
                                &mut plan,
                                destination,
                                &exchange,
                                &name,
                                rk.as_deref(),
                                s,
                                i,
                            )?;
                        }
                    }
                    auto_bind_dlq(&mut plan, &base, &name, s, false);
                }
            }
        }
    }
    Ok(ProducerTopology {
        exchange,
        destination: destination.to_owned(),
        plan,
    })
}

pub(crate) fn field_table(args: &BTreeMap<String, AMQPValue>) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in args {
        if let Ok(k) = ShortString::try_new(k.as_str()) {
            t.insert(k, v.clone());
        }
    }
    t
}

pub(crate) fn short(s: &str) -> Result<ShortString, RabbitError> {
    ShortString::try_new(s).map_err(|_| RabbitError::NameTooLong(s.to_owned()))
}

fn exchange_kind(kind: &str) -> ExchangeKind {
    match kind {
        "topic" => ExchangeKind::Topic,
        "direct" => ExchangeKind::Direct,
        "fanout" => ExchangeKind::Fanout,
        "headers" => ExchangeKind::Headers,
        other => ExchangeKind::Custom(other.to_owned()),
    }
}

struct ArgsDisplay<'a>(&'a BTreeMap<String, AMQPValue>);

impl fmt::Display for ArgsDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            match v {
                AMQPValue::LongString(s) => write!(f, "{k}={s}")?,
                AMQPValue::LongInt(n) => write!(f, "{k}={n}")?,
                AMQPValue::LongLongInt(n) => write!(f, "{k}={n}")?,
                AMQPValue::Boolean(b) => write!(f, "{k}={b}")?,
                other => write!(f, "{k}={other:?}")?,
            }
        }
        f.write_str("}")
    }
}

/// The delayed message plugin's exchange type.
pub(crate) const DELAYED_EXCHANGE_TYPE: &str = "x-delayed-message";

fn declare_error(entity: String, attempted: String, err: lapin::Error) -> RabbitError {
    match amqp_error(&err) {
        Some((406, text)) => RabbitError::Conflict {
            entity,
            attempted,
            broker: text,
        },
        Some((code, text)) => RabbitError::Declaration {
            entity,
            reason: format!("broker replied {code} {text}"),
        },
        None => RabbitError::Lapin {
            context: format!("declaring {entity}"),
            source: err,
        },
    }
}

/// Runs a plan on a fresh channel of `conn`. A conflict with what the broker holds is
/// [`RabbitError::Conflict`], naming the entity and the broker's reason (which names the argument).
pub(crate) async fn declare(conn: &Connection, plan: &DeclarationPlan) -> Result<(), RabbitError> {
    if plan.is_empty() {
        return Ok(());
    }
    let channel = conn
        .create_channel()
        .await
        .map_err(|e| RabbitError::Lapin {
            context: "opening a channel for declarations".to_owned(),
            source: e,
        })?;
    let result = declare_on(&channel, plan).await;
    if channel.status().connected() {
        let _ = channel.close(200, "declarations done".into()).await;
    }
    result
}

async fn declare_on(channel: &lapin::Channel, plan: &DeclarationPlan) -> Result<(), RabbitError> {
    for e in &plan.exchanges {
        let entity = format!("exchange `{}`", e.name);
        let attempted = format!(
            "type {}, durable {}, auto-delete {}, arguments {}",
            e.kind,
            e.durable,
            e.auto_delete,
            ArgsDisplay(&e.arguments)
        );
        channel
            .exchange_declare(
                short(&e.name)?,
                exchange_kind(&e.kind),
                ExchangeDeclareOptions {
                    durable: e.durable,
                    auto_delete: e.auto_delete,
                    ..ExchangeDeclareOptions::default()
                },
                field_table(&e.arguments),
            )
            .await
            .map_err(|err| {
                let error = declare_error(entity.clone(), attempted, err);
                if e.kind != DELAYED_EXCHANGE_TYPE {
                    return error;
                }
                RabbitError::Declaration {
                    entity,
                    reason: format!(
                        "{error}; exchange type `{DELAYED_EXCHANGE_TYPE}` (delayed-exchange=true) needs the RabbitMQ \
                         delayed message plugin: rabbitmq-plugins enable rabbitmq_delayed_message_exchange"
                    ),
                }
            })?;
        tracing::debug!(exchange = %e.name, kind = %e.kind, "declared exchange");
    }
    for q in &plan.queues {
        let entity = format!("queue `{}`", q.name);
        let attempted = format!(
            "durable {}, exclusive {}, auto-delete {}, arguments {}",
            q.durable,
            q.exclusive,
            q.auto_delete,
            ArgsDisplay(&q.arguments)
        );
        channel
            .queue_declare(
                short(&q.name)?,
                QueueDeclareOptions {
                    durable: q.durable,
                    exclusive: q.exclusive,
                    auto_delete: q.auto_delete,
                    ..QueueDeclareOptions::default()
                },
                field_table(&q.arguments),
            )
            .await
            .map_err(|err| declare_error(entity, attempted, err))?;
        tracing::debug!(queue = %q.name, "declared queue");
    }
    for b in &plan.bindings {
        let entity = format!(
            "binding of queue `{}` to exchange `{}` with key `{}`",
            b.queue, b.exchange, b.routing_key
        );
        let attempted = format!("arguments {}", ArgsDisplay(&b.arguments));
        channel
            .queue_bind(
                short(&b.queue)?,
                short(&b.exchange)?,
                short(&b.routing_key)?,
                QueueBindOptions::default(),
                field_table(&b.arguments),
            )
            .await
            .map_err(|err| declare_error(entity, attempted, err))?;
        tracing::debug!(queue = %b.queue, exchange = %b.exchange, key = %b.routing_key, "declared binding");
    }
    Ok(())
}

/// Whether an exchange exists (passive declare on a throw-away channel).
pub(crate) async fn exchange_exists(conn: &Connection, name: &str) -> Result<bool, RabbitError> {
    if name.is_empty() {
        return Ok(true);
    }
    let channel = conn
        .create_channel()
        .await
        .map_err(|e| RabbitError::Lapin {
            context: "opening a channel".to_owned(),
            source: e,
        })?;
    let r = channel
        .exchange_declare(
            short(name)?,
            ExchangeKind::Direct,
            ExchangeDeclareOptions {
                passive: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await;
    match r {
        Ok(()) => {
            let _ = channel.close(200, "ok".into()).await;
            Ok(true)
        }
        Err(e) => match amqp_error(&e) {
            Some((404, _)) => Ok(false),
            _ => Err(RabbitError::Lapin {
                context: format!("checking exchange `{name}`"),
                source: e,
            }),
        },
    }
}

#[cfg(test)]
#[allow(
    clippy::field_reassign_with_default,
    reason = "tests tweak one property at a time"
)]
mod tests {
    use super::*;
    use crate::config::{RabbitConsumerProperties, RabbitProducerProperties};

    fn inputs<'a>(destination: &'a str, group: Option<&'a str>) -> ConsumerInputs<'a> {
        ConsumerInputs {
            destination,
            group,
            partitioned: false,
            instance_index: 0,
            anonymous_group_prefix: "anonymous.",
            durable_subscription: true,
            republish_to_dlq: true,
            anonymous_suffix: "AAAA",
        }
    }

    fn s(v: &str) -> AMQPValue {
        str_arg(v)
    }

    #[test]
    fn group_queue_defaults() {
        let c = RabbitConsumerProperties::default();
        let t = consumer_topology(&inputs("orders", Some("billing")), &c.queue_settings())
            .expect("topology");
        assert_eq!(t.exchange, "orders");
        assert_eq!(t.queue, "orders.billing");
        assert!(!t.anonymous);
        assert_eq!(t.plan.exchanges.len(), 1);
        let ex = &t.plan.exchanges[0];
        assert_eq!(
            (ex.kind.as_str(), ex.durable, ex.auto_delete),
            ("topic", true, false)
        );
        let q = &t.plan.queues[0];
        assert!(q.durable && !q.exclusive && !q.auto_delete);
        assert!(q.arguments.is_empty());
        assert_eq!(t.plan.bindings.len(), 1);
        assert_eq!(t.plan.bindings[0].routing_key, "#");
        assert_eq!(t.dead_letter_queue, None);
        assert_eq!(t.dead_letter_exchange, "DLX");
    }

    #[test]
    fn anonymous_queue_naming() {
        let mut c = RabbitConsumerProperties::default();
        c.prefix = "p.".into();
        let mut i = inputs("orders", None);
        let suffix = random_base64url();
        assert_eq!(suffix.len(), 22);
        assert!(!suffix.contains('=') && !suffix.contains('+') && !suffix.contains('/'));
        i.anonymous_suffix = &suffix;
        let t = consumer_topology(&i, &c.queue_settings()).expect("topology");
        assert_eq!(t.queue, format!("p.orders.anonymous.{suffix}"));
        assert_eq!(t.exchange, "p.orders");
        let q = &t.plan.queues[0];
        assert!(!q.durable && q.exclusive && q.auto_delete);
        c.anonymous_group_prefix = "anon-".into();
        i.anonymous_group_prefix = &c.anonymous_group_prefix;
        let t = consumer_topology(&i, &c.queue_settings()).expect("topology");
        assert_eq!(t.queue, format!("p.orders.anon-{suffix}"));
        // Anonymous subscriptions never get a DLQ.
        c.auto_bind_dlq = true;
        let t = consumer_topology(&i, &c.queue_settings()).expect("topology");
        assert_eq!(t.dead_letter_queue, None);
    }

    #[test]
    fn partitioned_queue_and_binding() {
        let c = RabbitConsumerProperties::default();
        let mut i = inputs("part.dest", Some("myGroup"));
        i.partitioned = true;
        i.instance_index = 1;
        let t = consumer_topology(&i, &c.queue_settings()).expect("topology");
        assert_eq!(t.queue, "part.dest.myGroup-1");
        assert_eq!(t.base_queue, "part.dest.myGroup");
        assert_eq!(t.plan.bindings[0].routing_key, "part.dest-1");
        let mut f = c.clone();
        f.exchange_type = ExchangeType::Fanout;
        assert!(
            consumer_topology(&i, &f.queue_settings())
                .expect_err("fanout")
                .contains("fanout")
        );
    }

    #[test]
    fn routing_key_delimiter_gives_several_bindings() {
        let mut c = RabbitConsumerProperties::default();
        c.binding_routing_key = Some("a.*,b.#".into());
        c.binding_routing_key_delimiter = Some(",".into());
        let t = consumer_topology(&inputs("d", Some("g")), &c.queue_settings()).expect("t");
        let keys: Vec<_> = t
            .plan
            .bindings
            .iter()
            .map(|b| b.routing_key.as_str())
            .collect();
        assert_eq!(keys, vec!["a.*", "b.#"]);
    }

    #[test]
    fn headers_exchange_binding_arguments() {
        let mut c = RabbitConsumerProperties::default();
        c.exchange_type = ExchangeType::Headers;
        c.queue_binding_arguments
            .insert("type".into(), "order".into());
        let t = consumer_topology(&inputs("d", Some("g")), &c.queue_settings()).expect("t");
        let b = &t.plan.bindings[0];
        assert_eq!(b.routing_key, "");
        assert_eq!(b.arguments.get("type"), Some(&s("order")));
        assert_eq!(b.arguments.get("x-match"), Some(&s("all")));
        c.exchange_type = ExchangeType::Fanout;
        let t = consumer_topology(&inputs("d", Some("g")), &c.queue_settings()).expect("t");
        assert_eq!(t.plan.bindings[0].routing_key, "");
    }

    #[test]
    fn queue_arguments_have_rabbitmq_types() {
        let mut c = RabbitConsumerProperties::default();
        c.ttl = Some(1000);
        c.expires = Some(60000);
        c.max_length = Some(10);
        c.max_length_bytes = Some(5_000_000_000);
        c.max_priority = Some(5);
        c.lazy = true;
        c.overflow_behavior = Some("reject-publish".into());
        c.single_active_consumer = true;
        let t = consumer_topology(&inputs("d", Some("g")), &c.queue_settings()).expect("t");
        let a = &t.plan.queues[0].arguments;
        assert_eq!(a.get("x-message-ttl"), Some(&AMQPValue::LongInt(1000)));
        assert_eq!(a.get("x-expires"), Some(&AMQPValue::LongInt(60000)));
        assert_eq!(a.get("x-max-length"), Some(&AMQPValue::LongInt(10)));
        assert_eq!(
            a.get("x-max-length-bytes"),
            Some(&AMQPValue::LongLongInt(5_000_000_000))
        );
        assert_eq!(a.get("x-max-priority"), Some(&AMQPValue::LongInt(5)));
        assert_eq!(a.get("x-queue-mode"), Some(&s("lazy")));
        assert_eq!(a.get("x-overflow"), Some(&s("reject-publish")));
        assert_eq!(
            a.get("x-single-active-consumer"),
            Some(&AMQPValue::Boolean(true))
        );
        let mut q = RabbitConsumerProperties::default();
        q.quorum.enabled = true;
        q.quorum.delivery_limit = Some(3);
        q.quorum.initial_group_size = Some(1);
        let t = consumer_topology(&inputs("d", Some("g")), &q.queue_settings()).expect("t");
        let a = &t.plan.queues[0].arguments;
        assert_eq!(a.get("x-queue-type"), Some(&s("quorum")));
        assert_eq!(a.get("x-delivery-limit"), Some(&AMQPValue::LongInt(3)));
        assert_eq!(
            a.get("x-quorum-initial-group-size"),
            Some(&AMQPValue::LongInt(1))
        );
    }

    #[test]
    fn auto_bind_dlq_topology() {
        let mut c = RabbitConsumerProperties::default();
        c.auto_bind_dlq = true;
        c.dlq_ttl = Some(5000);
        c.dlq_dead_letter_exchange = crate::config::NullableString::set("");
        let t = consumer_topology(
            &inputs("myDestination", Some("consumerGroup")),
            &c.queue_settings(),
        )
        .expect("t");
        assert_eq!(
            t.dead_letter_queue.as_deref(),
            Some("myDestination.consumerGroup.dlq")
        );
        assert_eq!(t.republish_routing_key, "myDestination.consumerGroup");
        let main = &t.plan.queues[0];
        assert_eq!(
            main.arguments.get("x-dead-letter-exchange"),
            Some(&s("DLX"))
        );
        assert_eq!(
            main.arguments.get("x-dead-letter-routing-key"),
            Some(&s("myDestination.consumerGroup"))
        );
        let dlq = &t.plan.queues[1];
        assert_eq!(dlq.name, "myDestination.consumerGroup.dlq");
        assert!(dlq.durable);
        assert_eq!(
            dlq.arguments.get("x-message-ttl"),
            Some(&AMQPValue::LongInt(5000))
        );
        assert_eq!(dlq.arguments.get("x-dead-letter-exchange"), Some(&s("")));
        assert!(!dlq.arguments.contains_key("x-dead-letter-routing-key"));
        let dlx = t
            .plan
            .exchanges
            .iter()
            .find(|e| e.name == "DLX")
            .expect("dlx");
        assert_eq!(dlx.kind, "direct");
        let b = t
            .plan
            .bindings
            .iter()
            .find(|b| b.exchange == "DLX")
            .expect("dlq binding");
        assert_eq!(b.routing_key, "myDestination.consumerGroup");
        // Custom names and declare-dlx=false.
        c.dead_letter_exchange = Some("myDLX".into());
        c.dead_letter_queue_name = Some("myDLQ".into());
        c.dead_letter_routing_key = Some("dead".into());
        c.declare_dlx = false;
        let t = consumer_topology(&inputs("d", Some("g")), &c.queue_settings()).expect("t");
        assert!(t.plan.exchanges.iter().all(|e| e.name != "myDLX"));
        assert_eq!(t.dead_letter_queue.as_deref(), Some("myDLQ"));
        assert_eq!(t.republish_routing_key, "dead");
        assert_eq!(
            t.plan.queues[0].arguments.get("x-dead-letter-routing-key"),
            Some(&s("dead"))
        );
    }

    #[test]
    fn partitioned_queues_share_one_dlq() {
        let mut c = RabbitConsumerProperties::default();
        c.auto_bind_dlq = true;
        let mut i = inputs("d", Some("g"));
        i.partitioned = true;
        i.instance_index = 2;
        let t = consumer_topology(&i, &c.queue_settings()).expect("t");
        assert_eq!(t.dead_letter_queue.as_deref(), Some("d.g.dlq"));
        let keys: Vec<_> = t
            .plan
            .bindings
            .iter()
            .filter(|b| b.exchange == "DLX")
            .map(|b| b.routing_key.as_str())
            .collect();
        assert_eq!(keys, vec!["d.g-2", "d.g"]);
    }

    #[test]
    fn durable_subscription_false_is_auto_delete_without_dlq() {
        let mut c = RabbitConsumerProperties::default();
        c.auto_bind_dlq = true;
        let mut i = inputs("d", Some("g"));
        i.durable_subscription = false;
        let t = consumer_topology(&i, &c.queue_settings()).expect("t");
        let q = &t.plan.queues[0];
        assert!(!q.durable && q.auto_delete && !q.exclusive);
        assert_eq!(t.dead_letter_queue, None);
        assert_eq!(t.plan.queues.len(), 1);
    }

    #[test]
    fn existing_infrastructure_declares_nothing() {
        let mut c = RabbitConsumerProperties::default();
        c.bind_queue = false;
        c.declare_exchange = false;
        c.queue_name_group_only = true;
        let t = consumer_topology(&inputs("myExchange", Some("myQueue")), &c.queue_settings())
            .expect("t");
        assert_eq!(t.queue, "myQueue");
        assert!(t.plan.is_empty());
    }

    #[test]
    fn delayed_exchange() {
        let mut c = RabbitConsumerProperties::default();
        c.delayed_exchange = true;
        c.exchange_type = ExchangeType::Direct;
        let t = consumer_topology(&inputs("d", Some("g")), &c.queue_settings()).expect("t");
        let e = &t.plan.exchanges[0];
        assert_eq!(e.kind, "x-delayed-message");
        assert_eq!(e.arguments.get("x-delayed-type"), Some(&s("direct")));
    }

    #[test]
    fn producer_required_groups() {
        let mut p = RabbitProducerProperties::default();
        p.prefix = "x.".into();
        p.auto_bind_dlq = true;
        let groups = vec!["g1".to_owned(), "g2".to_owned()];
        let t = producer_topology("d", &groups, None, &p.queue_settings()).expect("t");
        assert_eq!(t.exchange, "x.d");
        let names: Vec<_> = t.plan.queues.iter().map(|q| q.name.as_str()).collect();
        assert_eq!(names, vec!["x.d.g1", "x.d.g1.dlq", "x.d.g2", "x.d.g2.dlq"]);
        let t = producer_topology("d", &groups[..1], Some(3), &p.queue_settings()).expect("t");
        let names: Vec<_> = t.plan.queues.iter().map(|q| q.name.as_str()).collect();
        assert_eq!(
            names,
            vec!["x.d.g1-0", "x.d.g1.dlq", "x.d.g1-1", "x.d.g1-2"]
        );
        let keys: Vec<_> = t
            .plan
            .bindings
            .iter()
            .filter(|b| b.exchange == "x.d")
            .map(|b| b.routing_key.as_str())
            .collect();
        assert_eq!(keys, vec!["d-0", "d-1", "d-2"]);
        assert_eq!(
            t.plan.queues[2].arguments.get("x-dead-letter-routing-key"),
            Some(&s("x.d.g1-1"))
        );
    }

    #[test]
    fn int_arg_widens_only_when_needed() {
        assert_eq!(int_arg(5), AMQPValue::LongInt(5));
        assert_eq!(int_arg(i32::MAX as u64), AMQPValue::LongInt(i32::MAX));
        assert_eq!(
            int_arg(i32::MAX as u64 + 1),
            AMQPValue::LongLongInt(i32::MAX as i64 + 1)
        );
    }
}
