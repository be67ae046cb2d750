//! Queue affinity (`spring.cloud.stream.rabbit.binder.{nodes, admin-addresses}`): a consumer
//! connects to the cluster node that hosts its queue, as Spring AMQP's
//! `LocalizedQueueConnectionFactory` does.
//!
//! `nodes[i]` is reached at `spring.rabbitmq.addresses[i]`; the queue's node comes from the
//! management plugin (`GET <admin-address>/api/queues/<vhost>/<queue>`, field `node`), asked at
//! each admin address in turn. When no admin address answers, or the node is not listed, the
//! consumer uses the binder's shared consumer connection, so affinity never stops consumption.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// The management API's answer for one queue is small; more is not a queue document.
const MAX_RESPONSE: usize = 1 << 20;

/// One management plugin endpoint (`http://host:port[/prefix]`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct AdminAddress {
    host: String,
    port: u16,
    prefix: String,
}

impl AdminAddress {
    fn parse(raw: &str) -> Result<Self, String> {
        let rest = raw.strip_prefix("http://").ok_or_else(|| {
            format!(
                "`{raw}`: only http:// management URLs are supported (e.g. http://rabbit1:15672)"
            )
        })?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let authority = authority.rsplit('@').next().unwrap_or(authority);
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>()
                    .map_err(|_| format!("`{raw}`: invalid port `{p}`"))?,
            ),
            None => (authority, 80),
        };
        if host.is_empty() {
            return Err(format!("`{raw}`: no host"));
        }
        Ok(AdminAddress {
            host: host.to_owned(),
            port,
            prefix: path.to_owned(),
        })
    }
}

/// Finds the node that hosts a queue; built once per binder from its properties.
#[derive(Debug)]
pub(crate) struct QueueLocator {
    admins: Vec<AdminAddress>,
    nodes: Vec<String>,
    authorization: String,
}

impl QueueLocator {
    /// `None` unless more than one node is configured (Spring's condition). `addresses` is the
    /// number of `spring.rabbitmq.addresses`, which must match `nodes`.
    pub(crate) fn new(
        admin_addresses: &[String],
        nodes: &[String],
        addresses: usize,
        username: &str,
        password: &str,
    ) -> Result<Option<Self>, String> {
        let split = |v: &[String]| -> Vec<String> {
            v.iter()
                .flat_map(|s| s.split(','))
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        };
        let nodes = split(nodes);
        if nodes.len() < 2 {
            return Ok(None);
        }
        let admins = split(admin_addresses)
            .iter()
            .map(|a| AdminAddress::parse(a))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("spring.cloud.stream.rabbit.binder.admin-addresses: {e}"))?;
        if admins.len() != nodes.len() || addresses != nodes.len() {
            return Err(format!(
                "spring.cloud.stream.rabbit.binder.nodes lists {} nodes, but there are {} \
                 admin-addresses and {} spring.rabbitmq.addresses; queue affinity needs one of each \
                 per node, in the same order",
                nodes.len(),
                admins.len(),
                addresses
            ));
        }
        Ok(Some(QueueLocator {
            admins,
            nodes,
            authorization: format!("Basic {}", base64(&format!("{username}:{password}"))),
        }))
    }

    /// The index (into `nodes` and `spring.rabbitmq.addresses`) of the node hosting `queue`.
    pub(crate) async fn locate(&self, vhost: &str, queue: &str) -> Option<usize> {
        for admin in &self.admins {
            match tokio::time::timeout(LOOKUP_TIMEOUT, self.ask(admin, vhost, queue)).await {
                Ok(Ok(node)) => {
                    let index = self.nodes.iter().position(|n| *n == node);
                    if index.is_none() {
                        tracing::warn!(queue, node = %node,
                            "the queue's node is not in spring.cloud.stream.rabbit.binder.nodes; using the default connection");
                    }
                    return index;
                }
                Ok(Err(e)) => tracing::warn!(queue, admin = %admin.host, error = %e,
                    "queue affinity: management API lookup failed; trying the next admin address"),
                Err(_) => tracing::warn!(queue, admin = %admin.host,
                    "queue affinity: management API lookup timed out; trying the next admin address"),
            }
        }
        None
    }

    async fn ask(&self, admin: &AdminAddress, vhost: &str, queue: &str) -> Result<String, String> {
        let path = format!(
            "{}/api/queues/{}/{}",
            admin.prefix,
            percent_encode(vhost),
            percent_encode(queue)
        );
        let mut stream = tokio::net::TcpStream::connect((admin.host.as_str(), admin.port))
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}:{}\r\nAuthorization: {}\r\nAccept: application/json\r\nConnection: close\r\n\r\n",
            admin.host, admin.port, self.authorization
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("cannot send the request: {e}"))?;
        let mut response = Vec::new();
        (&mut stream)
            .take(MAX_RESPONSE as u64)
            .read_to_end(&mut response)
            .await
            .map_err(|e| format!("cannot read the response: {e}"))?;
        node_of_response(&response)
    }
}

/// The `node` of an HTTP response holding a queue document.
fn node_of_response(response: &[u8]) -> Result<String, String> {
    let text = String::from_utf8_lossy(response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| "malformed HTTP response".to_owned())?;
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("");
    if status != "200" {
        return Err(format!("HTTP status {status}"));
    }
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_owned()
    };
    let doc: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| format!("not a JSON queue document: {e}"))?;
    doc.get("node")
        .and_then(|n| n.as_str())
        .map(str::to_owned)
        .ok_or_else(|| "the queue document has no `node`".to_owned())
}

fn dechunk(body: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = body;
    loop {
        let (size, after) = rest
            .split_once("\r\n")
            .ok_or_else(|| "malformed chunked body".to_owned())?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| "malformed chunk size".to_owned())?;
        if size == 0 {
            return Ok(out);
        }
        let chunk = after
            .get(..size)
            .ok_or_else(|| "truncated chunk".to_owned())?;
        out.push_str(chunk);
        rest = after
            .get(size..)
            .and_then(|r| r.strip_prefix("\r\n"))
            .ok_or_else(|| "malformed chunk end".to_owned())?;
    }
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn base64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64("guest:guest"), "Z3Vlc3Q6Z3Vlc3Q=");
        assert_eq!(base64("a"), "YQ==");
        assert_eq!(base64("ab"), "YWI=");
        assert_eq!(base64("abc"), "YWJj");
    }

    #[test]
    fn admin_addresses_parse() {
        let a = AdminAddress::parse("http://rabbit1:15672/mgmt/").expect("parses");
        assert_eq!(
            (a.host.as_str(), a.port, a.prefix.as_str()),
            ("rabbit1", 15672, "/mgmt")
        );
        let a = AdminAddress::parse("http://user:pw@rabbit2").expect("parses");
        assert_eq!((a.host.as_str(), a.port), ("rabbit2", 80));
        assert!(AdminAddress::parse("https://x:15671").is_err());
        assert!(AdminAddress::parse("http://x:port").is_err());
    }

    #[test]
    fn affinity_needs_matching_lists() {
        let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
        assert!(
            QueueLocator::new(&s(&[]), &s(&["rabbit@a"]), 1, "g", "g")
                .expect("one node")
                .is_none()
        );
        let err = QueueLocator::new(
            &s(&["http://a:15672"]),
            &s(&["rabbit@a", "rabbit@b"]),
            2,
            "g",
            "g",
        )
        .expect_err("mismatch");
        assert!(err.contains("admin-addresses"), "{err}");
        assert!(
            QueueLocator::new(
                &s(&["http://a:15672,http://b:15672"]),
                &s(&["rabbit@a,rabbit@b"]),
                2,
                "g",
                "g"
            )
            .expect("valid")
            .is_some()
        );
    }

    #[test]
    fn responses_give_the_node() {
        let ok = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{\"name\":\"q\",\"node\":\"rabbit@b\"}";
        assert_eq!(node_of_response(ok).expect("node"), "rabbit@b");
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\n{\"node\":\"\r\n9\r\nrabbit@c\"\r\n1\r\n}\r\n0\r\n\r\n";
        assert_eq!(node_of_response(chunked).expect("node"), "rabbit@c");
        let missing = b"HTTP/1.1 404 Not Found\r\n\r\n{\"error\":\"Object Not Found\"}";
        assert!(node_of_response(missing).expect_err("404").contains("404"));
        assert_eq!(percent_encode("/"), "%2F");
    }
}
