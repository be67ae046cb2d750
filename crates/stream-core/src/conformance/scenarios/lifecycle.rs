//! The binding lifecycle: stop, pause, auto-startup, late binding, dead consumers, and what a
//! binder may refuse.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, mpsc};

use super::super::support::{binding_key, check, props, text, within};
use super::super::{Kit, TrialFailure, TrialResult};
use crate::binder::{BindingState, Capability};
use crate::message::Message;
use crate::{FunctionError, StreamApp};

fn group(kit: &Kit, dest: &str, g: &str) -> Vec<(String, String)> {
    vec![(binding_key("sink-in-0", "group"), kit.group(dest, g))]
}

async fn send_one(kit: &Kit, dest: &str, payload: &str) -> Result<StreamApp, TrialFailure> {
    let producer = kit.source(&[]).await?;
    producer
        .bridge()
        .send(dest, payload.to_owned())
        .await
        .map_err(|e| format!("send failed: {e}"))?;
    Ok(producer)
}

/// `stop` returns only after the delivery being processed finished and was settled; it is
/// not delivered again.
pub(super) async fn stop_settles_in_flight(kit: &Kit) -> TrialResult {
    let dest = kit.unique("stop");
    let started = Arc::new(Notify::new());
    let finished = Arc::new(AtomicBool::new(false));
    let (s, f) = (Arc::clone(&started), Arc::clone(&finished));
    let builder = kit
        .builder(&props(&[
            (&binding_key("slow-in-0", "destination"), &dest),
            (&binding_key("slow-in-0", "group"), &kit.group(&dest, "g")),
        ]))?
        .consumer("slow", move |_m: Message<Bytes>| {
            let (s, f) = (Arc::clone(&s), Arc::clone(&f));
            async move {
                s.notify_one();
                tokio::time::sleep(Duration::from_millis(800)).await;
                f.store(true, Ordering::SeqCst);
                Ok::<_, FunctionError>(())
            }
        });
    let app = kit.build(builder, "slow consumer").await?;
    let producer = send_one(kit, &dest, "in-flight").await?;
    within(
        kit.timeout,
        "waiting for processing to start",
        started.notified(),
    )
    .await?;
    let binding = app
        .consumer_bindings("slow-in-0")
        .into_iter()
        .next()
        .ok_or("no binding slow-in-0")?;
    binding
        .stop()
        .await
        .map_err(|e| format!("stop failed: {e}"))?;
    check(finished.load(Ordering::SeqCst), || {
        "stop returned while the delivery was still being processed (in-flight work aborted or not awaited)".to_owned()
    })?;
    check(binding.state() == BindingState::Stopped, || {
        format!("state after stop: {}", binding.state())
    })?;
    app.shutdown().await.map_err(|e| format!("shutdown: {e}"))?;
    let (next, mut rx) = kit.sink(&dest, &group(kit, &dest, "g")).await?;
    kit.quiet(&mut rx, "next member of the group after stop")
        .await?;
    Kit::shutdown(vec![next, producer]).await
}

/// A paused binding delivers nothing until resumed; then it delivers what waited.
pub(super) async fn pause_holds_until_resume(kit: &Kit) -> TrialResult {
    let dest = kit.unique("pause");
    let (app, mut rx) = kit.sink(&dest, &[]).await?;
    let binding = app
        .consumer_bindings("sink-in-0")
        .into_iter()
        .next()
        .ok_or("no binding sink-in-0")?;
    binding
        .pause()
        .await
        .map_err(|e| format!("pause failed: {e}"))?;
    check(binding.state() == BindingState::Paused, || {
        format!("state after pause: {}", binding.state())
    })?;
    let producer = send_one(kit, &dest, "held").await?;
    kit.quiet(&mut rx, "paused binding").await?;
    binding
        .resume()
        .await
        .map_err(|e| format!("resume failed: {e}"))?;
    let m = kit.next(&mut rx, "resumed binding").await?;
    check(text(&m) == "held", || format!("payload {:?}", text(&m)))?;
    Kit::shutdown(vec![app, producer]).await
}

/// `auto-startup: false` provisions but delivers nothing until the binding is started.
pub(super) async fn auto_startup_false(kit: &Kit) -> TrialResult {
    let dest = kit.unique("auto-startup");
    let mut extra = group(kit, &dest, "g");
    extra.push((
        binding_key("sink-in-0", "consumer.auto-startup"),
        "false".into(),
    ));
    let (app, mut rx) = kit.sink(&dest, &extra).await?;
    let binding = app
        .consumer_bindings("sink-in-0")
        .into_iter()
        .next()
        .ok_or("no binding sink-in-0")?;
    check(binding.state() == BindingState::Stopped, || {
        format!(
            "auto-startup false: state {} after bind, expected stopped",
            binding.state()
        )
    })?;
    let producer = send_one(kit, &dest, "waiting").await?;
    kit.quiet(&mut rx, "binding with auto-startup false")
        .await?;
    binding
        .start()
        .await
        .map_err(|e| format!("start failed: {e}"))?;
    let m = kit.next(&mut rx, "started binding").await?;
    check(text(&m) == "waiting", || format!("payload {:?}", text(&m)))?;
    Kit::shutdown(vec![app, producer]).await
}

/// Acknowledged messages are not delivered again to the next member of the group.
pub(super) async fn no_redelivery_after_ack(kit: &Kit) -> TrialResult {
    let dest = kit.unique("acked");
    let (first, mut rx) = kit.sink(&dest, &group(kit, &dest, "g")).await?;
    let producer = kit.source(&[]).await?;
    for i in 0..5 {
        producer
            .bridge()
            .send(&dest, format!("once-{i}"))
            .await
            .map_err(|e| format!("send failed: {e}"))?;
    }
    for _ in 0..5 {
        kit.next(&mut rx, "first member").await?;
    }
    first
        .shutdown()
        .await
        .map_err(|e| format!("shutdown: {e}"))?;
    let (second, mut rx2) = kit.sink(&dest, &group(kit, &dest, "g")).await?;
    tokio::time::sleep(kit.quiet).await;
    kit.quiet(
        &mut rx2,
        "second member after the first acknowledged everything",
    )
    .await?;
    Kit::shutdown(vec![second, producer]).await
}

/// An application started while the broker is unreachable does not fail; its bindings say
/// they are not running and bind once the broker is back.
pub(super) async fn late_binding(kit: &Kit) -> TrialResult {
    let (kit, control, _exclusive) = kit.under_control().await?;
    let kit = &kit;
    let dest = kit.unique("late");
    control.cut().await;
    let mut extra = group(kit, &dest, "g");
    extra.push((
        "spring.cloud.stream.binding-retry-interval".into(),
        "1s".into(),
    ));
    let built = kit.sink(&dest, &extra).await;
    let (app, mut rx) = match built {
        Ok(v) => v,
        Err(e) => {
            control.restore().await;
            return Err(TrialFailure(format!(
                "with the broker unreachable the application must still start (late binding): {e}"
            )));
        }
    };
    let binding = app
        .consumer_bindings("sink-in-0")
        .into_iter()
        .next()
        .ok_or("no binding sink-in-0")?;
    let state = binding.state();
    let not_running = state != BindingState::Running;
    control.restore().await;
    check(not_running, || {
        format!("with the broker unreachable the binding reported {state}, expected not running")
    })?;
    kit.wait_state(binding, "after the broker came back", |s| {
        s == BindingState::Running
    })
    .await?;
    let producer = send_one(kit, &dest, "late").await?;
    let m = kit.next(&mut rx, "late-bound consumer").await?;
    check(text(&m) == "late", || format!("payload {:?}", text(&m)))?;
    Kit::shutdown(vec![app, producer]).await
}

/// A consumer cut off from the broker is not reported running; it recovers by itself.
pub(super) async fn dead_consumer_is_reported(kit: &Kit) -> TrialResult {
    let (kit, control, _exclusive) = kit.under_control().await?;
    let kit = &kit;
    let dest = kit.unique("dead");
    let (app, mut rx) = kit.sink(&dest, &group(kit, &dest, "g")).await?;
    let binding = app
        .consumer_bindings("sink-in-0")
        .into_iter()
        .next()
        .ok_or("no binding sink-in-0")?;
    kit.wait_state(binding, "before the cut", |s| s == BindingState::Running)
        .await?;
    control.cut().await;
    let reported = kit
        .wait_state(binding, "with the broker cut off", |s| {
            s != BindingState::Running
        })
        .await;
    control.restore().await;
    reported?;
    kit.wait_state(binding, "after the broker came back", |s| {
        s == BindingState::Running
    })
    .await?;
    let producer = send_one(kit, &dest, "alive").await?;
    let m = kit.next(&mut rx, "recovered consumer").await?;
    check(text(&m) == "alive", || format!("payload {:?}", text(&m)))?;
    Kit::shutdown(vec![app, producer]).await
}

/// A binding needing a capability the binder does not declare is refused at bind time with an
/// error naming the feature; one the binder declares binds.
pub(super) async fn capabilities_match_behaviour(kit: &Kit) -> TrialResult {
    let caps = kit.capabilities().await?;
    let dest = kit.unique("capabilities");
    let g = kit.group(&dest, "g");
    let consumer = |extra: &[(&str, &str)]| {
        let mut v = props(&[
            (&binding_key("sink-in-0", "destination"), &dest),
            (&binding_key("sink-in-0", "group"), &g),
        ]);
        v.extend(
            extra
                .iter()
                .map(|(k, val)| (binding_key("sink-in-0", k), (*val).to_owned())),
        );
        v
    };
    // (capability, properties, whether a consumer function is registered)
    type Case = (Capability, Vec<(String, String)>, bool);
    let cases: Vec<Case> = vec![
        (
            Capability::ManualAck,
            consumer(&[("consumer.acknowledge-mode", "MANUAL")]),
            true,
        ),
        (
            Capability::NoAck,
            consumer(&[("consumer.acknowledge-mode", "NONE")]),
            true,
        ),
        (
            Capability::Partitioning,
            consumer(&[("consumer.partitioned", "true")]),
            true,
        ),
        (Capability::ConsumerGroups, consumer(&[]), true),
        (
            Capability::PollableConsumer,
            props(&[
                ("spring.cloud.stream.pollable-source", "cap"),
                (&binding_key("cap-in-0", "destination"), &dest),
                (&binding_key("cap-in-0", "group"), &g),
            ]),
            false,
        ),
        (
            Capability::RequiredGroups,
            props(&[
                (&binding_key("out", "destination"), &dest),
                (&binding_key("out", "producer.required-groups"), "r"),
                ("spring.cloud.stream.output-bindings", "out"),
            ]),
            false,
        ),
    ];
    let (tx, _rx) = mpsc::unbounded_channel::<()>();
    for (capability, pairs, with_consumer) in cases {
        let tx = tx.clone();
        let mut builder = kit.builder(&pairs)?;
        if with_consumer {
            builder = builder.consumer("sink", move |_m: Message<Bytes>| {
                let _ = tx.send(());
                async { Ok::<_, FunctionError>(()) }
            });
        }
        let result = builder.build().await;
        match (caps.supports(capability), result) {
            (true, Ok(app)) => app.shutdown().await.map_err(|e| format!("shutdown: {e}"))?,
            (true, Err(e)) => {
                return Err(TrialFailure(format!(
                    "the binder declares {capability} but a binding needing it failed: {e}"
                )));
            }
            (false, Ok(app)) => {
                let _ = app.shutdown().await;
                return Err(TrialFailure(format!(
                    "the binder does not declare {capability} but a binding needing it was accepted"
                )));
            }
            (false, Err(e)) => {
                let text = e.to_string();
                check(text.contains(&capability.to_string()), || {
                    format!("refusing {capability}: the error does not name it: {text}")
                })?;
            }
        }
    }
    // The batch case needs a batch function.
    let batch_pairs = props(&[
        (&binding_key("batch-in-0", "destination"), &dest),
        (&binding_key("batch-in-0", "group"), &g),
        (&binding_key("batch-in-0", "consumer.batch-mode"), "true"),
    ]);
    let result = kit
        .builder(&batch_pairs)?
        .batch_consumer("batch", |_b: Vec<Message<Bytes>>| async {
            Ok::<_, FunctionError>(())
        })
        .build()
        .await;
    match (caps.supports(Capability::BatchConsumer), result) {
        (true, Ok(app)) => app.shutdown().await.map_err(|e| format!("shutdown: {e}"))?,
        (true, Err(e)) => {
            return Err(TrialFailure(format!(
                "the binder declares batch-mode consumers but batch-mode failed: {e}"
            )));
        }
        (false, Ok(app)) => {
            let _ = app.shutdown().await;
            return Err(TrialFailure(
                "the binder does not declare batch-mode consumers but batch-mode was accepted"
                    .into(),
            ));
        }
        (false, Err(e)) => {
            let text = e.to_string();
            check(
                text.contains(&Capability::BatchConsumer.to_string()),
                || format!("refusing batch-mode: the error does not name it: {text}"),
            )?;
        }
    }
    Ok(())
}
