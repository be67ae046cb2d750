//! Connections: Spring Boot's `spring.rabbitmq.*` settings turned into lapin connections, and a
//! long-lived connection slot that reconnects on demand and re-declares the topology it owns
//! (as Spring's `RabbitAdmin` does on every new connection).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use lapin::uri::{AMQPAuthority, AMQPQueryString, AMQPScheme, AMQPUri, AMQPUserInfo};
use lapin::{Connection, ConnectionProperties};
use stream_core::binder::BinderHealth;

use crate::config::{RabbitBinderProperties, RabbitConnectionProperties};
use crate::error::RabbitError;
use crate::provisioning::{self, DeclarationPlan};

const DEFAULT_CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);

/// Bounds closing a connection.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens connections to the configured broker addresses, in order.
#[derive(Debug)]
pub(crate) struct ConnectionFactory {
    uris: Vec<AMQPUri>,
    /// `spring.rabbitmq.ssl.*` for `amqps` addresses.
    tls: lapin::tcp::OwnedTLSConfig,
    target: String,
    timeout: Duration,
    name_prefix: Option<String>,
    counter: AtomicU64,
}

impl ConnectionFactory {
    pub(crate) fn new(
        c: &RabbitConnectionProperties,
        b: &RabbitBinderProperties,
    ) -> Result<Self, String> {
        let scheme = if c.ssl.enabled {
            AMQPScheme::AMQPS
        } else {
            AMQPScheme::AMQP
        };
        let heartbeat = c
            .heartbeat()
            .map_err(|e| format!("spring.rabbitmq.requested-heartbeat: {e}"))?
            .map(|d| u16::try_from(d.as_secs()).unwrap_or(u16::MAX));
        let timeout = c.connection_timeout.unwrap_or(DEFAULT_CONNECTION_TIMEOUT);
        let query = AMQPQueryString {
            heartbeat,
            channel_max: Some(c.requested_channel_max),
            connection_timeout: Some(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)),
            ..AMQPQueryString::default()
        };
        let default_port = c.port.unwrap_or(if c.ssl.enabled { 5671 } else { 5672 });
        let make = |host: &str, port: u16| AMQPUri {
            scheme: scheme.clone(),
            authority: AMQPAuthority {
                userinfo: AMQPUserInfo {
                    username: c.username.clone(),
                    password: c.password.expose().to_owned(),
                },
                host: host.to_owned(),
                port,
            },
            vhost: c.virtual_host.clone(),
            query: query.clone(),
        };
        let mut uris = Vec::new();
        let addresses: Vec<&str> = c
            .addresses
            .iter()
            .flat_map(|a| a.split(','))
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .collect();
        if addresses.is_empty() {
            uris.push(make(&c.host, default_port));
        }
        for a in addresses {
            if a.starts_with("amqp://") || a.starts_with("amqps://") {
                let mut uri: AMQPUri = a
                    .parse()
                    .map_err(|e| format!("spring.rabbitmq.addresses: invalid URI: {e}"))?;
                if uri.query.heartbeat.is_none() {
                    uri.query.heartbeat = query.heartbeat;
                }
                if uri.query.connection_timeout.is_none() {
                    uri.query.connection_timeout = query.connection_timeout;
                }
                uris.push(uri);
            } else {
                let (host, port) = match a.rsplit_once(':') {
                    Some((h, p)) => (
                        h,
                        p.parse::<u16>().map_err(|_| {
                            format!("spring.rabbitmq.addresses: invalid port in `{a}`")
                        })?,
                    ),
                    None => (a, default_port),
                };
                uris.push(make(host, port));
            }
        }
        let target = uris
            .iter()
            .map(|u| {
                format!(
                    "{}://{}:{}{}",
                    u.scheme,
                    u.authority.host,
                    u.authority.port,
                    if u.vhost.starts_with('/') {
                        u.vhost.clone()
                    } else {
                        format!("/{}", u.vhost)
                    }
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        // As Spring Boot, `ssl.*` matters only when TLS is used.
        let tls = if uris.iter().any(|u| u.scheme == AMQPScheme::AMQPS) {
            crate::tls::tls_config(&c.ssl)?
        } else {
            lapin::tcp::OwnedTLSConfig::default()
        };
        Ok(ConnectionFactory {
            uris,
            tls,
            target,
            timeout,
            name_prefix: b.connection_name_prefix.clone(),
            counter: AtomicU64::new(0),
        })
    }

    /// The addresses, without credentials (for messages).
    pub(crate) fn target(&self) -> &str {
        &self.target
    }

    /// How many addresses there are.
    pub(crate) fn address_count(&self) -> usize {
        self.uris.len()
    }

    /// A factory for the `index`th address only (queue affinity).
    pub(crate) fn only(&self, index: usize) -> Option<ConnectionFactory> {
        let uri = self.uris.get(index)?.clone();
        Some(ConnectionFactory {
            target: format!("{}:{}", uri.authority.host, uri.authority.port),
            uris: vec![uri],
            tls: self.tls.clone(),
            timeout: self.timeout,
            name_prefix: self.name_prefix.clone(),
            counter: AtomicU64::new(0),
        })
    }

    /// Opens a connection to the first reachable address; also says which address it is.
    pub(crate) async fn connect(&self, purpose: &str) -> Result<(Connection, String), RabbitError> {
        let mut last = String::from("no address configured");
        for uri in &self.uris {
            let mut props = ConnectionProperties::default();
            if let Some(prefix) = &self.name_prefix {
                let n = self.counter.fetch_add(1, Ordering::Relaxed);
                props = props.with_connection_name(format!("{prefix}#{n}").into());
            } else {
                props = props.with_connection_name(format!("stream-rs {purpose}").into());
            }
            let runtime = lapin::runtime::default_runtime().map_err(|e| RabbitError::Connect {
                target: self.target.clone(),
                reason: e.to_string(),
            })?;
            let attempt = tokio::time::timeout(
                self.timeout,
                Connection::connect_uri_with_config(uri.clone(), props, self.tls.clone(), runtime),
            )
            .await;
            match attempt {
                Ok(Ok(conn)) => {
                    let address = format!("{}:{}", uri.authority.host, uri.authority.port);
                    tracing::info!(
                        address = %address,
                        purpose,
                        frame_max = conn.configuration().frame_max(),
                        "connected to RabbitMQ"
                    );
                    return Ok((conn, address));
                }
                Ok(Err(e)) => {
                    last = e.to_string();
                    if uri.scheme == AMQPScheme::AMQPS && last.contains("certificate") {
                        last.push_str(if self.tls.cert_chain.is_some() {
                            " (TLS: the broker's certificate is not signed by a CA of spring.rabbitmq.ssl.trust-store, or does not name this host)"
                        } else {
                            " (TLS: the broker's certificate is not signed by a CA the system trusts; set spring.rabbitmq.ssl.trust-store to its CA)"
                        });
                    }
                }
                Err(_) => last = format!("timed out after {:?}", self.timeout),
            }
        }
        Err(RabbitError::Connect {
            target: self.target.clone(),
            reason: last,
        })
    }
}

/// One long-lived connection, reopened on demand after it is lost. The consumer slot also
/// re-declares every registered topology on each new connection (anonymous queues are exclusive
/// to the connection and vanish with it).
pub(crate) struct ConnectionSlot {
    factory: Arc<ConnectionFactory>,
    purpose: &'static str,
    current: tokio::sync::Mutex<Option<Arc<Connection>>>,
    /// The address of the current connection.
    address: std::sync::Mutex<Option<String>>,
    plans: std::sync::Mutex<Vec<Arc<DeclarationPlan>>>,
}

impl ConnectionSlot {
    pub(crate) fn new(factory: Arc<ConnectionFactory>, purpose: &'static str) -> Self {
        ConnectionSlot {
            factory,
            purpose,
            current: tokio::sync::Mutex::new(None),
            address: std::sync::Mutex::new(None),
            plans: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Registers a plan to re-declare on every new connection.
    pub(crate) fn register(&self, plan: Arc<DeclarationPlan>) {
        if plan.is_empty() {
            return;
        }
        if let Ok(mut plans) = self.plans.lock() {
            plans.push(plan);
        }
    }

    /// The open connection, or a new one.
    pub(crate) async fn get(&self) -> Result<Arc<Connection>, RabbitError> {
        let mut guard = self.current.lock().await;
        if let Some(conn) = guard.as_ref()
            && conn.status().connected()
        {
            return Ok(conn.clone());
        }
        *guard = None;
        let (conn, address) = self.factory.connect(self.purpose).await?;
        let conn = Arc::new(conn);
        if let Ok(mut a) = self.address.lock() {
            *a = Some(address);
        }
        let plans: Vec<Arc<DeclarationPlan>> =
            self.plans.lock().map(|p| p.clone()).unwrap_or_default();
        for plan in plans {
            if let Err(e) = provisioning::declare(&conn, &plan).await {
                if e.is_transient() {
                    return Err(e);
                }
                tracing::error!(error = %e, "re-declaring topology after reconnecting failed");
            }
        }
        *guard = Some(conn.clone());
        Ok(conn)
    }

    /// The open connection, if any, without connecting.
    pub(crate) async fn current(&self) -> Option<Arc<Connection>> {
        self.current
            .lock()
            .await
            .as_ref()
            .filter(|c| c.status().connected())
            .cloned()
    }

    /// Closes the connection, waiting at most [`CLOSE_TIMEOUT`] for the broker's answer (a
    /// silently dead connection never answers).
    pub(crate) async fn close(&self) {
        let conn = self.current.lock().await.take();
        if let Some(conn) = conn
            && conn.status().connected()
            && tokio::time::timeout(CLOSE_TIMEOUT, conn.close(200, "binder closed".into()))
                .await
                .is_err()
        {
            tracing::warn!(purpose = self.purpose, target = %self.target(),
                "the broker did not answer connection.close in time; connection dropped");
        }
    }

    /// Drops `conn` if it is this slot's connection (the client still believes it open, but
    /// the broker stopped answering on it), so the next [`ConnectionSlot::get`] connects anew;
    /// it is closed in the background, bounded. `true` when it was this slot's.
    pub(crate) async fn discard(&self, conn: &Arc<Connection>) -> bool {
        let dead = {
            let mut guard = self.current.lock().await;
            if !guard.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
                return false;
            }
            guard.take()
        };
        tracing::warn!(purpose = self.purpose, target = %self.target(),
            "connection unresponsive: dropped, the next use reconnects");
        if let Some(dead) = dead {
            tokio::spawn(async move {
                let _ = tokio::time::timeout(
                    CLOSE_TIMEOUT,
                    dead.close(320, "connection unresponsive".into()),
                )
                .await;
            });
        }
        true
    }

    pub(crate) fn target(&self) -> &str {
        self.factory.target()
    }

    /// The health of this connection: up when it is open (connecting first if there is none,
    /// as Spring's health indicator does), down with the reason otherwise.
    pub(crate) async fn health(&self, timeout: Duration) -> BinderHealth {
        let conn = match tokio::time::timeout(timeout, self.get()).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                return BinderHealth::down(e.to_string()).with_detail("address", self.target());
            }
            Err(_) => {
                return BinderHealth::down(format!(
                    "no connection to {} within {timeout:?}",
                    self.target()
                ))
                .with_detail("address", self.target());
            }
        };
        let address = self
            .address
            .lock()
            .ok()
            .and_then(|a| a.clone())
            .unwrap_or_else(|| self.target().to_owned());
        let config = conn.configuration();
        let mut health = BinderHealth::up()
            .with_detail("address", address)
            .with_detail("virtualHost", conn.status().vhost().as_str())
            .with_detail("frameMax", config.frame_max().to_string())
            .with_detail("heartbeat", config.heartbeat().to_string());
        if conn.status().blocked() {
            health = BinderHealth::down("the broker blocked the connection (resource alarm)")
                .with_detail("address", self.target());
        }
        health
    }
}

#[cfg(test)]
#[allow(
    clippy::field_reassign_with_default,
    reason = "tests tweak one property at a time"
)]
mod tests {
    use super::*;
    use stream_config::Environment;

    fn factory(props: &str) -> Result<ConnectionFactory, String> {
        let env = Environment::builder()
            .properties_str("t.properties", props)
            .build()
            .map_err(|e| e.to_string())?;
        let c = RabbitConnectionProperties::from_environment(&env).map_err(|e| e.to_string())?;
        ConnectionFactory::new(&c, &RabbitBinderProperties::default())
    }

    #[test]
    fn spring_boot_defaults() {
        let f = factory("").expect("factory");
        assert_eq!(f.uris.len(), 1);
        let u = &f.uris[0];
        assert_eq!(u.authority.host, "localhost");
        assert_eq!(u.authority.port, 5672);
        assert_eq!(u.authority.userinfo.username, "guest");
        assert_eq!(u.vhost, "/");
        assert_eq!(f.target(), "amqp://localhost:5672/");
        assert!(!f.target().contains("guest"));
    }

    #[test]
    fn ssl_settings_apply_only_with_tls() {
        // Unused without TLS, as in Spring Boot: not even read.
        let f = factory("spring.rabbitmq.ssl.trust-store=/nonexistent.pem\nspring.rabbitmq.ssl.verify-hostname=false")
            .expect("no TLS, ssl.* unused");
        assert_eq!(f.tls, lapin::tcp::OwnedTLSConfig::default());
        let e = factory(
            "spring.rabbitmq.ssl.enabled=true\nspring.rabbitmq.ssl.trust-store=/nonexistent.pem",
        )
        .expect_err("TLS reads the trust store");
        assert!(
            e.contains("spring.rabbitmq.ssl.trust-store: cannot read"),
            "{e}"
        );
        let e = factory(
            "spring.rabbitmq.addresses=amqps://h:5671\nspring.rabbitmq.ssl.verify-hostname=false",
        )
        .expect_err("amqps addresses use TLS");
        assert!(e.contains("verify-hostname=false is not supported"), "{e}");
    }

    #[test]
    fn addresses_and_tls() {
        let f = factory("spring.rabbitmq.addresses=h1:1234,h2\nspring.rabbitmq.ssl.enabled=true\nspring.rabbitmq.virtual-host=v")
            .expect("factory");
        let hosts: Vec<_> = f
            .uris
            .iter()
            .map(|u| {
                (
                    u.authority.host.as_str(),
                    u.authority.port,
                    u.scheme.clone(),
                )
            })
            .collect();
        assert_eq!(
            hosts,
            vec![
                ("h1", 1234, AMQPScheme::AMQPS),
                ("h2", 5671, AMQPScheme::AMQPS)
            ]
        );
        assert!(factory("spring.rabbitmq.addresses=h1:xx").is_err());
    }
}
