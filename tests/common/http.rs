//! One-shot HTTP/1.1 requests to a hub: `http` for any path, `rpc` and `rpc_call` for
//! JSON-RPC over `POST /rpc`, `metrics_show` for one line of `/metrics`.

use std::net::SocketAddr;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::request;

/// One HTTP/1.1 request with `Connection: close`; returns the status and body.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> std::io::Result<(u16, String)> {
    http_with(addr, method, path, &[], body).await
}

/// [`http`] with extra request headers.
pub async fn http_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr).await?;
    // The hub's own address is the Host unless the caller names another.
    let host = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("host"))
        .map_or_else(|| addr.to_string(), |(_, value)| value.to_string());
    let extra: String = headers
        .iter()
        .filter(|(name, _)| !name.eq_ignore_ascii_case("host"))
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         {extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad response: {response}")))?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok((status, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    out
}

/// POSTs a JSON-RPC body to `/rpc` and returns the status and parsed body (`Null` if empty).
pub async fn rpc(addr: SocketAddr, body: &Value) -> (u16, Value) {
    let (status, text) = http(addr, "POST", "/rpc", &body.to_string())
        .await
        .expect("http");
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).expect("JSON body")
    };
    (status, value)
}

/// POSTs one request (id 1) to `/rpc` and returns the whole response object.
pub async fn rpc_call(addr: SocketAddr, method: &str, params: Value) -> Value {
    rpc(addr, &request(1, method, params)).await.1
}

/// Whether the hub's `/metrics` has exactly this line (e.g. `quorum_sessions_open 1`).
pub async fn metrics_show(addr: SocketAddr, line: &str) -> bool {
    let (_, metrics) = http(addr, "GET", "/metrics", "")
        .await
        .expect("GET /metrics");
    metrics.lines().any(|l| l == line)
}

/// The value of one of the hub's metrics without labels (`quorum_...`).
pub async fn metric(addr: SocketAddr, name: &str) -> u64 {
    let (_, text) = http(addr, "GET", "/metrics", "")
        .await
        .expect("GET /metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
}
