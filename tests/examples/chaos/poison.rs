//! Poison messages (shared RabbitMQ, queues of the run's own), written frame by frame where a
//! client refuses to encode them. Each either ends in the DLQ with `x-exception-message` or,
//! where it is representable, is processed; the good messages around them are all processed;
//! the app stays up; its other binding (`text`) keeps flowing.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use lapin::types::AMQPValue;

use crate::support::{App, Client, Tally};
use crate::wire::{self, Props, RawPublisher, Value};
use crate::{Size, unique, wait_subscribed};

/// Sequence numbers of the representable poison (expected processed).
const ODD: u64 = 1_000_000;

fn json(seq: u64) -> Vec<u8> {
    format!("{{\"seq\":{seq}}}").into_bytes()
}

fn json_props() -> Props {
    Props {
        content_type: Some(b"application/json".to_vec()),
        ..Props::default()
    }
}

/// A gzip bomb: `inflated` zero bytes as concatenated gzip members of 1 MiB each (a multi-member
/// stream is one gzip file to every decoder), a few KiB on the wire.
fn bomb(inflated: usize) -> Vec<u8> {
    let mut member = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let _ = member.write_all(&vec![0u8; 1 << 20]);
    let member = member.finish().unwrap_or_default();
    member.repeat(inflated >> 20)
}

/// (name, props, routing key, body, expected in the DLQ)
fn poisons(size: Size, frame_max: usize) -> Vec<(&'static str, Props, Vec<u8>, bool)> {
    let headers = |entries: Vec<(Vec<u8>, Value)>| Props {
        headers: Some(wire::encode_table(&entries)),
        ..json_props()
    };
    let mut deep = vec![1, b'd', b'F'];
    let inner = wire::deep_table_bytes((frame_max - 300) / 7 - 1);
    deep.extend_from_slice(&(inner.len() as u32).to_be_bytes());
    deep.extend_from_slice(&inner);
    vec![
        ("malformed JSON", json_props(), b"{\"seq\": ".to_vec(), true),
        (
            "non-UTF-8 header name",
            headers(vec![(
                b"bad\xffname".to_vec(),
                Value::LongString(b"v".to_vec()),
            )]),
            json(ODD + 1),
            true,
        ),
        (
            "non-UTF-8 type property",
            Props {
                kind: Some(b"\xfe\xfftype".to_vec()),
                ..json_props()
            },
            json(ODD + 2),
            true,
        ),
        (
            "non-UTF-8 message-id",
            Props {
                message_id: Some(vec![0xc3, 0x28]),
                ..json_props()
            },
            json(ODD + 3),
            true,
        ),
        (
            "timestamp property 2^64-1",
            Props {
                timestamp: Some(u64::MAX),
                ..json_props()
            },
            json(ODD + 4),
            false,
        ),
        (
            "timestamp header 2^63",
            headers(vec![(b"ts".to_vec(), Value::Timestamp(1 << 63))]),
            json(ODD + 5),
            false,
        ),
        (
            "decimal scale 255",
            headers(vec![(b"d".to_vec(), Value::Decimal(255, u32::MAX))]),
            json(ODD + 6),
            false,
        ),
        (
            "corrupt lengthHeader4 batch",
            headers(vec![(
                b"springBatchFormat".to_vec(),
                Value::LongString(b"lengthHeader4".to_vec()),
            )]),
            vec![0, 0, 0, 9, b'{'],
            true,
        ),
        (
            "gzip bomb",
            Props {
                content_encoding: Some(b"gzip".to_vec()),
                ..json_props()
            },
            bomb(size.bomb),
            true,
        ),
        (
            "oversize body (valid JSON)",
            json_props(),
            format!(
                "{{\"seq\":{},\"pad\":\"{}\"}}",
                ODD + 7,
                "p".repeat(size.oversize)
            )
            .into_bytes(),
            false,
        ),
        (
            "deep header table",
            Props {
                headers: Some(deep),
                ..json_props()
            },
            json(ODD + 8),
            true,
        ),
        (
            "huge header table (near frame_max)",
            headers(vec![(
                b"big".to_vec(),
                Value::LongString(vec![b'x'; frame_max - 400]),
            )]),
            json(ODD + 9),
            false,
        ),
        (
            "10 000 small headers",
            headers(
                (0..10_000)
                    .map(|i| (format!("h{i}").into_bytes(), Value::Int(i)))
                    .collect(),
            ),
            json(ODD + 10),
            false,
        ),
    ]
}

pub(crate) async fn run(bin: &Path, base: &Path, size: Size) -> Result<Vec<Tally>> {
    let mut t = Tally::new("rabbit poison messages");
    let mut other = Tally::new("rabbit poison: the other binding");
    let a = unique("poison");
    let b = unique("poison-text");
    let mut args = vec![
        "--spring.rabbitmq.host=127.0.0.1".to_owned(),
        "--spring.rabbitmq.port=5672".to_owned(),
        "--spring.rabbitmq.publisher-confirm-type=correlated".to_owned(),
        "--spring.cloud.function.definition=relay;text".to_owned(),
    ];
    for (f, d) in [("relay", &a), ("text", &b)] {
        args.extend([
            format!("--spring.cloud.stream.bindings.{f}-in-0.destination={d}"),
            format!("--spring.cloud.stream.bindings.{f}-in-0.group=g"),
            format!("--spring.cloud.stream.bindings.{f}-in-0.consumer.max-attempts=1"),
            format!("--spring.cloud.stream.bindings.{f}-out-0.destination={d}-out"),
            format!("--spring.cloud.stream.bindings.{f}-out-0.producer.required-groups=capture"),
            format!("--spring.cloud.stream.rabbit.bindings.{f}-in-0.consumer.auto-bind-dlq=true"),
        ]);
    }
    let mut client = Client::new(&[5672]);
    let mut app = App::new(bin, args, Vec::new(), base.join(format!("{a}.log")));
    app.start()?;
    t.check(
        wait_subscribed(&mut client, &format!("{a}.g")).await
            && wait_subscribed(&mut client, &format!("{b}.g")).await,
        "app subscribed",
    );
    let mut raw = RawPublisher::connect("127.0.0.1", 5672).await?;
    let frame_max = raw.frame_max() as usize;
    let list = poisons(size, frame_max);
    let kinds = list.len();
    let every = (size.poison_good / list.len() as u64).max(1);
    let mut confirmed = Vec::new();
    let mut expected_dead = 0u64;
    let mut p = list.into_iter();
    let text_props = Props {
        content_type: Some(b"text/plain".to_vec()),
        ..Props::default()
    };
    for seq in 0..size.poison_good {
        raw.publish(&a, b"k", &json_props(), &json(seq)).await?;
        confirmed.push(seq);
        raw.publish(&b, b"k", &text_props, format!("t{seq}").as_bytes())
            .await?;
        if seq % every == every / 2
            && let Some((name, props, body, dead)) = p.next()
        {
            raw.publish(&a, b"k", &props, &body)
                .await
                .map_err(|e| anyhow::anyhow!("publishing `{name}`: {e}"))?;
            t.sent += 1;
            if dead {
                expected_dead += 1;
            } else if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body)
                && let Some(s) = v.get("seq").and_then(serde_json::Value::as_u64)
            {
                confirmed.push(s);
                t.sent -= 1;
            }
        }
    }
    // Invalid UTF-8 for the text binding.
    raw.publish(&b, b"k", &text_props, b"\xff\xfe not text")
        .await?;
    raw.close().await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let dlq = format!("{a}.g.dlq");
    let capture = format!("{a}-out.capture");
    while Instant::now() < deadline {
        let done = client.depth(&capture).await.unwrap_or(0) as usize >= confirmed.len()
            && u64::from(client.depth(&dlq).await.unwrap_or(0)) >= expected_dead
            && client.depth(&format!("{b}-out.capture")).await.unwrap_or(0) as u64
                >= size.poison_good
            && client.depth(&format!("{b}.g.dlq")).await.unwrap_or(0) >= 1;
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let seen = client.drain_seqs(&capture).await?;
    t.count(&confirmed, &seen);
    let dead = client.drain_full(&dlq).await?;
    t.dead_lettered = dead.len() as u64;
    let explained = dead
        .iter()
        .filter(|(_, p)| {
            p.headers().as_ref().is_some_and(|h| {
                matches!(h.inner().get("x-exception-message"), Some(AMQPValue::LongString(s)) if !s.as_bytes().is_empty())
            })
        })
        .count() as u64;
    t.check(
        t.dead_lettered == expected_dead,
        format!(
            "{} poison messages in the DLQ, {expected_dead} expected",
            t.dead_lettered
        ),
    );
    t.check(
        explained == t.dead_lettered,
        format!(
            "{explained} of {} dead letters carry x-exception-message",
            t.dead_lettered
        ),
    );
    t.check(
        client.depth(&format!("{a}.g")).await == Some(0),
        "nothing left looping in the input queue",
    );
    t.check(app.alive(), "the app stayed up");
    t.note = format!(
        "{kinds} poison kinds: {expected_dead} undecodable or failing -> DLQ, the rest representable -> processed"
    );
    let texts = client.drain(&format!("{b}-out.capture")).await?;
    other.sent = size.poison_good + 1;
    other.processed = texts.len() as u64;
    other.lost = size.poison_good.saturating_sub(texts.len() as u64);
    other.dead_lettered = u64::from(client.depth(&format!("{b}.g.dlq")).await.unwrap_or(0));
    other.check(
        other.dead_lettered == 1,
        "the invalid UTF-8 text in its DLQ",
    );
    other.note = "kept flowing beside the poison; invalid UTF-8 text dead-lettered".to_owned();
    let exit = app.stop();
    t.check(
        exit == Some(0),
        format!("graceful exit after the run ({exit:?})"),
    );
    for d in [&a, &b] {
        client
            .delete_queues(&[
                format!("{d}.g"),
                format!("{d}.g.dlq"),
                format!("{d}-out.capture"),
            ])
            .await;
        client
            .delete_exchanges(&[d.clone(), format!("{d}-out")])
            .await;
    }
    Ok(vec![t, other])
}
