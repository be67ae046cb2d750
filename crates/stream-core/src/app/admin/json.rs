//! The JSON documents of the admin endpoint, in Spring Boot Actuator's shapes.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::app::{AppHealth, BindingHealth};
use crate::binder::{BinderHealth, Binding, BindingState, HealthStatus};

/// One binding as `GET /actuator/bindings` lists it (Spring's `Binding` bean properties;
/// fields without a value are left out, as Spring Boot's endpoint mapper does).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct BindingJson<'a> {
    binding_name: &'a str,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<&'a str>,
    pausable: bool,
    state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    state_reason: Option<String>,
    paused: bool,
    input: bool,
    binder_type: &'a str,
    extended_info: ExtendedInfo<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExtendedInfo<'a> {
    binding_destination: &'a str,
}

impl<'a> BindingJson<'a> {
    pub(super) fn of(b: &'a dyn Binding) -> Self {
        let status = b.status();
        Self {
            binding_name: b.name(),
            name: b.destination(),
            group: b.group(),
            pausable: b.is_pausable(),
            state: status.state.as_str(),
            state_reason: status.reason,
            paused: status.state == BindingState::Paused,
            input: b.is_input(),
            binder_type: b.binder_type(),
            extended_info: ExtendedInfo {
                binding_destination: b.destination(),
            },
        }
    }
}

/// What the health endpoint shows (`management.endpoint.health.show-*`,
/// `management.health.binders.enabled`).
#[derive(Clone, Copy, Debug)]
pub(super) struct HealthView {
    pub(super) components: bool,
    pub(super) details: bool,
    pub(super) binders: bool,
}

#[derive(Serialize)]
pub(super) struct Component {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    components: Option<BTreeMap<String, Component>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<BTreeMap<String, serde_json::Value>>,
}

impl Component {
    fn leaf(status: HealthStatus, details: Option<BTreeMap<String, serde_json::Value>>) -> Self {
        Self {
            status: status.spring_status(),
            components: None,
            details,
        }
    }

    /// The component at `path` (`binders`, `binders/rabbit`), if there is one.
    pub(super) fn find(self, path: &[&str]) -> Option<Component> {
        let Some((first, rest)) = path.split_first() else {
            return Some(self);
        };
        self.components?.remove(*first)?.find(rest)
    }

    /// Whether the status reads `DOWN` (HTTP 503).
    pub(super) fn is_down(&self) -> bool {
        self.status == HealthStatus::Down.spring_status()
    }
}

fn binder_component(h: &BinderHealth, view: HealthView) -> Component {
    let details = view.details.then(|| {
        h.details
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect()
    });
    Component::leaf(h.status, details)
}

fn binding_component(b: &BindingHealth, view: HealthView) -> Component {
    let status = if b.status.state == BindingState::Failed {
        HealthStatus::Down
    } else {
        HealthStatus::Up
    };
    let details = view.details.then(|| {
        let mut d = BTreeMap::new();
        d.insert("state".to_owned(), b.status.state.as_str().into());
        d.insert("destination".to_owned(), b.destination.clone().into());
        d.insert("input".to_owned(), b.input.into());
        if let Some(r) = &b.status.reason {
            d.insert("reason".to_owned(), r.clone().into());
        }
        d
    });
    Component::leaf(status, details)
}

/// The health document: `{"status":..,"components":{"binders":{..},"bindings":{..}}}`.
pub(super) fn health(h: &AppHealth, view: HealthView) -> Component {
    let mut components = BTreeMap::new();
    if view.binders {
        let binders = h
            .binders
            .iter()
            .map(|(name, b)| (name.clone(), binder_component(b, view)))
            .collect();
        components.insert(
            "binders".to_owned(),
            Component {
                status: h.binders_status().spring_status(),
                components: Some(binders),
                details: None,
            },
        );
    }
    let mut bindings = BTreeMap::new();
    for b in &h.bindings {
        // A binding with several destinations appears once per destination.
        let key = if bindings.contains_key(&b.name) {
            format!("{}:{}", b.name, b.destination)
        } else {
            b.name.clone()
        };
        bindings.insert(key, binding_component(b, view));
    }
    components.insert(
        "bindings".to_owned(),
        Component {
            status: h.bindings_status().spring_status(),
            components: Some(bindings),
            details: None,
        },
    );
    let status = if view.binders {
        h.status
    } else {
        h.bindings_status()
    };
    Component {
        status: status.spring_status(),
        components: view.components.then_some(components),
        details: None,
    }
}

/// Spring Boot's error body.
#[derive(Serialize)]
pub(super) struct ErrorJson<'a> {
    timestamp: String,
    status: u16,
    error: &'a str,
    message: String,
    path: &'a str,
}

impl<'a> ErrorJson<'a> {
    pub(super) fn new(status: u16, error: &'a str, message: String, path: &'a str) -> Self {
        Self {
            timestamp: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            status,
            error,
            message,
            path,
        }
    }
}
