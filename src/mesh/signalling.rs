//! Tracker signalling I/O: one task per tracker URL drives a sans-IO [`TrackerClient`] over a
//! tokio-tungstenite WebSocket, makes the WebRTC offers and answers it asks for, and hands
//! each data channel that opens to the delivery hub.
//!
//! A tracker that is down or drops the connection is a warning, never an error: the client
//! reconnects with backoff while playback goes on from the CDN.

use crate::error::MeshError;
use crate::mesh::protocol::Incoming;
use crate::mesh::swarm::{InfoHash, OfferId, PeerId};
use crate::mesh::tracker::{LocalOffer, TrackerClient, TrackerConfig, TrackerInput, TrackerOutput};
use crate::mesh::transport::{
    self, PeerChannel, PendingOffer, TransportConfig, TransportError, answer_offer, make_offer,
};
use crate::scheduler::PeerRef;
use futures::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use url::Url;

/// How long opening a tracker WebSocket may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long sending one frame to the tracker may take.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct SignallingConfig {
    /// ws:// or wss:// tracker URLs; empty means CDN only.
    pub trackers: Vec<Url>,
    pub transport: TransportConfig,
    pub tracker: TrackerConfig,
    /// Peer connections at most, open or being made, over all swarms and trackers.
    pub max_peers: usize,
}

/// What the signalling and link tasks tell the delivery hub.
pub enum HubEvent {
    /// A data channel to `remote` in `swarm` is open.
    LinkUp {
        swarm: InfoHash,
        remote: PeerId,
        channel: PeerChannel,
    },
    Message {
        link: PeerRef,
        message: Incoming,
    },
    LinkDown {
        link: PeerRef,
        reason: String,
    },
    Warning(MeshError),
    /// A tracker's count of the swarm's peers (`complete` + `incomplete`).
    SwarmSize {
        swarm: InfoHash,
        peers: u64,
    },
}

enum Command {
    Join(InfoHash),
    Leave(InfoHash),
}

/// Counts peer connections against `max_peers`: open links (set by the hub) plus handshakes
/// under way (counted here).
#[derive(Debug, Default)]
struct Budget {
    links: AtomicUsize,
    handshakes: AtomicUsize,
}

impl Budget {
    fn free(&self, max: usize) -> usize {
        max.saturating_sub(
            self.links.load(Ordering::Relaxed) + self.handshakes.load(Ordering::Relaxed),
        )
    }
}

/// The tracker tasks of one session; dropping it stops them.
pub struct Signalling {
    commands: Vec<mpsc::Sender<Command>>,
    budget: Arc<Budget>,
    _tasks: JoinSet<()>,
}

impl Signalling {
    pub fn spawn(config: SignallingConfig, hub: mpsc::Sender<HubEvent>) -> Signalling {
        let budget = Arc::new(Budget::default());
        let mut tasks = JoinSet::new();
        let mut commands = Vec::new();
        for url in &config.trackers {
            let (tx, rx) = mpsc::channel(32);
            commands.push(tx);
            tasks.spawn(run_tracker(
                url.clone(),
                config.clone(),
                hub.clone(),
                rx,
                budget.clone(),
            ));
        }
        Signalling {
            commands,
            budget,
            _tasks: tasks,
        }
    }

    pub fn join(&self, swarm: InfoHash) {
        for tx in &self.commands {
            let _ = tx.try_send(Command::Join(swarm.clone()));
        }
    }

    pub fn leave(&self, swarm: InfoHash) {
        for tx in &self.commands {
            let _ = tx.try_send(Command::Leave(swarm.clone()));
        }
    }

    /// The hub's count of open links.
    pub fn set_links(&self, links: usize) {
        self.budget.links.store(links, Ordering::Relaxed);
    }
}

/// Handshake work finished in the background.
enum Done {
    Offers {
        info_hash: InfoHash,
        offers: Vec<(OfferId, PendingOffer, String)>,
    },
    Answer {
        info_hash: InfoHash,
        to_peer_id: PeerId,
        offer_id: OfferId,
        result: Result<(transport::PendingAnswer, String), TransportError>,
    },
    /// A handshake ended: with a channel, or not.
    Connected {
        info_hash: InfoHash,
        remote: PeerId,
        result: Result<PeerChannel, TransportError>,
    },
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn tls_connector() -> Option<tokio_tungstenite::Connector> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Some(tokio_tungstenite::Connector::Rustls(Arc::new(config)))
}

async fn connect(url: &Url) -> Result<Socket, String> {
    let connector = if url.scheme() == "wss" {
        Some(tls_connector().ok_or("TLS set-up failed")?)
    } else {
        None
    };
    let attempt =
        tokio_tungstenite::connect_async_tls_with_config(url.as_str(), None, false, connector);
    match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
        Ok(Ok((socket, _))) => Ok(socket),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no connection after {CONNECT_TIMEOUT:?}")),
    }
}

struct Tracker {
    url: Url,
    config: SignallingConfig,
    client: TrackerClient,
    started: Instant,
    hub: mpsc::Sender<HubEvent>,
    budget: Arc<Budget>,
    socket: Option<Socket>,
    reconnect_at: Option<Duration>,
    offers: HashMap<(InfoHash, OfferId), PendingOffer>,
    work: JoinSet<Done>,
}

async fn run_tracker(
    url: Url,
    config: SignallingConfig,
    hub: mpsc::Sender<HubEvent>,
    mut commands: mpsc::Receiver<Command>,
    budget: Arc<Budget>,
) {
    let mut tracker = Tracker {
        url,
        client: TrackerClient::new(config.tracker.clone()),
        config,
        started: Instant::now(),
        hub,
        budget,
        socket: None,
        reconnect_at: Some(Duration::ZERO),
        offers: HashMap::new(),
        work: JoinSet::new(),
    };
    loop {
        let now = tracker.now();
        if tracker.socket.is_none() && tracker.reconnect_at.is_some_and(|t| t <= now) {
            tracker.reconnect_at = None;
            let input = match connect(&tracker.url).await {
                Ok(socket) => {
                    tracker.socket = Some(socket);
                    TrackerInput::Connected
                }
                Err(reason) => TrackerInput::Disconnected { reason },
            };
            tracker.feed(input).await;
            continue;
        }
        let wake = [tracker.client.next_wakeup(), tracker.reconnect_at]
            .into_iter()
            .flatten()
            .min()
            .map(|t| tokio::time::Instant::from_std(tracker.started + t));
        let input = tokio::select! {
            frame = next_frame(&mut tracker.socket) => match frame {
                Ok(Some(text)) => Some(TrackerInput::Message(text)),
                Ok(None) => None,
                Err(reason) => {
                    tracker.socket = None;
                    Some(TrackerInput::Disconnected { reason })
                }
            },
            command = commands.recv() => match command {
                Some(Command::Join(h)) => Some(TrackerInput::Join(h)),
                Some(Command::Leave(h)) => Some(TrackerInput::Leave(h)),
                None => break,
            },
            Some(done) = tracker.work.join_next(), if !tracker.work.is_empty() => match done {
                Ok(done) => tracker.on_done(done).await,
                Err(_) => None,
            },
            _ = tokio::time::sleep_until(wake.unwrap_or_else(tokio::time::Instant::now)), if wake.is_some() => {
                Some(TrackerInput::Tick)
            }
        };
        if let Some(input) = input {
            tracker.feed(input).await;
        }
    }
    tracker.shutdown().await;
}

/// The next text frame; `Ok(None)` for frames that carry nothing for the client. Pending
/// forever without a socket.
async fn next_frame(socket: &mut Option<Socket>) -> Result<Option<String>, String> {
    let Some(socket) = socket else {
        return std::future::pending().await;
    };
    match socket.next().await {
        Some(Ok(Message::Text(text))) => Ok(Some(text.to_string())),
        Some(Ok(Message::Close(frame))) => Err(match frame {
            Some(f) => format!("tracker closed the connection: {}", f.reason),
            None => "tracker closed the connection".into(),
        }),
        Some(Ok(_)) => Ok(None),
        Some(Err(e)) => Err(e.to_string()),
        None => Err("tracker closed the connection".into()),
    }
}

impl Tracker {
    fn now(&self) -> Duration {
        self.started.elapsed()
    }

    /// Feeds one input and carries out everything that follows from it.
    async fn feed(&mut self, input: TrackerInput) {
        let mut inputs = vec![input];
        while let Some(input) = inputs.pop() {
            let now = self.now();
            for output in self.client.handle(now, input) {
                if let Some(next) = self.carry_out(output).await {
                    inputs.push(next);
                }
            }
        }
    }

    async fn carry_out(&mut self, output: TrackerOutput) -> Option<TrackerInput> {
        match output {
            TrackerOutput::Send(text) => {
                let socket = self.socket.as_mut()?;
                let sent =
                    tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::text(text))).await;
                match sent {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => {
                        self.socket = None;
                        Some(TrackerInput::Disconnected {
                            reason: e.to_string(),
                        })
                    }
                    Err(_) => {
                        self.socket = None;
                        Some(TrackerInput::Disconnected {
                            reason: "sending to the tracker timed out".into(),
                        })
                    }
                }
            }
            TrackerOutput::NeedOffers {
                info_hash,
                offer_ids,
            } => {
                let wanted = offer_ids.len().min(self.budget.free(self.config.max_peers));
                let ids: Vec<OfferId> = offer_ids.into_iter().take(wanted).collect();
                self.budget
                    .handshakes
                    .fetch_add(ids.len(), Ordering::Relaxed);
                let transport = self.config.transport.clone();
                let budget = self.budget.clone();
                self.work.spawn(async move {
                    let mut offers = Vec::new();
                    let made =
                        futures::future::join_all(ids.iter().map(|_| make_offer(&transport)));
                    for (id, result) in ids.into_iter().zip(made.await) {
                        match result {
                            Ok((pending, sdp)) => offers.push((id, pending, sdp)),
                            Err(_) => {
                                budget.handshakes.fetch_sub(1, Ordering::Relaxed);
                            }
                        }
                    }
                    Done::Offers { info_hash, offers }
                });
                None
            }
            TrackerOutput::RemoteOffer { info_hash, remote } => {
                if self.budget.free(self.config.max_peers) == 0 {
                    return None;
                }
                self.budget.handshakes.fetch_add(1, Ordering::Relaxed);
                let transport = self.config.transport.clone();
                self.work.spawn(async move {
                    let result = answer_offer(&transport, &remote.sdp).await;
                    Done::Answer {
                        info_hash,
                        to_peer_id: remote.peer_id,
                        offer_id: remote.offer_id,
                        result,
                    }
                });
                None
            }
            TrackerOutput::RemoteAnswer { info_hash, remote } => {
                let pending = self
                    .offers
                    .remove(&(info_hash.clone(), remote.offer_id.clone()))?;
                self.work.spawn(async move {
                    let result = pending.connect(&remote.sdp).await;
                    Done::Connected {
                        info_hash,
                        remote: remote.peer_id,
                        result,
                    }
                });
                None
            }
            TrackerOutput::DropOffer {
                info_hash,
                offer_id,
            } => {
                if let Some(pending) = self.offers.remove(&(info_hash, offer_id)) {
                    self.budget.handshakes.fetch_sub(1, Ordering::Relaxed);
                    tokio::spawn(pending.close());
                }
                None
            }
            // The answering side's connect() times out on its own.
            TrackerOutput::AnswerNotSent { .. } => None,
            TrackerOutput::SwarmStats {
                info_hash,
                complete,
                incomplete,
            } => {
                let peers = complete.unwrap_or(0) + incomplete.unwrap_or(0);
                let _ = self.hub.try_send(HubEvent::SwarmSize {
                    swarm: info_hash,
                    peers,
                });
                None
            }
            TrackerOutput::Warning(reason) => {
                let _ = self.hub.try_send(HubEvent::Warning(MeshError::Tracker {
                    url: self.url.to_string(),
                    reason,
                }));
                None
            }
            TrackerOutput::Reconnect { at } => {
                self.reconnect_at = Some(at);
                None
            }
        }
    }

    async fn on_done(&mut self, done: Done) -> Option<TrackerInput> {
        match done {
            Done::Offers { info_hash, offers } => {
                let mut local = Vec::with_capacity(offers.len());
                for (offer_id, pending, sdp) in offers {
                    self.offers
                        .insert((info_hash.clone(), offer_id.clone()), pending);
                    local.push(LocalOffer { offer_id, sdp });
                }
                Some(TrackerInput::OffersReady {
                    info_hash,
                    offers: local,
                })
            }
            Done::Answer {
                info_hash,
                to_peer_id,
                offer_id,
                result,
            } => match result {
                Ok((pending, sdp)) => {
                    let remote = to_peer_id.clone();
                    let hash = info_hash.clone();
                    self.work.spawn(async move {
                        let result = pending.connect().await;
                        Done::Connected {
                            info_hash: hash,
                            remote,
                            result,
                        }
                    });
                    Some(TrackerInput::AnswerReady {
                        info_hash,
                        to_peer_id,
                        offer_id,
                        sdp,
                    })
                }
                Err(_) => {
                    self.budget.handshakes.fetch_sub(1, Ordering::Relaxed);
                    None
                }
            },
            Done::Connected {
                info_hash,
                remote,
                result,
            } => {
                self.budget.handshakes.fetch_sub(1, Ordering::Relaxed);
                if let Ok(channel) = result {
                    // Count it as a link until the hub says otherwise.
                    self.budget.links.fetch_add(1, Ordering::Relaxed);
                    let event = HubEvent::LinkUp {
                        swarm: info_hash,
                        remote,
                        channel,
                    };
                    if let Err(mpsc::error::SendError(HubEvent::LinkUp { channel, .. })) =
                        self.hub.send(event).await
                    {
                        channel.sender.close().await;
                    }
                }
                None
            }
        }
    }

    async fn shutdown(&mut self) {
        self.work.abort_all();
        for (_, pending) in self.offers.drain() {
            pending.close().await;
        }
        if let Some(mut socket) = self.socket.take() {
            let _ = tokio::time::timeout(Duration::from_secs(1), socket.close(None)).await;
        }
    }
}
