//! The admin HTTP endpoint (feature `admin`): Spring Boot Actuator's `bindings`, `health` and
//! `prometheus` endpoints for a running application, configured by Spring's keys.
//!
//! It starts with the application when `management.server.port` is set (`0` picks a free
//! port; unset or `-1`: no server) and listens on `management.server.address` (default
//! `127.0.0.1`). Endpoints are served under `management.endpoints.web.base-path` (default
//! `/actuator`) when `management.endpoints.web.exposure.include` names them (default `health`
//! only; `*` for all):
//!
//! * `GET {base}/health`: `{"status":"UP","components":{"binders":{..},"bindings":{..}}}`,
//!   HTTP 503 when `DOWN`; `GET {base}/health/binders/<name>` for one component.
//! * `GET {base}/bindings`, `GET {base}/bindings/<name>`: the bindings in Spring's shape;
//!   `POST {base}/bindings/<name>` with `{"state":"STOPPED"}` (`STARTED`, `PAUSED`,
//!   `RESUMED`) changes the state (204).
//! * `GET {base}/prometheus`: the application's metrics in Prometheus text format.
//!
//! There is no authentication: do not expose it beyond loopback without a proxy in front.
//!
//! ```
//! use stream_core::memory::InMemoryBinderFactory;
//! use stream_core::stream_config::Environment;
//! use stream_core::{FunctionError, StreamApp};
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let env = Environment::builder()
//!     .args(["--management.server.port=0", "--management.endpoints.web.exposure.include=*"])
//!     .build()
//!     .unwrap();
//! let app = StreamApp::builder()
//!     .environment(env)
//!     .binder(InMemoryBinderFactory::default())
//!     .consumer("log", |s: String| async move { Ok::<_, FunctionError>(()) })
//!     .build()
//!     .await
//!     .unwrap();
//! let address = app.admin_address().expect("management.server.port is set");
//! assert!(address.ip().is_loopback());
//! app.shutdown().await.unwrap();
//! # });
//! ```

mod json;
mod routes;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use stream_config::{ENDPOINT_IDS, ManagementProperties};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::app::{AppHandle, StreamError};
use json::HealthView;
use routes::AdminState;

/// Histogram buckets (seconds) of the duration metrics: OpenTelemetry's HTTP set.
const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// How often the Prometheus recorder drains its histograms.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The recorder the application's metrics go to: the Prometheus exporter when the admin
/// endpoint serves `prometheus` (next to the application's own recorder, if it gave one).
pub(crate) fn metrics_recorder(
    management: &ManagementProperties,
    own: Option<Arc<dyn Recorder + Send + Sync>>,
) -> (
    Option<Arc<dyn Recorder + Send + Sync>>,
    Option<PrometheusHandle>,
) {
    if management.admin_port().is_none() || !management.exposes("prometheus") {
        return (own, None);
    }
    let builder = PrometheusBuilder::new().with_recommended_naming(true);
    let builder = match builder.set_buckets_for_metric(
        metrics_exporter_prometheus::Matcher::Suffix("duration".to_owned()),
        &DURATION_BUCKETS,
    ) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "histogram buckets refused; durations render as summaries");
            PrometheusBuilder::new().with_recommended_naming(true)
        }
    };
    let prometheus = builder.build_recorder();
    let handle = prometheus.handle();
    let recorder: Arc<dyn Recorder + Send + Sync> = match own {
        None => Arc::new(prometheus),
        Some(own) => Arc::new(Tee(prometheus, own)),
    };
    (Some(recorder), Some(handle))
}

/// Both recorders: the Prometheus exporter and the application's own.
struct Tee(PrometheusRecorder, Arc<dyn Recorder + Send + Sync>);

/// A handle of each recorder, updated together.
struct Pair<T>(T, T);

impl metrics::CounterFn for Pair<metrics::Counter> {
    fn increment(&self, value: u64) {
        self.0.increment(value);
        self.1.increment(value);
    }
    fn absolute(&self, value: u64) {
        self.0.absolute(value);
        self.1.absolute(value);
    }
}

impl metrics::GaugeFn for Pair<metrics::Gauge> {
    fn increment(&self, value: f64) {
        self.0.increment(value);
        self.1.increment(value);
    }
    fn decrement(&self, value: f64) {
        self.0.decrement(value);
        self.1.decrement(value);
    }
    fn set(&self, value: f64) {
        self.0.set(value);
        self.1.set(value);
    }
}

impl metrics::HistogramFn for Pair<metrics::Histogram> {
    fn record(&self, value: f64) {
        self.0.record(value);
        self.1.record(value);
    }
}

impl Recorder for Tee {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.0
            .describe_counter(key.clone(), unit, description.clone());
        self.1.describe_counter(key, unit, description);
    }
    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.0
            .describe_gauge(key.clone(), unit, description.clone());
        self.1.describe_gauge(key, unit, description);
    }
    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.0
            .describe_histogram(key.clone(), unit, description.clone());
        self.1.describe_histogram(key, unit, description);
    }
    fn register_counter(&self, key: &Key, m: &Metadata<'_>) -> Counter {
        Counter::from_arc(Arc::new(Pair(
            self.0.register_counter(key, m),
            self.1.register_counter(key, m),
        )))
    }
    fn register_gauge(&self, key: &Key, m: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(Arc::new(Pair(
            self.0.register_gauge(key, m),
            self.1.register_gauge(key, m),
        )))
    }
    fn register_histogram(&self, key: &Key, m: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(Arc::new(Pair(
            self.0.register_histogram(key, m),
            self.1.register_histogram(key, m),
        )))
    }
}

/// The running admin server.
pub(crate) struct AdminServer {
    address: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for AdminServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminServer")
            .field("address", &self.address)
            .finish()
    }
}

impl AdminServer {
    /// Starts the server if `management.server.port` asks for one.
    pub(crate) async fn start(
        management: &ManagementProperties,
        handle: AppHandle,
        prometheus: Option<PrometheusHandle>,
    ) -> Result<Option<Self>, StreamError> {
        let Some(port) = management.admin_port() else {
            return Ok(None);
        };
        let ip: IpAddr =
            management
                .server
                .address
                .trim()
                .parse()
                .map_err(|e| StreamError::Admin {
                    address: management.server.address.clone(),
                    cause: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
                })?;
        let wanted = SocketAddr::new(ip, port);
        let listener = tokio::net::TcpListener::bind(wanted)
            .await
            .map_err(|cause| StreamError::Admin {
                address: wanted.to_string(),
                cause,
            })?;
        let address = listener.local_addr().map_err(|cause| StreamError::Admin {
            address: wanted.to_string(),
            cause,
        })?;
        let endpoints: Vec<&'static str> = ENDPOINT_IDS
            .iter()
            .copied()
            .filter(|id| management.exposes(id))
            .collect();
        let base: Arc<str> = management
            .endpoints
            .web
            .base_path
            .trim()
            .trim_end_matches('/')
            .into();
        let state = AdminState {
            handle,
            view: HealthView {
                components: management.health_shows_components(),
                details: management.health_shows_details(),
                binders: management.health.binders.enabled,
            },
            prometheus: prometheus.clone(),
            base: Arc::clone(&base),
            endpoints: endpoints.clone().into(),
        };
        let stop = CancellationToken::new();
        let router = routes::router(state);
        let shutdown = stop.clone();
        let task = tokio::spawn(async move {
            let upkeep = prometheus.map(|p| {
                let stop = shutdown.clone();
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(UPKEEP_INTERVAL);
                    loop {
                        tokio::select! {
                            _ = tick.tick() => p.run_upkeep(),
                            () = stop.cancelled() => return,
                        }
                    }
                })
            });
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, %address, "the admin endpoint stopped");
            }
            if let Some(u) = upkeep {
                u.abort();
            }
        });
        tracing::info!(
            url = %format!("http://{address}{base}"),
            endpoints = %endpoints.join(","),
            "admin endpoint listening"
        );
        if !ip.is_loopback() {
            tracing::warn!(%address, "the admin endpoint has no authentication and listens beyond loopback; put a proxy in front of it");
        }
        Ok(Some(Self {
            address,
            stop,
            task,
        }))
    }

    /// Where it listens.
    pub(crate) fn address(&self) -> SocketAddr {
        self.address
    }

    /// Stops serving; requests in progress finish first.
    pub(crate) async fn stop(self) {
        self.stop.cancel();
        if let Err(e) = self.task.await {
            tracing::warn!(error = %e, "the admin endpoint task ended abnormally");
        }
    }
}
