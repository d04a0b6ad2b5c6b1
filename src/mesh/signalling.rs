//! Tracker signalling I/O: one task per tracker URL drives a sans-IO [`TrackerClient`] over a
//! tokio-tungstenite WebSocket, makes the WebRTC offers and answers it asks for, and hands
//! each data channel that opens to the delivery hub.
//!
//! A tracker that is down or drops the connection is a warning, never an error: the client
//! reconnects with backoff while playback goes on from the CDN.
//!
//! What a tracker sends is bounded where it enters: frames and messages of at most
//! [`MAX_TRACKER_MESSAGE`] bytes, read at most [`TRACKER_FRAMES_PER_SECOND`] a second (beyond
//! that the socket is not read, and TCP holds the tracker back). Relayed offers from banned
//! peers, or naming a banned address, or carrying more than [`MAX_REMOTE_CANDIDATES`]
//! candidates, are ignored before they cost a handshake or budget.

use crate::error::MeshError;
use crate::mesh::guard::{Bans, TokenBucket, sdp_addresses, sdp_candidate_count};
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
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use url::Url;

/// How long opening a tracker WebSocket may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long sending one frame to the tracker may take.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest frame, and message, read from a tracker. The protocol's messages stay under
/// 16 KiB (aquatic_ws's frame limit); a larger one fails the connection, unbuffered.
pub const MAX_TRACKER_MESSAGE: usize = 64 * 1024;
/// Frames read from one tracker per second, on average (bursts of twice that).
pub const TRACKER_FRAMES_PER_SECOND: f64 = 50.0;
/// Bytes read from one tracker per second, on average (bursts of twice that).
pub const TRACKER_BYTES_PER_SECOND: f64 = 256.0 * 1024.0;
/// Relayed offers and answers naming more candidates than this are ignored.
pub const MAX_REMOTE_CANDIDATES: usize = 32;

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
    /// A data channel to `remote` in `swarm` is open; it holds `slot` of the peer budget until
    /// dropped.
    LinkUp {
        swarm: InfoHash,
        remote: PeerId,
        channel: PeerChannel,
        slot: PeerSlot,
    },
    Message {
        link: PeerRef,
        message: Incoming,
    },
    /// The link's peer broke the wire protocol (a message that does not decode).
    Malformed {
        link: PeerRef,
        reason: String,
    },
    LinkDown {
        link: PeerRef,
        reason: String,
    },
    /// An upload of the link handed another data message to the transport.
    UploadProgress {
        link: PeerRef,
        request_id: crate::mesh::protocol::RequestId,
    },
    /// An upload of the link is all handed to the transport (`sending completed` included).
    UploadDone {
        link: PeerRef,
        request_id: crate::mesh::protocol::RequestId,
    },
    /// Bytes of uploads the link's peer has acknowledged since the last report.
    Uploaded {
        link: PeerRef,
        bytes: u64,
    },
    /// A warning; `kind` groups those rate-limited together.
    Warning {
        kind: String,
        error: MeshError,
    },
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

/// The peer budget (`max_peers`): every handshake under way and every open link holds one
/// [`PeerSlot`], given back when the slot is dropped. Whatever path opens, refuses or closes a
/// link, the count is exact.
#[derive(Debug)]
pub struct Budget {
    used: AtomicUsize,
    max: usize,
}

impl Budget {
    pub fn new(max: usize) -> Arc<Budget> {
        Arc::new(Budget {
            used: AtomicUsize::new(0),
            max,
        })
    }

    /// A slot, if the budget has one free.
    pub fn try_acquire(self: &Arc<Self>) -> Option<PeerSlot> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used < self.max).then_some(used + 1)
            })
            .ok()?;
        Some(PeerSlot {
            budget: self.clone(),
        })
    }

    /// Slots held.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    pub fn free(&self) -> usize {
        self.max.saturating_sub(self.used())
    }
}

/// One peer connection's share of the [`Budget`], held for as long as it lives.
#[derive(Debug)]
pub struct PeerSlot {
    budget: Arc<Budget>,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The tracker tasks of one session; dropping it stops them.
pub struct Signalling {
    commands: Vec<mpsc::Sender<Command>>,
    budget: Arc<Budget>,
    _tasks: JoinSet<()>,
}

impl Signalling {
    /// One task per tracker; offers from peers `bans` refuses are ignored.
    pub fn spawn(
        config: SignallingConfig,
        hub: mpsc::Sender<HubEvent>,
        bans: Arc<Bans>,
    ) -> Signalling {
        let budget = Budget::new(config.max_peers);
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
                bans.clone(),
            ));
        }
        Signalling {
            commands,
            budget,
            _tasks: tasks,
        }
    }

    /// The peer budget's slots in use: handshakes under way plus open links.
    pub fn peers_in_use(&self) -> usize {
        self.budget.used()
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
}

/// Handshake work finished in the background; each holds its budget slot.
enum Done {
    Offers {
        info_hash: InfoHash,
        offers: Vec<(OfferId, PendingOffer, String, PeerSlot)>,
    },
    Answer {
        info_hash: InfoHash,
        to_peer_id: PeerId,
        offer_id: OfferId,
        result: Result<(transport::PendingAnswer, String), TransportError>,
        slot: PeerSlot,
    },
    /// A handshake ended: with a channel, or not.
    Connected {
        info_hash: InfoHash,
        remote: PeerId,
        result: Result<PeerChannel, TransportError>,
        slot: PeerSlot,
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
    let limits = WebSocketConfig::default()
        .max_message_size(Some(MAX_TRACKER_MESSAGE))
        .max_frame_size(Some(MAX_TRACKER_MESSAGE));
    let attempt = tokio_tungstenite::connect_async_tls_with_config(
        url.as_str(),
        Some(limits),
        false,
        connector,
    );
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
    bans: Arc<Bans>,
    socket: Option<Socket>,
    reconnect_at: Option<Duration>,
    /// Our offers awaiting an answer; bounded by the budget, which each one holds a slot of.
    offers: HashMap<(InfoHash, OfferId), (PendingOffer, PeerSlot)>,
    work: JoinSet<Done>,
    frames: TokenBucket,
    bytes: TokenBucket,
}

async fn run_tracker(
    url: Url,
    config: SignallingConfig,
    hub: mpsc::Sender<HubEvent>,
    mut commands: mpsc::Receiver<Command>,
    budget: Arc<Budget>,
    bans: Arc<Bans>,
) {
    let mut tracker = Tracker {
        url,
        client: TrackerClient::new(config.tracker.clone()),
        config,
        started: Instant::now(),
        hub,
        budget,
        bans,
        socket: None,
        reconnect_at: Some(Duration::ZERO),
        offers: HashMap::new(),
        work: JoinSet::new(),
        frames: TokenBucket::new(
            TRACKER_FRAMES_PER_SECOND,
            2.0 * TRACKER_FRAMES_PER_SECOND,
            Duration::ZERO,
        ),
        bytes: TokenBucket::new(
            TRACKER_BYTES_PER_SECOND,
            2.0 * TRACKER_BYTES_PER_SECOND,
            Duration::ZERO,
        ),
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
        // Over the rate, the socket is not read until the buckets refill.
        let read_at = tracker.read_at(now);
        let may_read = read_at <= now;
        let read_wake = tokio::time::Instant::from_std(tracker.started + read_at);
        let input = tokio::select! {
            frame = next_frame(&mut tracker.socket), if may_read => {
                let now = tracker.now();
                tracker.frames.take(now, 1.0);
                match frame {
                    Ok((len, text)) => {
                        tracker.bytes.take(now, len as f64);
                        text.map(TrackerInput::Message)
                    }
                    Err(reason) => {
                        tracker.socket = None;
                        Some(TrackerInput::Disconnected { reason })
                    }
                }
            },
            _ = tokio::time::sleep_until(read_wake), if !may_read => None,
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

/// The next frame's length, and its text if it is a text frame (`None` for frames that carry
/// nothing for the client). Pending forever without a socket.
async fn next_frame(socket: &mut Option<Socket>) -> Result<(usize, Option<String>), String> {
    let Some(socket) = socket else {
        return std::future::pending().await;
    };
    match socket.next().await {
        Some(Ok(Message::Text(text))) => Ok((text.len(), Some(text.to_string()))),
        Some(Ok(Message::Close(frame))) => Err(match frame {
            Some(f) => format!("tracker closed the connection: {}", f.reason),
            None => "tracker closed the connection".into(),
        }),
        Some(Ok(other)) => Ok((other.len(), None)),
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
                let slots: Vec<(OfferId, PeerSlot)> = offer_ids
                    .into_iter()
                    .map_while(|id| Some((id, self.budget.try_acquire()?)))
                    .collect();
                let transport = self.config.transport.clone();
                self.work.spawn(async move {
                    let made =
                        futures::future::join_all(slots.iter().map(|_| make_offer(&transport)));
                    let offers = slots
                        .into_iter()
                        .zip(made.await)
                        .filter_map(|((id, slot), made)| {
                            let (pending, sdp) = made.ok()?;
                            Some((id, pending, sdp, slot))
                        })
                        .collect();
                    Done::Offers { info_hash, offers }
                });
                None
            }
            TrackerOutput::RemoteOffer { info_hash, remote } => {
                if self.refuses(&remote.peer_id, &remote.sdp) {
                    return None;
                }
                let slot = self.budget.try_acquire()?;
                let transport = self.config.transport.clone();
                self.work.spawn(async move {
                    let result = answer_offer(&transport, &remote.sdp).await;
                    Done::Answer {
                        info_hash,
                        to_peer_id: remote.peer_id,
                        offer_id: remote.offer_id,
                        result,
                        slot,
                    }
                });
                None
            }
            TrackerOutput::RemoteAnswer { info_hash, remote } => {
                let (pending, slot) = self
                    .offers
                    .remove(&(info_hash.clone(), remote.offer_id.clone()))?;
                if self.refuses(&remote.peer_id, &remote.sdp) {
                    tokio::spawn(pending.close());
                    return None;
                }
                self.work.spawn(async move {
                    let result = pending.connect(&remote.sdp).await;
                    Done::Connected {
                        info_hash,
                        remote: remote.peer_id,
                        result,
                        slot,
                    }
                });
                None
            }
            TrackerOutput::DropOffer {
                info_hash,
                offer_id,
            } => {
                if let Some((pending, _slot)) = self.offers.remove(&(info_hash, offer_id)) {
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
            TrackerOutput::Warning { kind, text } => {
                let _ = self.hub.try_send(HubEvent::Warning {
                    kind: format!("tracker {} {kind:?}", self.url),
                    error: MeshError::Tracker {
                        url: self.url.to_string(),
                        reason: text,
                    },
                });
                None
            }
            TrackerOutput::Reconnect { at } => {
                self.reconnect_at = Some(at);
                None
            }
        }
    }

    /// When the socket may be read again: both rate buckets hold a token.
    fn read_at(&mut self, now: Duration) -> Duration {
        let frames = self.frames.ready_at(now, 1.0).unwrap_or(now);
        let bytes = self.bytes.ready_at(now, 1.0).unwrap_or(now);
        frames.max(bytes)
    }

    /// Whether a relayed offer or answer is to be ignored: its peer, or an address its SDP
    /// names, is banned, or it names too many candidates.
    fn refuses(&self, peer: &PeerId, sdp: &str) -> bool {
        sdp_candidate_count(sdp) > MAX_REMOTE_CANDIDATES
            || self
                .bans
                .refuses(peer, &sdp_addresses(sdp, MAX_REMOTE_CANDIDATES + 1))
    }

    async fn on_done(&mut self, done: Done) -> Option<TrackerInput> {
        match done {
            Done::Offers { info_hash, offers } => {
                let mut local = Vec::with_capacity(offers.len());
                for (offer_id, pending, sdp, slot) in offers {
                    self.offers
                        .insert((info_hash.clone(), offer_id.clone()), (pending, slot));
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
                slot,
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
                            slot,
                        }
                    });
                    Some(TrackerInput::AnswerReady {
                        info_hash,
                        to_peer_id,
                        offer_id,
                        sdp,
                    })
                }
                Err(_) => None,
            },
            Done::Connected {
                info_hash,
                remote,
                result,
                slot,
            } => {
                if let Ok(channel) = result {
                    // The slot goes with the link: the hub gives it back when it drops it.
                    let event = HubEvent::LinkUp {
                        swarm: info_hash,
                        remote,
                        channel,
                        slot,
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
        for (_, (pending, _slot)) in self.offers.drain() {
            pending.close().await;
        }
        if let Some(mut socket) = self.socket.take() {
            let _ = tokio::time::timeout(Duration::from_secs(1), socket.close(None)).await;
        }
    }
}
