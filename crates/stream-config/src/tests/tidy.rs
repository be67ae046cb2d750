//! Repository hygiene: stream-config names no broker outside tests.

#[test]
fn source_names_no_broker() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut stack = vec![src.clone()];
    let mut offenders = Vec::new();
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src").flatten() {
            let path = entry.path();
            if path.is_dir() {
                if path != src.join("tests") {
                    stack.push(path);
                }
                continue;
            }
            let text = std::fs::read_to_string(&path)
                .unwrap_or_default()
                .to_lowercase();
            // Unit tests at the end of a file are tests too.
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            for broker in ["rabbit", "rocketmq", "kafka"] {
                if code.contains(broker) {
                    offenders.push(format!("{} names {broker}", path.display()));
                }
            }
        }
    }
    assert!(offenders.is_empty(), "{offenders:?}");
}
