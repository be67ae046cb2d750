//! The admin endpoint's routes: `{base}/health`, `{base}/bindings`, `{base}/prometheus` and
//! the links page at `{base}`.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;

use super::json::{BindingJson, ErrorJson, HealthView, health};
use crate::app::{AppHandle, BindingCommand};

/// Spring Boot Actuator's media type (version 3), sent unless the client asks for plain JSON.
const ACTUATOR_JSON: &str = "application/vnd.spring-boot.actuator.v3+json";
/// Prometheus text exposition format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What the handlers share.
#[derive(Clone)]
pub(super) struct AdminState {
    pub(super) handle: AppHandle,
    pub(super) view: HealthView,
    pub(super) prometheus: Option<PrometheusHandle>,
    /// Base path without a trailing `/` (empty for `/`).
    pub(super) base: Arc<str>,
    pub(super) endpoints: Arc<[&'static str]>,
}

/// The router for the exposed endpoints; anything else is a JSON 404.
pub(super) fn router(state: AdminState) -> Router {
    let base = state.base.to_string();
    let root = if base.is_empty() {
        "/".to_owned()
    } else {
        base.clone()
    };
    let mut router = Router::new().route(&root, get(links));
    if state.endpoints.contains(&"health") {
        router = router
            .route(&format!("{base}/health"), get(health_all))
            .route(&format!("{base}/health/{{*path}}"), get(health_path));
    }
    if state.endpoints.contains(&"bindings") {
        router = router
            .route(&format!("{base}/bindings"), get(bindings))
            .route(
                &format!("{base}/bindings/{{name}}"),
                get(binding).post(change_state),
            );
    }
    if state.endpoints.contains(&"prometheus") && state.prometheus.is_some() {
        router = router.route(&format!("{base}/prometheus"), get(prometheus));
    }
    router.fallback(not_found).with_state(state)
}

/// JSON in the media type the client asked for.
fn json(status: StatusCode, request: &HeaderMap, body: &impl Serialize) -> Response {
    let accept = request
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = if accept.contains("application/json") && !accept.contains("actuator") {
        "application/json"
    } else {
        ACTUATOR_JSON
    };
    match serde_json::to_string(body) {
        Ok(text) => (status, [(header::CONTENT_TYPE, media)], text).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot render the response: {e}"),
        )
            .into_response(),
    }
}

fn error(status: StatusCode, request: &HeaderMap, uri: &Uri, message: String) -> Response {
    let reason = status.canonical_reason().unwrap_or("Error");
    json(
        status,
        request,
        &ErrorJson::new(status.as_u16(), reason, message, uri.path()),
    )
}

#[derive(Serialize)]
struct Link {
    href: String,
    templated: bool,
}

async fn links(State(s): State<AdminState>, headers: HeaderMap) -> Response {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let href = |path: &str, templated: bool| Link {
        href: format!("http://{host}{}{path}", s.base),
        templated,
    };
    let mut links = std::collections::BTreeMap::new();
    links.insert("self", href("", false));
    for id in s.endpoints.iter() {
        links.insert(id, href(&format!("/{id}"), false));
        match *id {
            "health" => {
                links.insert("health-path", href("/health/{*path}", true));
            }
            "bindings" => {
                links.insert("bindings-name", href("/bindings/{name}", true));
            }
            _ => {}
        }
    }
    json(
        StatusCode::OK,
        &headers,
        &serde_json::json!({ "_links": links }),
    )
}

async fn health_all(State(s): State<AdminState>, headers: HeaderMap) -> Response {
    let doc = health(&s.handle.health().await, s.view);
    let status = if doc.is_down() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    json(status, &headers, &doc)
}

async fn health_path(
    State(s): State<AdminState>,
    Path(path): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let doc = health(&s.handle.health().await, s.view);
    match doc.find(&parts) {
        Some(c) if s.view.components => {
            let status = if c.is_down() {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::OK
            };
            json(status, &headers, &c)
        }
        _ => error(
            StatusCode::NOT_FOUND,
            &headers,
            &uri,
            format!("no health component `{path}`"),
        ),
    }
}

async fn bindings(State(s): State<AdminState>, headers: HeaderMap) -> Response {
    let all = s.handle.bindings();
    let list: Vec<BindingJson<'_>> = all.iter().map(|b| BindingJson::of(&**b)).collect();
    json(StatusCode::OK, &headers, &list)
}

async fn binding(
    State(s): State<AdminState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let found = s.handle.binding(&name);
    if found.is_empty() {
        return no_binding(&s, &headers, &uri, &name);
    }
    let list: Vec<BindingJson<'_>> = found.iter().map(|b| BindingJson::of(&**b)).collect();
    json(StatusCode::OK, &headers, &list)
}

fn no_binding(s: &AdminState, headers: &HeaderMap, uri: &Uri, name: &str) -> Response {
    let mut names: Vec<String> = s
        .handle
        .bindings()
        .iter()
        .map(|b| b.name().to_owned())
        .collect();
    names.dedup();
    error(
        StatusCode::NOT_FOUND,
        headers,
        uri,
        format!(
            "no binding named `{name}`; bindings: [{}]",
            names.join(", ")
        ),
    )
}

#[derive(serde::Deserialize)]
struct StateChange {
    state: String,
}

const ACCEPTED: &str = r#"send {"state": "STARTED" | "STOPPED" | "PAUSED" | "RESUMED"}"#;

async fn change_state(
    State(s): State<AdminState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    let command = match serde_json::from_slice::<StateChange>(&body) {
        Ok(change) => match change.state.parse::<BindingCommand>() {
            Ok(c) => c,
            Err(e) => return error(StatusCode::BAD_REQUEST, &headers, &uri, e),
        },
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &headers,
                &uri,
                format!("cannot read the body ({e}); {ACCEPTED}"),
            );
        }
    };
    if s.handle.binding(&name).is_empty() {
        return no_binding(&s, &headers, &uri, &name);
    }
    match s.handle.command(&name, command).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &headers,
            &uri,
            format!("{}", crate::error::ErrorChain(&e)),
        ),
    }
}

async fn prometheus(State(s): State<AdminState>) -> Response {
    let text = s
        .prometheus
        .as_ref()
        .map(PrometheusHandle::render)
        .unwrap_or_default();
    ([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], text).into_response()
}

async fn not_found(State(s): State<AdminState>, headers: HeaderMap, uri: Uri) -> Response {
    error(
        StatusCode::NOT_FOUND,
        &headers,
        &uri,
        format!(
            "no such endpoint; served under `{}/`: {} (management.endpoints.web.exposure.include)",
            s.base,
            s.endpoints.join(", ")
        ),
    )
}
