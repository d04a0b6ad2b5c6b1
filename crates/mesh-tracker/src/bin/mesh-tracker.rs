//! `mesh-tracker`: a small WebTorrent tracker over WebSockets, for tests, demos and private
//! deployments. The protocol lives in `mesh_tracker::server` (sans-IO); this binary
//! only moves frames between sockets and that core.
//!
//! One task owns the core. Each connection has a task that reads frames into the core's
//! (bounded) event channel and writes the frames the core sends it from its own bounded
//! channel; a client too slow to drain that channel is disconnected at once.

use futures::{SinkExt, StreamExt};
use mesh_tracker::server::{
    ConnectionId, MAX_FRAME_BYTES, ServerOutput, TrackerServer, TrackerServerConfig,
};
use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

const DEFAULT_LISTEN: &str = "127.0.0.1:8000";

/// Frames queued for one connection; a client that lets this many pile up is disconnected.
const OUTGOING_QUEUE: usize = 64;
/// Events queued for the core; connection tasks wait when it is full.
const EVENT_QUEUE: usize = 1024;
/// The WebSocket handshake must finish within this long.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Sending one frame may take this long before the client counts as stuck.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection that sends nothing for this long is closed (clients announce every 120 s).
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// How often peers and offers are expired, and counts logged when they changed.
const HOUSEKEEPING_PERIOD: Duration = Duration::from_secs(5);

const USAGE: &str = "\
Usage: mesh-tracker [--listen ADDR]

A WebTorrent tracker (JSON over WebSocket), compatible with bittorrent-tracker and aquatic_ws
clients.

Options:
  --listen ADDR  address and port to listen on (default 127.0.0.1:8000; port 0 picks one)
  -h, --help     print this help

On start it prints one line, `mesh-tracker listening on ws://IP:PORT`, to standard output.
It stops on SIGINT or SIGTERM.";

enum Event {
    Connected(ConnectionId, Link),
    Message(ConnectionId, String),
    Disconnected(ConnectionId),
}

/// What the core sends a connection's task.
enum Out {
    Frame(String),
    /// Close after the frames before it.
    Close,
}

/// The core's handle on a connection's task. Dropping it makes the task stop at once.
struct Link {
    frames: mpsc::Sender<Out>,
    _abort: oneshot::Sender<()>,
}

fn parse_args() -> Result<Option<SocketAddr>, String> {
    let mut listen = DEFAULT_LISTEN.to_string();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--listen" => {
                listen = args
                    .next()
                    .ok_or_else(|| "--listen needs an address".to_string())?;
            }
            other => match other.strip_prefix("--listen=") {
                Some(value) => listen = value.to_string(),
                None => return Err(format!("unknown argument {other:?}")),
            },
        }
    }
    listen
        .parse()
        .map(Some)
        .map_err(|e| format!("invalid --listen address {listen:?}: {e}"))
}

fn main() -> ExitCode {
    let addr = match parse_args() {
        Ok(Some(addr)) => addr,
        Ok(None) => {
            // Not println!: a closed stdout (`--help | head -1`) is no reason to panic.
            let _ = writeln!(std::io::stdout(), "{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("mesh-tracker: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("mesh-tracker: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(run(addr));
    runtime.shutdown_timeout(Duration::from_secs(1));
    code
}

async fn run(addr: SocketAddr) -> ExitCode {
    // Watched from the start, so that a signal right after the listening line is not missed.
    let (mut sigint, mut sigterm) = match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(sigint), Ok(sigterm)) => (sigint, sigterm),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("mesh-tracker: cannot watch signals: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("mesh-tracker: cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let local = match listener.local_addr() {
        Ok(local) => local,
        Err(e) => {
            eprintln!("mesh-tracker: {e}");
            return ExitCode::FAILURE;
        }
    };
    {
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "mesh-tracker listening on ws://{local}");
        let _ = stdout.flush();
    }

    let config = TrackerServerConfig::default();
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let (events, events_rx) = mpsc::channel(EVENT_QUEUE);
    let core = tokio::spawn(run_core(config, events_rx));

    let mut next_id = 0u64;
    loop {
        // Wait for a free slot first, so that at most max_connections sockets are open.
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => permit.expect("semaphore open"),
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
        };
        match accepted {
            Ok((stream, _)) => {
                let id = ConnectionId(next_id);
                next_id += 1;
                let events = events.clone();
                tokio::spawn(async move {
                    serve(id, stream, events).await;
                    drop(permit);
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                eprintln!("mesh-tracker: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    eprintln!("mesh-tracker: shutting down");
    core.abort();
    ExitCode::SUCCESS
}

/// Owns the tracker core: applies events, routes its output.
async fn run_core(config: TrackerServerConfig, mut events: mpsc::Receiver<Event>) {
    let start = Instant::now();
    let mut server = TrackerServer::new(config, rand::random());
    let mut links: HashMap<ConnectionId, Link> = HashMap::new();
    let mut housekeeping = tokio::time::interval(HOUSEKEEPING_PERIOD);
    let (mut connects, mut disconnects) = (0u64, 0u64);
    let mut logged = (0u64, 0u64);
    loop {
        let event = tokio::select! {
            event = events.recv() => match event {
                Some(event) => event,
                None => return,
            },
            _ = housekeeping.tick() => {
                server.expire(start.elapsed());
                if (connects, disconnects) != logged {
                    logged = (connects, disconnects);
                    eprintln!(
                        "mesh-tracker: {} connections ({connects} connects, {disconnects} \
                         disconnects so far), {} swarms, {} peers",
                        links.len(),
                        server.swarm_count(),
                        server.peer_count()
                    );
                }
                continue;
            }
        };
        let outputs = match event {
            Event::Connected(id, link) => {
                connects += 1;
                links.insert(id, link);
                server.connected(id)
            }
            Event::Message(id, text) => server.message(id, &text, start.elapsed()),
            Event::Disconnected(id) => {
                disconnects += 1;
                links.remove(&id);
                server.disconnected(id)
            }
        };
        for output in outputs {
            let (id, out) = match output {
                ServerOutput::Send(id, text) => (id, Out::Frame(text)),
                // Frames already queued still go out; the task then closes and reports it.
                ServerOutput::Close(id) => (id, Out::Close),
            };
            let Some(link) = links.get(&id) else {
                continue;
            };
            if link.frames.try_send(out).is_err() {
                // Full (the client is too slow) or gone: dropping the link stops its task.
                links.remove(&id);
                server.disconnected(id);
            }
        }
    }
}

/// Serves one connection: handshake, then frames both ways until either side stops.
async fn serve(id: ConnectionId, stream: TcpStream, events: mpsc::Sender<Event>) {
    let _ = stream.set_nodelay(true);
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES));
    let handshake = tokio_tungstenite::accept_async_with_config(stream, Some(config));
    let mut ws = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
        Ok(Ok(ws)) => ws,
        _ => return,
    };
    let (frames, mut outgoing) = mpsc::channel(OUTGOING_QUEUE);
    let (abort, mut aborted) = oneshot::channel::<()>();
    let link = Link {
        frames,
        _abort: abort,
    };
    if events.send(Event::Connected(id, link)).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            biased;
            _ = &mut aborted => break,
            out = outgoing.recv() => match out {
                Some(Out::Frame(text)) => {
                    let sent = tokio::time::timeout(SEND_TIMEOUT, ws.send(Message::text(text)));
                    if !matches!(sent.await, Ok(Ok(()))) {
                        break;
                    }
                }
                Some(Out::Close) | None => {
                    let _ = tokio::time::timeout(SEND_TIMEOUT, ws.close(None)).await;
                    break;
                }
            },
            incoming = tokio::time::timeout(IDLE_TIMEOUT, ws.next()) => match incoming {
                Ok(Some(Ok(Message::Text(text)))) => {
                    if events.send(Event::Message(id, text.to_string())).await.is_err() {
                        break;
                    }
                }
                // Pings are answered by tungstenite; binary frames mean nothing here.
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Binary(_))))
                | Ok(Some(Ok(Message::Frame(_)))) => {}
                Ok(Some(Ok(Message::Close(_)))) => {
                    // Sends tungstenite's reply to the close.
                    let _ = tokio::time::timeout(SEND_TIMEOUT, ws.close(None)).await;
                    break;
                }
                Ok(Some(Err(_))) | Ok(None) | Err(_) => break,
            },
        }
    }
    let _ = events.send(Event::Disconnected(id)).await;
}
