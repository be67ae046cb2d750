//! Keeps the property tables of `docs/rabbit-binder.md` equal to the property structs.
//! `UPDATE_DOCS=1 cargo test -p binder-rabbit --test docs` rewrites them.

use binder_rabbit::stream_config::{Properties, reference_markdown};
use binder_rabbit::{
    RabbitBinderProperties, RabbitConnectionProperties, RabbitConsumerProperties,
    RabbitProducerProperties,
};

const BEGIN: &str = "<!-- BEGIN GENERATED PROPERTIES -->\n";
const END: &str = "<!-- END GENERATED PROPERTIES -->";

fn generated() -> String {
    [
        reference_markdown(
            "Connection (Spring Boot)",
            "spring.rabbitmq",
            &RabbitConnectionProperties::descriptors(),
        ),
        reference_markdown(
            "Binder",
            "spring.cloud.stream.rabbit.binder",
            &RabbitBinderProperties::descriptors(),
        ),
        reference_markdown(
            "Consumer",
            "spring.cloud.stream.rabbit.bindings.<name>.consumer",
            &RabbitConsumerProperties::descriptors(),
        ),
        reference_markdown(
            "Producer",
            "spring.cloud.stream.rabbit.bindings.<name>.producer",
            &RabbitProducerProperties::descriptors(),
        ),
    ]
    .join("\n")
    .replace("\n## ", "\n### ")
    .replacen("## ", "### ", 1)
}

#[test]
fn property_tables_are_current() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/rabbit-binder.md");
    let doc = std::fs::read_to_string(path).expect("docs/rabbit-binder.md");
    let start = doc.find(BEGIN).expect("begin marker") + BEGIN.len();
    let end = doc.find(END).expect("end marker");
    let want = format!("{}\n", generated());
    if std::env::var_os("UPDATE_DOCS").is_some() {
        let updated = format!("{}{}{}", &doc[..start], want, &doc[end..]);
        std::fs::write(path, updated).expect("write docs");
        return;
    }
    assert!(
        doc[start..end] == want,
        "docs/rabbit-binder.md property tables are stale; run UPDATE_DOCS=1 cargo test -p binder-rabbit --test docs"
    );
}
