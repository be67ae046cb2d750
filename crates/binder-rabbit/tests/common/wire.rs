//! A minimal AMQP 0-9-1 publisher written frame by frame, for the poison messages a real client
//! refuses to encode: short strings that are not UTF-8 (header names, `type`, `message-id`),
//! timestamps past `i64::MAX` seconds, decimals of any scale, tables nested arbitrarily deep.
//! Plain TCP on loopback, PLAIN authentication, one channel in confirm mode; every call is
//! bounded by a timeout. Shared by the broker tests and the chaos suite (`#[path]`-included).
#![allow(
    dead_code,
    unreachable_pub,
    reason = "each includer uses a different subset"
)]

use std::io;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long any single broker answer may take.
const ANSWER: Duration = Duration::from_secs(10);

/// One encoded field value (the AMQP 0-9-1 / RabbitMQ field types the tests need).
#[derive(Clone, Debug)]
pub enum Value {
    /// `S`: a long string of any octets.
    LongString(Vec<u8>),
    /// `I`: a signed 32-bit integer.
    Int(i32),
    /// `T`: a timestamp, seconds since the epoch, any `u64`.
    Timestamp(u64),
    /// `D`: a decimal, `scale` and the unscaled 32 bits.
    Decimal(u8, u32),
    /// `F`: a nested table.
    Table(Vec<(Vec<u8>, Value)>),
    /// `A`: an array.
    Array(Vec<Value>),
    /// `x`: a byte array.
    Bytes(Vec<u8>),
}

fn short(out: &mut Vec<u8>, s: &[u8]) {
    let len = u8::try_from(s.len()).expect("a short string is at most 255 octets");
    out.push(len);
    out.extend_from_slice(s);
}

fn long(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&u32::try_from(s.len()).expect("4 GiB").to_be_bytes());
    out.extend_from_slice(s);
}

impl Value {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Value::LongString(s) => {
                out.push(b'S');
                long(out, s);
            }
            Value::Int(n) => {
                out.push(b'I');
                out.extend_from_slice(&n.to_be_bytes());
            }
            Value::Timestamp(t) => {
                out.push(b'T');
                out.extend_from_slice(&t.to_be_bytes());
            }
            Value::Decimal(scale, v) => {
                out.push(b'D');
                out.push(*scale);
                out.extend_from_slice(&v.to_be_bytes());
            }
            Value::Table(entries) => {
                out.push(b'F');
                long(out, &encode_table(entries));
            }
            Value::Array(items) => {
                out.push(b'A');
                let mut body = Vec::new();
                for item in items {
                    item.encode(&mut body);
                }
                long(out, &body);
            }
            Value::Bytes(b) => {
                out.push(b'x');
                long(out, b);
            }
        }
    }
}

/// The entries of a field table, without its length.
pub fn encode_table(entries: &[(Vec<u8>, Value)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in entries {
        short(&mut out, k);
        v.encode(&mut out);
    }
    out
}

/// A table nested `depth` levels deep (each level one entry `d` holding the next), written
/// iteratively so a test can build nestings deeper than any recursive encoder's stack.
pub fn deep_table_bytes(depth: usize) -> Vec<u8> {
    // Innermost first: an empty table, then wrap it `depth` times in `{d: <table>}`.
    let mut inner: Vec<u8> = Vec::new();
    for _ in 0..depth {
        let mut wrapped = Vec::with_capacity(inner.len() + 7);
        short(&mut wrapped, b"d");
        wrapped.push(b'F');
        long(&mut wrapped, &inner);
        inner = wrapped;
    }
    inner
}

/// The properties of a raw message; short strings are octets (any bytes), the headers table is
/// given as its encoded entries.
#[derive(Clone, Debug, Default)]
pub struct Props {
    pub content_type: Option<Vec<u8>>,
    pub content_encoding: Option<Vec<u8>>,
    pub headers: Option<Vec<u8>>,
    pub delivery_mode: Option<u8>,
    pub correlation_id: Option<Vec<u8>>,
    pub message_id: Option<Vec<u8>>,
    pub timestamp: Option<u64>,
    pub kind: Option<Vec<u8>>,
    pub app_id: Option<Vec<u8>>,
}

impl Props {
    fn encode(&self) -> (u16, Vec<u8>) {
        let mut flags = 0u16;
        let mut out = Vec::new();
        if let Some(v) = &self.content_type {
            flags |= 1 << 15;
            short(&mut out, v);
        }
        if let Some(v) = &self.content_encoding {
            flags |= 1 << 14;
            short(&mut out, v);
        }
        if let Some(h) = &self.headers {
            flags |= 1 << 13;
            long(&mut out, h);
        }
        if let Some(m) = self.delivery_mode {
            flags |= 1 << 12;
            out.push(m);
        }
        if let Some(v) = &self.correlation_id {
            flags |= 1 << 10;
            short(&mut out, v);
        }
        if let Some(v) = &self.message_id {
            flags |= 1 << 7;
            short(&mut out, v);
        }
        if let Some(t) = self.timestamp {
            flags |= 1 << 6;
            out.extend_from_slice(&t.to_be_bytes());
        }
        if let Some(v) = &self.kind {
            flags |= 1 << 5;
            short(&mut out, v);
        }
        if let Some(v) = &self.app_id {
            flags |= 1 << 3;
            short(&mut out, v);
        }
        (flags, out)
    }
}

/// A connection with one channel in confirm mode.
pub struct RawPublisher {
    stream: TcpStream,
    frame_max: u32,
    published: u64,
}

fn method(class: u16, method: u16, args: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + args.len());
    out.extend_from_slice(&class.to_be_bytes());
    out.extend_from_slice(&method.to_be_bytes());
    out.extend_from_slice(args);
    out
}

fn protocol(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

impl RawPublisher {
    /// Connects to `host:port` as guest/guest on vhost `/`.
    pub async fn connect(host: &str, port: u16) -> io::Result<Self> {
        let stream = tokio::time::timeout(ANSWER, TcpStream::connect((host, port)))
            .await
            .map_err(|_| protocol("connect timed out"))??;
        stream.set_nodelay(true)?;
        let mut p = Self {
            stream,
            frame_max: 4096,
            published: 0,
        };
        p.stream.write_all(b"AMQP\x00\x00\x09\x01").await?;
        p.expect(0, 10, 10).await?; // connection.start
        let mut args = Vec::new();
        long(&mut args, &[]); // client-properties
        short(&mut args, b"PLAIN");
        long(&mut args, b"\x00guest\x00guest");
        short(&mut args, b"en_US");
        p.send_method(0, &method(10, 11, &args)).await?;
        let tune = p.expect(0, 10, 30).await?;
        let channel_max = u16::from_be_bytes([tune[0], tune[1]]);
        let frame_max = u32::from_be_bytes([tune[2], tune[3], tune[4], tune[5]]);
        p.frame_max = frame_max;
        let mut args = Vec::new();
        args.extend_from_slice(&channel_max.to_be_bytes());
        args.extend_from_slice(&frame_max.to_be_bytes());
        args.extend_from_slice(&0u16.to_be_bytes()); // no heartbeats
        p.send_method(0, &method(10, 31, &args)).await?;
        let mut args = Vec::new();
        short(&mut args, b"/");
        short(&mut args, b"");
        args.push(0);
        p.send_method(0, &method(10, 40, &args)).await?;
        p.expect(0, 10, 41).await?;
        p.send_method(1, &method(20, 10, &[0])).await?; // channel.open
        p.expect(1, 20, 11).await?;
        p.send_method(1, &method(85, 10, &[0])).await?; // confirm.select
        p.expect(1, 85, 11).await?;
        Ok(p)
    }

    /// The negotiated `frame_max`.
    pub fn frame_max(&self) -> u32 {
        self.frame_max
    }

    async fn send_frame(&mut self, kind: u8, channel: u16, payload: &[u8]) -> io::Result<()> {
        let mut frame = Vec::with_capacity(payload.len() + 8);
        frame.push(kind);
        frame.extend_from_slice(&channel.to_be_bytes());
        frame.extend_from_slice(
            &u32::try_from(payload.len())
                .map_err(|_| protocol("frame too large"))?
                .to_be_bytes(),
        );
        frame.extend_from_slice(payload);
        frame.push(0xCE);
        self.stream.write_all(&frame).await
    }

    async fn send_method(&mut self, channel: u16, payload: &[u8]) -> io::Result<()> {
        self.send_frame(1, channel, payload).await
    }

    async fn read_frame(&mut self) -> io::Result<(u8, u16, Vec<u8>)> {
        let mut head = [0u8; 7];
        tokio::time::timeout(ANSWER, self.stream.read_exact(&mut head))
            .await
            .map_err(|_| protocol("no answer from the broker"))??;
        let size = u32::from_be_bytes([head[3], head[4], head[5], head[6]]) as usize;
        let mut payload = vec![0u8; size + 1];
        tokio::time::timeout(ANSWER, self.stream.read_exact(&mut payload))
            .await
            .map_err(|_| protocol("truncated frame"))??;
        payload.pop();
        Ok((head[0], u16::from_be_bytes([head[1], head[2]]), payload))
    }

    /// Reads frames until the method `class.method` on `channel`; a connection or channel
    /// close is an error carrying the broker's reply text.
    async fn expect(&mut self, channel: u16, class: u16, id: u16) -> io::Result<Vec<u8>> {
        loop {
            let (kind, ch, payload) = self.read_frame().await?;
            if kind != 1 || payload.len() < 4 {
                continue; // heartbeats and anything else
            }
            let c = u16::from_be_bytes([payload[0], payload[1]]);
            let m = u16::from_be_bytes([payload[2], payload[3]]);
            if (c, m) == (10, 50) || (c, m) == (20, 40) {
                let code = payload
                    .get(4..6)
                    .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
                let len = payload.get(6).copied().unwrap_or(0) as usize;
                let text = payload
                    .get(7..7 + len)
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default();
                return Err(protocol(format!("broker closed: {code} {text}")));
            }
            if ch == channel && (c, m) == (class, id) {
                return Ok(payload[4..].to_vec());
            }
        }
    }

    /// Publishes one message with routing key `routing_key` (octets) and waits for its confirm.
    pub async fn publish(
        &mut self,
        exchange: &str,
        routing_key: &[u8],
        props: &Props,
        body: &[u8],
    ) -> io::Result<()> {
        let mut args = Vec::new();
        args.extend_from_slice(&0u16.to_be_bytes());
        short(&mut args, exchange.as_bytes());
        short(&mut args, routing_key);
        args.push(0);
        self.send_method(1, &method(60, 40, &args)).await?;
        let (flags, encoded) = props.encode();
        let mut header = Vec::new();
        header.extend_from_slice(&60u16.to_be_bytes());
        header.extend_from_slice(&0u16.to_be_bytes());
        header.extend_from_slice(&(body.len() as u64).to_be_bytes());
        header.extend_from_slice(&flags.to_be_bytes());
        header.extend_from_slice(&encoded);
        self.send_frame(2, 1, &header).await?;
        let chunk = (self.frame_max as usize).saturating_sub(8).max(1);
        for part in body.chunks(chunk) {
            self.send_frame(3, 1, part).await?;
        }
        self.published += 1;
        loop {
            let ack = self.expect(1, 60, 80).await?;
            let tag = u64::from_be_bytes(ack[..8].try_into().map_err(|_| protocol("ack"))?);
            if tag >= self.published {
                return Ok(());
            }
        }
    }

    /// Closes the connection politely.
    pub async fn close(mut self) -> io::Result<()> {
        let mut args = Vec::new();
        args.extend_from_slice(&200u16.to_be_bytes());
        short(&mut args, b"bye");
        args.extend_from_slice(&0u16.to_be_bytes());
        args.extend_from_slice(&0u16.to_be_bytes());
        self.send_method(0, &method(10, 50, &args)).await?;
        let _ = self.expect(0, 10, 51).await;
        Ok(())
    }
}
