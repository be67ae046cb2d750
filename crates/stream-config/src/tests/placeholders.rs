use super::err_text;
use crate::Environment;

#[test]
fn simple_default_env_and_nested_placeholders() {
    let env = Environment::builder()
        .properties_str(
            "application.properties",
            "app.name=orders\nsimple=${app.name}-queue\nrelaxed=${App.Name}\ndefaulted=${missing:fallback}\nempty-default=[${missing:}]\nenv=${HOST_NAME}\nenv-default=${NOPE_NOPE:${app.name}}\nnested=${a:${b:c}}\nchain=${simple}!\nescaped=\\\\${app.name}\n",
        )
        .env_vars([("HOST_NAME", "box1")])
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(env.get("simple"), Some("orders-queue"));
    assert_eq!(env.get("relaxed"), Some("orders"));
    assert_eq!(env.get("defaulted"), Some("fallback"));
    assert_eq!(env.get("empty-default"), Some("[]"));
    assert_eq!(env.get("env"), Some("box1"));
    assert_eq!(env.get("env-default"), Some("orders"));
    assert_eq!(env.get("nested"), Some("c"));
    assert_eq!(env.get("chain"), Some("orders-queue!"));
    assert_eq!(env.get("escaped"), Some("${app.name}"));
}

#[test]
fn placeholder_cycle_names_the_chain() {
    let err = err_text(
        Environment::builder()
            .properties_str("application.properties", "a=${b}\nb=x${c}\nc=${a}\n")
            .build(),
    );
    assert!(err.contains("a -> b -> c -> a"), "{err}");
    assert!(err.contains("application.properties:1"), "{err}");
}

#[test]
fn unresolved_placeholder_names_key_and_origin() {
    let err = err_text(
        Environment::builder()
            .yaml_str("application.yml", "x:\n  y: ${nowhere}\n")
            .build(),
    );
    assert!(err.contains("`${nowhere}`"), "{err}");
    assert!(err.contains("`x.y` (application.yml:2)"), "{err}");
}
