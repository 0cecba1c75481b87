//! `WsClient`: a JSON-RPC client over one WebSocket to a hub, and reading text frames
//! with a deadline (shared with the browser's DevTools socket).

use std::net::SocketAddr;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::{DEADLINE, request, vote_params};

/// A client WebSocket to a local server.
pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Next text frame on `socket`, skipping pings and pongs; fails the test on any other
/// frame, when the socket ends, or after [`DEADLINE`].
pub async fn next_text(socket: &mut Socket) -> String {
    loop {
        let frame = tokio::time::timeout(DEADLINE, socket.next())
            .await
            .expect("timed out waiting for a frame")
            .expect("socket ended")
            .expect("socket error");
        match frame {
            Message::Text(text) => return text.as_str().to_owned(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// A JSON-RPC client over one WebSocket. Replies are matched by id; pushed
/// notifications are kept in arrival order.
pub struct WsClient {
    socket: Socket,
    next_id: u64,
    pub notifications: Vec<Value>,
}

impl WsClient {
    pub async fn connect(url: &str) -> Self {
        Self::connect_with(url, &[])
            .await
            .unwrap_or_else(|status| panic!("upgrade refused with {status}"))
    }

    /// Connects with extra request headers; a refused upgrade returns its HTTP status.
    pub async fn connect_with(url: &str, headers: &[(&str, &str)]) -> Result<Self, u16> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = url.into_client_request().expect("request");
        for (name, value) in headers {
            request.headers_mut().insert(
                tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes())
                    .unwrap(),
                value.parse().unwrap(),
            );
        }
        let connect = tokio::time::timeout(DEADLINE, tokio_tungstenite::connect_async(request));
        match connect.await.expect("timed out connecting to the hub") {
            Ok((socket, _)) => Ok(Self::over(socket)),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                Err(response.status().as_u16())
            }
            Err(e) => panic!("websocket connect failed: {e}"),
        }
    }

    /// Connects over a socket with a tiny receive buffer, for a client that stops reading.
    pub async fn connect_small_buffer(addr: SocketAddr) -> Self {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let stream = socket.connect(addr).await.unwrap();
        let url = format!("ws://{addr}/ws");
        let handshake = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream));
        let (socket, _) = tokio::time::timeout(DEADLINE, handshake)
            .await
            .expect("timed out connecting to the hub")
            .expect("websocket connect");
        Self::over(socket)
    }

    fn over(socket: Socket) -> Self {
        Self {
            socket,
            next_id: 1,
            notifications: Vec::new(),
        }
    }

    /// Next frame of any kind, or `None` once the connection has ended (closed or reset).
    pub async fn next_frame(&mut self) -> Option<Message> {
        match tokio::time::timeout(DEADLINE, self.socket.next())
            .await
            .expect("timed out waiting for a frame")
        {
            Some(Ok(message)) => Some(message),
            _ => None,
        }
    }

    pub async fn send_text(&mut self, text: &str) {
        self.send_message(Message::text(text)).await;
    }

    /// Sends a frame, failing the test if the hub does not take it within [`DEADLINE`].
    pub async fn send_message(&mut self, message: Message) {
        tokio::time::timeout(DEADLINE, self.socket.send(message))
            .await
            .expect("timed out sending to the hub")
            .expect("send");
    }

    /// Next text frame that is not a notification, parsed.
    pub async fn recv_reply(&mut self) -> Value {
        loop {
            let value = self.recv_value().await;
            if is_notification(&value) {
                self.notifications.push(value);
            } else {
                return value;
            }
        }
    }

    /// Next text frame of any kind, parsed (pings and pongs are skipped).
    pub async fn recv_value(&mut self) -> Value {
        serde_json::from_str(&next_text(&mut self.socket).await).expect("reply is JSON")
    }

    /// Sends a request and returns the whole response object.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send_text(&request(id, method, params).to_string())
            .await;
        let reply = self.recv_reply().await;
        assert_eq!(reply["id"], json!(id), "reply id: {reply}");
        reply
    }

    /// Sends a request and returns its `result`, failing on an error reply.
    pub async fn result(&mut self, method: &str, params: Value) -> Value {
        let reply = self.call(method, params).await;
        assert!(reply.get("error").is_none(), "{method} failed: {reply}");
        reply["result"].clone()
    }

    /// Sends a request and returns its `error`, failing on a success reply.
    pub async fn error(&mut self, method: &str, params: Value) -> Value {
        let reply = self.call(method, params).await;
        assert!(
            reply.get("result").is_none(),
            "{method} should fail: {reply}"
        );
        reply["error"].clone()
    }

    pub async fn register(&mut self, instance: &str) -> Value {
        self.result("system.register", json!({ "instanceId": instance }))
            .await
    }

    pub async fn vote(&mut self, instance: &str, decision: &str, value: &str, total: u64) -> Value {
        let params = vote_params(instance, decision, value, Some(total));
        self.result("system.quorum.vote", params).await
    }

    /// Has `instance` decide `decision` alone (`totalInstances` 1) and returns the eventId
    /// of the decision as this client receives it.
    pub async fn decide(&mut self, instance: &str, decision: &str) -> String {
        self.vote(instance, decision, "a", 1).await;
        let event = self.next_notification().await;
        assert_eq!(event["params"]["decision"], decision, "{event}");
        event["params"]["eventId"].as_str().unwrap().to_owned()
    }

    /// Waits for the next pushed notification.
    pub async fn next_notification(&mut self) -> Value {
        if !self.notifications.is_empty() {
            return self.notifications.remove(0);
        }
        let value = self.recv_value().await;
        assert!(
            is_notification(&value),
            "unexpected reply while waiting for a notification: {value}"
        );
        value
    }

    /// Asserts that no notification arrives for a while: a round trip through the hub and
    /// Redis after the fact (a status call) shows that anything published earlier was seen.
    pub async fn assert_no_more_notifications(&mut self, decision: &str) {
        self.call("system.quorum.status", json!({ "decision": decision }))
            .await;
        assert!(
            self.notifications.is_empty(),
            "unexpected notifications: {:?}",
            self.notifications
        );
    }

    /// Waits for the server to close the socket and returns the close code.
    pub async fn expect_close(&mut self) -> u16 {
        self.expect_close_with_reason().await.0
    }

    /// Waits for the server to close the socket and returns the close code and reason.
    pub async fn expect_close_with_reason(&mut self) -> (u16, String) {
        loop {
            let frame = tokio::time::timeout(DEADLINE, self.socket.next())
                .await
                .expect("timed out waiting for close");
            match frame {
                Some(Ok(Message::Close(Some(frame)))) => {
                    return (frame.code.into(), frame.reason.to_string());
                }
                Some(Ok(Message::Close(None))) => return (1005, String::new()),
                Some(Ok(Message::Text(text))) => self
                    .notifications
                    .push(serde_json::from_str(&text).unwrap_or(Value::Null)),
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("socket error before close frame: {e}"),
                None => panic!("socket ended without a close frame"),
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
        while let Ok(Some(Ok(_))) = tokio::time::timeout(DEADLINE, self.socket.next()).await {}
    }
}

fn is_notification(value: &Value) -> bool {
    value.get("method").is_some() && value.get("id").is_none()
}
