//! The in-memory binder passes the binder conformance suite.

use std::sync::Arc;

use stream_core::conformance::Suite;
use stream_core::memory::InMemoryBinderFactory;

#[tokio::test]
async fn in_memory_binder_passes_the_conformance_suite() {
    let suite = Suite::new(Arc::new(InMemoryBinderFactory::default()));
    if let Err(failure) = suite.run_all().await {
        panic!("conformance failure: {failure}");
    }
}
