//! A small HTTP/1.1 client (hyper) for tests that use an application's admin endpoint from
//! outside, as an operator's tools would.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

/// What came back.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// `Content-Type`, empty when absent.
    pub content_type: String,
    /// Body as text (lossy UTF-8).
    pub body: String,
}

impl HttpResponse {
    /// The body parsed as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// Sends one request on a fresh connection; a JSON `body` goes with
/// `Content-Type: application/json`.
pub async fn request(
    address: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<HttpResponse, String> {
    let stream = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|e| format!("cannot connect to {address}: {e}"))?;
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP handshake with {address}: {e}"))?;
    tokio::spawn(connection);
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", address.to_string());
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or("").to_owned())))
        .map_err(|e| format!("bad request {method} {path}: {e}"))?;
    let response = sender
        .send_request(req)
        .await
        .map_err(|e| format!("{method} {path}: {e}"))?;
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("{method} {path}: reading the body: {e}"))?
        .to_bytes();
    Ok(HttpResponse {
        status,
        content_type,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    })
}

/// `GET path`.
pub async fn get(address: SocketAddr, path: &str) -> Result<HttpResponse, String> {
    request(address, "GET", path, None).await
}

/// `POST path` with a JSON body.
pub async fn post(address: SocketAddr, path: &str, json: &str) -> Result<HttpResponse, String> {
    request(address, "POST", path, Some(json)).await
}
