//! Property reference tables generated from the descriptors, so docs follow the code.

use crate::descriptor::{PropertyDescriptor, PropertyKind};
use crate::field::Properties;
use crate::key;
use crate::stream::{BindingProperties, PollerProperties, StreamProperties, no_effect_keys};

/// Renders a Markdown table (key, type, default, description) of `descriptors` under `prefix`,
/// nested properties flattened.
///
/// ```
/// use stream_config::{ConsumerProperties, Properties, reference_markdown};
/// let md = reference_markdown("Consumer", "spring.cloud.stream.bindings.<name>.consumer", &ConsumerProperties::descriptors());
/// assert!(md.contains("| `spring.cloud.stream.bindings.<name>.consumer.max-attempts` | an integer (u32) | `3` |"));
/// ```
pub fn reference_markdown(title: &str, prefix: &str, descriptors: &[PropertyDescriptor]) -> String {
    let mut out =
        format!("## {title}\n\n| Key | Type | Default | Description |\n|---|---|---|---|\n");
    rows(&mut out, prefix, descriptors);
    out
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn rows(out: &mut String, prefix: &str, descriptors: &[PropertyDescriptor]) {
    for d in descriptors {
        let k = key::join(prefix, &d.name);
        match d.kind {
            PropertyKind::Nested(f) => rows(out, &k, &f()),
            kind => {
                let shown = if matches!(kind, PropertyKind::Map) {
                    format!("{k}.<key>")
                } else if matches!(kind, PropertyKind::NoEffect) {
                    format!("{k}[.*]")
                } else {
                    k
                };
                let default = if d.default.is_empty() {
                    String::new()
                } else {
                    format!("`{}`", cell(&d.default))
                };
                out.push_str(&format!(
                    "| `{}` | {} | {} | {} |\n",
                    cell(&shown),
                    cell(&d.type_name),
                    default,
                    cell(&d.description)
                ));
            }
        }
    }
}

/// The reference of Spring Cloud Stream's common properties (global, binding, consumer, producer).
pub fn stream_reference_markdown() -> String {
    let mut out = reference_markdown(
        "Global properties",
        "spring.cloud.stream",
        &StreamProperties::descriptors(),
    );
    out.push('\n');
    out.push_str(&reference_markdown(
        "Binding properties (also under `spring.cloud.stream.default`)",
        "spring.cloud.stream.bindings.<name>",
        &BindingProperties::descriptors(),
    ));
    out.push('\n');
    out.push_str(&reference_markdown(
        "Global poller (the defaults of every `producer.poller.*`)",
        "spring.cloud.stream.poller",
        &PollerProperties::descriptors(),
    ));
    out.push_str("\n## Accepted for compatibility, without effect\n\nSet, each logs one warning at startup.\n\n| Key | Why |\n|---|---|\n");
    for (key, why) in no_effect_keys() {
        out.push_str(&format!("| `{key}` | {} |\n", cell(why)));
    }
    out
}
