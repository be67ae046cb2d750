//! The RabbitMQ binder passes the shared binder conformance suite against the real broker.

mod common;

use std::sync::Arc;

use binder_rabbit::RabbitBinderFactory;
use binder_rabbit::stream_core::conformance::Suite;

#[tokio::test]
#[ignore = "needs RabbitMQ at 127.0.0.1:5672; run with cargo xtask itest"]
async fn rabbit_binder_passes_the_conformance_suite() {
    common::init_tracing();
    let suite = Suite::new(Arc::new(RabbitBinderFactory::new()))
        .with_property("spring.rabbitmq.host", common::host())
        .with_property("spring.rabbitmq.port", common::port().to_string());
    if let Err(failure) = suite.run_all().await {
        panic!("conformance failure: {failure}");
    }
}
