//! A session's TCP stream, shared by its WebSocket (calls, replies, queued events, pings,
//! closes) and by the fan-out, which writes each event's pre-encoded frame straight into
//! the socket while the stream is between two frames.
//!
//! Every write to the socket passes through [`Wire`], so it knows where the stream stands:
//! the WebSocket's last write either went out whole (the stream is at a frame boundary) or
//! left a part of its buffer behind; a direct frame the socket took only in part is
//! finished before anything else is written; and once a close frame has passed in either
//! direction, no more events are written.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use futures::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{Bytes, Error as WsError, Message};

use crate::sync::lock;

/// The TCP stream of one session.
pub struct Wire {
    tcp: TcpStream,
    state: Mutex<WireState>,
}

#[derive(Default)]
struct WireState {
    /// The WebSocket's last write went out only in part: the stream is inside one of its
    /// frames, and the WebSocket writes the rest next.
    inside_frame: bool,
    /// The rest of a direct frame that the socket took only in part; it is written before
    /// anything else.
    rest: Bytes,
    /// A close frame was sent or received: the session is ending, and takes no events.
    closing: bool,
}

/// What became of a direct write.
#[derive(Debug, PartialEq, Eq)]
pub enum Direct {
    /// The whole frame is in the socket.
    Written,
    /// Part of the frame is in the socket; the rest goes out with the WebSocket's next
    /// write or flush, before anything else.
    Partly,
    /// Nothing was written: the stream is inside a frame, closing, busy or full.
    Refused,
}

impl Wire {
    pub fn new(tcp: TcpStream) -> Self {
        Self {
            tcp,
            state: Mutex::default(),
        }
    }

    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// Writes a whole frame into the socket when the stream is between frames, not
    /// closing, and the socket has room for at least some of it. Never waits: if the
    /// WebSocket is writing at this moment, the frame is refused.
    pub fn write_frame(&self, frame: &Bytes) -> Direct {
        let Ok(mut state) = self.state.try_lock() else {
            return Direct::Refused;
        };
        if state.inside_frame || !state.rest.is_empty() || state.closing {
            return Direct::Refused;
        }
        match send(&self.tcp, frame) {
            Ok(n) if n == frame.len() => Direct::Written,
            Ok(n) => {
                state.rest = frame.slice(n..);
                Direct::Partly
            }
            // A full socket, or a broken one (the WebSocket finds out for itself).
            Err(_) => Direct::Refused,
        }
    }

    /// Ends direct writes: a close frame is on its way, in one direction or the other.
    pub fn close_begun(&self) {
        lock(&self.state).closing = true;
    }

    /// Closes the connection (FIN) even while others still hold the wire.
    pub fn shut_down(&self) {
        self.close_begun();
        let _ = socket2::SockRef::from(&self.tcp).shutdown(std::net::Shutdown::Both);
    }

    /// Writes the rest of a direct frame, then as much of `buf` (the WebSocket's) as the
    /// socket takes.
    fn send(&self, state: &mut WireState, buf: &[u8]) -> io::Result<usize> {
        while !state.rest.is_empty() {
            let n = self.tcp.try_write(&state.rest)?;
            let _ = state.rest.split_to(n);
        }
        if buf.is_empty() {
            return Ok(0);
        }
        let n = self.tcp.try_write(buf)?;
        state.inside_frame = n < buf.len();
        Ok(n)
    }

    /// Polls [`Self::send`] until the socket takes something or says it is full.
    fn poll_send(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.tcp.poll_write_ready(cx))?;
            match self.send(&mut lock(&self.state), buf) {
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                other => return Poll::Ready(other),
            }
        }
    }
}

/// One `send` of `bytes` on the socket, without tokio's readiness bookkeeping (the
/// socket's readiness lives elsewhere in memory, one more fetch per session in a fan-out):
/// a full socket says so with `WouldBlock`, and tokio's own next write finds that out for
/// itself.
pub fn send(tcp: &TcpStream, bytes: &[u8]) -> io::Result<usize> {
    socket2::SockRef::from(tcp).send(bytes)
}

/// Whatever a [`SessionIo`] finds its wire in.
pub trait HoldsWire {
    /// The wire; `None` for a session that has no socket.
    fn wire(&self) -> Option<&Wire>;
}

impl HoldsWire for Arc<Wire> {
    fn wire(&self) -> Option<&Wire> {
        Some(self)
    }
}

/// The byte stream a session's WebSocket runs on: reads from the wire, and writes through
/// it so that direct frames and the WebSocket's own never interleave.
pub struct SessionIo<H>(pub H);

impl<H: HoldsWire> SessionIo<H> {
    fn wire(&self) -> io::Result<&Wire> {
        self.0
            .wire()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }
}

impl<H: HoldsWire + Unpin> AsyncRead for SessionIo<H> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let tcp = &self.wire()?.tcp;
        loop {
            ready!(tcp.poll_read_ready(cx))?;
            match tcp.try_read_buf(buf) {
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                other => return Poll::Ready(other.map(drop)),
            }
        }
    }
}

impl<H: HoldsWire + Unpin> AsyncWrite for SessionIo<H> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.wire()?.poll_send(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let wire = self.wire()?;
        if lock(&wire.state).rest.is_empty() {
            return Poll::Ready(Ok(()));
        }
        wire.poll_send(cx, &[]).map_ok(drop)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_flush(cx)
    }
}

/// A session's WebSocket, which ends direct writes on its wire as soon as a close frame
/// passes either way: before the WebSocket can answer a peer's close, and before it sends
/// its own.
pub struct WireSocket<H> {
    inner: WebSocketStream<SessionIo<H>>,
}

impl<H: HoldsWire + Unpin> WireSocket<H> {
    pub fn new(inner: WebSocketStream<SessionIo<H>>) -> Self {
        Self { inner }
    }

    fn close_begun(&self) {
        if let Some(wire) = self.inner.get_ref().0.wire() {
            wire.close_begun();
        }
    }
}

impl<H: HoldsWire + Unpin> Stream for WireSocket<H> {
    type Item = Result<Message, WsError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let next = ready!(Pin::new(&mut self.inner).poll_next(cx));
        if !matches!(
            next,
            Some(Ok(Message::Text(_) | Message::Ping(_) | Message::Pong(_)))
        ) {
            self.close_begun();
        }
        Poll::Ready(next)
    }
}

impl<H: HoldsWire + Unpin> Sink<Message> for WireSocket<H> {
    type Error = WsError;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        Pin::new(&mut self.inner).poll_ready(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, message: Message) -> Result<(), WsError> {
        if matches!(message, Message::Close(_)) {
            self.close_begun();
        }
        Pin::new(&mut self.inner).start_send(message)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        self.close_begun();
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// A server's WebSocket text frame (final, unmasked) around `payload`: written as it is to
/// every session's socket.
pub fn text_frame(payload: &[u8]) -> Bytes {
    let mut frame = Vec::with_capacity(payload.len() + 10);
    frame.push(0x81);
    match payload.len() {
        len @ 0..=125 => frame.push(len as u8),
        len @ 126..=0xffff => {
            frame.push(126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            frame.push(127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(payload);
    frame.into()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::protocol::Role;

    use super::*;

    /// A connected pair: the hub's side (a small send buffer, so that it fills soon) and
    /// the peer's, which reads only when told to.
    async fn pair() -> (Arc<Wire>, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = TcpStream::connect(listener.local_addr().unwrap());
        let (peer, accepted) = tokio::join!(peer, listener.accept());
        let (hub, _) = accepted.unwrap();
        socket2::SockRef::from(&hub)
            .set_send_buffer_size(4096)
            .unwrap();
        let peer = peer.unwrap();
        socket2::SockRef::from(&peer)
            .set_recv_buffer_size(4096)
            .unwrap();
        (Arc::new(Wire::new(hub)), peer)
    }

    /// Reads `expected` whole text frames from the peer and returns their payloads.
    async fn read_frames(peer: &mut TcpStream, expected: usize) -> Vec<String> {
        read_frames_after(Vec::new(), peer, expected).await
    }

    /// Like [`read_frames`], the stream starting with `bytes` read before.
    async fn read_frames_after(
        mut bytes: Vec<u8>,
        peer: &mut TcpStream,
        expected: usize,
    ) -> Vec<String> {
        let mut payloads = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while payloads.len() < expected {
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout_at(deadline, peer.read(&mut chunk))
                .await
                .expect("the frames arrive")
                .unwrap();
            assert_ne!(n, 0, "the connection ended early");
            bytes.extend_from_slice(&chunk[..n]);
            // Whole frames only; a torn one would not parse as a text frame.
            loop {
                if bytes.len() < 2 {
                    break;
                }
                assert_eq!(bytes[0], 0x81, "a frame starts where the last one ended");
                let (header, len) = match bytes[1] {
                    126 if bytes.len() >= 4 => {
                        (4, usize::from(u16::from_be_bytes([bytes[2], bytes[3]])))
                    }
                    126 => break,
                    127 => panic!("no frame here is that long"),
                    len => (2, usize::from(len)),
                };
                if bytes.len() < header + len {
                    break;
                }
                let payload: Vec<u8> = bytes.drain(..header + len).skip(header).collect();
                payloads.push(String::from_utf8(payload).unwrap());
            }
        }
        assert!(bytes.is_empty(), "nothing follows the expected frames");
        payloads
    }

    fn event(i: usize) -> Bytes {
        text_frame(format!("event {i:04} {}", "x".repeat(200)).as_bytes())
    }

    #[tokio::test]
    async fn a_frame_the_socket_takes_in_part_is_finished_before_anything_else() {
        let (wire, mut peer) = pair().await;
        let mut written = 0;
        let outcome = loop {
            match wire.write_frame(&event(written)) {
                Direct::Written => written += 1,
                other => break other,
            }
            assert!(written < 100_000, "the socket never filled");
        };
        assert_eq!(
            outcome,
            Direct::Partly,
            "a full socket takes part of a frame"
        );
        // The rest is pending: no other frame may go in front of it, even once the socket
        // has room again.
        let mut start = vec![0u8; 4096];
        let n = peer.read(&mut start).await.unwrap();
        start.truncate(n);
        wire.tcp().writable().await.unwrap();
        assert_eq!(wire.write_frame(&event(written + 1)), Direct::Refused);
        // The WebSocket's own write waits for the rest, then follows it.
        let mut io = SessionIo(wire.clone());
        let ws = tokio::spawn(async move {
            io.write_all(&text_frame(b"from the websocket"))
                .await
                .unwrap();
            io.flush().await.unwrap();
        });
        let payloads = read_frames_after(start, &mut peer, written + 2).await;
        ws.await.unwrap();
        for (i, payload) in payloads.iter().take(written + 1).enumerate() {
            assert!(payload.starts_with(&format!("event {i:04} ")), "{payload}");
        }
        assert_eq!(payloads[written + 1], "from the websocket");
        // Between frames again: direct writes resume.
        assert_eq!(wire.write_frame(&event(7)), Direct::Written);
    }

    #[tokio::test]
    async fn a_flush_alone_finishes_a_partly_written_frame() {
        let (wire, mut peer) = pair().await;
        let mut written = 0;
        while wire.write_frame(&event(written)) == Direct::Written {
            written += 1;
        }
        let mut io = SessionIo(wire.clone());
        let flush = tokio::spawn(async move { io.flush().await.unwrap() });
        let payloads = read_frames(&mut peer, written + 1).await;
        flush.await.unwrap();
        assert_eq!(payloads.len(), written + 1);
        assert!(payloads[written].starts_with(&format!("event {written:04} ")));
    }

    #[tokio::test]
    async fn no_frame_is_written_into_the_middle_of_the_websockets_own() {
        let (wire, mut peer) = pair().await;
        // Far larger than the socket's buffers: the first write goes out only in part.
        let large = text_frame("y".repeat(60_000).as_bytes());
        let mut io = SessionIo(wire.clone());
        let n = io.write(&large).await.unwrap();
        assert!(n < large.len(), "the socket took all {n} bytes at once");
        assert_eq!(wire.write_frame(&event(0)), Direct::Refused);
        let rest = large.slice(n..);
        let ws = tokio::spawn(async move { io.write_all(&rest).await.unwrap() });
        let mut payloads = read_frames(&mut peer, 1).await;
        ws.await.unwrap();
        assert_eq!(payloads.pop().unwrap().len(), 60_000);
        // The WebSocket's frame is out whole: the stream is between frames.
        assert_eq!(wire.write_frame(&event(1)), Direct::Written);
        assert!(read_frames(&mut peer, 1).await[0].starts_with("event 0001 "));
    }

    #[tokio::test]
    async fn a_closing_wire_takes_no_more_frames() {
        let (wire, mut peer) = pair().await;
        assert_eq!(wire.write_frame(&event(0)), Direct::Written);
        wire.close_begun();
        assert_eq!(wire.write_frame(&event(1)), Direct::Refused);
        assert_eq!(read_frames(&mut peer, 1).await.len(), 1);
        wire.shut_down();
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), peer.read_to_end(&mut rest));
        assert_eq!(read.await.expect("the peer sees the end").unwrap(), 0);
    }

    async fn websockets(
        wire: &Arc<Wire>,
        peer: TcpStream,
    ) -> (WireSocket<Arc<Wire>>, WebSocketStream<TcpStream>) {
        let hub = WebSocketStream::from_raw_socket(SessionIo(wire.clone()), Role::Server, None);
        let peer = WebSocketStream::from_raw_socket(peer, Role::Client, None);
        let (hub, peer) = tokio::join!(hub, peer);
        (WireSocket::new(hub), peer)
    }

    #[tokio::test]
    async fn a_close_from_the_peer_ends_direct_writes_before_it_is_answered() {
        use futures::{SinkExt, StreamExt};
        let (wire, peer) = pair().await;
        let (mut hub, mut peer) = websockets(&wire, peer).await;
        peer.send(Message::text("a call")).await.unwrap();
        assert!(matches!(hub.next().await, Some(Ok(Message::Text(_)))));
        assert_eq!(wire.write_frame(&event(0)), Direct::Written);
        peer.send(Message::Close(None)).await.unwrap();
        assert!(matches!(hub.next().await, Some(Ok(Message::Close(_)))));
        assert_eq!(wire.write_frame(&event(1)), Direct::Refused);
        // The peer sees the event, then the answer to its close, and nothing after it.
        assert!(
            matches!(peer.next().await, Some(Ok(Message::Text(t))) if t.starts_with("event 0000 "))
        );
        hub.flush().await.unwrap();
        assert!(matches!(peer.next().await, Some(Ok(Message::Close(_)))));
    }

    #[tokio::test]
    async fn a_close_from_the_hub_ends_direct_writes_before_it_is_sent() {
        use futures::{SinkExt, StreamExt};
        let (wire, peer) = pair().await;
        let (mut hub, mut peer) = websockets(&wire, peer).await;
        hub.send(Message::Close(None)).await.unwrap();
        assert_eq!(wire.write_frame(&event(0)), Direct::Refused);
        assert!(matches!(peer.next().await, Some(Ok(Message::Close(_)))));
    }

    #[test]
    fn text_frames_carry_their_length_in_the_shortest_form() {
        assert_eq!(&text_frame(b"hi")[..], b"\x81\x02hi");
        let medium = text_frame(&[b'a'; 126]);
        assert_eq!(&medium[..4], &[0x81, 126, 0, 126]);
        assert_eq!(medium.len(), 4 + 126);
        let long = text_frame(&vec![b'a'; 70_000]);
        assert_eq!(&long[..2], &[0x81, 127]);
        assert_eq!(&long[2..10], &70_000u64.to_be_bytes());
    }
}
