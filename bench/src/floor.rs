//! The fan-out floor: a bare broadcaster to compare the hub's fan-out with. It speaks just
//! enough of the protocol for `bench fanout` (register, and a vote that decides at once)
//! and sends each decision as one pre-encoded WebSocket frame to every registered socket,
//! in one plain loop per core: no Redis, no queues, no task per session.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, mpsc};
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Args;
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::{Bytes, Message};

use super::BenchError;
use quorum_hub::bench_seams::{SessionIo, Wire, send, text_frame};
use quorum_hub::error::Error;
use quorum_hub::protocol::frame;
use quorum_hub::protocol::{DecisionEvent, EventId, Registered, VoteReply, method};

#[derive(Debug, Clone, Args)]
pub struct FloorOptions {
    /// Address to accept sessions on (port 0 picks a free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
}

/// The registered sockets, shared by their sessions and the write loops.
type Registry = Arc<RwLock<Vec<Arc<Wire>>>>;

/// Serves until the process is stopped.
pub async fn serve(options: &FloorOptions) -> Result<String, BenchError> {
    let listener = TcpListener::bind(options.listen)
        .await
        .map_err(|e| BenchError::Other(format!("floor: binding {}: {e}", options.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| BenchError::Other(e.to_string()))?;
    eprintln!("floor listening on {addr}");
    let registry: Registry = Arc::default();
    let loops = Arc::new(WriteLoops::start(registry.clone()));
    let sequence = Arc::new(AtomicU64::new(0));
    loop {
        let (stream, _) = listener
            .accept()
            .await
            .map_err(|e| BenchError::Other(format!("floor: accepting: {e}")))?;
        let (registry, loops, sequence) = (registry.clone(), loops.clone(), sequence.clone());
        tokio::spawn(async move {
            if let Err(err) = session(stream, registry, &loops, &sequence).await {
                tracing::debug!(%err, "floor session ended");
            }
        });
    }
}

/// One session: answers calls; a registered socket joins the broadcast.
async fn session(
    stream: TcpStream,
    registry: Registry,
    loops: &WriteLoops,
    sequence: &AtomicU64,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let _ = stream.set_nodelay(true);
    let stream = Arc::new(Wire::new(stream));
    let mut socket = tokio_tungstenite::accept_async(SessionIo(stream.clone())).await?;
    let served = answer(&mut socket, &stream, &registry, loops, sequence).await;
    registry
        .write()
        .expect("registry lock")
        .retain(|registered| !Arc::ptr_eq(registered, &stream));
    served
}

async fn answer(
    socket: &mut tokio_tungstenite::WebSocketStream<SessionIo<Arc<Wire>>>,
    stream: &Arc<Wire>,
    registry: &Registry,
    loops: &WriteLoops,
    sequence: &AtomicU64,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    while let Some(message) = socket.next().await {
        let Message::Text(text) = message? else {
            continue;
        };
        let call: Value = serde_json::from_str(&text)?;
        let id = call.get("id").cloned().unwrap_or(Value::Null);
        let params = &call["params"];
        let text_of = |field: &str| params[field].as_str().unwrap_or_default().to_owned();
        match call["method"].as_str() {
            Some(method::REGISTER) => {
                let registered = Registered {
                    registered: true,
                    instance_id: text_of("instanceId"),
                    ttl_seconds: 30,
                };
                socket
                    .send(Message::text(frame::success(&id, &registered)))
                    .await?;
                registry
                    .write()
                    .expect("registry lock")
                    .push(stream.clone());
            }
            Some(method::VOTE) => {
                let (decision, value) = (text_of("decision"), text_of("value"));
                let reply = VoteReply::decided_now(1, value.clone());
                socket
                    .send(Message::text(frame::success(&id, &reply)))
                    .await?;
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                let event = DecisionEvent {
                    decision,
                    value,
                    vote_count: 1,
                    quorum: 1,
                    total_instances: 1,
                    event_id: EventId {
                        ms: now,
                        seq: sequence.fetch_add(1, Ordering::Relaxed),
                    },
                    timestamp: now,
                };
                loops.broadcast(text_frame(frame::decision_made(&event).as_bytes()));
            }
            other => {
                let error = Error::MethodNotFound(format!("{other:?}: the floor serves none"));
                socket
                    .send(Message::text(frame::failure(&id, &error).to_string()))
                    .await?;
            }
        }
    }
    Ok(())
}

/// One thread per core, each writing every frame to its share of the registered sockets.
struct WriteLoops {
    jobs: Vec<mpsc::Sender<Bytes>>,
}

impl WriteLoops {
    fn start(registry: Registry) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let jobs = (0..cores)
            .map(|core| {
                let (tx, rx) = mpsc::channel::<Bytes>();
                let registry = registry.clone();
                std::thread::spawn(move || {
                    for frame in rx {
                        let sockets = registry.read().expect("registry lock");
                        for socket in sockets.iter().skip(core).step_by(cores) {
                            write_all(socket.tcp(), &frame);
                        }
                    }
                });
                tx
            })
            .collect();
        Self { jobs }
    }

    fn broadcast(&self, frame: Bytes) {
        for job in &self.jobs {
            let _ = job.send(frame.clone());
        }
    }
}

/// Writes the whole frame to a socket with one `send` when it has room (a reader that
/// keeps up never makes this wait; one that does not only delays its own loop). A socket
/// that failed is skipped.
fn write_all(socket: &TcpStream, frame: &[u8]) {
    let mut written = 0;
    while written < frame.len() {
        match send(socket, &frame[written..]) {
            Ok(n) => written += n,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}
