//! Failures: retries, dead letters, requeues, acknowledge modes, batches, polled consumers.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::super::support::{binding_key, check, props, text};
use super::super::{Kit, TrialFailure, TrialResult};
use crate::message::{HeaderValue, Message, names};
use crate::{FunctionError, StreamApp};

/// A consumer app `fail` in group `g` on `dest` running `f`, reporting what it saw.
async fn consumer_with<F, Fut>(
    kit: &Kit,
    dest: &str,
    extra: &[(&str, &str)],
    f: F,
) -> Result<StreamApp, TrialFailure>
where
    F: Fn(Message<Bytes>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), FunctionError>> + Send + 'static,
{
    let mut pairs = props(&[
        (&binding_key("fail-in-0", "destination"), dest),
        (&binding_key("fail-in-0", "group"), &kit.group(dest, "g")),
    ]);
    pairs.extend(
        extra
            .iter()
            .map(|(k, v)| (binding_key("fail-in-0", k), (*v).to_owned())),
    );
    let builder = kit.builder(&pairs)?.consumer("fail", f);
    kit.build(builder, "consumer application").await
}

async fn send(kit: &Kit, dest: &str, payloads: &[&str]) -> Result<StreamApp, TrialFailure> {
    let producer = kit.source(&[]).await?;
    for p in payloads {
        producer
            .bridge()
            .send(dest, (*p).to_owned())
            .await
            .map_err(|e| format!("send failed: {e}"))?;
    }
    Ok(producer)
}

fn attempt(m: &Message<Bytes>) -> i64 {
    m.headers()
        .get(names::DELIVERY_ATTEMPT)
        .and_then(HeaderValue::as_i64)
        .unwrap_or(-1)
}

/// Attempts count up in `deliveryAttempt` to `max-attempts`; after that the message is
/// recovered by the binder, not delivered again.
pub(super) async fn retry_attempts_then_recovery(kit: &Kit) -> TrialResult {
    let dest = kit.unique("retry");
    let (tx, mut rx) = mpsc::unbounded_channel::<Message<Bytes>>();
    let consumer = consumer_with(
        kit,
        &dest,
        &[("consumer.back-off-initial-interval", "10ms")],
        move |m| {
            let _ = tx.send(m);
            async { Err(FunctionError::msg("conformance failure")) }
        },
    )
    .await?;
    let producer = send(kit, &dest, &["doomed"]).await?;
    let mut attempts = Vec::new();
    for _ in 0..3 {
        attempts.push(attempt(&kit.next(&mut rx, "failing consumer").await?));
    }
    check(attempts == [1, 2, 3], || {
        format!("deliveryAttempt headers {attempts:?}, expected [1, 2, 3]")
    })?;
    kit.quiet(&mut rx, "after the last attempt").await?;
    Kit::shutdown(vec![consumer, producer]).await
}

/// Retries wait the back-off; the exhausted message reaches the dead-letter destination with
/// `x-exception-message` and `x-exception-stacktrace`.
pub(super) async fn retry_back_off_then_dead_letter(kit: &Kit) -> TrialResult {
    let dest = kit.unique("dead-letter");
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Message<Bytes>)>();
    let consumer = consumer_with(
        kit,
        &dest,
        &[
            ("consumer.back-off-initial-interval", "100ms"),
            ("consumer.back-off-multiplier", "2"),
        ],
        move |m| {
            let payload = text(&m);
            let _ = tx.send((Instant::now(), m));
            async move {
                Err(
                    FunctionError::msg(format!("conformance failure: {payload}"))
                        .with_kind("validation"),
                )
            }
        },
    )
    .await?;
    let (reader, mut dlq) = kit
        .dead_letter_reader(&dest, &kit.group(&dest, "g"))
        .await?;
    let producer = send(kit, &dest, &["doomed"]).await?;
    let mut times = Vec::new();
    for _ in 0..3 {
        let got = tokio::time::timeout(kit.timeout, rx.recv())
            .await
            .map_err(|_| format!("saw {} of 3 attempts", times.len()))?
            .ok_or("consumer stopped")?;
        times.push(got.0);
    }
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    check(
        gaps[0] >= Duration::from_millis(90) && gaps[1] >= Duration::from_millis(190),
        || format!("gaps between attempts {gaps:?}, expected at least 100 ms then 200 ms"),
    )?;
    let dead = kit.next(&mut dlq, "dead-letter destination").await?;
    check(dead.payload().as_ref() == b"doomed", || {
        format!("dead letter payload {:?}", text(&dead))
    })?;
    let message = dead
        .headers()
        .get(names::EXCEPTION_MESSAGE)
        .map(ToString::to_string);
    check(
        message.as_deref() == Some("conformance failure: doomed"),
        || format!("x-exception-message {message:?}, expected \"conformance failure: doomed\""),
    )?;
    let trace = dead
        .headers()
        .get(names::EXCEPTION_STACKTRACE)
        .map(ToString::to_string)
        .unwrap_or_default();
    check(trace.contains("conformance failure: doomed"), || {
        format!("x-exception-stacktrace {trace:?} does not name the failure")
    })?;
    kit.quiet(&mut dlq, "dead-letter destination").await?;
    let redelivered = tokio::time::timeout(kit.quiet, rx.recv()).await;
    check(!matches!(redelivered, Ok(Some(_))), || {
        "the dead-lettered message was delivered again".to_owned()
    })?;
    Kit::shutdown(vec![consumer, reader, producer]).await
}

/// A message rejected without requeue is not retried and ends in the dead-letter destination.
pub(super) async fn reject_without_requeue_dead_letters(kit: &Kit) -> TrialResult {
    let dest = kit.unique("reject");
    let seen = Arc::new(AtomicU32::new(0));
    let s = Arc::clone(&seen);
    let consumer = consumer_with(kit, &dest, &[], move |_m| {
        s.fetch_add(1, Ordering::SeqCst);
        async {
            Err(FunctionError::reject_and_dont_requeue(
                "rejected by the function",
            ))
        }
    })
    .await?;
    let (reader, mut dlq) = kit
        .dead_letter_reader(&dest, &kit.group(&dest, "g"))
        .await?;
    let producer = send(kit, &dest, &["unwanted"]).await?;
    let dead = kit.next(&mut dlq, "dead-letter destination").await?;
    check(dead.payload().as_ref() == b"unwanted", || {
        format!("dead letter payload {:?}", text(&dead))
    })?;
    kit.quiet(&mut dlq, "dead-letter destination").await?;
    let n = seen.load(Ordering::SeqCst);
    check(n == 1, || {
        format!("the rejected message was processed {n} times, expected once")
    })?;
    Kit::shutdown(vec![consumer, reader, producer]).await
}

/// A message the function asks to requeue is delivered again.
pub(super) async fn requeue_returns_the_message(kit: &Kit) -> TrialResult {
    let dest = kit.unique("requeue");
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let calls = Arc::new(AtomicU32::new(0));
    let consumer = consumer_with(kit, &dest, &[], move |m| {
        let first = calls.fetch_add(1, Ordering::SeqCst) == 0;
        let _ = tx.send(text(&m));
        async move {
            if first {
                Err(FunctionError::requeue("not yet"))
            } else {
                Ok(())
            }
        }
    })
    .await?;
    let producer = send(kit, &dest, &["again"]).await?;
    for what in ["first delivery", "delivery after the requeue"] {
        let got = tokio::time::timeout(kit.timeout, rx.recv())
            .await
            .map_err(|_| format!("{what}: nothing within {:?}", kit.timeout))?
            .ok_or("consumer stopped")?;
        check(got == "again", || format!("{what}: payload {got:?}"))?;
    }
    let extra = tokio::time::timeout(kit.quiet, rx.recv()).await;
    check(!matches!(extra, Ok(Some(_))), || {
        "delivered a third time after success".to_owned()
    })?;
    Kit::shutdown(vec![consumer, producer]).await
}

/// MANUAL: the function's ack removes the message; its reject with requeue returns it.
pub(super) async fn manual_acknowledgment(kit: &Kit) -> TrialResult {
    let dest = kit.unique("manual");
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let rejected = Arc::new(AtomicU32::new(0));
    let consumer = consumer_with(
        kit,
        &dest,
        &[("consumer.acknowledge-mode", "MANUAL")],
        move |m| {
            let payload = text(&m);
            let _ = tx.send(payload.clone());
            let ack = m.acknowledgment().cloned();
            let reject = payload == "requeue-me" && rejected.fetch_add(1, Ordering::SeqCst) == 0;
            async move {
                let ack = ack.ok_or_else(|| {
                    FunctionError::msg("MANUAL mode: the message has no acknowledgment handle")
                })?;
                if reject {
                    ack.reject(true).await.map_err(FunctionError::new)
                } else {
                    ack.ack().await.map_err(FunctionError::new)
                }
            }
        },
    )
    .await?;
    let producer = send(kit, &dest, &["ack-me", "requeue-me"]).await?;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(
            tokio::time::timeout(kit.timeout, rx.recv())
                .await
                .map_err(|_| {
                    format!(
                        "MANUAL consumer saw {got:?}, expected ack-me once and requeue-me twice"
                    )
                })?
                .ok_or("consumer stopped")?,
        );
    }
    got.sort();
    check(got == ["ack-me", "requeue-me", "requeue-me"], || {
        format!("MANUAL consumer saw {got:?}, expected ack-me once and requeue-me twice")
    })?;
    let extra = tokio::time::timeout(kit.quiet, rx.recv()).await;
    check(!matches!(extra, Ok(Some(_))), || {
        format!("a manually acknowledged message came back: {extra:?}")
    })?;
    Kit::shutdown(vec![consumer, producer]).await
}

/// NONE: the broker settled on delivery, so a failed message is not delivered again.
pub(super) async fn acknowledge_mode_none(kit: &Kit) -> TrialResult {
    let dest = kit.unique("none");
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let consumer = consumer_with(
        kit,
        &dest,
        &[
            ("consumer.acknowledge-mode", "NONE"),
            ("consumer.max-attempts", "1"),
        ],
        move |m| {
            let _ = tx.send(text(&m));
            async {
                Err(FunctionError::msg(
                    "fails once, on a broker-acknowledged delivery",
                ))
            }
        },
    )
    .await?;
    let producer = send(kit, &dest, &["auto-acked"]).await?;
    let got = tokio::time::timeout(kit.timeout, rx.recv())
        .await
        .map_err(|_| "NONE consumer received nothing")?;
    check(got.as_deref() == Some("auto-acked"), || {
        format!("received {got:?}")
    })?;
    let again = tokio::time::timeout(kit.quiet, rx.recv()).await;
    check(!matches!(again, Ok(Some(_))), || {
        "acknowledge-mode NONE: a failed message was delivered again".to_owned()
    })?;
    Kit::shutdown(vec![consumer, producer]).await
}

/// `batch-mode`: a batch with a failing message fails whole; its messages are dead-lettered
/// one by one; every message is either processed or dead-lettered, never both, never lost.
pub(super) async fn batch_with_one_failing_message(kit: &Kit) -> TrialResult {
    let dest = kit.unique("batch");
    let (tx, mut ok_rx) = mpsc::unbounded_channel::<String>();
    let builder = kit
        .builder(&props(&[
            (&binding_key("batch-in-0", "destination"), &dest),
            (&binding_key("batch-in-0", "group"), &kit.group(&dest, "g")),
            (&binding_key("batch-in-0", "consumer.batch-mode"), "true"),
            (&binding_key("batch-in-0", "consumer.max-attempts"), "2"),
            (
                &binding_key("batch-in-0", "consumer.back-off-initial-interval"),
                "10ms",
            ),
        ]))?
        .batch_consumer("batch", move |batch: Vec<Message<Bytes>>| {
            let payloads: Vec<String> = batch.iter().map(text).collect();
            let tx = tx.clone();
            async move {
                if payloads.iter().any(|p| p == "bad") {
                    return Err(FunctionError::msg("the batch holds a bad message"));
                }
                for p in payloads {
                    let _ = tx.send(p);
                }
                Ok::<_, FunctionError>(())
            }
        });
    let consumer = kit.build(builder, "batch consumer").await?;
    let (reader, mut dlq) = kit
        .dead_letter_reader(&dest, &kit.group(&dest, "g"))
        .await?;
    let producer = send(kit, &dest, &["a", "bad", "b"]).await?;
    let mut processed = BTreeSet::new();
    let mut dead = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + kit.timeout;
    while processed.len() + dead.len() < 3 || !dead.contains("bad") {
        tokio::select! {
            Some(p) = ok_rx.recv() => { check(processed.insert(p.clone()), || format!("`{p}` processed twice"))?; }
            Some(m) = dlq.recv() => {
                let p = text(&m);
                check(dead.insert(p.clone()), || format!("`{p}` dead-lettered twice"))?;
            }
            _ = tokio::time::sleep_until(deadline) => {
                return Err(TrialFailure(format!("processed {processed:?}, dead-lettered {dead:?}; expected `bad` dead-lettered and a, b each processed or dead-lettered")));
            }
        }
    }
    check(processed.is_disjoint(&dead), || {
        format!("processed {processed:?} and dead-lettered {dead:?} overlap")
    })?;
    kit.quiet(&mut dlq, "dead-letter destination").await?;
    Kit::shutdown(vec![consumer, reader, producer]).await
}

/// A pollable consumer: accepted messages are consumed, a requeued one comes back, a
/// rejected one is gone; then the source is empty.
pub(super) async fn pollable_accept_reject_requeue(kit: &Kit) -> TrialResult {
    let dest = kit.unique("pollable");
    let app = kit
        .source(&props(&[
            ("spring.cloud.stream.pollable-source", "poll"),
            (&binding_key("poll-in-0", "destination"), &dest),
            (&binding_key("poll-in-0", "group"), &kit.group(&dest, "g")),
            (&binding_key("poll-in-0", "consumer.max-attempts"), "1"),
        ]))
        .await?;
    let source = app
        .pollable("poll")
        .ok_or("pollable source `poll` not bound")?;
    let producer = send(kit, &dest, &["one", "two", "three"]).await?;
    let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let deadline = tokio::time::Instant::now() + kit.timeout * 2;
    loop {
        let s = Arc::clone(&seen);
        let got = source
            .poll(move |m: Message<Bytes>| {
                let s = Arc::clone(&s);
                async move {
                    let p = text(&m);
                    let times = {
                        let mut seen = s.lock().map_err(|_| FunctionError::msg("poisoned"))?;
                        seen.push(p.clone());
                        seen.iter().filter(|x| **x == p).count()
                    };
                    match p.as_str() {
                        "two" if times == 1 => Err(FunctionError::requeue("poll me again")),
                        "three" => Err(FunctionError::reject_and_dont_requeue("not this one")),
                        _ => Ok(()),
                    }
                }
            })
            .await
            .map_err(|e| format!("poll failed: {e}"))?;
        let done = {
            let seen = seen.lock().map_err(|_| "poisoned")?;
            seen.iter().filter(|p| *p == "two").count() == 2
                && seen.contains(&"one".to_owned())
                && seen.contains(&"three".to_owned())
        };
        if done {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(TrialFailure(format!(
                "polled {:?}; expected one, two (twice), three",
                seen.lock().map(|s| s.clone()).unwrap_or_default()
            )));
        }
        if !got {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let quiet_until = tokio::time::Instant::now() + kit.quiet;
    while tokio::time::Instant::now() < quiet_until {
        let leftover = source
            .poll(|m: Message<Bytes>| async move {
                Err(FunctionError::msg(format!("unexpected {:?}", text(&m))))
            })
            .await
            .map_err(|e| format!("poll failed: {e}"))?;
        check(!leftover, || {
            "the source still held a message after accept/requeue/reject".to_owned()
        })?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Kit::shutdown(vec![app, producer]).await
}
