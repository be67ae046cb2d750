//! Spring Boot's `management.*` keys that steer a running service: the admin endpoint's port,
//! address, base path and exposure, what the health endpoint shows, and tracing.
//!
//! Only the keys listed here have an effect; any other `management.*` key (Spring Boot has many)
//! is accepted and ignored, so a Java service's configuration can be shared as it is.

use crate::environment::Environment;
use crate::error::ConfigError;
use crate::schema::Node;

/// Prefix of the management keys.
pub const MANAGEMENT_PREFIX: &str = "management";

crate::property_enum! {
    /// How much the health endpoint shows (`management.endpoint.health.show-details`).
    pub enum ShowDetails {
        /// Only the overall status.
        Never = "never",
        /// Everything (there is no authorization here: same as `always`).
        WhenAuthorized = "when-authorized",
        /// Every component and its details.
        Always = "always",
    }
}

crate::properties! {
    /// `management.*`: the admin endpoint and tracing.
    pub struct ManagementProperties {
        /// The admin HTTP server.
        pub server: ManagementServerProperties = ManagementServerProperties::default(),
        /// Web endpoints as a whole.
        pub endpoints: EndpointsProperties = EndpointsProperties::default(),
        /// Settings of single endpoints.
        pub endpoint: EndpointProperties = EndpointProperties::default(),
        /// Health contributors.
        pub health: HealthContributorsProperties = HealthContributorsProperties::default(),
        /// Trace propagation and sampling.
        pub tracing: TracingProperties = TracingProperties::default(),
    }

    /// `management.server.*`.
    pub struct ManagementServerProperties {
        /// Port of the admin HTTP server; unset: no server; `0`: any free port; `-1`: off.
        pub port: Option<i32> = None,
        /// Address the admin server listens on; keep loopback unless a proxy is in front.
        /// (The endpoint has no authentication.)
        pub address: String = "127.0.0.1".to_owned(),
    }

    /// `management.endpoints.*`.
    pub struct EndpointsProperties {
        /// Web exposure.
        pub web: WebEndpointsProperties = WebEndpointsProperties::default(),
    }

    /// `management.endpoints.web.*`.
    pub struct WebEndpointsProperties {
        /// Path under which the endpoints are served.
        pub base_path: String = "/actuator".to_owned(),
        /// Which endpoints are served.
        pub exposure: ExposureProperties = ExposureProperties::default(),
    }

    /// `management.endpoints.web.exposure.*`.
    pub struct ExposureProperties {
        /// Endpoint ids served (`health`, `bindings`, `prometheus`, or `*` for all).
        pub include: Vec<String> = vec!["health".to_owned()],
        /// Endpoint ids not served even when included (wins over `include`).
        pub exclude: Vec<String> = Vec::new(),
    }

    /// `management.endpoint.*`.
    pub struct EndpointProperties {
        /// The health endpoint.
        pub health: HealthEndpointProperties = HealthEndpointProperties::default(),
    }

    /// `management.endpoint.health.*`.
    pub struct HealthEndpointProperties {
        /// Whether the health endpoint shows each binder's details (address, version, error).
        pub show_details: ShowDetails = ShowDetails::Always,
        /// Whether it shows the components (defaults to `show-details`).
        pub show_components: Option<ShowDetails> = None,
    }

    /// `management.health.*`.
    pub struct HealthContributorsProperties {
        /// The binders' health.
        pub binders: BindersHealthProperties = BindersHealthProperties::default(),
    }

    /// `management.health.binders.*`.
    pub struct BindersHealthProperties {
        /// Whether the binders take part in the health endpoint.
        pub enabled: bool = true,
    }

    /// `management.tracing.*`.
    pub struct TracingProperties {
        /// Whether spans are sampled and exported (trace context is propagated either way).
        pub enabled: bool = true,
        /// Sampling.
        pub sampling: SamplingProperties = SamplingProperties::default(),
    }

    /// `management.tracing.sampling.*`.
    pub struct SamplingProperties {
        /// Share of new traces sampled, 0.0 to 1.0; an incoming decision is kept.
        pub probability: f64 = 0.1,
    }
}

/// The admin endpoints this runtime serves.
pub const ENDPOINT_IDS: [&str; 3] = ["health", "bindings", "prometheus"];

impl ManagementProperties {
    /// Reads and checks the `management.*` keys.
    ///
    /// ```
    /// use stream_config::{Environment, ManagementProperties};
    /// let env = Environment::builder()
    ///     .args(["--management.server.port=8081", "--management.endpoints.web.exposure.include=health,bindings"])
    ///     .build()?;
    /// let m = ManagementProperties::from_environment(&env)?;
    /// assert_eq!(m.server.port, Some(8081));
    /// assert!(m.exposes("bindings") && !m.exposes("prometheus"));
    /// assert_eq!(m.endpoints.web.base_path, "/actuator");
    /// # Ok::<(), stream_config::ConfigError>(())
    /// ```
    pub fn from_environment(env: &Environment) -> Result<Self, ConfigError> {
        let mut m = Self::default();
        env.bind(MANAGEMENT_PREFIX, &mut m)?;
        m.check(env)?;
        Ok(m)
    }

    fn check(&self, env: &Environment) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| {
            let origin = env
                .property(key)
                .map(|p| p.origin().to_string())
                .unwrap_or_else(|| "default".to_owned());
            ConfigError::Invalid {
                key: key.to_owned(),
                origin,
                message,
            }
        };
        if let Some(port) = self.server.port
            && !(-1..=65535).contains(&port)
        {
            return Err(invalid(
                "management.server.port",
                format!(
                    "{port} is not a port; use 1-65535, 0 for any free port, or -1 to turn the admin server off"
                ),
            ));
        }
        if self
            .server
            .address
            .trim()
            .parse::<std::net::IpAddr>()
            .is_err()
        {
            return Err(invalid(
                "management.server.address",
                format!(
                    "`{}` is not an IP address; use e.g. 127.0.0.1 (loopback) or 0.0.0.0 (all interfaces)",
                    self.server.address
                ),
            ));
        }
        let base = self.endpoints.web.base_path.trim();
        if !base.starts_with('/') || base.contains(['?', '#', ' ', '{', '}']) {
            return Err(invalid(
                "management.endpoints.web.base-path",
                format!("`{base}` is not a path; it must start with `/` (e.g. /actuator)"),
            ));
        }
        for (key, ids) in [
            (
                "management.endpoints.web.exposure.include",
                &self.endpoints.web.exposure.include,
            ),
            (
                "management.endpoints.web.exposure.exclude",
                &self.endpoints.web.exposure.exclude,
            ),
        ] {
            for id in ids.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
                if id != "*" && !ENDPOINT_IDS.contains(&id) {
                    unserved_endpoint(key, id);
                }
            }
        }
        let p = self.tracing.sampling.probability;
        if !(0.0..=1.0).contains(&p) {
            return Err(invalid(
                "management.tracing.sampling.probability",
                format!("{p} is not a probability; use a number from 0.0 to 1.0"),
            ));
        }
        Ok(())
    }

    /// The admin server's port, unless it is off (unset or `-1`).
    pub fn admin_port(&self) -> Option<u16> {
        self.server
            .port
            .filter(|p| *p >= 0)
            .and_then(|p| u16::try_from(p).ok())
    }

    /// Whether the endpoint `id` is served (`exclude` wins over `include`; `*` means all).
    pub fn exposes(&self, id: &str) -> bool {
        let has = |ids: &[String]| ids.iter().any(|s| s.trim() == "*" || s.trim() == id);
        has(&self.endpoints.web.exposure.include) && !has(&self.endpoints.web.exposure.exclude)
    }

    /// Whether the health endpoint lists the binders.
    pub fn health_shows_components(&self) -> bool {
        let h = &self.endpoint.health;
        h.show_components.unwrap_or(h.show_details) != ShowDetails::Never
    }

    /// Whether the health endpoint shows each binder's details.
    pub fn health_shows_details(&self) -> bool {
        self.endpoint.health.show_details != ShowDetails::Never
    }
}

/// The known `management.*` keys, for mapping environment variables
/// (`MANAGEMENT_ENDPOINTS_WEB_BASE_PATH` is `management.endpoints.web.base-path`). Every level is
/// open: other Spring Boot keys are accepted.
pub(crate) fn schema() -> Node {
    Node::open(vec![
        (
            "server",
            Node::open(vec![("port", Node::Leaf), ("address", Node::Leaf)]),
        ),
        (
            "endpoints",
            Node::open(vec![(
                "web",
                Node::open(vec![
                    ("base-path", Node::Leaf),
                    (
                        "exposure",
                        Node::open(vec![("include", Node::List), ("exclude", Node::List)]),
                    ),
                ]),
            )]),
        ),
        (
            "endpoint",
            Node::open(vec![(
                "health",
                Node::open(vec![
                    ("show-details", Node::Leaf),
                    ("show-components", Node::Leaf),
                ]),
            )]),
        ),
        (
            "health",
            Node::open(vec![("binders", Node::open(vec![("enabled", Node::Leaf)]))]),
        ),
        (
            "tracing",
            Node::open(vec![
                ("enabled", Node::Leaf),
                ("sampling", Node::open(vec![("probability", Node::Leaf)])),
            ]),
        ),
    ])
}

/// An exposure id this runtime does not serve is not an error (Spring Boot has many more
/// endpoints), only a warning.
fn unserved_endpoint(key: &str, id: &str) {
    tracing::warn!(
        key,
        endpoint = id,
        served = %ENDPOINT_IDS.join(", "),
        "an exposed endpoint is not served by this runtime"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(args: &[&str]) -> Result<ManagementProperties, ConfigError> {
        let env = Environment::builder()
            .args(args.iter().map(|s| s.to_string()))
            .build()?;
        ManagementProperties::from_environment(&env)
    }

    #[test]
    fn defaults_are_spring_boot_s_except_details() {
        let m = props(&[]).expect("defaults");
        assert_eq!(m.admin_port(), None);
        assert_eq!(m.server.address, "127.0.0.1");
        assert_eq!(m.endpoints.web.base_path, "/actuator");
        assert!(m.exposes("health"));
        assert!(!m.exposes("bindings"));
        assert!(m.tracing.enabled);
        assert!((m.tracing.sampling.probability - 0.1).abs() < f64::EPSILON);
        assert!(m.health_shows_components() && m.health_shows_details());
    }

    #[test]
    fn exclude_wins_and_star_includes_all() {
        let m = props(&[
            "--management.endpoints.web.exposure.include=*",
            "--management.endpoints.web.exposure.exclude=prometheus",
        ])
        .expect("valid");
        assert!(m.exposes("bindings") && m.exposes("health") && !m.exposes("prometheus"));
    }

    #[test]
    fn port_minus_one_is_off_and_bad_values_name_the_key() {
        assert_eq!(
            props(&["--management.server.port=-1"])
                .expect("valid")
                .admin_port(),
            None
        );
        for (arg, key) in [
            ("--management.server.port=70000", "management.server.port"),
            (
                "--management.server.address=localhost:1",
                "management.server.address",
            ),
            (
                "--management.endpoints.web.base-path=actuator",
                "management.endpoints.web.base-path",
            ),
            (
                "--management.tracing.sampling.probability=1.5",
                "management.tracing.sampling.probability",
            ),
        ] {
            let e = props(&[arg]).expect_err(arg).to_string();
            assert!(e.contains(key), "{e}");
        }
        let e = props(&["--management.server.port=abc"]).expect_err("not a number");
        assert!(e.to_string().contains("management.server.port"), "{e}");
    }

    #[test]
    fn show_details_never_hides_components_unless_asked() {
        let m = props(&["--management.endpoint.health.show-details=never"]).expect("valid");
        assert!(!m.health_shows_components() && !m.health_shows_details());
        let m = props(&[
            "--management.endpoint.health.show-details=never",
            "--management.endpoint.health.show-components=always",
        ])
        .expect("valid");
        assert!(m.health_shows_components() && !m.health_shows_details());
    }

    #[test]
    fn environment_variables_map_to_the_dashed_keys() {
        let env = Environment::builder()
            .env_vars([
                ("MANAGEMENT_ENDPOINTS_WEB_BASE_PATH", "/admin"),
                ("MANAGEMENT_SERVER_PORT", "9000"),
                (
                    "MANAGEMENT_ENDPOINTS_WEB_EXPOSURE_INCLUDE",
                    "health,bindings",
                ),
            ])
            .build()
            .expect("env");
        let root = crate::stream::schema_root(&[]);
        let env = env.with_schema(&root).expect("schema");
        let m = ManagementProperties::from_environment(&env).expect("valid");
        assert_eq!(m.endpoints.web.base_path, "/admin");
        assert_eq!(m.admin_port(), Some(9000));
        assert!(m.exposes("bindings"));
    }

    #[test]
    fn other_management_keys_are_ignored() {
        let m = props(&[
            "--management.info.env.enabled=true",
            "--management.metrics.tags.app=x",
        ]);
        assert!(m.is_ok(), "{m:?}");
    }
}
