//! What every RocketMQ client the binder creates shares: its configuration from a binding's
//! common settings, the ACL hook and a process-unique instance name.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rocketmq_client_rust::{AclClientRPCHook, ClientConfig, SessionCredentials};
use rocketmq_transport::api::RPCHook;
use stream_core::BinderError;

use crate::config::{AccessChannel, ResolvedCommon};

static INSTANCE_SEQ: AtomicU64 = AtomicU64::new(0);

/// A client instance name unique in this process, so clients never share registrations.
pub(crate) fn instance_name(kind: &str, binding: &str) -> String {
    format!(
        "stream-rs-{kind}-{binding}-{}-{}",
        std::process::id(),
        INSTANCE_SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// The client configuration for a binding's common settings.
pub(crate) fn client_config(
    common: &ResolvedCommon,
    instance: &str,
) -> Result<ClientConfig, BinderError> {
    let mut b = ClientConfig::builder()
        .namesrv_addr(common.name_server.clone())
        .instance_name(instance.to_owned())
        .poll_name_server_interval(common.poll_name_server_interval)
        .heartbeat_broker_interval(common.heartbeat_broker_interval)
        .persist_consumer_offset_interval(common.persist_consumer_offset_interval)
        .enable_vip_channel(common.vip_channel_enabled)
        .enable_tls(common.use_tls)
        .enable_trace(common.enable_msg_trace)
        .trace_topic(common.trace_topic.clone());
    if let Some(ns) = &common.namespace {
        b = b.namespace(ns.clone());
    }
    if let Some(unit) = &common.unit_name {
        b = b.unit_name(unit.clone());
    }
    if common.access_channel == AccessChannel::Cloud {
        // The client does not export its AccessChannel type; its serde form is public.
        let cloud = serde_json::from_str("\"CLOUD\"").map_err(|e| {
            BinderError::invalid_property(
                "spring.cloud.stream.rocketmq.binder.access-channel",
                "the RocketMQ client does not accept CLOUD",
            )
            .with_source(e)
        })?;
        b = b.access_channel(cloud);
    }
    b.build().map_err(|e| {
        BinderError::invalid_property(
            "spring.cloud.stream.rocketmq.binder",
            "the RocketMQ client rejects the configuration",
        )
        .with_source(e)
    })
}

/// The ACL hook, when access and secret key are set.
pub(crate) fn rpc_hook(common: &ResolvedCommon) -> Option<Arc<dyn RPCHook>> {
    common.credentials.as_ref().map(|(ak, sk)| {
        let hook: Arc<dyn RPCHook> = Arc::new(AclClientRPCHook::new(
            SessionCredentials::with_keys(ak.clone(), sk.expose().to_owned()),
        ));
        hook
    })
}
