//! The merged, flattened property set ([`Environment`]) and how it is built from sources
//! ([`EnvironmentBuilder`]).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use figment::value::{Dict, Map, Tag, Value};
use figment::{Figment, Metadata, Profile, Provider};

use crate::error::ConfigError;
use crate::key::canonical_key;
use crate::key::map_key_from_raw;
use crate::origin::Origin;
use crate::property::Property;
use crate::schema::Node;
use crate::secret;
use crate::source::{self, Entry};

#[derive(Clone)]
enum Layer {
    Flat { name: String, entries: Vec<Entry> },
    Env(Vec<(String, String)>),
}

/// The merged configuration: every source flattened to canonical keys, merged by precedence
/// (figment is the merge engine), placeholders resolved. Cheap to clone. `Debug` redacts secrets.
///
/// ```
/// use stream_config::Environment;
///
/// let env = Environment::builder()
///     .yaml_str("application.yml", "spring:\n  cloud:\n    stream:\n      bindings:\n        input:\n          destination: orders\n")
///     .env_vars([("SPRING_CLOUD_STREAM_BINDINGS_INPUT_GROUP", "billing")])
///     .args(["--spring.cloud.stream.bindings.input.consumer.maxAttempts=5"])
///     .build()?;
/// assert_eq!(env.get("spring.cloud.stream.bindings.input.destination"), Some("orders"));
/// assert_eq!(env.get("spring.cloud.stream.bindings.INPUT.group"), Some("billing"));
/// let p = env.property("spring.cloud.stream.bindings.input.consumer.max-attempts").unwrap();
/// assert_eq!(p.value(), "5");
/// assert_eq!(p.origin().to_string(), "command-line argument --spring.cloud.stream.bindings.input.consumer.maxAttempts");
/// assert_eq!(env.child_names("spring.cloud.stream.bindings"), vec!["input"]);
/// # Ok::<(), stream_config::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct Environment {
    props: Arc<BTreeMap<String, Property>>,
    raw_env: Arc<BTreeMap<String, String>>,
    layers: Option<Arc<Vec<Layer>>>,
}

impl fmt::Debug for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Environment")
            .field("properties", &self.props)
            .field("environment_variables", &self.raw_env.len())
            .finish()
    }
}

impl Default for Environment {
    fn default() -> Self {
        Environment::empty()
    }
}

impl Environment {
    /// A builder with no sources.
    pub fn builder() -> EnvironmentBuilder {
        EnvironmentBuilder::default()
    }

    /// What a Spring Boot application sees: `application.{properties,yml,yaml}` in the working
    /// directory and `config/`, profile files for `spring.profiles.active`, the process environment
    /// and the command-line arguments.
    pub fn standard() -> Result<Environment, ConfigError> {
        Environment::builder()
            .standard_files()
            .system_env()
            .command_line_args()
            .build()
    }

    /// No properties.
    pub fn empty() -> Environment {
        Environment {
            props: Arc::default(),
            raw_env: Arc::default(),
            layers: None,
        }
    }

    /// The value of `key` (any relaxed form).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.property(key).map(Property::value)
    }

    /// The property at `key` (any relaxed form).
    pub fn property(&self, key: &str) -> Option<&Property> {
        self.props.get(&canonical_key(key))
    }

    /// The raw value of an environment variable (every variable is kept, for `${NAME}`).
    pub fn env_var(&self, name: &str) -> Option<&str> {
        self.raw_env.get(name).map(String::as_str)
    }

    /// Distinct canonical next segments below `prefix` (e.g. the binding names under
    /// `spring.cloud.stream.bindings`), sorted.
    pub fn child_names(&self, prefix: &str) -> Vec<String> {
        let p = canonical_key(prefix);
        let start = if p.is_empty() {
            String::new()
        } else {
            format!("{p}.")
        };
        let mut names: Vec<String> = self
            .properties_with_prefix(&start)
            .map(|(k, _)| {
                let rest = &k[start.len()..];
                rest.split(['.', '[']).next().unwrap_or(rest).to_owned()
            })
            .filter(|n| !n.is_empty())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// All canonical keys, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.props.keys().map(String::as_str)
    }

    /// All properties by canonical key, sorted.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Property)> {
        self.props.iter().map(|(k, p)| (k.as_str(), p))
    }

    /// Number of properties.
    pub fn len(&self) -> usize {
        self.props.len()
    }

    /// Whether there are no properties.
    pub fn is_empty(&self) -> bool {
        self.props.is_empty()
    }

    /// The properties below `prefix`, with keys relative to it.
    pub fn subset(&self, prefix: &str) -> Environment {
        let p = canonical_key(prefix);
        let start = format!("{p}.");
        let props = self
            .properties_with_prefix(&start)
            .map(|(k, prop)| {
                let mut prop = prop.clone();
                prop.raw_key = map_key_from_raw(&prop.raw_key, &p)
                    .unwrap_or_else(|| k[start.len()..].to_owned());
                (k[start.len()..].to_owned(), prop)
            })
            .collect();
        Environment {
            props: Arc::new(props),
            raw_env: self.raw_env.clone(),
            layers: None,
        }
    }

    /// `self` with `higher`'s properties on top (`higher` wins).
    pub fn overlay(&self, higher: &Environment) -> Environment {
        let offset = self.props.values().map(|p| p.rank + 1).max().unwrap_or(0);
        let mut props = (*self.props).clone();
        for (k, p) in higher.props.iter() {
            let mut p = p.clone();
            p.rank += offset;
            props.insert(k.clone(), p);
        }
        Environment {
            props: Arc::new(props),
            raw_env: self.raw_env.clone(),
            layers: None,
        }
    }

    /// Properties whose canonical key starts with `prefix` (sorted).
    pub(crate) fn properties_with_prefix<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a Property)> {
        self.props
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(move |(k, _)| k.starts_with(prefix))
            .map(|(k, p)| (k.as_str(), p))
    }

    /// Re-maps environment variables with a schema that knows more keys (registered binder
    /// extensions). Environments made by `subset`/`overlay` are returned as they are.
    pub(crate) fn with_schema(&self, root: &Node) -> Result<Environment, ConfigError> {
        match &self.layers {
            Some(layers) if layers.iter().any(|l| matches!(l, Layer::Env(_))) => {
                let props = assemble(layers, &self.raw_env, root)?;
                Ok(Environment {
                    props: Arc::new(props),
                    raw_env: self.raw_env.clone(),
                    layers: Some(layers.clone()),
                })
            }
            _ => Ok(self.clone()),
        }
    }
}

struct LayerProvider {
    index: usize,
    name: String,
    dict: Dict,
}

impl Provider for LayerProvider {
    fn metadata(&self) -> Metadata {
        Metadata::named(format!("{} {}", self.index, self.name))
    }
    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Map::from([(Profile::Default, self.dict.clone())]))
    }
}

/// Flattens the layers to canonical keys, merges them with figment (later layers win) and resolves
/// placeholders. A side table per layer keeps each key's raw form and origin; figment's value tags
/// say which layer won.
fn assemble(
    layers: &[Layer],
    raw_env: &BTreeMap<String, String>,
    root: &Node,
) -> Result<BTreeMap<String, Property>, ConfigError> {
    let mut side: Vec<BTreeMap<String, Entry>> = Vec::with_capacity(layers.len());
    let mut figment = Figment::new();
    for (index, layer) in layers.iter().enumerate() {
        let (name, entries) = match layer {
            Layer::Flat { name, entries } => (name.clone(), entries.clone()),
            Layer::Env(vars) => (
                "environment variables".to_owned(),
                source::env::map(vars, root),
            ),
        };
        let mut table = BTreeMap::new();
        let mut dict = Dict::new();
        for e in entries {
            let k = canonical_key(&e.raw_key);
            if k.is_empty() {
                continue;
            }
            dict.insert(k.clone(), Value::String(Tag::Default, e.value.clone()));
            table.insert(k, e);
        }
        side.push(table);
        figment = figment.merge(LayerProvider { index, name, dict });
    }
    let mut data = Provider::data(&figment).map_err(|e| ConfigError::Parse {
        origin: "merged configuration".to_owned(),
        message: e.to_string(),
    })?;
    let merged = data.remove(&Profile::Default).unwrap_or_default();
    let mut props = BTreeMap::new();
    for (k, v) in merged {
        let index = figment.get_metadata(v.tag()).and_then(|m| {
            m.name
                .split(' ')
                .next()
                .and_then(|i| i.parse::<usize>().ok())
        });
        let Some(entry) = index.and_then(|i| side.get(i)).and_then(|t| t.get(&k)) else {
            continue;
        };
        props.insert(
            k.clone(),
            Property {
                raw_key: entry.raw_key.clone(),
                value: entry.value.clone(),
                origin: entry.origin.clone(),
                sensitive: secret::is_sensitive_key(&k),
                rank: index.unwrap_or(0),
            },
        );
    }
    crate::placeholder::resolve_all(&mut props, raw_env)?;
    Ok(props)
}

#[derive(Clone)]
enum Pending {
    File(PathBuf),
    Yaml(String, String),
    Props(String, String),
    Map(String, Vec<(String, String)>),
}

/// Builds an [`Environment`]. Precedence, lowest first: [`defaults`](Self::defaults); the standard
/// files (`application.yaml`, `.yml`, `.properties` — properties win within a directory — in the
/// working directory, then in `config/`); profile files `application-<profile>.*` for each profile
/// of `spring.profiles.active` (later profiles win); explicit sources ([`file`](Self::file),
/// [`yaml_str`](Self::yaml_str), [`properties_str`](Self::properties_str), [`map`](Self::map)) in
/// call order; environment variables; command-line arguments.
///
/// ```
/// use stream_config::Environment;
/// let env = Environment::builder()
///     .defaults([("app.name", "demo"), ("app.size", "1")])
///     .properties_str("application.properties", "app.size=2\napp.url=${app.name}-${app.host:localhost}")
///     .build()?;
/// assert_eq!(env.get("app.size"), Some("2"));
/// assert_eq!(env.get("app.url"), Some("demo-localhost"));
/// # Ok::<(), stream_config::ConfigError>(())
/// ```
#[derive(Default, Clone)]
pub struct EnvironmentBuilder {
    working_dir: Option<PathBuf>,
    standard_files: bool,
    defaults: Vec<(String, String)>,
    explicit: Vec<Pending>,
    env_vars: Option<Vec<(String, String)>>,
    args: Option<Vec<String>>,
}

impl EnvironmentBuilder {
    /// The directory holding the standard files (default: the current directory).
    pub fn working_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.working_dir = Some(dir.into());
        self
    }

    /// Loads the standard files (`application.*`, `config/application.*`, profile files).
    pub fn standard_files(mut self) -> Self {
        self.standard_files = true;
        self
    }

    /// Adds a file (`.properties`, `.yml` or `.yaml`); it must exist.
    pub fn file(mut self, path: impl Into<PathBuf>) -> Self {
        self.explicit.push(Pending::File(path.into()));
        self
    }

    /// Adds YAML text; `name` is shown in origins (`name:line`).
    pub fn yaml_str(mut self, name: impl Into<String>, text: impl Into<String>) -> Self {
        self.explicit.push(Pending::Yaml(name.into(), text.into()));
        self
    }

    /// Adds `.properties` text; `name` is shown in origins (`name:line`).
    pub fn properties_str(mut self, name: impl Into<String>, text: impl Into<String>) -> Self {
        self.explicit.push(Pending::Props(name.into(), text.into()));
        self
    }

    /// Adds key/value pairs; origins show `<name>`.
    pub fn map<K, V>(
        mut self,
        name: impl Into<String>,
        entries: impl IntoIterator<Item = (K, V)>,
    ) -> Self
    where
        K: Into<String>,
        V: Into<String>,
    {
        let entries = entries
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        self.explicit.push(Pending::Map(name.into(), entries));
        self
    }

    /// Adds built-in defaults (lowest precedence).
    pub fn defaults<K, V>(mut self, entries: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: Into<String>,
        V: Into<String>,
    {
        self.defaults
            .extend(entries.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// Adds environment variables (for tests; see [`system_env`](Self::system_env)). Names under
    /// `SPRING_`, `SERVER_`, `LOGGING_`, `MANAGEMENT_` become properties; all are available to
    /// `${NAME}` placeholders.
    pub fn env_vars<K, V>(mut self, vars: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: Into<String>,
        V: Into<String>,
    {
        self.env_vars
            .get_or_insert_with(Vec::new)
            .extend(vars.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// Adds the process environment (variables that are not valid UTF-8 are skipped).
    pub fn system_env(self) -> Self {
        let vars: Vec<(String, String)> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        self.env_vars(vars)
    }

    /// Adds command-line arguments; only `--key=value` ones count.
    pub fn args<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.args
            .get_or_insert_with(Vec::new)
            .extend(args.into_iter().map(Into::into));
        self
    }

    /// Adds the process's command-line arguments (without the program name).
    pub fn command_line_args(self) -> Self {
        let args: Vec<String> = std::env::args_os()
            .skip(1)
            .filter_map(|a| a.into_string().ok())
            .collect();
        self.args(args)
    }

    /// Reads and merges every source, mapping environment variables through `root`.
    pub(crate) fn build_with_schema(self, root: &Node) -> Result<Environment, ConfigError> {
        let root = root.clone();
        let raw_env: BTreeMap<String, String> = self
            .env_vars
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        let wd = match &self.working_dir {
            Some(d) => d.clone(),
            None => std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
        };

        let mut low: Vec<Layer> = Vec::new();
        if !self.defaults.is_empty() {
            let entries = self
                .defaults
                .iter()
                .map(|(k, v)| Entry::new(k.clone(), v.clone(), Origin::Default))
                .collect();
            low.push(Layer::Flat {
                name: "defaults".to_owned(),
                entries,
            });
        }
        if self.standard_files {
            for dir in ["", "config"] {
                low.extend(standard_layers(&wd, dir, "application")?);
            }
        }
        let mut high: Vec<Layer> = Vec::new();
        for p in &self.explicit {
            high.push(load_pending(p)?);
        }
        if let Some(vars) = &self.env_vars {
            high.push(Layer::Env(vars.clone()));
        }
        if let Some(args) = &self.args {
            high.push(Layer::Flat {
                name: "command-line arguments".to_owned(),
                entries: source::args::parse(args),
            });
        }

        let mut layers = low.clone();
        if self.standard_files {
            let mut pre = low.clone();
            pre.extend(high.iter().cloned());
            let pre_props = assemble_without_placeholders(&pre, &root)?;
            let profiles: Vec<String> = pre_props
                .get("spring.profiles.active")
                .map(|v| {
                    v.split(',')
                        .map(|p| p.trim().to_owned())
                        .filter(|p| !p.is_empty())
                        .collect()
                })
                .unwrap_or_default();
            for profile in profiles {
                for dir in ["", "config"] {
                    layers.extend(standard_layers(
                        &wd,
                        dir,
                        &format!("application-{profile}"),
                    )?);
                }
            }
        }
        layers.extend(high);
        let props = assemble(&layers, &raw_env, &root)?;
        Ok(Environment {
            props: Arc::new(props),
            raw_env: Arc::new(raw_env),
            layers: Some(Arc::new(layers)),
        })
    }
}

fn assemble_without_placeholders(
    layers: &[Layer],
    root: &Node,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut out = BTreeMap::new();
    for layer in layers {
        let entries = match layer {
            Layer::Flat { entries, .. } => entries.clone(),
            Layer::Env(vars) => source::env::map(vars, root),
        };
        for e in entries {
            out.insert(canonical_key(&e.raw_key), e.value);
        }
    }
    Ok(out)
}

/// `<base>.yaml`, `<base>.yml`, `<base>.properties` in `wd/dir`, lowest precedence first.
fn standard_layers(wd: &Path, dir: &str, base: &str) -> Result<Vec<Layer>, ConfigError> {
    let mut out = Vec::new();
    for ext in ["yaml", "yml", "properties"] {
        let rel = if dir.is_empty() {
            format!("{base}.{ext}")
        } else {
            format!("{dir}/{base}.{ext}")
        };
        let path = wd.join(&rel);
        if path.is_file() {
            out.push(load_file(&path, &rel)?);
        }
    }
    Ok(out)
}

fn load_file(path: &Path, shown: &str) -> Result<Layer, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Io {
        path: path.to_owned(),
        cause,
    })?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let entries = match ext.as_str() {
        "yml" | "yaml" => source::yaml::parse(shown, &text)?,
        "properties" => source::properties::parse(shown, &text)?,
        _ => {
            return Err(ConfigError::Parse {
                origin: shown.to_owned(),
                message: "unsupported file type; use .properties, .yml or .yaml".to_owned(),
            });
        }
    };
    Ok(Layer::Flat {
        name: shown.to_owned(),
        entries,
    })
}

fn load_pending(p: &Pending) -> Result<Layer, ConfigError> {
    match p {
        Pending::File(path) => load_file(path, &path.display().to_string()),
        Pending::Yaml(name, text) => Ok(Layer::Flat {
            name: name.clone(),
            entries: source::yaml::parse(name, text)?,
        }),
        Pending::Props(name, text) => Ok(Layer::Flat {
            name: name.clone(),
            entries: source::properties::parse(name, text)?,
        }),
        Pending::Map(name, entries) => Ok(Layer::Flat {
            name: name.clone(),
            entries: entries
                .iter()
                .map(|(k, v)| Entry::new(k.clone(), v.clone(), Origin::Map(name.clone())))
                .collect(),
        }),
    }
}
