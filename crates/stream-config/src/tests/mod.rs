//! Crate tests: sources and precedence, relaxed binding, placeholders, validation, layering,
//! secrets, and repository hygiene. No external resources: temp dirs and in-memory sources only.

mod layering;
mod placeholders;
mod precedence;
mod relaxed;
mod roots;
mod secrets;
mod tidy;
mod validation;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fresh, unique temporary directory, removed on drop.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let dir = std::env::temp_dir().join(format!(
            "stream-config-test-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(dir.join("config")).expect("create temp dir");
        TempDir(dir)
    }

    pub(crate) fn write(&self, rel: &str, text: &str) {
        std::fs::write(self.0.join(rel), text).expect("write temp file");
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) fn err_text<T: std::fmt::Debug>(r: Result<T, crate::ConfigError>) -> String {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.to_string(),
    }
}
