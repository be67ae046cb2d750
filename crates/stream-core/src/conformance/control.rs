//! What the kit needs from a binder's test setup beyond its factory: a way to cut the broker
//! off (late binding, dead consumers) and a way to look at what reached the broker.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Cuts the applications of a trial off the broker and back.
#[async_trait]
pub trait BrokerControl: Send + Sync + 'static {
    /// Properties that make an application reach the broker through the controlled path
    /// (a proxy's address), added after the kit's own in the trials that cut the broker off
    /// (only those: other trials running meanwhile are not affected).
    fn properties(&self) -> Vec<(String, String)>;
    /// A factory whose binders reach the controlled broker, when the kit's own factory does
    /// not (an in-process broker); `None`: the kit's factory with [`BrokerControl::properties`].
    fn factory(&self) -> Option<crate::binder::AnyBinderFactory> {
        None
    }
    /// Makes the broker unreachable: refuses new connections and drops open ones.
    async fn cut(&self);
    /// Makes it reachable again.
    async fn restore(&self);
}

/// Reads what a producer really put on the broker, below the binder.
#[async_trait]
pub trait WireProbe: Send + Sync + 'static {
    /// Starts capturing messages sent to `destination` from now on.
    async fn tap(&self, destination: &str) -> Result<Box<dyn WireTap>, String>;
}

/// Messages captured on the broker.
#[async_trait]
pub trait WireTap: Send + Sync {
    /// The header (property) names of the next captured message.
    async fn next_header_names(&mut self, timeout: Duration) -> Result<Vec<String>, String>;
}

/// A TCP proxy on loopback in front of a broker, as a [`BrokerControl`]: the kit's trials
/// connect through it and it can refuse and drop connections.
///
/// ```no_run
/// # async fn demo() -> std::io::Result<()> {
/// use stream_core::conformance::TcpProxy;
/// let proxy = TcpProxy::start("127.0.0.1:5672".parse().unwrap(), |addr| {
///     vec![
///         ("spring.rabbitmq.host".into(), addr.ip().to_string()),
///         ("spring.rabbitmq.port".into(), addr.port().to_string()),
///     ]
/// })
/// .await?;
/// # Ok(()) }
/// ```
pub struct TcpProxy {
    address: SocketAddr,
    up: watch::Sender<bool>,
    properties: Vec<(String, String)>,
    accepting: Arc<AtomicBool>,
}

impl std::fmt::Debug for TcpProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpProxy")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl TcpProxy {
    /// Listens on a free loopback port and forwards to `upstream`; `properties` turns the
    /// proxy's address into the application properties that point at it.
    pub async fn start(
        upstream: SocketAddr,
        properties: impl Fn(SocketAddr) -> Vec<(String, String)>,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let (up, _) = watch::channel(true);
        let accepting = Arc::new(AtomicBool::new(true));
        let rx = up.subscribe();
        let accept_flag = Arc::clone(&accepting);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if !accept_flag.load(Ordering::Acquire) {
                    drop(client);
                    continue;
                }
                tokio::spawn(forward(client, upstream, rx.clone()));
            }
        });
        Ok(Self {
            address,
            up,
            properties: properties(address),
            accepting,
        })
    }

    /// The proxy's address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

async fn forward(mut client: TcpStream, upstream: SocketAddr, mut up: watch::Receiver<bool>) {
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        _ = up.wait_for(|u| !*u) => {}
    }
    let _ = client.shutdown().await;
    let _ = server.shutdown().await;
}

#[async_trait]
impl BrokerControl for TcpProxy {
    fn properties(&self) -> Vec<(String, String)> {
        self.properties.clone()
    }

    async fn cut(&self) {
        self.accepting.store(false, Ordering::Release);
        self.up.send_replace(false);
    }

    async fn restore(&self) {
        self.up.send_replace(true);
        self.accepting.store(true, Ordering::Release);
    }
}
