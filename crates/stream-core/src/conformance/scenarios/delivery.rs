//! Messages arrive where they should, as they were sent.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::super::support::{binding_key, check, props, text};
use super::super::{Kit, TrialFailure, TrialResult};
use crate::binder::Capability;
use crate::message::{HeaderValue, Message, names};
use crate::{FunctionError, StreamApp};

/// A JSON payload with typed user headers arrives intact at a group consumer.
pub(super) async fn round_trip_with_typed_headers(kit: &Kit) -> TrialResult {
    let typed = kit.capabilities().await?.supports(Capability::TypedHeaders);
    let dest = kit.unique("round-trip");
    let (consumer, mut rx) = kit.sink(&dest, &[]).await?;
    let producer = kit.source(&[]).await?;
    let mut payload = BTreeMap::new();
    payload.insert("id", "r-1");
    let sent: [(&str, HeaderValue); 4] = [
        ("x-text", HeaderValue::from("kept")),
        ("x-int", HeaderValue::I32(42)),
        ("x-long", HeaderValue::I64(1 << 40)),
        ("x-bool", HeaderValue::Bool(true)),
    ];
    let mut message = Message::new(payload);
    for (k, v) in &sent {
        message = message.with_header(*k, v.clone());
    }
    producer
        .bridge()
        .send_message(&dest, message)
        .await
        .map_err(|e| format!("send failed: {e}"))?;
    let m = kit.next(&mut rx, "round trip").await?;
    check(m.payload().as_ref() == br#"{"id":"r-1"}"#, || {
        format!("payload {:?}, expected {{\"id\":\"r-1\"}}", text(&m))
    })?;
    check(
        m.content_type()
            .is_some_and(|c| c.starts_with("application/json")),
        || {
            format!(
                "contentType {:?}, expected application/json",
                m.content_type()
            )
        },
    )?;
    for (k, v) in &sent {
        let got = m.headers().get(k);
        let ok = if typed {
            got == Some(v)
        } else {
            got.map(ToString::to_string) == Some(v.to_string())
        };
        check(ok, || {
            format!(
                "header `{k}`: got {got:?}, sent {v:?}{}",
                if typed {
                    " (the binder declares typed headers)"
                } else {
                    ""
                }
            )
        })?;
    }
    Kit::shutdown(vec![consumer, producer]).await
}

const INTERNAL: [&str; 3] = [
    names::PARTITION,
    names::SOURCE_DATA,
    names::SENDTO_DESTINATION,
];

/// Internal headers stay inside: not on the broker (probed when a probe is given), not in
/// what a function receives (a relay function in between sees `deliveryAttempt` 1).
pub(super) async fn internal_headers_stay_inside(kit: &Kit) -> TrialResult {
    let partitioning = kit.capabilities().await?.supports(Capability::Partitioning);
    let first = kit.unique("internal-in");
    let second = kit.unique("internal-out");
    let mut taps = Vec::new();
    if let Some(probe) = &kit.probe {
        for d in [&first, &second] {
            taps.push((
                d.clone(),
                probe.tap(d).await.map_err(|e| format!("wire probe: {e}"))?,
            ));
        }
    }
    let (sink, mut rx) = kit.sink(&second, &[]).await?;
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<Message<Bytes>>();
    let relay = kit
        .builder(&props(&[
            (&binding_key("relay-in-0", "destination"), &first),
            (&binding_key("relay-out-0", "destination"), &second),
        ]))?
        .function("relay", move |m: Message<Bytes>| {
            let seen = seen_tx.clone();
            async move {
                let _ = seen.send(m.clone());
                Ok::<_, FunctionError>(m)
            }
        });
    let relay = kit.build(relay, "relay application").await?;
    let mut producer_props = vec![(binding_key("out", "destination"), first.clone())];
    if partitioning {
        producer_props.extend(props(&[
            (
                &binding_key("out", "producer.partition-key-expression"),
                "headers['k']",
            ),
            (&binding_key("out", "producer.partition-count"), "2"),
        ]));
    }
    let producer = kit.source(&producer_props).await?;
    producer
        .bridge()
        .send_message(
            "out",
            Message::new("inside".to_owned()).with_header("k", "1"),
        )
        .await
        .map_err(|e| format!("send failed: {e}"))?;
    let at_relay = kit.next(&mut seen_rx, "relay function").await?;
    let at_sink = kit.next(&mut rx, "sink after the relay").await?;
    for (who, m) in [("the relay function", &at_relay), ("the sink", &at_sink)] {
        for name in INTERNAL {
            check(!m.headers().contains(name), || {
                format!("{who} received internal header `{name}`: {:?}", m.headers())
            })?;
        }
        let attempt = m
            .headers()
            .get(names::DELIVERY_ATTEMPT)
            .and_then(HeaderValue::as_i64);
        check(attempt == Some(1), || {
            format!("{who} saw deliveryAttempt {attempt:?}, expected 1 (its own first attempt)")
        })?;
    }
    for (dest, mut tap) in taps {
        let names_on_wire = tap
            .next_header_names(kit.timeout)
            .await
            .map_err(|e| format!("wire probe on `{dest}`: {e}"))?;
        for name in INTERNAL.iter().chain(&[names::DELIVERY_ATTEMPT]) {
            check(!names_on_wire.iter().any(|n| n == name), || {
                format!(
                    "internal header `{name}` reached the broker on `{dest}`: {names_on_wire:?}"
                )
            })?;
        }
    }
    Kit::shutdown(vec![producer, relay, sink]).await
}

/// Two anonymous subscribers both get a message.
pub(super) async fn anonymous_subscribers_each_get_a_copy(kit: &Kit) -> TrialResult {
    let dest = kit.unique("anonymous");
    let (a, mut rx_a) = kit.sink(&dest, &[]).await?;
    let (b, mut rx_b) = kit.sink(&dest, &[]).await?;
    let producer = kit.source(&[]).await?;
    producer
        .bridge()
        .send(&dest, "hello".to_owned())
        .await
        .map_err(|e| format!("send failed: {e}"))?;
    for rx in [&mut rx_a, &mut rx_b] {
        let m = kit.next(rx, "anonymous subscriber").await?;
        check(m.payload().as_ref() == b"hello", || {
            format!("payload {:?}", text(&m))
        })?;
        kit.quiet(rx, "anonymous subscriber").await?;
    }
    Kit::shutdown(vec![a, b, producer]).await
}

fn group(kit: &Kit, dest: &str, g: &str) -> Vec<(String, String)> {
    vec![(binding_key("sink-in-0", "group"), kit.group(dest, g))]
}

/// Each group gets every message; members of one group share them, each message once.
pub(super) async fn group_members_share(kit: &Kit) -> TrialResult {
    let dest = kit.unique("groups");
    let (a1, mut rx_a1) = kit.sink(&dest, &group(kit, &dest, "a")).await?;
    let (a2, mut rx_a2) = kit.sink(&dest, &group(kit, &dest, "a")).await?;
    let (b, mut rx_b) = kit.sink(&dest, &group(kit, &dest, "b")).await?;
    let producer = kit.source(&[]).await?;
    const N: usize = 20;
    for i in 0..N {
        producer
            .bridge()
            .send(&dest, format!("m{i}"))
            .await
            .map_err(|e| format!("send failed: {e}"))?;
    }
    for _ in 0..N {
        kit.next(&mut rx_b, "group b").await?;
    }
    let mut in_a = Vec::new();
    while in_a.len() < N {
        tokio::select! {
            Some(m) = rx_a1.recv() => in_a.push(text(&m)),
            Some(m) = rx_a2.recv() => in_a.push(text(&m)),
            _ = tokio::time::sleep(kit.timeout) => {
                return Err(TrialFailure(format!("group a received {} of {N}", in_a.len())));
            }
        }
    }
    kit.quiet(&mut rx_a1, "group a member 1").await?;
    kit.quiet(&mut rx_a2, "group a member 2").await?;
    kit.quiet(&mut rx_b, "group b").await?;
    in_a.sort();
    in_a.dedup();
    check(in_a.len() == N, || {
        format!("group a saw {} distinct of {N} messages", in_a.len())
    })?;
    Kit::shutdown(vec![a1, a2, b, producer]).await
}

fn partitioned_sink(
    kit: &Kit,
    dest: &str,
    index: &str,
    list: Option<&str>,
) -> Vec<(String, String)> {
    let g = kit.group(dest, "g");
    let mut v = props(&[
        (&binding_key("sink-in-0", "group"), &g),
        (&binding_key("sink-in-0", "consumer.partitioned"), "true"),
        ("spring.cloud.stream.instance-count", "2"),
        ("spring.cloud.stream.instance-index", index),
    ]);
    if let Some(l) = list {
        v.push((
            binding_key("sink-in-0", "consumer.instance-index-list"),
            l.to_owned(),
        ));
    }
    v
}

async fn partitioned_producer(kit: &Kit, dest: &str) -> Result<StreamApp, TrialFailure> {
    let producer = kit
        .source(&props(&[
            (&binding_key("out", "destination"), dest),
            (
                &binding_key("out", "producer.partition-key-expression"),
                "headers['key']",
            ),
            (&binding_key("out", "producer.partition-count"), "2"),
        ]))
        .await?;
    // "0".hashCode() = 48 -> 0; "1" = 49 -> 1; "foo" = 101574 -> 0; "😀" = 1772899 -> 1.
    for key in ["0", "1", "foo", "😀"] {
        producer
            .bridge()
            .send_message("out", Message::new(key.to_owned()).with_header("key", key))
            .await
            .map_err(|e| format!("send failed: {e}"))?;
    }
    Ok(producer)
}

/// Messages reach the instance whose index is their partition (Java's hash selection).
pub(super) async fn partitioned_instances(kit: &Kit) -> TrialResult {
    let dest = kit.unique("partitions");
    let (i0, mut rx0) = kit
        .sink(&dest, &partitioned_sink(kit, &dest, "0", None))
        .await?;
    let (i1, mut rx1) = kit
        .sink(&dest, &partitioned_sink(kit, &dest, "1", None))
        .await?;
    let producer = partitioned_producer(kit, &dest).await?;
    for (i, rx, want) in [(0, &mut rx0, ["0", "foo"]), (1, &mut rx1, ["1", "😀"])] {
        for w in want {
            let got = text(&kit.next(rx, "partitioned instance").await?);
            check(got == w, || {
                format!("instance {i} got {got:?}, expected {w:?}")
            })?;
        }
        kit.quiet(rx, "partitioned instance").await?;
    }
    Kit::shutdown(vec![i0, i1, producer]).await
}

/// One instance listing both partitions in `instance-index-list` gets every message.
pub(super) async fn partitioned_instance_index_list(kit: &Kit) -> TrialResult {
    let dest = kit.unique("index-list");
    let (both, mut rx) = kit
        .sink(&dest, &partitioned_sink(kit, &dest, "0", Some("0,1")))
        .await?;
    let producer = partitioned_producer(kit, &dest).await?;
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(text(
            &kit.next(&mut rx, "instance with partitions 0 and 1")
                .await?,
        ));
    }
    got.sort();
    let mut want = vec!["0", "1", "foo", "😀"];
    want.sort_unstable();
    check(got == want, || {
        format!("received {got:?}, expected {want:?}")
    })?;
    kit.quiet(&mut rx, "instance with partitions 0 and 1")
        .await?;
    Kit::shutdown(vec![both, producer]).await
}

/// A producer's `required-groups` queue keeps what was sent before any consumer existed.
pub(super) async fn required_groups_exist_before_consumers(kit: &Kit) -> TrialResult {
    let dest = kit.unique("required");
    let producer = kit
        .source(&props(&[
            (&binding_key("out", "destination"), &dest),
            (
                &binding_key("out", "producer.required-groups"),
                &kit.group(&dest, "late"),
            ),
        ]))
        .await?;
    for i in 0..3 {
        producer
            .bridge()
            .send("out", format!("early-{i}"))
            .await
            .map_err(|e| format!("send failed: {e}"))?;
    }
    let (consumer, mut rx) = kit.sink(&dest, &group(kit, &dest, "late")).await?;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(text(
            &kit.next(&mut rx, "consumer of the required group").await?,
        ));
    }
    got.sort();
    check(got == ["early-0", "early-1", "early-2"], || {
        format!("the required group's consumer got {got:?}")
    })?;
    Kit::shutdown(vec![consumer, producer]).await
}
