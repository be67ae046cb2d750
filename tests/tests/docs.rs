//! Tidy: the generated property reference in docs/properties.md matches the typed structs.
//!
//! Regenerate with `UPDATE_DOCS=1 cargo test -p stream-tests --test docs`.

use std::path::PathBuf;

use stream_config::{
    ManagementProperties, Properties, reference_markdown, stream_reference_markdown,
};
use stream_core::binder::AnyBinderFactory;
use stream_core::memory::{MEMORY_BINDER_TYPE, MemoryConsumerProperties};

fn expected() -> String {
    let mut out = String::from(
        "# Property reference\n\n\
         Generated from the typed property structs (`UPDATE_DOCS=1 cargo test -p stream-tests --test docs`);\n\
         do not edit by hand. Keys are shown in their canonical kebab-case form; camelCase,\n\
         snake_case and the environment-variable form are accepted too. Durations accept\n\
         milliseconds (`1500`) or units (`1500ms`, `5s`, `1m`, `PT5S`).\n\n\
         Functions: `spring.cloud.function.definition` — `;` separates functions, `|` composes them.\n\n",
    );
    out.push_str(&stream_reference_markdown());
    out.push('\n');
    out.push_str(&reference_markdown(
        "In-memory binder consumer properties",
        &format!("spring.cloud.stream.{MEMORY_BINDER_TYPE}.bindings.<name>.consumer"),
        &MemoryConsumerProperties::descriptors(),
    ));
    out.push('\n');
    out.push_str(&reference_markdown(
        "Management (admin endpoint and tracing; other management.* keys are accepted and ignored)",
        "management",
        &ManagementProperties::descriptors(),
    ));
    // The top-level roots the in-tree binders declare (validated and env-mapped like the rest).
    let factories = [
        AnyBinderFactory::new(binder_rabbit::RabbitBinderFactory::new()),
        AnyBinderFactory::new(binder_rocketmq::RocketMqBinderFactory::builder().build()),
    ];
    for factory in factories {
        for root in factory.extension_schema().roots() {
            out.push('\n');
            match root.moved_note() {
                Some(note) => out.push_str(&format!(
                    "## `{}.*` ({} binder): not keys\n\nEvery key below is an error naming the real key: {note}.\n",
                    root.prefix(),
                    factory.binder_type()
                )),
                None => out.push_str(&reference_markdown(
                    &format!(
                        "`{}.*` (declared by the {} binder; keys marked \"no effect\" are accepted and logged once)",
                        root.prefix(),
                        factory.binder_type()
                    ),
                    root.prefix(),
                    &root.descriptors(),
                )),
            }
        }
    }
    out
}

#[test]
fn property_reference_is_current() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/properties.md");
    let want = expected();
    if std::env::var_os("UPDATE_DOCS").is_some() {
        std::fs::write(&path, &want).expect("write docs/properties.md");
        return;
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "docs/properties.md is out of date; run `UPDATE_DOCS=1 cargo test -p stream-tests --test docs`"
    );
}
